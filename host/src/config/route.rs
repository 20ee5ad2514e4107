//! `sinks = [ … ]` on a pipeline: routes to several sinks. Each route
//! becomes a pipeline of its own, named `PIPELINE.ROUTE`, with no steps,
//! the route's sink, retry, breaker and rate limit, and its own queue,
//! history and dead letters. The parent pipeline runs its steps, then makes
//! one child event per route whose `when` holds, stored in the same write
//! that finishes it; from then on a route failing never sends the event to
//! the others again.

use super::step::{BatchConfig, BreakerConfig, RetryConfig, StepConfig};
use super::upstream::RateLimitConfig;
use super::values::empty_object;
use serde::Deserialize;
use std::path::PathBuf;

/// One route of `sinks = [ … ]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name: its pipeline is `PIPELINE.NAME`.
    pub name: String,
    /// The sink plugin.
    pub plugin: String,
    /// The sink's own configuration.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Which events take this route, in the filter plugin's condition
    /// language: `when = { all = [{ pointer = "/country", equals = "US" }] }`.
    /// Without it, every event takes it.
    #[serde(default)]
    pub when: Option<weft_predicate::Config>,
    /// Retry policy of this route (default: the pipeline's).
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// Calls per second to this route's sink.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Circuit breaker of this route's sink (default: the pipeline's).
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    /// Events of this route delivered at once (default: the pipeline's).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// JSON Schema the events handed to this sink must satisfy.
    #[serde(default)]
    pub contract: Option<PathBuf>,
    /// Deliver in batches, as on a single sink.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// Another version of the sink plugin on a share of the events.
    #[serde(default)]
    pub canary: Option<super::canary::CanaryConfig>,
}

/// A derived pipeline's place: the pipeline it is a route of, and the
/// route's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOf {
    /// The pipeline whose `sinks` names the route.
    pub parent: String,
    /// The route's name.
    pub route: String,
}

/// The name of route `route` of pipeline `parent`.
pub fn route_pipeline(parent: &str, route: &str) -> String {
    format!("{parent}.{route}")
}

impl RouteConfig {
    /// The route's sink as a step.
    pub fn sink(&self) -> StepConfig {
        StepConfig {
            plugin: self.plugin.clone(),
            config: self.config.clone(),
            retry: None,
            contract: self.contract.clone(),
            batch: self.batch,
            canary: self.canary.clone(),
        }
    }

    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        if !super::values::valid_pipeline_name(&self.name) {
            return Err(format!(
                "{at}: route name {:?} must be non-empty and use only letters, digits, '-' and '_'",
                self.name
            ));
        }
        if let Some(w) = &self.when {
            w.clone().compile().map_err(|e| format!("{at}.when.{e}"))?;
        }
        if self.concurrency.is_some_and(|c| c == 0 || c > 1024) {
            return Err(format!("{at}: concurrency must be between 1 and 1024"));
        }
        Ok(())
    }
}
