//! Synthetic checks as a trigger: on its schedule, each check sends its
//! payload into the real pipeline as an event marked synthetic (a record
//! header naming the check, kept by every child and route). Runs missed
//! while the host was down are skipped: a check proves the path now.

use super::{Running, Trigger};
use crate::config::Schedule;
use crate::engine::{Engine, Incoming};
use crate::store::{SYNTHETIC_HEADER, TRIGGER_HEADER, now_ms};
use std::sync::Arc;
use std::time::Duration;

/// One synthetic check of one pipeline.
pub struct SyntheticTrigger {
    pipeline: String,
    check: String,
    schedule: Schedule,
    payload: Vec<u8>,
}

impl SyntheticTrigger {
    /// The check `c` of pipeline `p`.
    pub fn build(
        p: &crate::config::PipelineConfig,
        c: &crate::config::SyntheticConfig,
    ) -> Result<Self, super::TriggerError> {
        let schedule = c.schedule.schedule().cloned().map_err(|e| {
            super::TriggerError(format!(
                "pipeline {:?}: synthetic {:?}: schedule: {e}",
                p.name, c.name
            ))
        })?;
        Ok(SyntheticTrigger {
            pipeline: p.name.clone(),
            check: c.name.clone(),
            schedule,
            payload: c.payload.to_string().into_bytes(),
        })
    }

    /// Send one run, scheduled at `at`; its key names the check and the time.
    async fn fire(&self, engine: &Engine, at: u64) {
        let incoming = Incoming {
            body: self.payload.clone(),
            content_type: "application/json".into(),
            idempotency_header: None,
            correlation_id: None,
            headers: vec![
                (TRIGGER_HEADER.into(), "synthetic".into()),
                (SYNTHETIC_HEADER.into(), self.check.clone()),
            ],
            key: Some(format!("synthetic:{}:{at}", self.check)),
        };
        // Not taken now (full, failing store) or at all: the check failed.
        if let Err(e) = engine.accept(&self.pipeline, incoming).await {
            engine.synthetic_refused(&self.pipeline, &self.check, format!("not accepted: {e}"));
        }
    }
}

impl Trigger for SyntheticTrigger {
    fn kind(&self) -> &'static str {
        "synthetic"
    }

    fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn run(self: Arc<Self>, engine: Engine) -> Running {
        Box::pin(async move {
            let mut stop = engine.stopping();
            let mut from = now_ms();
            while let Some(next) = self.schedule.next_after(from) {
                let wait = Duration::from_millis(next.saturating_sub(now_ms()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                self.fire(&engine, next).await;
                from = next;
            }
        })
    }
}
