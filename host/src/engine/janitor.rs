//! Retention: drop finished events past the history window and dedup records
//! past the dedup window.

use super::build::Engine;
use crate::store::{DONE, Write, event_key, now_ms};
use std::time::Duration;

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Most keys removed per sweep batch.
const SWEEP_BATCH: usize = 1000;

pub(super) async fn run(engine: Engine) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut stop = engine.inner.stop.subscribe();
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            break;
        }
        sweep(&engine).await;
    }
}

pub(super) async fn sweep(engine: &Engine) {
    let store = &engine.inner.store;
    let now = now_ms();
    let history_cutoff = now.saturating_sub(engine.inner.keep_history_ms);
    // Over the count limit, the oldest finished events go first, whatever their age.
    let mut over = engine
        .inner
        .keep_history_events
        .map_or(0, |keep| store.count(DONE).saturating_sub(keep));
    loop {
        let keys = store.keys(DONE, SWEEP_BATCH);
        let expired: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                if k.len() != 25 {
                    return false;
                }
                if over > 0 {
                    over -= 1;
                    return true;
                }
                u64::from_be_bytes(k[1..9].try_into().unwrap_or([0xff; 8])) < history_cutoff
            })
            .collect();
        if expired.is_empty() {
            break;
        }
        let n = expired.len();
        let mut w = Write::default();
        for k in expired {
            if let Some(id) = crate::store::EventId::from_slice(&k[9..]) {
                w.remove(event_key(&id));
            }
            w.remove(k);
        }
        if store.commit(w).await.is_err() || n < SWEEP_BATCH {
            break;
        }
    }
    let dedup_cutoff = now.saturating_sub(engine.inner.dedup_window_ms);
    let stale: Vec<_> = store
        .dedup_entries(usize::MAX)
        .into_iter()
        .filter(|(_, at)| *at < dedup_cutoff)
        .map(|(k, _)| k)
        .collect();
    for chunk in stale.chunks(SWEEP_BATCH) {
        let mut w = Write::default();
        for k in chunk {
            w.remove(k.clone());
        }
        if store.commit(w).await.is_err() {
            break;
        }
    }
}
