//! Retention: drop finished events past the history window, dedup records
//! past the dedup window and dead letters past theirs.

use super::handle::Engine;
use crate::store::{Retention, now_ms};
use std::time::Duration;

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub(super) async fn run(engine: Engine) {
    engine.measure_store().await;
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
        save_totals(&engine).await;
    }
    save_totals(&engine).await;
}

/// Save every pipeline's lifetime counters.
pub(super) async fn save_totals(engine: &Engine) {
    let inner = &engine.inner;
    let tickets: Vec<_> = inner
        .pipelines
        .iter()
        .map(|(name, p)| {
            let totals = p
                .lifetime_base
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .plus(p.stats.totals());
            let json = serde_json::to_string(&totals).unwrap_or_default();
            inner.store.set_totals(name, &json)
        })
        .collect();
    for t in tickets {
        if let Err(e) = t.await {
            tracing::debug!("lifetime counters not saved: {e}; they are saved again in a minute");
        }
    }
}

pub(super) async fn sweep(engine: &Engine) {
    let now = now_ms();
    let inner = &engine.inner;
    let swept = inner
        .store
        .sweep(Retention {
            history_before_ms: now.saturating_sub(inner.keep_history_ms),
            keep_events: inner.keep_history_events,
            dedup_before_ms: now.saturating_sub(inner.dedup_window_ms),
            dead_before_ms: inner.keep_dead_letters_ms.map(|ms| now.saturating_sub(ms)),
            by_pipeline: inner
                .pipelines
                .iter()
                .filter_map(|(name, p)| {
                    let r = &p.config.retention;
                    let before = |d: Option<std::time::Duration>| {
                        d.map(|d| now.saturating_sub(d.as_millis() as u64))
                    };
                    (r.payloads.is_some() || r.dead_letters.is_some()).then(|| {
                        let kept = crate::store::PipelineRetention {
                            payloads_before_ms: before(r.payloads),
                            dead_before_ms: before(r.dead_letters),
                        };
                        (name.clone(), kept)
                    })
                })
                .collect(),
        })
        .await;
    if let Ok(s) = &swept {
        for (pipeline, n) in &s.dead_letters {
            tracing::warn!(
                pipeline = %pipeline, expired = n,
                "dead letters kept longer than keep_dead_letters_hours were dropped; replay or export dead letters sooner, or raise the setting"
            );
            if let Some(p) = inner.pipelines.get(pipeline) {
                p.stats
                    .dead_letters_expired
                    .fetch_add(*n as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
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
    engine.measure_store().await;
}
