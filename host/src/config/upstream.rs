//! Limits per upstream origin and the rate-limit shape they share with
//! pipelines' sinks.

use serde::Deserialize;

/// `[upstreams."ORIGIN"]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Requests per second to this origin, from all plugins together.
    pub rate_limit: RateLimitConfig,
}

/// `rate_limit = { per_second = 50, burst = 10 }`: a token bucket (GCRA).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate.
    pub per_second: u32,
    /// How many calls may go at once after a quiet period (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A rate limit's numbers must be at least 1; `at` names it.
pub(super) fn check_rate(at: &str, r: &RateLimitConfig) -> Result<(), String> {
    if r.per_second == 0 || r.burst == Some(0) {
        return Err(format!("{at}: per_second and burst must be at least 1"));
    }
    Ok(())
}
