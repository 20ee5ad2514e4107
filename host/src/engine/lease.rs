//! Work one host of several does at a time, under a lease in the store
//! they share: polls and schedules, and the ordered pipelines.

use super::handle::Engine;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a lease lasts unless renewed; it is renewed three times in
/// that span.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// Run what `work` makes while this host holds the lease `name`, and wait
/// for the lease while another host holds it: another takes over within
/// [`LEASE_TTL`] of the holder's end. A holder that cannot renew in time
/// stops the work before the lease runs out; work that ends by itself
/// (the engine stopping) gives the lease up, so the next holder need not
/// wait for it to run out. `what` names the work in the log.
pub async fn while_leased<F, Fut>(
    engine: Engine,
    name: String,
    pipeline: String,
    what: &str,
    work: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let every = LEASE_TTL / 3;
    let mut stop = engine.stopping();
    loop {
        loop {
            match engine.store().lease(&name, LEASE_TTL).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(pipeline, "cannot reach the store for the {what} lease: {e}")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        tracing::info!(pipeline, "this host holds the lease: it runs the {what}");
        let mut renewed = Instant::now();
        let run = work();
        tokio::pin!(run);
        loop {
            tokio::select! {
                _ = &mut run => {
                    if let Err(e) = engine.store().release_lease(&name).await {
                        tracing::warn!(pipeline, "could not give up the {what} lease: {e}");
                    }
                    return;
                }
                _ = tokio::time::sleep(every) => {}
            }
            match engine.store().lease(&name, LEASE_TTL).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!(
                        pipeline,
                        "another host took the {what} lease: it stops here"
                    );
                    break;
                }
                Err(e) if renewed.elapsed() + every >= LEASE_TTL - Duration::from_secs(1) => {
                    tracing::warn!(
                        pipeline,
                        "the {what} lease could not be renewed before it runs out ({e}): it stops here"
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(pipeline, "the {what} lease could not be renewed yet: {e}")
                }
            }
        }
    }
}
