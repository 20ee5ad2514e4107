//! The run history: every event with its state and attempts, as the API
//! and `weft runs` show it, with redacted fields hidden.

use crate::store::{AttemptOutcome, EventRecord, Store, now_ms};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// RFC 3339 form of a ms timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

/// Parse `since`: RFC 3339, or a duration before now.
pub fn parse_since(since: &str) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(since) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0));
    }
    humantime::parse_duration(since)
        .map(|d| now_ms().saturating_sub(d.as_millis() as u64))
        .map_err(|_| {
            "since is neither a time (2026-11-22T10:00:00Z) nor a duration (2h, 30m)".to_string()
        })
}

/// One event as `weft runs show` and `GET /api/v1/events/{id}` show it: its
/// state, every attempt, and the last error only when the last attempt failed.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventView {
    /// Event id.
    pub id: String,
    /// Pipeline.
    pub pipeline: String,
    /// Idempotency key.
    pub key: String,
    /// Correlation id.
    pub correlation_id: String,
    /// `queued`, `delivered`, `filtered`, `dead-lettered` or `split`.
    pub state: String,
    /// Accept time (RFC 3339).
    pub received_at: String,
    /// Attempts made.
    pub attempts: usize,
    /// The event a step split into this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The events a step split this one into, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// Step that failed in the last attempt, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// Kind of the last attempt's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The last attempt's error, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The sink's receipt, once delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
    /// Metadata the event came with: the trigger, and provider headers a
    /// verified webhook keeps (e.g. `x-github-event`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Every attempt: time, duration, outcome and each step's cost.
    pub history: Vec<serde_json::Value>,
    /// The payload, as text when it is UTF-8.
    pub payload: String,
}

impl From<&EventRecord> for EventView {
    fn from(r: &EventRecord) -> Self {
        let error = r.last_error();
        EventView {
            id: r.id.to_string(),
            pipeline: r.pipeline.clone(),
            key: r.key.clone(),
            correlation_id: r.correlation_id.clone(),
            state: r.state.as_str().to_string(),
            received_at: rfc3339(r.received_at_ms),
            attempts: r.attempts.len(),
            parent: r.lineage.parent.map(|p| p.to_string()),
            children: r.lineage.children.iter().map(|c| c.to_string()).collect(),
            failed_step: error.map(|(step, _, _)| step.to_string()),
            error_kind: error.map(|(_, kind, _)| kind.as_str().to_string()),
            error: error.map(|(_, _, message)| message.to_string()),
            receipt: match r.attempts.last().map(|a| &a.outcome) {
                Some(AttemptOutcome::Delivered { receipt }) => Some(receipt.clone()),
                _ => None,
            },
            headers: r.headers.clone(),
            history: attempt_history(r),
            payload: String::from_utf8_lossy(&r.payload).into_owned(),
        }
    }
}

/// Every attempt of an event: time, duration, outcome and each plugin call.
pub(super) fn attempt_history(r: &EventRecord) -> Vec<serde_json::Value> {
    r.attempts
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
                AttemptOutcome::Split { step, children } => {
                    ("split", format!("split into {children} events by {step}"))
                }
            };
            let steps: Vec<serde_json::Value> = a
                .steps
                .iter()
                .map(|st| {
                    serde_json::json!({
                        "step": st.step,
                        "offset_ms": st.offset_us as f64 / 1000.0,
                        "duration_ms": st.duration_us as f64 / 1000.0,
                        "outcome": st.outcome,
                        "events_out": st.events_out,
                        "fuel": st.fuel,
                        "memory_bytes": st.memory_bytes,
                    })
                })
                .collect();
            serde_json::json!({
                "attempt": a.number,
                "at": rfc3339(a.started_at_ms),
                "duration_ms": a.duration_us as f64 / 1000.0,
                "outcome": outcome,
                "detail": detail,
                "steps": steps,
            })
        })
        .collect()
}

/// One line of the run history.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RunSummary {
    /// Event id.
    pub id: String,
    /// Pipeline.
    pub pipeline: String,
    /// Idempotency key.
    pub key: String,
    /// `queued`, `delivered`, `filtered`, `dead-lettered` or `split`.
    pub state: String,
    /// Accept time (RFC 3339).
    pub received_at: String,
    /// Attempts made.
    pub attempts: usize,
    /// Time of all attempts together, in ms.
    pub busy_ms: f64,
    /// The last attempt's receipt, filter step or error.
    pub last: String,
    /// The synthetic check that sent it, for a synthetic run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<String>,
}

/// The run history, newest first: events of `pipeline` (all when `None`) in
/// `state`, accepted since `since` (RFC 3339 or `2h`), at most `limit`.
pub fn run_history(
    store: &Arc<dyn Store>,
    pipeline: Option<&str>,
    state: Option<&str>,
    since: Option<&str>,
    limit: usize,
    redaction: &crate::redact::FieldRedaction,
) -> Result<Vec<RunSummary>, String> {
    let since = since.map(parse_since).transpose()?;
    if let Some(s) = state
        && !["queued", "delivered", "filtered", "dead-lettered"].contains(&s)
    {
        return Err("unknown state; use queued, delivered, filtered or dead-lettered".to_string());
    }
    let records = store
        .recent_events(
            |r| {
                pipeline.is_none_or(|p| p == r.pipeline)
                    && state.is_none_or(|s| s == r.state.as_str())
                    && since.is_none_or(|t| r.received_at_ms >= t)
            },
            limit,
        )
        .map_err(|e| e.to_string())?;
    Ok(records
        .iter()
        .map(|r| {
            let r = redaction.record(r);
            RunSummary {
                synthetic: r.synthetic().map(str::to_string),
                id: r.id.to_string(),
                pipeline: r.pipeline.clone(),
                key: r.key.clone(),
                state: r.state.as_str().to_string(),
                received_at: rfc3339(r.received_at_ms),
                attempts: r.attempts.len(),
                busy_ms: r.attempts.iter().map(|a| a.duration_us).sum::<u64>() as f64 / 1000.0,
                last: match r.attempts.last().map(|a| &a.outcome) {
                    None => "-".into(),
                    Some(AttemptOutcome::Delivered { receipt }) => receipt.clone(),
                    Some(AttemptOutcome::Filtered { step }) => format!("filtered by {step}"),
                    Some(AttemptOutcome::Split { step, children }) => {
                        format!("split into {children} events by {step}")
                    }
                    Some(AttemptOutcome::Failed {
                        step,
                        kind,
                        message,
                        ..
                    }) => {
                        format!("{} in {step}: {message}", kind.as_str())
                    }
                },
            }
        })
        .collect())
}

impl crate::redact::FieldRedaction {
    /// A record fit to show: redacted fields replaced in the payload, their
    /// values masked in every attempt's message.
    pub fn record<'a>(&self, r: &'a EventRecord) -> std::borrow::Cow<'a, EventRecord> {
        let pointers = self.pointers(&r.pipeline);
        if pointers.is_empty() {
            return std::borrow::Cow::Borrowed(r);
        }
        let mut r = r.clone();
        let mask = crate::redact::FieldMask::of(&r.payload, pointers);
        r.payload = mask.payload(&r.payload, pointers);
        for a in &mut r.attempts {
            match &mut a.outcome {
                AttemptOutcome::Failed { message, .. } => {
                    *message = mask.apply(message).into_owned();
                }
                AttemptOutcome::Delivered { receipt } => {
                    *receipt = mask.apply(receipt).into_owned();
                }
                AttemptOutcome::Filtered { .. } | AttemptOutcome::Split { .. } => {}
            }
        }
        std::borrow::Cow::Owned(r)
    }
}
