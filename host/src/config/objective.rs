//! What a pipeline promises and how it guards it: who owns it (the
//! catalog), its service-level objectives, and the data-quality gate that
//! pauses it before a bad batch reaches the downstream system.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// The catalog entry of a pipeline, as views show it.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct Catalog {
    /// The team or person who answers for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// What it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much it matters (`1`, `gold`, …: the operator's scale).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Where the runbook is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    /// Free labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The systems its events come from.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    /// The systems it delivers to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub downstream: Vec<String>,
}

impl Catalog {
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        if let Some(r) = &self.runbook
            && !(r.starts_with("https://") || r.starts_with("http://"))
        {
            return Err(format!(
                "{at}: runbook {r:?} is not a URL; write it like \"https://wiki.example.com/runbooks/leads\""
            ));
        }
        let text = [&self.owner, &self.description, &self.tier];
        let lists = [&self.tags, &self.upstream, &self.downstream];
        let too_long = text
            .iter()
            .filter_map(|t| t.as_deref())
            .chain(lists.iter().flat_map(|l| l.iter().map(String::as_str)))
            .find(|t| t.len() > 1024 || t.chars().any(char::is_control));
        if let Some(t) = too_long {
            return Err(format!(
                "{at}: catalog value {:?}… is longer than 1024 bytes or holds control characters",
                t.chars().take(40).collect::<String>()
            ));
        }
        Ok(())
    }
}

/// `slo = { … }`: the pipeline's objectives, judged over rolling windows
/// with error-budget burn rates.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Share of finished events delivered rather than dead-lettered
    /// (filtered events do not count), e.g. `0.999`.
    #[serde(default)]
    pub success: Option<f64>,
    /// Share of delivered events that reach the sink within `within_ms` of
    /// being accepted: `latency = { within_ms = 5000, objective = 0.99 }`
    /// (p99 ≤ 5 s).
    #[serde(default)]
    pub latency: Option<LatencyObjective>,
    /// Longest the pipeline may go without a delivery while events wait
    /// for one: `freshness = "15m"`.
    #[serde(default, deserialize_with = "some_duration")]
    pub freshness: Option<Duration>,
    /// The period the error budget is counted over, in days (default 28,
    /// at most 90).
    #[serde(default = "default_budget_days")]
    pub budget_days: u32,
}

/// A latency objective.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatencyObjective {
    /// Accept to delivery, in ms.
    pub within_ms: u64,
    /// Share of delivered events that must be that fast.
    pub objective: f64,
}

fn default_budget_days() -> u32 {
    28
}

fn check_objective(at: &str, key: &str, v: f64) -> Result<(), String> {
    if v > 0.0 && v < 1.0 {
        return Ok(());
    }
    Err(format!(
        "{at}: {key} must be between 0 and 1, exclusive (0.999 is 99.9%); it is {v}"
    ))
}

impl SloConfig {
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let at = format!("{at}.slo");
        if self.success.is_none() && self.latency.is_none() && self.freshness.is_none() {
            return Err(format!(
                "{at} sets no objective; give success, latency or freshness"
            ));
        }
        if let Some(s) = self.success {
            check_objective(&at, "success", s)?;
        }
        if let Some(l) = &self.latency {
            check_objective(&at, "latency.objective", l.objective)?;
            if l.within_ms == 0 {
                return Err(format!("{at}: latency.within_ms must be at least 1"));
            }
        }
        if self.freshness.is_some_and(|f| f < Duration::from_secs(60)) {
            return Err(format!("{at}: freshness must be at least 1m"));
        }
        if !(1..=90).contains(&self.budget_days) {
            return Err(format!("{at}: budget_days must be between 1 and 90"));
        }
        Ok(())
    }
}

/// `quality = { … }`: the data-quality gate.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QualityConfig {
    /// Share of events failing the contract or dead-lettered as
    /// `invalid-input`, over `window`, past which the gate acts.
    pub max_invalid_ratio: f64,
    /// The window the ratio is taken over (default `"5m"`, at most `"1h"`).
    #[serde(default = "default_quality_window", deserialize_with = "duration")]
    pub window: Duration,
    /// Events in the window before the ratio is judged (default 20).
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// `pause` (default): stop delivering (events are still accepted and
    /// kept) until an operator resumes; `dead-letter-only`: dead-letter the
    /// invalid events and carry on, saying so in the log and the status.
    #[serde(default)]
    pub action: QualityAction,
    /// Pause delivery when the sink's error ratio stays above this for
    /// `sink_error_window` (with at least `min_events` sink calls).
    #[serde(default)]
    pub max_sink_error_ratio: Option<f64>,
    /// How long the sink's error ratio must stay high (default `"10m"`,
    /// longer than the breaker's horizon).
    #[serde(default = "default_sink_window", deserialize_with = "duration")]
    pub sink_error_window: Duration,
}

/// What the quality gate does when it trips.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum QualityAction {
    /// Pause delivery until an operator resumes.
    #[default]
    Pause,
    /// Dead-letter the invalid events, deliver the rest.
    DeadLetterOnly,
}

fn default_quality_window() -> Duration {
    Duration::from_secs(300)
}

fn default_sink_window() -> Duration {
    Duration::from_secs(600)
}

fn default_min_events() -> u64 {
    20
}

impl QualityConfig {
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let at = format!("{at}.quality");
        check_objective(&at, "max_invalid_ratio", self.max_invalid_ratio)?;
        if let Some(r) = self.max_sink_error_ratio {
            check_objective(&at, "max_sink_error_ratio", r)?;
        }
        for (key, w) in [
            ("window", self.window),
            ("sink_error_window", self.sink_error_window),
        ] {
            if w < Duration::from_secs(60) || w > Duration::from_secs(3600) {
                return Err(format!(
                    "{at}: {key} must be between 1m and 1h (minutes are the unit it is counted in)"
                ));
            }
        }
        if self.min_events == 0 {
            return Err(format!("{at}: min_events must be at least 1"));
        }
        Ok(())
    }
}

/// A duration written like `"5m"`, `"90s"` or `"1h 30m"`.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration ({e}); write it like \"5m\", \"90s\" or \"1h\""
        ))
    })
}

pub(super) fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}
