//! A pipeline's counters, and its state and counters at one moment.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// Counters of one pipeline since start-up.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Webhook requests for this pipeline.
    pub received: AtomicU64,
    /// Requests refused, by reason (the trigger's labels).
    pub rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Events accepted.
    pub accepted: AtomicU64,
    /// Unfinished events found in the store at start-up.
    pub recovered: AtomicU64,
    /// Dead letters replayed.
    pub replayed: AtomicU64,
    /// Attempts started.
    pub attempts: AtomicU64,
    /// Duplicates answered without storing.
    pub duplicates: AtomicU64,
    /// Events delivered.
    pub delivered: AtomicU64,
    /// Events filtered out.
    pub filtered: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retried: AtomicU64,
    /// Events dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Dead letters dropped past `keep_dead_letters_hours`.
    pub dead_letters_expired: AtomicU64,
    /// Events a step split into child events.
    pub split: AtomicU64,
    /// Child events made by splits.
    pub children: AtomicU64,
    /// Attempts running now.
    pub in_flight: AtomicU64,
    /// Jobs handed to the dispatcher and not yet taken by it.
    pub ready: AtomicU64,
    /// Batches handed to a batching sink.
    pub batches: AtomicU64,
    /// Polls of the pipeline's source that answered.
    pub polls: AtomicU64,
    /// Items those polls found.
    pub polled_items: AtomicU64,
    /// Items that were new (the rest had keys already taken).
    pub polled_new: AtomicU64,
    /// Polls (and queue fetches) that failed, by error kind (`store` when
    /// what was found could not be stored, `broker` when a queue's broker
    /// failed, `invalid` for a queued message that can never be stored).
    pub poll_failures: Mutex<BTreeMap<&'static str, u64>>,
    /// When the source's cursor last moved, ms since the epoch (0: never).
    pub cursor_moved_ms: AtomicU64,
}

impl PipelineStats {
    /// Count a failed poll or queue fetch, by kind (`broker`, `store`,
    /// `invalid`, or the plugin's error kind).
    pub fn poll_failed(&self, kind: &'static str) {
        *self
            .poll_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Count a refused request, by the reason's label.
    pub fn reject(&self, reason: &'static str) {
        *self
            .rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    /// Make reasons known with a count of 0, so that every reason a trigger
    /// can give shows in the status and the metrics from the start.
    pub fn expect_rejections(&self, reasons: &[&'static str]) {
        let mut rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        for r in reasons {
            rejected.entry(r).or_default();
        }
    }
}

/// Counters kept over a pipeline's whole life, across restarts: saved in
/// the store each minute and at shutdown (a crash loses at most the last
/// minute of them; the events themselves are never lost).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(default)]
pub struct Totals {
    /// Events accepted.
    pub accepted: u64,
    /// Duplicates answered without storing.
    pub duplicates: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Events filtered out.
    pub filtered: u64,
    /// Events split into children.
    pub split: u64,
    /// Children made by splits.
    pub children: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Attempts started.
    pub attempts: u64,
}

impl Totals {
    /// Field by field, `self + other`.
    pub fn plus(self, o: Totals) -> Totals {
        Totals {
            accepted: self.accepted + o.accepted,
            duplicates: self.duplicates + o.duplicates,
            delivered: self.delivered + o.delivered,
            filtered: self.filtered + o.filtered,
            split: self.split + o.split,
            children: self.children + o.children,
            retried: self.retried + o.retried,
            dead_lettered: self.dead_lettered + o.dead_lettered,
            replayed: self.replayed + o.replayed,
            attempts: self.attempts + o.attempts,
        }
    }
}

impl PipelineStats {
    /// The counters since start that [`Totals`] keeps.
    pub fn totals(&self) -> Totals {
        let get = |a: &AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Totals {
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            delivered: get(&self.delivered),
            filtered: get(&self.filtered),
            split: get(&self.split),
            children: get(&self.children),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            replayed: get(&self.replayed),
            attempts: get(&self.attempts),
        }
    }
}

/// A pipeline's state and counters at one moment.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub name: String,
    /// Delivery paused.
    pub paused: bool,
    /// Events accepted and not yet finished.
    pub queued: u64,
    /// `closed`, `half-open` or `open`.
    pub breaker: String,
    /// Sink calls that waited for the rate limit.
    pub rate_limit_waits: u64,
    /// Ordering keys with events waiting or running.
    pub order_keys_active: usize,
    /// Events accepted since start.
    pub accepted: u64,
    /// Duplicates answered without storing.
    pub duplicates: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Events filtered out.
    pub filtered: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Dead letters dropped past `keep_dead_letters_hours`.
    #[serde(default)]
    pub dead_letters_expired: u64,
    /// Events a step split into child events.
    #[serde(default)]
    pub split: u64,
    /// Child events made by splits.
    #[serde(default)]
    pub children: u64,
    /// Attempts running now.
    pub in_flight: u64,
    /// Batches handed to the sink (with `batch` set on it).
    #[serde(default)]
    pub batches: u64,
    /// Polls of the source that answered (poll triggers).
    #[serde(default)]
    pub polls: u64,
    /// Items the polls found.
    #[serde(default)]
    pub polled_items: u64,
    /// Items that were new.
    #[serde(default)]
    pub polled_new: u64,
    /// Failed polls by error kind.
    #[serde(default)]
    pub poll_failures: BTreeMap<String, u64>,
    /// Since the source's cursor last moved, in ms (0: never moved).
    #[serde(default)]
    pub cursor_age_ms: u64,
    /// Webhook requests received.
    pub received: u64,
    /// Requests refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Unfinished events found in the store at start-up.
    pub recovered: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Age of the oldest unfinished event, in ms (0 when none).
    pub oldest_age_ms: u64,
    /// Payload bytes of the unfinished events.
    #[serde(default)]
    pub queued_bytes: u64,
    /// Dead letters of this pipeline in the dead-letter queue now.
    #[serde(default)]
    pub dead_letters: u64,
    /// The counters over the pipeline's whole life (since its first start).
    #[serde(default)]
    pub lifetime: Totals,
    /// Reconciliation: `accepted + recovered + replayed + children -
    /// (delivered + dead_lettered + filtered + split + queued)`. Anything
    /// but 0 is an event that went missing (or was counted twice), visible
    /// at once.
    pub unaccounted: i64,
    /// Its canaries, by step.
    #[serde(default)]
    pub canaries: Vec<super::CanaryView>,
    /// Why delivery is paused, while it is (`paused by hand`, or the
    /// quality gate's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_reason: Option<String>,
    /// Owner, description, tier, runbook, tags, upstream and downstream.
    #[serde(default)]
    pub catalog: crate::config::Catalog,
    /// The pipeline this one is a route of, for a route's pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_of: Option<String>,
    /// The pipelines of its routes, for a pipeline with `sinks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Its objectives (burn rates, budget, freshness) and quality gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<super::ObjectivesReport>,
    /// Its synthetic checks' results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub synthetic: Vec<super::SyntheticView>,
}

/// Bytes in memory and on disk, by kind.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Usage {
    /// Event bytes held in memory now: bodies being received and accepted,
    /// payloads in an attempt.
    pub inflight_bytes: u64,
    /// The most held at once since start.
    pub inflight_peak_bytes: u64,
    /// `server.max_inflight_bytes`.
    pub max_inflight_bytes: u64,
    /// Payload bytes of unfinished events, over every pipeline (on disk).
    pub queued_bytes: u64,
    /// The store by kind, as last measured.
    pub store: crate::store::StoreUsage,
    /// Why the store cannot write now (weft keeps trying), if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_failing: Option<String>,
}
