//! The dead-letter queue: what is in it, which letters a command selects,
//! and replaying or purging them, with or without a running engine.

use super::handle::Engine;
use super::history::{attempt_history, parse_since, rfc3339};
use super::job::Job;
use crate::store::{EventId, EventRecord, EventState, Store, StoreError, now_ms};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A dead letter as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
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
            history: attempt_history(r),
            payload: String::from_utf8_lossy(&r.payload).into_owned(),
        }
    }
}

/// Which dead letters a command is about.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// These event ids.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Every dead letter (narrowed by `pipeline` and `since`).
    #[serde(default)]
    pub all: bool,
    /// Only this pipeline.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Only those dead-lettered since: an RFC 3339 time or a duration ago (`2h`, `30m`).
    #[serde(default)]
    pub since: Option<String>,
}

/// When an event was dead-lettered: the start of its last attempt.
fn dead_at_ms(r: &EventRecord) -> u64 {
    r.attempts
        .last()
        .map_or(r.received_at_ms, |a| a.started_at_ms)
}

impl Selection {
    /// The dead letters selected, oldest first.
    pub fn resolve(&self, store: &Arc<dyn Store>) -> Result<Vec<EventRecord>, String> {
        let since = self.since.as_deref().map(parse_since).transpose()?;
        let keep = |r: &EventRecord| {
            self.pipeline.as_deref().is_none_or(|p| p == r.pipeline)
                && since.is_none_or(|s| dead_at_ms(r) >= s)
        };
        if !self.ids.is_empty() {
            let mut out = Vec::new();
            for id in &self.ids {
                let id: EventId = id.parse()?;
                match store.event(&id).map_err(|e| e.to_string())? {
                    Some(r) if keep(&r) => out.push(r),
                    Some(_) => {}
                    None => return Err(format!("no event {id}")),
                }
            }
            return Ok(out);
        }
        if !self.all && self.pipeline.is_none() && since.is_none() {
            return Err("name the event ids, or select with all, pipeline or since".into());
        }
        Ok(store
            .dead_letters(None)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(keep)
            .collect())
    }
}

/// Dead letters, oldest first, optionally of one pipeline and since a time.
pub fn dead_letter_views(
    store: &Arc<dyn Store>,
    pipeline: Option<&str>,
    since: Option<&str>,
    redaction: &crate::redact::FieldRedaction,
) -> Result<Vec<DeadLetterView>, String> {
    let since = since.map(parse_since).transpose()?;
    Ok(store
        .dead_letters(pipeline)
        .map_err(|e| e.to_string())?
        .iter()
        .filter(|r| since.is_none_or(|s| dead_at_ms(r) >= s))
        .map(|r| DeadLetterView::from(redaction.record(r).as_ref()))
        .collect())
}

/// The record of a dead letter, or why `id` is not one.
fn dead_letter(
    store: &Arc<dyn Store>,
    id: &EventId,
) -> Result<Result<EventRecord, &'static str>, StoreError> {
    Ok(match store.event(id)? {
        None => Err("not-found"),
        Some(r) if r.state != EventState::DeadLettered => Err("not-dead-lettered"),
        Some(r) => Ok(r),
    })
}

fn outcome(id: &EventId, result: &str) -> ReplayOutcome {
    ReplayOutcome {
        id: id.to_string(),
        result: result.to_string(),
    }
}

/// Delete dead letters for good (their record and index entry).
pub async fn purge(
    store: &Arc<dyn Store>,
    ids: &[EventId],
) -> Result<Vec<ReplayOutcome>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let result = match dead_letter(store, id)? {
            Err(why) => why,
            Ok(_) => match store.purge(id).await? {
                crate::store::Committed::Gone => "not-dead-lettered",
                _ => {
                    tracing::info!(event = %id, "purged from the dead-letter queue");
                    "purged"
                }
            },
        };
        out.push(outcome(id, result));
    }
    Ok(out)
}

/// What happened to one replay request.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReplayOutcome {
    /// Event id.
    pub id: String,
    /// `requeued`, `purged`, `not-found` or `not-dead-lettered`.
    pub result: String,
}

/// Put dead letters back in their pipeline's queue with the same key; with
/// an engine they are attempted at once, without one when the host starts.
pub async fn replay(
    store: &Arc<dyn Store>,
    engine: Option<&Engine>,
    ids: &[EventId],
) -> Result<Vec<ReplayOutcome>, StoreError> {
    // Queued on the engine running now, even if a reload replaced the one
    // this call began with.
    let pass = match engine {
        Some(e) => Some(e.pass().await),
        None => None,
    };
    let engine = pass.as_ref().map(|p| &p.engine);
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let result = match dead_letter(store, id)? {
            Err(why) => why,
            Ok(mut r) => {
                let now = now_ms();
                r.state = EventState::Queued;
                r.replays_at_ms.push(now);
                r.round_base = r.attempts.len() as u32;
                let attempt = r.round_base + 1;
                let order_key = r.order_key.clone();
                let weight = super::job::Weight::of(&r);
                let r = Arc::new(r);
                let after = engine.map(|engine| {
                    let engine = engine.clone();
                    let job = Job {
                        pipeline: r.pipeline.clone(),
                        id: *id,
                        attempt,
                        due_ms: now,
                        order_key,
                        record: Job::keep(&r),
                    };
                    Box::new(move || engine.requeued(job, super::pipeline::Entry::Replayed, weight))
                        as crate::store::AfterCommit
                });
                store.replay(&r, now, attempt, after).await?;
                tracing::info!(event = %id, "replayed from the dead-letter queue");
                "requeued"
            }
        };
        out.push(outcome(id, result));
    }
    Ok(out)
}

/// Delete for good the queued events of `pipeline`, which must not be
/// among `configured` (a removed pipeline's events wait in the store until
/// it comes back or this is done). Returns how many were deleted.
pub async fn purge_queued(
    store: &Arc<dyn Store>,
    pipeline: &str,
    configured: &[String],
) -> Result<usize, String> {
    if configured.iter().any(|p| p == pipeline) {
        return Err(format!(
            "pipeline {pipeline:?} is configured and delivers its queued events; to drop them, remove it from weft.toml and reload first (pausing it keeps them)"
        ));
    }
    let mut purged = 0;
    for entry in store.queue().map_err(|e| e.to_string())? {
        let Ok(Some(record)) = store.event(&entry.id) else {
            continue;
        };
        if record.pipeline != pipeline {
            continue;
        }
        match store.drop_queued(entry).await.map_err(|e| e.to_string())? {
            crate::store::Committed::Gone => {}
            _ => purged += 1,
        }
    }
    Ok(purged)
}
