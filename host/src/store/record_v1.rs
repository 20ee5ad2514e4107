//! Event records as version 1 wrote them (no per-step runs, no lineage):
//! still read (see `record.rs`), and written back as the current version.

use super::event::{AttemptOutcome, EventId, EventState};
use serde::Deserialize;

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Attempt {
    pub number: u32,
    pub started_at_ms: u64,
    pub duration_us: u64,
    pub outcome: AttemptOutcome,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct EventRecord {
    pub id: EventId,
    pub pipeline: String,
    pub key: String,
    pub correlation_id: String,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
    pub received_at_ms: u64,
    pub state: EventState,
    pub attempts: Vec<Attempt>,
    pub replays_at_ms: Vec<u64>,
    pub round_base: u32,
    pub order_key: Option<String>,
}
