//! `[[pipeline]]`: steps, sink, retry, ordering, limits, breaker, redaction
//! and contracts of one pipeline.

use super::objective::{Catalog, QualityConfig, SloConfig};
use super::route::{RouteConfig, RouteOf};
use super::step::{BreakerConfig, RetryConfig, StepConfig, check_breaker, check_retry};
use super::synthetic::SyntheticConfig;
use super::trigger::TriggerConfig;
use super::upstream::{RateLimitConfig, check_rate};
use serde::Deserialize;
use std::path::PathBuf;

/// `[[pipeline]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name; webhooks arrive at `POST /hooks/{name}`.
    pub name: String,
    /// JSON pointer to the idempotency key in the payload; without it the
    /// `Idempotency-Key` header is used, or else the event id.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Transforms, run in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// Where events end up (or `sinks`, for several).
    #[serde(default)]
    pub sink: Option<StepConfig>,
    /// Several sinks, each a route with its own retry, breaker, rate limit
    /// and outcome, chosen per event by `when` (see [`RouteConfig`]).
    #[serde(default)]
    pub sinks: Vec<RouteConfig>,
    /// Retry policy for transient failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How many events of this pipeline are processed at once (default 32).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// JSON pointer to an ordering key: events with the same key are
    /// delivered one at a time, in acceptance order.
    #[serde(default)]
    pub order_by: Option<String>,
    /// Most events waiting in the queue before webhooks get 429 (default 50000).
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Most bytes of event payloads waiting in the queue before webhooks get
    /// 429 (default 268435456, 256 MiB): `max_queue` counts events, this
    /// counts what they weigh on disk.
    #[serde(default = "default_max_queue_bytes")]
    pub max_queue_bytes: u64,
    /// Bytes of payload a second the pipeline takes in, over webhooks,
    /// polls and the API together (default 33554432, 32 MiB/s, with bursts
    /// of twice that or `max_body_bytes`, whichever is more); past it,
    /// senders get 429 with `Retry-After`.
    #[serde(default = "default_max_ingress_bytes_per_sec")]
    pub max_ingress_bytes_per_sec: u64,
    /// Events waiting for delivery past which intake slows down: a new
    /// event waits (up to 2 s) for one to leave, then gets 429. Keeps
    /// intake from outrunning delivery under overload (default: 16 ×
    /// `concurrency`; a paused pipeline is bounded by `max_queue` only).
    #[serde(default)]
    pub max_backlog: Option<usize>,
    /// Most child events one step may split an event into (default 1000);
    /// more is refused as `invalid-input`, alongside the plugin grant's
    /// `max_events_out`.
    #[serde(default = "default_max_split")]
    pub max_split: usize,
    /// Calls per second to this pipeline's sink.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Circuit breaker of the sink (on by default).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// JSON pointers of payload fields never shown: masked in logs, errors,
    /// dead-letter views and API answers (the sink still gets them).
    #[serde(default)]
    pub redact: Vec<String>,
    /// JSON Schema (2020-12) file that webhook payloads must satisfy;
    /// others get `422` with every violation and are not stored. Several
    /// versions side by side: `{ versions = { "1" = "lead-v1.json", "2" =
    /// "lead-v2.json" }, header = "schema-version" }` (or `pointer`).
    #[serde(default)]
    pub contract: Option<ContractConfig>,
    /// How events enter: `trigger = { webhook = { verify = "github", secret = "GH_SECRET" } }`.
    #[serde(default)]
    pub trigger: TriggerConfig,
    /// The team or person who answers for the pipeline.
    #[serde(default)]
    pub owner: Option<String>,
    /// What the pipeline is for.
    #[serde(default)]
    pub description: Option<String>,
    /// How much it matters, on the operator's scale (`1`, `gold`, …).
    #[serde(default)]
    pub tier: Option<String>,
    /// The runbook's URL.
    #[serde(default)]
    pub runbook: Option<String>,
    /// Free labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The systems its events come from.
    #[serde(default)]
    pub upstream: Vec<String>,
    /// The systems it delivers to.
    #[serde(default)]
    pub downstream: Vec<String>,
    /// Service-level objectives: `slo = { success = 0.999, latency = {
    /// within_ms = 5000, objective = 0.99 }, freshness = "15m" }`.
    #[serde(default)]
    pub slo: Option<SloConfig>,
    /// The data-quality gate: `quality = { max_invalid_ratio = 0.2 }`.
    #[serde(default)]
    pub quality: Option<QualityConfig>,
    /// Scheduled synthetic checks, `[[pipeline.synthetic]]`.
    #[serde(default)]
    pub synthetic: Vec<SyntheticConfig>,
    /// Addresses that may send this pipeline webhooks (CIDR blocks, e.g.
    /// `["192.30.252.0/22"]`); others get 403 and are counted as
    /// `address_not_allowed` (default: every address).
    #[serde(default)]
    pub allow_from: Option<super::Allowlist>,
    /// Where a data subject's identity is in this pipeline's payloads, by
    /// name: `subjects = { email = "/email" }`; `weft erase --subject
    /// email=ann@example.com` finds and erases their events.
    #[serde(default)]
    pub subjects: std::collections::BTreeMap<String, String>,
    /// How long this pipeline's data is kept: `retention = { payloads =
    /// "7d", dead_letters = "30d" }`.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Refuse webhooks (403) from a client that showed no verified
    /// certificate (with `server.tls.client_auth = "optional"`).
    #[serde(default)]
    pub require_client_cert: bool,
    /// A sink that undoes what this pipeline's sink may have done: run,
    /// with the event and its failure, once per event key when an event is
    /// dead-lettered after its sink was called (or by hand, `weft dlq
    /// compensate ID`). Compensations run in the pipeline `NAME.compensate`
    /// with keys `compensate:KEY`, retried like any event.
    #[serde(default)]
    pub compensate: Option<super::StepConfig>,
    /// Set on the pipeline of a route: whose route it is.
    #[serde(skip)]
    pub route_of: Option<RouteOf>,
}

