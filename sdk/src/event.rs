//! The event a plugin receives and returns.

use crate::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// One event moving through a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// Unique id the host gave the event when it was accepted.
    pub id: String,
    /// Idempotency key: the same key means the same effect downstream.
    pub key: String,
    /// Where the event came from, e.g. `webhook:leads`.
    pub source: String,
    /// MIME type of `payload`, usually `application/json`.
    pub content_type: String,
    /// Metadata carried with the event.
    pub headers: Vec<(String, String)>,
    /// The event body.
    pub payload: Vec<u8>,
    /// Which delivery attempt this is, starting at 1.
    pub attempt: u32,
    /// Id that follows the event through logs and outbound calls.
    pub correlation_id: String,
    /// When the host accepted the event, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

impl Event {
    /// A JSON event with the given payload, for tests and examples.
    pub fn from_json(key: &str, payload: &serde_json::Value) -> Self {
        Event {
            id: format!("test-{key}"),
            key: key.to_string(),
            source: "test".to_string(),
            content_type: "application/json".to_string(),
            payload: serde_json::to_vec(payload).unwrap_or_default(),
            attempt: 1,
            correlation_id: format!("corr-{key}"),
            ..Event::default()
        }
    }

    /// The payload parsed as JSON; a payload that is not JSON is `invalid-input`.
    pub fn json(&self) -> Result<serde_json::Value> {
        self.parse()
    }

    /// The payload parsed into `T`; a mismatch is `invalid-input` naming the problem.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::InvalidInput(format!(
                "event {} payload is not the expected JSON: {e}",
                self.id
            ))
        })
    }

    /// Replace the payload with `value` serialised as JSON.
    pub fn set_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.payload = serde_json::to_vec(value)
            .map_err(|e| Error::Fatal(format!("cannot serialise payload: {e}")))?;
        self.content_type = "application/json".to_string();
        Ok(())
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
