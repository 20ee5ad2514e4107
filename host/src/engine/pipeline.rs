//! One pipeline at run time: its steps, policies, queue and counters.

use super::breaker::Breaker;
use super::job::Job;
use super::order::KeyGate;
use super::retry::RetryPolicy;
use super::stats::PipelineStats;
use crate::config::PipelineConfig;
use crate::histogram::Histogram;
use crate::limit::Limiter;
use crate::sandbox::Plugin;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A plugin use within a pipeline.
pub(super) struct Step {
    pub plugin: Arc<Plugin>,
    pub config_json: String,
    /// `step 1 (json-map)` or `sink (http-sink)`, for errors and history.
    pub label: String,
    /// Retry policy for this step's failures, when it overrides the pipeline's.
    pub retry: Option<RetryPolicy>,
    /// What the step's output must look like.
    pub contract: Option<crate::contract::Contract>,
}

/// How an event entered its pipeline's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Entry {
    /// Accepted from a trigger.
    Accepted,
    /// Found unfinished in the store at start-up.
    Recovered,
    /// Replayed from the dead-letter queue.
    Replayed,
}

/// One pipeline at run time.
pub(super) struct Pipeline {
    pub name: Arc<str>,
    pub config: PipelineConfig,
    pub steps: Vec<Step>,
    pub sink: Step,
    pub retry: RetryPolicy,
    pub ready: mpsc::UnboundedSender<Job>,
    pub stats: PipelineStats,
    pub breaker: Breaker,
    pub limiter: Option<Limiter>,
    pub gate: Option<KeyGate>,
    pub paused: AtomicBool,
    /// Jobs that arrived while paused.
    pub parked: Mutex<Vec<Job>>,
    /// Ids of the events accepted and not yet finished (time-ordered: the
    /// first is the oldest); their number is the queue depth.
    pub open: Mutex<std::collections::BTreeSet<crate::store::EventId>>,
    /// Accept to delivery, for delivered events.
    pub latency: Histogram,
    /// One call of each step, then the sink (last).
    pub step_latency: Vec<Histogram>,
}

impl Pipeline {
    /// An event left the pipeline for good.
    pub(super) fn close(&self, id: &crate::store::EventId) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Events accepted and not yet finished, and the oldest one's id.
    pub(super) fn open_events(&self) -> (usize, Option<crate::store::EventId>) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        (open.len(), open.first().copied())
    }
}
