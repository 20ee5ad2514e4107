//! `canary = { … }` on a step or sink: another version of its plugin tried
//! on a share of the events, and when to roll it back.

use serde::Deserialize;

/// `canary = { … }` on a step or sink: `share` of the events (chosen by a
/// stable hash of the idempotency key, so an event's retries stay on one
/// version) run on the candidate `plugin`, the rest on the step's own.
/// Over the last `window` calls of each, when the candidate's failure
/// ratio passes the baseline's by more than `margin` (once it has made
/// `min_calls`), or on any `fatal` error, the candidate is rolled back.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The candidate: `json-map@2`, `json-map@2.1.0`, …
    pub plugin: String,
    /// Share of events for the candidate, above 0 and at most 1.
    pub share: f64,
    /// The candidate's config, when it differs from the step's.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Calls of each version the failure ratios are taken over (default 20).
    #[serde(default = "default_canary_window")]
    pub window: usize,
    /// How much higher the candidate's failure ratio may be than the
    /// baseline's before it is rolled back (default 0.2: 20 points).
    #[serde(default = "default_canary_margin")]
    pub margin: f64,
    /// Candidate calls before the ratio is judged (default 5).
    #[serde(default = "default_canary_min_calls")]
    pub min_calls: usize,
}

fn default_canary_window() -> usize {
    20
}

fn default_canary_margin() -> f64 {
    0.2
}

fn default_canary_min_calls() -> usize {
    5
}

impl CanaryConfig {
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let at = format!("{at}.canary");
        if self.plugin.is_empty() {
            return Err(format!(
                "{at}: plugin is empty; name the candidate, like \"json-map@2\""
            ));
        }
        if let Some(v) = super::version::version_part(&self.plugin) {
            super::version::check(v, true)
                .map_err(|e| format!("{at}: plugin {:?}: {e}", self.plugin))?;
        }
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(format!(
                "{at}: share = {} must be above 0 and at most 1 (0.05 sends 5% of events to the candidate)",
                self.share
            ));
        }
        if self.window == 0 || self.window > 10_000 {
            return Err(format!(
                "{at}: window = {} must be 1 to 10000 calls",
                self.window
            ));
        }
        if self.min_calls == 0 || self.min_calls > self.window {
            return Err(format!(
                "{at}: min_calls = {} must be at least 1 and at most window = {}",
                self.min_calls, self.window
            ));
        }
        if !(0.0..=1.0).contains(&self.margin) {
            return Err(format!("{at}: margin = {} must be 0 to 1", self.margin));
        }
        if self.config.as_ref().is_some_and(|c| !c.is_object()) {
            return Err(format!("{at}: config must be a table"));
        }
        Ok(())
    }
}
