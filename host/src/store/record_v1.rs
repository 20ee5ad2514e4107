//! Event records as version 1 wrote them (no per-step runs, no lineage):
//! still read, and written back as the current version.

use super::record::{AttemptOutcome, EventId, EventState};
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

impl From<EventRecord> for super::record::EventRecord {
    fn from(r: EventRecord) -> Self {
        super::record::EventRecord {
            id: r.id,
            pipeline: r.pipeline,
            key: r.key,
            correlation_id: r.correlation_id,
            content_type: r.content_type,
            headers: r.headers,
            payload: r.payload,
            received_at_ms: r.received_at_ms,
            state: r.state,
            attempts: r
                .attempts
                .into_iter()
                .map(|a| super::record::Attempt {
                    number: a.number,
                    started_at_ms: a.started_at_ms,
                    duration_us: a.duration_us,
                    outcome: a.outcome,
                    steps: Vec::new(),
                })
                .collect(),
            replays_at_ms: r.replays_at_ms,
            round_base: r.round_base,
            order_key: r.order_key,
            lineage: super::record::Lineage::default(),
        }
    }
}
