//! One plugin use (a step or a sink) and the policies a pipeline or a
//! route sets for its sink: batching, retries with backoff, the circuit
//! breaker.

use super::values::empty_object;
use serde::Deserialize;
use std::path::PathBuf;

/// One plugin use: a step or a sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Plugin name (the `.wasm` file stem in the plugin directory).
    pub plugin: String,
    /// The plugin's own configuration, handed to it as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Retry policy for failures of this step, instead of the pipeline's.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// JSON Schema (2020-12) file every event this step returns must
    /// satisfy; a violation is `invalid-input` (dead-lettered).
    #[serde(default)]
    pub contract: Option<PathBuf>,
    /// Sinks only: deliver events in batches,
    /// `batch = { max_events = 100, max_bytes = 1048576, max_wait_ms = 1000 }`.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// Try another version of the plugin on a share of the events:
    /// `canary = { plugin = "json-map@2", share = 0.05 }`.
    #[serde(default)]
    pub canary: Option<super::canary::CanaryConfig>,
}

/// `batch = { … }` on a sink: events that reach the sink together are
/// handed to it in one call. A batch closes when it holds `max_events`,
/// when one more event would take it past `max_bytes` of payload, when its
/// first event has waited `max_wait_ms`, or when every event in flight of
/// the pipeline is in it (no other could join soon). Each event keeps its
/// own outcome, history and retries.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most events in one batch (default 100, at most 1000).
    #[serde(default = "default_batch_events")]
    pub max_events: usize,
    /// Most payload bytes in one batch (default 1048576, 1 MiB); a single
    /// event larger than this goes alone.
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: u64,
    /// Longest a batch waits for more events, in ms (default 1000, at most 60000).
    #[serde(default = "default_batch_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_batch_events() -> usize {
    100
}
fn default_batch_bytes() -> u64 {
    1024 * 1024
}
fn default_batch_wait_ms() -> u64 {
    1000
}

/// `retry = { … }`: exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 5).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt, in ms (default 200).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Largest delay, in ms (default 60000).
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// Growth factor between attempts (default 2.0).
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// `full` (default): a random delay between 0 and the computed one; `none`.
    #[serde(default)]
    pub jitter: Jitter,
    /// Stop retrying once this long has passed since the event was accepted
    /// (or replayed), in ms.
    #[serde(default)]
    pub max_elapsed_ms: Option<u64>,
}

/// Jitter mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Uniform in `[0, delay]`.
    #[default]
    Full,
    /// The computed delay exactly.
    None,
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_ms() -> u64 {
    200
}
fn default_max_ms() -> u64 {
    60_000
}
fn default_multiplier() -> f64 {
    2.0
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            multiplier: default_multiplier(),
            jitter: Jitter::Full,
            max_elapsed_ms: None,
        }
    }
}

/// `breaker = { … }`: the circuit breaker of a pipeline's sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open when at least this share of sink calls in the window failed (default 0.5).
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// ... and the window holds at least this many calls (default 20).
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// Length of the rolling window, in ms (default 30000).
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// How long it stays open before letting probes through, in ms (default 5000).
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// Calls let through while half-open; all must succeed to close (default 1).
    #[serde(default = "default_probes")]
    pub probes: u32,
    /// `false` turns the breaker off.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// What webhooks get while it is open: `hold` (default) keeps taking
    /// them durably up to `max_queue` and `max_queue_bytes`, answering
    /// `202` as usual (they wait without using attempts); `refuse` answers
    /// `429` with `Retry-After`. Polls wait either way.
    #[serde(default)]
    pub intake: BreakerIntake,
}

/// What intake does while a pipeline's breaker is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BreakerIntake {
    /// Keep taking events durably while the queue has room.
    #[default]
    Hold,
    /// Answer `429` with `Retry-After`.
    Refuse,
}

fn default_failure_ratio() -> f64 {
    0.5
}
fn default_min_calls() -> u32 {
    20
}
fn default_window_ms() -> u64 {
    30_000
}
fn default_open_ms() -> u64 {
    5_000
}
fn default_probes() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_ratio: default_failure_ratio(),
            min_calls: default_min_calls(),
            window_ms: default_window_ms(),
            open_ms: default_open_ms(),
            probes: default_probes(),
            enabled: true,
            intake: BreakerIntake::Hold,
        }
    }
}

pub(super) fn check_breaker(at: &str, b: &BreakerConfig) -> Result<(), String> {
    if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
        return Err(format!("{at}: breaker.failure_ratio must be in (0, 1]"));
    }
    if b.min_calls == 0 || b.probes == 0 || b.window_ms == 0 || b.open_ms == 0 {
        return Err(format!(
            "{at}: breaker.min_calls, probes, window_ms and open_ms must be at least 1"
        ));
    }
    Ok(())
}

pub(super) fn check_retry(at: &str, key: &str, r: &RetryConfig) -> Result<(), String> {
    if r.max_attempts == 0 {
        return Err(format!("{at}: {key}.max_attempts must be at least 1"));
    }
    if r.initial_ms > r.max_ms {
        return Err(format!(
            "{at}: {key}.initial_ms ({}) is larger than {key}.max_ms ({})",
            r.initial_ms, r.max_ms
        ));
    }
    if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
        return Err(format!("{at}: {key}.multiplier must be a number >= 1.0"));
    }
    Ok(())
}
