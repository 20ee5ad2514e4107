//! One attempt to run, possibly in the future.

use crate::store::{EventId, EventRecord, QueueEntry};
use std::sync::Arc;

/// One attempt to run, possibly in the future.
#[derive(Debug)]
pub struct Job {
    pub(super) pipeline: String,
    pub(super) id: EventId,
    pub(super) attempt: u32,
    pub(super) due_ms: u64,
    /// Ordering key, for pipelines with `order_by`.
    pub(super) order_key: Option<String>,
    /// The record, when the caller already has it (saves a read).
    pub(super) record: Option<Arc<EventRecord>>,
}

/// What an event entering a queue weighs there: its payload's bytes, and
/// whether a synthetic check sent it (it then counts apart).
#[derive(Debug, Clone, Copy)]
pub(super) struct Weight {
    pub bytes: u64,
    pub synthetic: bool,
}

impl Weight {
    pub(super) fn of(record: &EventRecord) -> Weight {
        Weight {
            bytes: record.payload.len() as u64,
            synthetic: record.synthetic().is_some(),
        }
    }
}

/// Largest payload a queued job keeps in memory; a larger one is read
/// again from the store when its attempt starts, so a backlog of large
/// events waits on disk, not in memory.
const KEEP_PAYLOAD_BYTES: usize = 64 * 1024;

impl Job {
    /// The record to keep with a queued job: kept when its payload is small.
    pub(super) fn keep(record: &Arc<EventRecord>) -> Option<Arc<EventRecord>> {
        (record.payload.len() <= KEEP_PAYLOAD_BYTES).then(|| record.clone())
    }

    /// The queue entry this job stands for.
    pub(super) fn entry(&self) -> QueueEntry {
        QueueEntry {
            due_ms: self.due_ms,
            id: self.id,
            attempt: self.attempt,
        }
    }
}
