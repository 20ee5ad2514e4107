//! One pipeline at run time: its steps, policies, queue and counters.

use super::breaker::Breaker;
use super::canary::Canary;
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
    /// Another version of the plugin tried on a share of the events.
    pub canary: Option<CanaryStep>,
}

/// A step's canary: the candidate, as a step of its own (its label says
/// `canary`), and the canary's state.
pub(super) struct CanaryStep {
    pub candidate: Box<Step>,
    pub state: Arc<Canary>,
}

impl Step {
    /// The step the event with idempotency key `key` runs on: this one, or
    /// its canary's candidate; with the canary, and whether it is the
    /// candidate.
    pub fn pick(&self, key: &str) -> (&Step, Option<(&Arc<Canary>, bool)>) {
        match &self.canary {
            Some(c) if c.state.takes(key) => (&c.candidate, Some((&c.state, true))),
            Some(c) => (self, Some((&c.state, false))),
            None => (self, None),
        }
    }
}

/// A route to one of several sinks: the pipeline that carries it, and
/// which events take it.
pub(super) struct Route {
    /// The route's name.
    pub name: String,
    /// Its pipeline, `PIPELINE.ROUTE`.
    pub pipeline: String,
    /// The rule an event must pass to take it (none: every event does).
    pub when: Option<weft_predicate::Rule>,
}

impl Route {
    /// Whether an event with this payload and these headers takes the route.
    pub fn takes(&self, payload: &serde_json::Value, headers: &[(String, String)]) -> bool {
        self.when.as_ref().is_none_or(|r| {
            r.verdict_on(&weft_predicate::Subjects {
                doc: payload,
                headers,
            })
            .is_ok()
        })
    }
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
    /// Made by a step that split its parent.
    Child,
    /// Taken in order by the host that works an ordered pipeline on a
    /// store hosts share.
    Sequenced,
}

/// One pipeline at run time.
pub(super) struct Pipeline {
    pub name: Arc<str>,
    pub config: PipelineConfig,
    pub steps: Vec<Step>,
    /// The sink, or none when the pipeline routes to `routes`.
    pub sink: Option<Step>,
    /// Routes to the pipelines of several sinks.
    pub routes: Vec<Route>,
    pub retry: RetryPolicy,
    pub ready: mpsc::UnboundedSender<Job>,
    pub stats: PipelineStats,
    /// The same counters for its synthetic checks' events, kept apart.
    pub synthetic_stats: PipelineStats,
    /// Its synthetic checks' results.
    pub synthetic: super::synthetic::SyntheticChecks,
    /// Its lifetime counters as saved before this start.
    pub lifetime_base: Mutex<super::stats::Totals>,
    pub breaker: Breaker,
    pub limiter: Option<Limiter>,
    /// What it takes in, in bytes a second.
    pub intake: crate::limit::ByteRate,
    pub gate: Option<KeyGate>,
    pub paused: AtomicBool,
    /// Why it is paused, while it is.
    pub pause_reason: Mutex<Option<String>>,
    /// Its objectives and quality gate, when it has any.
    pub objectives: Option<super::objectives::Objectives>,
    /// Jobs that arrived while paused.
    pub parked: Mutex<Vec<Job>>,
    /// Woken (one waiter at a time) whenever an event leaves the pipeline:
    /// intake waiting for the backlog to shrink.
    pub room: tokio::sync::Notify,
    /// The events accepted and not yet finished: their number is the queue
    /// depth, their payload bytes its size.
    pub open: Mutex<OpenEvents>,
    /// Accept to delivery, for delivered events.
    pub latency: Histogram,
    /// One call of each step, then the sink (last).
    pub step_latency: Vec<Histogram>,
    /// Where events wait for their batch, when the sink batches.
    pub batcher: Option<super::batch::Batcher>,
}

/// A pipeline's unfinished events by id (time-ordered: the first is the
/// oldest), with their payload sizes and the sum of them.
#[derive(Debug, Default)]
pub struct OpenEvents {
    ids: std::collections::BTreeMap<crate::store::EventId, u64>,
    bytes: u64,
    /// Places taken by events being accepted (see [`Pipeline::reserve`]).
    reserved: usize,
}

impl OpenEvents {
    /// An event entered the queue with a payload of `bytes`.
    pub(super) fn insert(&mut self, id: crate::store::EventId, bytes: u64) {
        if let Some(old) = self.ids.insert(id, bytes) {
            self.bytes -= old;
        }
        self.bytes += bytes;
    }

    fn remove(&mut self, id: &crate::store::EventId) {
        if let Some(bytes) = self.ids.remove(id) {
            self.bytes -= bytes;
        }
    }
}

impl Pipeline {
    /// Every step that may run an event: the steps, the sink, and the
    /// candidates of their canaries.
    pub(super) fn every_step(&self) -> impl Iterator<Item = &Step> {
        self.steps
            .iter()
            .chain(self.sink.as_ref())
            .flat_map(|s| [Some(s), s.canary.as_ref().map(|c| &*c.candidate)])
            .flatten()
    }

    /// The counters an event counts in: its synthetic check's, or the
    /// pipeline's own.
    pub(super) fn stats_for(&self, synthetic: bool) -> &PipelineStats {
        if synthetic {
            &self.synthetic_stats
        } else {
            &self.stats
        }
    }

    /// Count an outcome in the objectives (a synthetic check's never).
    pub(super) fn observe(
        &self,
        record: &crate::store::EventRecord,
        seen: super::objectives::Seen,
    ) {
        if let (Some(o), None) = (&self.objectives, record.synthetic()) {
            o.record(crate::store::now_ms(), seen);
        }
    }

    /// An event left the pipeline for good.
    pub(super) fn close(&self, id: &crate::store::EventId) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.room.notify_one();
    }

    /// Take a place for one event being accepted if the backlog (with the
    /// places already taken) is under `max`; the place is given back when
    /// the returned guard drops, by which time an accepted event is in
    /// the backlog itself.
    pub(super) fn reserve(&self, max: usize) -> Option<Reservation<'_>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.ids.len() + open.reserved >= max {
            return None;
        }
        open.reserved += 1;
        Some(Reservation(self))
    }

    /// Whether the sink is failing and intake holds events for it: the
    /// breaker is open (or probing) and `breaker.intake = "hold"`.
    pub(super) fn holding(&self) -> bool {
        self.config.breaker.intake == crate::config::BreakerIntake::Hold
            && self.breaker.state() != super::breaker::BreakerState::Closed
    }

    /// Events waiting for delivery past which intake waits for room.
    pub(super) fn max_backlog(&self) -> usize {
        self.config
            .max_backlog
            .unwrap_or(self.config.in_flight().saturating_mul(16))
    }

    /// Events accepted and not yet finished, the oldest one's id, and the
    /// bytes of their payloads.
    pub(super) fn open_events(&self) -> (usize, Option<crate::store::EventId>, u64) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        (open.ids.len(), open.ids.keys().next().copied(), open.bytes)
    }
}

/// A place in the backlog taken by an event being accepted.
pub(super) struct Reservation<'a>(&'a Pipeline);

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(|e| e.into_inner());
        open.reserved = open.reserved.saturating_sub(1);
        drop(open);
        // A refused or duplicate event frees its place for a waiter.
        self.0.room.notify_one();
    }
}