/// `retention = { … }` of a pipeline.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Payloads of finished events (delivered, filtered, split) are dropped
    /// this long after they finished; the record, its attempts and counts
    /// stay for the run history (`keep_history_hours`).
    #[serde(default, deserialize_with = "super::objective::some_duration")]
    pub payloads: Option<std::time::Duration>,
    /// Dead letters are dropped this long after they were dead-lettered
    /// (or after `server.keep_dead_letters_hours`, whichever comes first).
    #[serde(default, deserialize_with = "super::objective::some_duration")]
    pub dead_letters: Option<std::time::Duration>,
}

/// A pipeline's contract: one schema file, or versions side by side.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ContractConfig {
    /// `contract = "schemas/lead.json"`
    File(PathBuf),
    /// `contract = { versions = { … }, header = "…" }`
    Versioned(VersionedContract),
}

/// Schema versions accepted side by side, the version read from a header
/// or a JSON pointer of the payload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionedContract {
    /// Version → schema file.
    pub versions: std::collections::BTreeMap<String, PathBuf>,
    /// The request header that names the version.
    #[serde(default)]
    pub header: Option<String>,
    /// The payload field (JSON pointer) that names the version.
    #[serde(default)]
    pub pointer: Option<String>,
    /// The version of a delivery that names none (without it, such a
    /// delivery is refused).
    #[serde(default)]
    pub default: Option<String>,
}

