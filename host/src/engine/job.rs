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

impl Job {
    /// The queue entry this job stands for.
    pub(super) fn entry(&self) -> QueueEntry {
        QueueEntry {
            due_ms: self.due_ms,
            id: self.id,
            attempt: self.attempt,
        }
    }
}
