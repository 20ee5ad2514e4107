//! A data subject's erasure: every finished event (in the run history or
//! the dead-letter queue) whose payload names the subject at a pipeline's
//! pointer for it has its payload replaced by a marker, and the value
//! struck from its key, receipts and error messages. Events still queued
//! are left to be delivered and counted, for the erasure to be run again
//! once they are done. The value itself is never logged or audited.

use crate::store::{AttemptOutcome, EventRecord, EventState, Store, now_ms};
use std::sync::Arc;

/// What `POST /api/v1/erase` takes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseRequest {
    /// The subject's name, as the pipelines' `subjects` call it (`email`).
    pub subject: String,
    /// Whose events: the value at the subject's pointer.
    pub value: String,
    /// A pipeline to send the erasure request into, for the systems
    /// downstream: `{"type": "erasure-request", "subject", "value"}`.
    #[serde(default)]
    pub emit: Option<String>,
}

/// What an erasure did.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Erasure {
    /// The subject's name (`email`), as the pipelines' `subjects` call it.
    pub subject: String,
    /// Events erased in the run history.
    pub history: usize,
    /// Dead letters erased.
    pub dead_letters: usize,
    /// Events of the subject still queued, not erased: run the erasure
    /// again once they are delivered.
    pub queued_left: usize,
    /// The erasure request sent into a pipeline, if one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emitted: Option<String>,
}

/// Whether `doc` holds `value` at `pointer`: a string equal to it, case
/// and surrounding blanks aside (an address typed in another case is the
/// same person), or a number written the same.
fn names(doc: &serde_json::Value, pointer: &str, value: &str) -> bool {
    match doc.pointer(pointer) {
        Some(serde_json::Value::String(s)) => s.trim().eq_ignore_ascii_case(value.trim()),
        Some(serde_json::Value::Number(n)) => n.to_string() == value.trim(),
        _ => false,
    }
}

/// `text` with every occurrence of `value` (any case) struck out.
fn strike(text: &str, value: &str) -> String {
    let value = value.trim();
    if value.is_empty() {
        return text.to_string();
    }
    let lower = text.to_lowercase();
    let needle = value.to_lowercase();
    if lower.len() != text.len() || !lower.contains(&needle) {
        // Case folding changed byte offsets (rare scripts): match exactly.
        return text.replace(value, "[erased]");
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(i) = lower[at..].find(&needle) {
        out.push_str(&text[at..at + i]);
        out.push_str("[erased]");
        at += i + needle.len();
    }
    out.push_str(&text[at..]);
    out
}

/// `record` with the subject erased.
fn erased(mut record: EventRecord, value: &str, at_ms: u64) -> EventRecord {
    record.payload = serde_json::json!({
        "erased": true,
        "erased_at": super::rfc3339(at_ms),
    })
    .to_string()
    .into_bytes();
    record.content_type = "application/json".into();
    record.key = strike(&record.key, value);
    for a in &mut record.attempts {
        match &mut a.outcome {
            AttemptOutcome::Delivered { receipt } => *receipt = strike(receipt, value),
            AttemptOutcome::Failed { message, .. } => *message = strike(message, value),
            _ => {}
        }
    }
    record
}

/// Erase `value` of subject `subject` from the events of the pipelines
/// that name it: `pointers` gives (pipeline, pointer) for each.
pub async fn erase(
    store: &Arc<dyn Store>,
    pointers: &[(String, String)],
    subject: &str,
    value: &str,
) -> Result<Erasure, String> {
    if pointers.is_empty() {
        return Err(format!(
            "no pipeline names a subject {subject:?}; add subjects = {{ {subject} = \"/pointer\" }} to the pipelines that carry it"
        ));
    }
    if value.trim().is_empty() {
        return Err("the subject's value is empty".into());
    }
    let mut found = Vec::new();
    let mut queued_left = 0;
    let pointer_of = |pipeline: &str| {
        pointers
            .iter()
            .find(|(p, _)| p == pipeline)
            .map(|(_, pointer)| pointer)
    };
    store
        .each_event(
            // Only the payloads of pipelines that name the subject are read.
            &mut |record| pointer_of(&record.pipeline).is_some(),
            &mut |record| {
                let Some(pointer) = pointer_of(&record.pipeline) else {
                    return true;
                };
                let doc: serde_json::Value =
                    serde_json::from_slice(&record.payload).unwrap_or(serde_json::Value::Null);
                if names(&doc, pointer, value) {
                    if record.state == EventState::Queued {
                        queued_left += 1;
                    } else {
                        found.push(record);
                    }
                }
                true
            },
        )
        .map_err(|e| e.to_string())?;
    let now = now_ms();
    let mut out = Erasure {
        subject: subject.to_string(),
        queued_left,
        ..Erasure::default()
    };
    for record in found {
        let dead = record.state == EventState::DeadLettered;
        store
            .rewrite(&erased(record, value, now))
            .await
            .map_err(|e| e.to_string())?;
        if dead {
            out.dead_letters += 1;
        } else {
            out.history += 1;
        }
    }
    Ok(out)
}

impl super::handle::Engine {
    /// Erase `request.value` of `request.subject` from the events of the
    /// pipelines that name the subject, then, if asked, send the request
    /// into `request.emit` for the systems downstream.
    pub async fn erase_subject(&self, request: &EraseRequest) -> Result<Erasure, String> {
        let pointers = crate::config::subject_pointers(
            self.inner.pipelines.values().map(|p| &p.config),
            &request.subject,
        );
        let mut out = erase(self.store(), &pointers, &request.subject, &request.value).await?;
        let Some(pipeline) = &request.emit else {
            return Ok(out);
        };
        let now = now_ms();
        let body = serde_json::json!({
            "type": "erasure-request",
            "subject": request.subject,
            "value": request.value,
            "erased_events": out.history + out.dead_letters,
            "requested_at": super::rfc3339(now),
        });
        let incoming = super::Incoming {
            body: body.to_string().into_bytes(),
            content_type: "application/json".into(),
            idempotency_header: None,
            correlation_id: None,
            headers: vec![(crate::store::TRIGGER_HEADER.into(), "erasure".into())],
            key: Some(format!("erasure:{}:{now}", request.subject)),
        };
        let accepted = self.accept(pipeline, incoming).await.map_err(|e| {
            format!(
                "the events were erased, but the request could not be sent into {pipeline:?}: {e}"
            )
        })?;
        out.emitted = Some(match accepted {
            super::Accepted::New { id, .. } | super::Accepted::Duplicate { id, .. } => {
                id.to_string()
            }
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_is_struck_in_any_case_and_only_where_it_is() {
        assert_eq!(
            strike("422 from crm: ANN@example.com exists", "ann@example.com"),
            "422 from crm: [erased] exists"
        );
        assert_eq!(strike("ann, annie", "ann"), "[erased], [erased]ie");
        assert_eq!(strike("nothing here", "bob"), "nothing here");
        let doc = serde_json::json!({"email": " Ann@Example.com ", "id": 42});
        assert!(names(&doc, "/email", "ann@example.com"));
        assert!(names(&doc, "/id", "42"));
        assert!(!names(&doc, "/email", "ann@example.org"));
        assert!(!names(&doc, "/missing", "ann@example.com"));
    }
}
