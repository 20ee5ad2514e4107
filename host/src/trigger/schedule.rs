//! The schedule trigger: a cron expression emits a tick event into its
//! pipeline. The last fire time is durable, and each tick's idempotency key
//! is its scheduled time, so a restart neither fires a tick twice nor (under
//! `on_missed = "once"`) silently loses the ticks it slept through.

use super::{Running, Trigger};
pub use crate::config::{OnMissed, Schedule};
use crate::engine::{AcceptError, Engine, Incoming};
use std::sync::Arc;
use std::time::Duration;

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Accept the tick scheduled at `at`; retried each second while the pipeline
/// refuses (queue full, breaker open, store failing).
async fn fire(engine: &Engine, pipeline: &str, at: u64, late: bool) {
    let key = format!("schedule:{pipeline}:{at}");
    let body = serde_json::json!({
        "id": key,
        "pipeline": pipeline,
        "scheduled_at": rfc3339(at),
        "scheduled_at_ms": at,
        "missed": late,
    });
    loop {
        let incoming = Incoming {
            body: body.to_string().into_bytes(),
            content_type: "application/json".into(),
            idempotency_header: Some(key.clone()),
            correlation_id: None,
            headers: vec![(crate::store::TRIGGER_HEADER.into(), "schedule".into())],
            key: None,
        };
        match engine.accept(pipeline, incoming).await {
            Ok(_) => break,
            Err(e @ (AcceptError::Backpressure { .. } | AcceptError::Store(_))) => {
                tracing::warn!(
                    pipeline,
                    "schedule tick {} not accepted yet: {e}",
                    rfc3339(at)
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::error!(pipeline, "schedule tick {} refused: {e}", rfc3339(at));
                break;
            }
        }
    }
    if let Err(e) = engine.store().set_schedule_last(pipeline, at).await {
        tracing::error!(
            pipeline,
            "could not record the schedule's last fire time: {e}"
        );
    }
}

/// The parsed schedule of pipeline `p`'s `trigger.schedule`.
pub(super) fn schedule_of(
    p: &crate::config::PipelineConfig,
    s: &crate::config::ScheduleConfig,
) -> Result<Schedule, super::TriggerError> {
    s.schedule()
        .cloned()
        .map_err(|e| super::TriggerError(format!("pipeline {:?}: trigger.schedule: {e}", p.name)))
}

/// A pipeline's schedule trigger.
pub struct ScheduleTrigger {
    pipeline: String,
    schedule: Schedule,
}

impl ScheduleTrigger {
    /// Fire ticks into `pipeline` on `schedule`.
    pub fn new(pipeline: &str, schedule: Schedule) -> Self {
        ScheduleTrigger {
            pipeline: pipeline.to_string(),
            schedule,
        }
    }
}

impl Trigger for ScheduleTrigger {
    fn kind(&self) -> &'static str {
        "schedule"
    }

    fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn run(self: Arc<Self>, engine: Engine) -> Running {
        Box::pin(async move { run(engine, self.pipeline.clone(), &self.schedule).await })
    }
}

/// Run one pipeline's schedule until the engine stops.
async fn run(engine: Engine, pipeline: String, schedule: &Schedule) {
    let mut stop = engine.stopping();
    let last = engine.store().schedule_last(&pipeline);
    let (missed, mut from) = schedule.plan(last, crate::store::now_ms());
    if last.is_none() {
        let _ = engine.store().set_schedule_last(&pipeline, from).await;
    }
    if let Some(at) = missed {
        tracing::info!(
            pipeline,
            "firing the tick missed at {} (on_missed = once)",
            rfc3339(at)
        );
        fire(&engine, &pipeline, at, true).await;
    }
    loop {
        let Some(next) = schedule.next_after(from) else {
            tracing::info!(pipeline, "the schedule has no more ticks");
            return;
        };
        let wait = Duration::from_millis(next.saturating_sub(crate::store::now_ms()));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        fire(&engine, &pipeline, next, false).await;
        from = next;
    }
}
