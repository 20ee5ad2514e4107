//! Retention: drop finished events past the history window and dedup records
//! past the dedup window.

use super::handle::Engine;
use crate::store::now_ms;
use std::time::Duration;

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn run(engine: Engine) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut stop = engine.stopping();
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
    let now = now_ms();
    let inner = &engine.inner;
    let swept = inner
        .store
        .sweep(
            now.saturating_sub(inner.keep_history_ms),
            inner.keep_history_events,
            now.saturating_sub(inner.dedup_window_ms),
        )
        .await;
    match swept {
        Ok(s) if s.events + s.dedup_keys > 0 => {
            tracing::debug!(
                events = s.events,
                dedup_keys = s.dedup_keys,
                "retention sweep"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("retention sweep failed: {e}; it runs again in a minute"),
    }
}
