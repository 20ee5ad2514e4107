//! The vocabulary of a plugin call: who calls, what it cost, how it failed,
//! and what a poll found.

use super::bindings::transform::weft::plugin::types as wit;
use super::bindings::{WitError, WitEvent};
use crate::store::ErrorKind;
use std::sync::Arc;

/// Who is calling: used in every log line the plugin causes.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Pipeline name.
    pub pipeline: Arc<str>,
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Event id.
    pub event_id: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Values of the event's redacted fields: masked in the plugin's log lines.
    pub redact: Arc<crate::redact::FieldMask>,
}

/// A failed call, classified for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What the engine does about it.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
    /// For `rate-limited`: how long to wait.
    pub retry_after_ms: Option<u64>,
}

impl CallContext {
    /// A call made for no event (a config check, a describe, a poll).
    pub fn background(pipeline: &str, plugin: &str) -> Self {
        CallContext {
            pipeline: pipeline.into(),
            plugin: plugin.into(),
            event_id: "-".into(),
            correlation_id: "-".into(),
            ..Default::default()
        }
    }
}

impl CallError {
    pub(super) fn new(kind: ErrorKind, message: String) -> Self {
        CallError {
            kind,
            message,
            retry_after_ms: None,
        }
    }
}

impl From<WitError> for CallError {
    fn from(e: WitError) -> Self {
        match e {
            wit::Error::Transient(m) => CallError::new(ErrorKind::Transient, m),
            wit::Error::RateLimited(r) => CallError {
                kind: ErrorKind::RateLimited,
                message: r.message,
                retry_after_ms: Some(r.retry_after_ms),
            },
            wit::Error::InvalidInput(m) => CallError::new(ErrorKind::InvalidInput, m),
            wit::Error::Fatal(m) => CallError::new(ErrorKind::Fatal, m),
        }
    }
}

/// What a transform returned.
pub type TransformOutput = Vec<WitEvent>;

/// What a poll found: (key, payload) per item, the next cursor, and
/// whether more is waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollBatch {
    /// Items, in order.
    pub events: Vec<(String, Vec<u8>)>,
    /// Where the next poll starts; `None` keeps the current cursor.
    pub next_cursor: Option<String>,
    /// Poll again at once.
    pub more: bool,
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCost {
    /// Wall time, in microseconds.
    pub duration_us: u64,
    /// Fuel used (0 when fuel is not metered).
    pub fuel: u64,
    /// Largest linear memory the call asked for, in bytes.
    pub memory_bytes: u64,
}