impl ContractConfig {
    /// Every schema file, for path resolution.
    pub fn files_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            ContractConfig::File(f) => vec![f],
            ContractConfig::Versioned(v) => v.versions.values_mut().collect(),
        }
    }

    /// Check what can be checked without reading the files.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        let ContractConfig::Versioned(v) = self else {
            return Ok(());
        };
        if v.versions.is_empty() {
            return Err(format!(
                "{at}.versions is empty; name each version's schema file, e.g. versions = {{ \"1\" = \"lead-v1.json\" }}"
            ));
        }
        match (&v.header, &v.pointer) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "{at}: the version comes from a header or a pointer, not both"
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{at}: say where the version is: header = \"schema-version\" or pointer = \"/schema_version\""
                ));
            }
            (None, Some(p)) if !p.starts_with('/') => {
                return Err(format!(
                    "{at}.pointer {p:?} is not a JSON pointer; write it like \"/schema_version\""
                ));
            }
            _ => {}
        }
        if let Some(d) = &v.default
            && !v.versions.contains_key(d)
        {
            return Err(format!(
                "{at}.default {d:?} is not one of the versions ({})",
                v.versions.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        Ok(())
    }
}

fn default_max_queue_bytes() -> u64 {
    256 * 1024 * 1024
}

fn default_max_ingress_bytes_per_sec() -> u64 {
    32 * 1024 * 1024
}

fn default_max_split() -> usize {
    1000
}

fn default_max_queue() -> usize {
    50_000
}

fn default_concurrency() -> usize {
    32
}

impl PipelineConfig {
    /// Its catalog entry.
    pub fn catalog(&self) -> Catalog {
        Catalog {
            owner: self.owner.clone(),
            description: self.description.clone(),
            tier: self.tier.clone(),
            runbook: self.runbook.clone(),
            tags: self.tags.clone(),
            upstream: self.upstream.clone(),
            downstream: self.downstream.clone(),
        }
    }

    /// Events of this pipeline in flight at once: `concurrency`, or with a
    /// batching sink at least twice `max_events`, so that one batch fills
    /// while the one before it is delivered.
    pub fn in_flight(&self) -> usize {
        match self.sink.as_ref().and_then(|s| s.batch.as_ref()) {
            Some(b) => self.concurrency.max(b.max_events.saturating_mul(2)),
            None => self.concurrency,
        }
    }
}

impl PipelineConfig {
    /// Check everything about this pipeline that can be checked without
    /// I/O; `at` names it in messages.
    pub(super) fn validate(&self, at: &str) -> Result<(), String> {
        let p = self;
        if let Some(k) = &p.idempotency_key
            && !k.starts_with('/')
        {
            return Err(format!(
                "{at}: idempotency_key {k:?} is not a JSON pointer; write it like \"/id\""
            ));
        }
        match (&p.sink, p.sinks.is_empty()) {
            (None, true) => {
                return Err(format!(
                    "{at}: no sink; give sink = {{ plugin = \"http-sink\", … }} or sinks = [ {{ name = \"crm\", plugin = … }}, … ]"
                ));
            }
            (Some(_), false) => {
                return Err(format!(
                    "{at}: sink and sinks are both set; one sink goes in sink, several in sinks"
                ));
            }
            _ => {}
        }
        if p.compensate.is_some() && p.sinks.iter().any(|r| r.name == COMPENSATE) {
            return Err(format!(
                "{at}: a route is named {COMPENSATE:?}, which is the name of the pipeline's compensations; rename the route"
            ));
        }
        if let Some(c) = &p.compensate
            && c.batch.is_some()
        {
            return Err(format!(
                "{at}.compensate: batch is for sinks; a compensation runs one event at a time"
            ));
        }
        let mut routes = std::collections::HashSet::new();
        for (j, r) in p.sinks.iter().enumerate() {
            let place = format!("{at}.sinks[{j}]");
            r.validate(&place)?;
            if !routes.insert(r.name.as_str()) {
                return Err(format!(
                    "{place}: another route already has the name {:?}",
                    r.name
                ));
            }
            if let Some(retry) = &r.retry {
                check_retry(&place, "retry", retry)?;
            }
            if let Some(rl) = &r.rate_limit {
                check_rate(&format!("{place}: rate_limit"), rl)?;
            }
            if let Some(b) = &r.breaker {
                check_breaker(&place, b)?;
            }
        }
        self.catalog().validate(at)?;
        if let Some(slo) = &p.slo {
            slo.validate(at)?;
        }
        if let Some(q) = &p.quality {
            q.validate(at)?;
        }
        let mut checks = std::collections::HashSet::new();
        for c in &p.synthetic {
            c.validate(at)?;
            if !checks.insert(c.name.as_str()) {
                return Err(format!("{at}: two synthetic checks are named {:?}", c.name));
            }
        }
        let route_sinks: Vec<StepConfig> = p.sinks.iter().map(RouteConfig::sink).collect();
        let sinks = p.sink.iter().chain(&route_sinks);
        for (j, s) in p.steps.iter().chain(sinks).enumerate() {
            if s.plugin.is_empty() {
                return Err(format!("{at}: step {} has an empty plugin name", j + 1));
            }
            if let Some(v) = super::version::version_part(&s.plugin) {
                super::version::check(v, true)
                    .map_err(|e| format!("{at}: plugin {:?}: {e}", s.plugin))?;
            }
            let place = if j < p.steps.len() {
                format!("{at}.steps[{j}]")
            } else if p.sink.is_some() {
                format!("{at}.sink")
            } else {
                format!("{at}.sinks[{}]", j - p.steps.len())
            };
            if let Some(c) = &s.canary {
                c.validate(&place)?;
                if s.batch.is_some() {
                    return Err(format!(
                        "{place}: a canary on a batching sink is not supported: a batch goes in one call to one version; remove batch or the canary"
                    ));
                }
            }
            if !s.config.is_object() {
                return Err(format!(
                    "{at}: the config of plugin {} must be a table",
                    s.plugin
                ));
            }
        }
        if let Some(j) = p.steps.iter().position(|s| s.batch.is_some()) {
            return Err(format!(
                "{at}: steps[{j}] has a batch table; batching is a sink setting (move it to the pipeline's sink)"
            ));
        }
        for b in route_sinks
            .iter()
            .chain(&p.sink)
            .filter_map(|s| s.batch.as_ref())
        {
            if !(1..=1000).contains(&b.max_events) {
                return Err(format!(
                    "{at}: sink.batch.max_events must be between 1 and 1000 (it is {})",
                    b.max_events
                ));
            }
            if b.max_bytes == 0 {
                return Err(format!("{at}: sink.batch.max_bytes must be at least 1"));
            }
            if b.max_wait_ms > 60_000 {
                return Err(format!(
                    "{at}: sink.batch.max_wait_ms must be at most 60000 (it is {})",
                    b.max_wait_ms
                ));
            }
        }
        check_retry(at, "retry", &p.retry)?;
        for (j, s) in p.steps.iter().enumerate() {
            if let Some(r) = &s.retry {
                check_retry(at, &format!("steps[{j}].retry"), r)?;
            }
        }
        if let Some(r) = p.sink.as_ref().and_then(|s| s.retry.as_ref()) {
            check_retry(at, "sink.retry", r)?;
        }
        if let Some(k) = &p.order_by
            && !k.starts_with('/')
        {
            return Err(format!(
                "{at}: order_by {k:?} is not a JSON pointer; write it like \"/customer_id\""
            ));
        }
        for (name, pointer) in &p.subjects {
            if !super::values::valid_pipeline_name(name) || !pointer.starts_with('/') {
                return Err(format!(
                    "{at}: subjects.{name} = {pointer:?}: name a subject with letters, digits, '-' and '_', and point at it with a JSON pointer like \"/email\""
                ));
            }
        }
        if let Some(r) = p.redact.iter().find(|r| !r.starts_with('/')) {
            return Err(format!(
                "{at}: redact entry {r:?} is not a JSON pointer; write it like \"/email\""
            ));
        }
        self.trigger.validate(at)?;
        if p.max_queue_bytes == 0 {
            return Err(format!("{at}: max_queue_bytes must be at least 1"));
        }
        if p.max_backlog == Some(0) {
            return Err(format!(
                "{at}: max_backlog must be at least 1; leave it out for 16 × concurrency"
            ));
        }
        if p.max_split == 0 {
            return Err(format!("{at}: max_split must be at least 1"));
        }
        if p.max_ingress_bytes_per_sec == 0 {
            return Err(format!(
                "{at}: max_ingress_bytes_per_sec must be at least 1 (pause the pipeline to stop it taking events)"
            ));
        }
        if p.max_queue == 0 {
            return Err(format!("{at}: max_queue must be at least 1"));
        }
        if let Some(rl) = &p.rate_limit {
            check_rate(&format!("{at}: rate_limit"), rl)?;
        }
        check_breaker(at, &p.breaker)?;
        if p.concurrency == 0 || p.concurrency > 1024 {
            return Err(format!("{at}: concurrency must be between 1 and 1024"));
        }
        Ok(())
    }
}

/// The route name of a pipeline's compensations: `NAME.compensate`.
pub const COMPENSATE: &str = "compensate";

impl PipelineConfig {
    /// The pipeline that runs this one's compensations, when it has a
    /// `compensate` sink: no steps, that sink, this pipeline's retry,
    /// breaker and catalog, and no triggers or checks of its own.
    pub fn compensation_pipeline(&self) -> Option<PipelineConfig> {
        let sink = self.compensate.clone()?;
        Some(PipelineConfig {
            name: super::route::route_pipeline(&self.name, COMPENSATE),
            steps: Vec::new(),
            sink: Some(sink),
            sinks: Vec::new(),
            compensate: None,
            contract: None,
            trigger: Default::default(),
            quality: None,
            synthetic: Vec::new(),
            slo: None,
            route_of: Some(RouteOf {
                parent: self.name.clone(),
                route: COMPENSATE.into(),
            }),
            ..self.clone()
        })
    }

    /// The pipeline of each route of this one: no steps, the route's sink,
    /// and what the route does not set taken from this pipeline (the
    /// catalog, objectives and quality gate included; its synthetic checks
    /// and triggers stay with this pipeline).
    pub fn route_pipelines(&self) -> Vec<PipelineConfig> {
        self.sinks
            .iter()
            .map(|r| PipelineConfig {
                name: super::route::route_pipeline(&self.name, &r.name),
                steps: Vec::new(),
                sink: Some(r.sink()),
                sinks: Vec::new(),
                retry: r.retry.clone().unwrap_or_else(|| self.retry.clone()),
                concurrency: r.concurrency.unwrap_or(self.concurrency),
                rate_limit: r.rate_limit.or(self.rate_limit),
                breaker: r.breaker.clone().unwrap_or_else(|| self.breaker.clone()),
                contract: None,
                trigger: Default::default(),
                // The gate's sink-error pause guards each route's own sink.
                quality: self.quality.clone(),
                synthetic: Vec::new(),
                route_of: Some(RouteOf {
                    parent: self.name.clone(),
                    route: r.name.clone(),
                }),
                ..self.clone()
            })
            .collect()
    }
}
