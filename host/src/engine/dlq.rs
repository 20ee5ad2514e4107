//! The dead-letter queue: listing and replaying, with or without a running
//! engine.

use super::build::Engine;
use super::run::Job;
use crate::store::{
    AttemptOutcome, EventId, EventRecord, EventState, Store, StoreError, Write, dead_key,
    event_key, now_ms, queue_key,
};
use serde::Serialize;
use std::sync::Arc;

/// A dead letter as the API and the CLI show it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    /// Event id.
    pub id: String,
    /// Pipeline.
    pub pipeline: String,
    /// Idempotency key.
    pub key: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Accept time (RFC 3339).
    pub received_at: String,
    /// Attempts made.
    pub attempts: usize,
    /// Step that failed last.
    pub failed_step: String,
    /// Kind of the last error.
    pub error_kind: String,
    /// The last error.
    pub error: String,
    /// Every attempt: time, duration and outcome.
    pub history: Vec<serde_json::Value>,
    /// The payload, as text when it is UTF-8.
    pub payload: String,
}

/// RFC 3339 form of a ms timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

impl From<&EventRecord> for DeadLetterView {
    fn from(r: &EventRecord) -> Self {
        let (step, kind, message) =
            r.last_error()
                .unwrap_or(("-", crate::store::ErrorKind::Fatal, "-"));
        DeadLetterView {
            id: r.id.to_string(),
            pipeline: r.pipeline.clone(),
            key: r.key.clone(),
            correlation_id: r.correlation_id.clone(),
            received_at: rfc3339(r.received_at_ms),
            attempts: r.attempts.len(),
            failed_step: step.to_string(),
            error_kind: kind.as_str().to_string(),
            error: message.to_string(),
            history: r
                .attempts
                .iter()
                .map(|a| {
                    let (outcome, detail) = match &a.outcome {
                        AttemptOutcome::Delivered { receipt } => ("delivered", receipt.clone()),
                        AttemptOutcome::Filtered { step } => ("filtered", step.clone()),
                        AttemptOutcome::Failed {
                            step,
                            kind,
                            message,
                            ..
                        } => (kind.as_str(), format!("{step}: {message}")),
                    };
                    serde_json::json!({
                        "attempt": a.number,
                        "at": rfc3339(a.started_at_ms),
                        "duration_ms": a.duration_us as f64 / 1000.0,
                        "outcome": outcome,
                        "detail": detail,
                    })
                })
                .collect(),
            payload: String::from_utf8_lossy(&r.payload).into_owned(),
        }
    }
}

/// Dead letters, oldest first, optionally of one pipeline.
pub fn dead_letter_views(
    store: &Store,
    pipeline: Option<&str>,
) -> Result<Vec<DeadLetterView>, StoreError> {
    Ok(store
        .dead_letters(pipeline)?
        .iter()
        .map(DeadLetterView::from)
        .collect())
}

/// What happened to one replay request.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOutcome {
    /// Event id.
    pub id: String,
    /// `requeued`, `not-found` or `not-dead-lettered`.
    pub result: String,
}

/// Put dead letters back in their pipeline's queue with the same key; with
/// an engine they are attempted at once, without one when the host starts.
pub async fn replay(
    store: &Store,
    engine: Option<&Engine>,
    ids: &[EventId],
) -> Result<Vec<ReplayOutcome>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let result = match store.event(id)? {
            None => "not-found",
            Some(r) if r.state != EventState::DeadLettered => "not-dead-lettered",
            Some(mut r) => {
                let now = now_ms();
                r.state = EventState::Queued;
                r.replays_at_ms.push(now);
                r.round_base = r.attempts.len() as u32;
                let attempt = r.round_base + 1;
                let mut write = Write::default();
                write.remove(dead_key(id));
                write.put(queue_key(now, id), attempt.to_be_bytes().to_vec());
                write.put(event_key(id), r.encode());
                if let Some(engine) = engine {
                    let engine = engine.clone();
                    let job = Job {
                        pipeline: r.pipeline.clone(),
                        id: *id,
                        attempt,
                        due_ms: now,
                        record: Some(Arc::new(r)),
                    };
                    write.after = Some(Box::new(move || engine.schedule(job)));
                }
                store.commit(write).await?;
                tracing::info!(event = %id, "replayed from the dead-letter queue");
                "requeued"
            }
        };
        out.push(ReplayOutcome {
            id: id.to_string(),
            result: result.to_string(),
        });
    }
    Ok(out)
}
