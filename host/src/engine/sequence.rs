//! Ordered pipelines on a store hosts share: every host accepts their
//! events, and the one host that holds the pipeline's order lease works
//! them, taken from the store in the order they were accepted across the
//! cluster; its key gate then keeps each key's events in that order, as on
//! one host. When the holder stops, another takes the lease, and with it
//! the events the holder left unfinished, first and in order.

use super::handle::Engine;
use crate::store::StoreError;

/// Work the ordered pipeline `pipeline` whenever this host holds its
/// order lease, until the engine stops.
pub(super) async fn hold(engine: Engine, pipeline: String) {
    let work = {
        let (engine, pipeline) = (engine.clone(), pipeline.clone());
        move || follow(engine.clone(), pipeline.clone())
    };
    super::lease::while_leased(
        engine,
        format!("order:{pipeline}"),
        pipeline.clone(),
        "ordered pipeline",
        work,
    )
    .await;
}

/// Requeue what the pipeline's feed takes, in its order, until the engine
/// stops (or the lease is lost, which drops this).
async fn follow(engine: Engine, pipeline: String) {
    let Some(mut feed) = engine.store().order_feed(&pipeline) else {
        return;
    };
    let mut stop = engine.stopping();
    let mut failing = false;
    loop {
        let next = tokio::select! {
            next = feed.next() => next,
            _ = stop.wait_for(|s| *s) => return,
        };
        match next {
            Ok(taken) => {
                failing = false;
                engine.requeue_taken(taken);
            }
            Err(StoreError::Closed) => return,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    pipeline,
                    "cannot read the pipeline's order from the store (trying again): {e}"
                );
            }
            Err(_) => {}
        }
    }
}
