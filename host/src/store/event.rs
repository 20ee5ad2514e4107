//! The words of an event's life: its id, its states, the kinds of failure
//! and how an attempt ended. The record and its encodings build on these.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Time-ordered unique event id (UUID v7).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EventId([u8; 16]);

impl EventId {
    /// A new id; ids made later sort after earlier ones.
    pub fn new() -> Self {
        EventId(*uuid::Uuid::now_v7().as_bytes())
    }
    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
    /// From 16 raw bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(EventId(b.try_into().ok()?))
    }
    /// When the id was made, in ms since the Unix epoch (its first 48 bits).
    pub fn created_ms(&self) -> u64 {
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(ms)
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        uuid::Uuid::from_bytes(self.0).hyphenated().fmt(f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EventId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(s)
            .map(|u| EventId(*u.as_bytes()))
            .map_err(|_| "that is not an event id (a UUID such as 0190c9d2-…)".to_string())
    }
}

/// Where an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventState {
    /// Waiting for its next attempt.
    Queued,
    /// The sink took it.
    Delivered,
    /// A step dropped it on purpose.
    Filtered,
    /// In the dead-letter queue.
    DeadLettered,
    /// A step split it into child events, each carried on by itself.
    Split,
}

impl EventState {
    /// Lower-case name for the API and the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventState::Queued => "queued",
            EventState::Delivered => "delivered",
            EventState::Filtered => "filtered",
            EventState::DeadLettered => "dead-lettered",
            EventState::Split => "split",
        }
    }
}

/// The kind of a failure, as the WIT error variant gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Retry with backoff.
    Transient,
    /// Retry after the given delay.
    RateLimited,
    /// Dead-letter at once.
    InvalidInput,
    /// Dead-letter at once.
    Fatal,
}

impl ErrorKind {
    /// Whether the engine may retry.
    pub fn retryable(&self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::RateLimited)
    }
    /// Lower-case name, as in the WIT.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::RateLimited => "rate-limited",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Fatal => "fatal",
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// Delivered, with the sink's receipt.
    Delivered {
        /// The sink's receipt.
        receipt: String,
    },
    /// A step dropped the event.
    Filtered {
        /// The step that dropped it.
        step: String,
    },
    /// A step or the sink failed.
    Failed {
        /// `step N (plugin)` or `sink (plugin)`.
        step: String,
        /// Kind of failure.
        kind: ErrorKind,
        /// What went wrong.
        message: String,
        /// When the next attempt is due, if one is.
        retry_at_ms: Option<u64>,
    },
    /// A step returned several events: each became a child event.
    Split {
        /// The step that split it.
        step: String,
        /// How many children.
        children: u32,
    },
}
