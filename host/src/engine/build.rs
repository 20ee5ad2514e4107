//! Building the engine: pipelines resolved against loaded plugins, configs
//! checked by the plugins themselves.

use super::EngineError;
use super::breaker::Breaker;
use super::handle::{Engine, Inner};
use super::order::KeyGate;
use super::pipeline::{Pipeline, Step};
use super::retry::RetryPolicy;
use super::stats::PipelineStats;
use crate::config::Config;
use crate::histogram::Histogram;
use crate::limit::Limiter;
use crate::sandbox::{Plugin, Sandbox, World};
use crate::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

impl Engine {
    /// Resolve every pipeline's plugins and check each step's config by
    /// configuring a real instance. Nothing runs until [`Engine::start`].
    pub async fn build(
        config: &Config,
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        plugins: &BTreeMap<String, Arc<Plugin>>,
        load_failures: &BTreeMap<String, String>,
        switch: &Arc<super::Switch>,
    ) -> Result<Engine, EngineError> {
        let mut pipelines = HashMap::new();
        let mut receivers = Vec::new();
        for p in &config.pipelines {
            let step = |i: Option<usize>,
                        s: &crate::config::StepConfig|
             -> Result<Step, EngineError> {
                let label = match i {
                    Some(i) => format!("step {} ({})", i + 1, s.plugin),
                    None => format!("sink ({})", s.plugin),
                };
                let plugin = crate::sandbox::versions::find(
                    plugins,
                    load_failures,
                    &s.plugin,
                    &config.plugins.dir,
                )
                .map_err(|why| {
                    EngineError::Build(format!("pipeline {:?}, {label}: {why}", p.name))
                })?;
                // Named after the file that runs: `step 1 (json-map@2.0.0)`
                // when the step asked for `json-map`.
                let label = match i {
                    Some(i) => format!("step {} ({})", i + 1, plugin.name),
                    None => format!("sink ({})", plugin.name),
                };
                let want = if i.is_some() {
                    World::Transform
                } else {
                    World::Sink
                };
                if plugin.world != want {
                    return Err(EngineError::Build(format!(
                        "pipeline {:?}, {label}: plugin {:?} implements {} but this place needs {want}",
                        p.name, s.plugin, plugin.world
                    )));
                }
                let contract = s
                    .contract
                    .as_deref()
                    .map(crate::contract::Contract::load)
                    .transpose()
                    .map_err(|e| {
                        EngineError::Build(format!("pipeline {:?}, {label}: {e}", p.name))
                    })?;
                Ok(Step {
                    plugin,
                    config_json: s.config.to_string(),
                    label,
                    retry: s.retry.clone().map(RetryPolicy::new),
                    contract,
                    canary: None,
                })
            };
            // A step, with its canary's candidate when it has one: the
            // same step with the candidate plugin (and its own config).
            let with_canary = |i: Option<usize>,
                               s: &crate::config::StepConfig|
             -> Result<Step, EngineError> {
                let mut baseline = step(i, s)?;
                if let Some(c) = &s.canary {
                    let as_step = crate::config::StepConfig {
                        plugin: c.plugin.clone(),
                        config: c.config.clone().unwrap_or_else(|| s.config.clone()),
                        canary: None,
                        ..s.clone()
                    };
                    let mut candidate = step(i, &as_step)?;
                    candidate.label = format!("{}, canary)", candidate.label.trim_end_matches(')'));
                    let place = i.map_or("sink".to_string(), |i| format!("step {}", i + 1));
                    let state = Arc::new(super::canary::Canary::new(
                        &candidate.plugin,
                        c.clone(),
                        &p.name,
                        &place,
                        &*store,
                    ));
                    baseline.canary = Some(super::pipeline::CanaryStep {
                        candidate: Box::new(candidate),
                        state,
                    });
                }
                Ok(baseline)
            };
            let steps = p
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| with_canary(Some(i), s))
                .collect::<Result<Vec<_>, _>>()?;
            let sink = p.sink.as_ref().map(|s| with_canary(None, s)).transpose()?;
            let routes = p
                .sinks
                .iter()
                .map(|r| super::pipeline::Route {
                    name: r.name.clone(),
                    pipeline: crate::config::route_pipeline(&p.name, &r.name),
                    // Checked with the config.
                    when: r.when.clone().and_then(|w| w.compile().ok()),
                })
                .collect();
            let keys = (0..steps.len())
                .map(|i| format!("steps[{i}]"))
                .chain(["sink".to_string()]);
            // Every plugin that may run checks its config: each step's, and
            // each candidate's.
            let checked: Vec<(&Step, String)> = steps
                .iter()
                .chain(sink.as_ref())
                .zip(keys)
                .flat_map(|(s, key)| {
                    let candidate = s
                        .canary
                        .as_ref()
                        .map(|c| (&*c.candidate, format!("{key}.canary.config")));
                    [(s, format!("{key}.config"))].into_iter().chain(candidate)
                })
                .collect();
            for (s, key) in checked {
                let value = serde_json::from_str(&s.config_json).unwrap_or_default();
                crate::schema::check_plugin_config(&sandbox, &s.plugin, &value, &key)
                    .await
                    .map_err(|e| {
                        EngineError::Build(format!(
                            "pipeline {:?}, {}: the config breaks the plugin's own schema: {e}",
                            p.name, s.label
                        ))
                    })?;
                sandbox
                    .check_config(&s.plugin, &s.config_json, &p.name)
                    .await
                    .map_err(|e| {
                        EngineError::Build(format!(
                            "pipeline {:?}, {}: the plugin rejected its config: {}",
                            p.name, s.label, e.message
                        ))
                    })?;
                sandbox
                    .check_plan(&s.plugin, &s.config_json, &p.name)
                    .await
                    .map_err(|e| {
                        EngineError::Build(format!(
                            "pipeline {:?}, {}: {}",
                            p.name, s.label, e.message
                        ))
                    })?;
            }
            let (ready, rx) = mpsc::unbounded_channel();
            let pipeline = Arc::new(Pipeline {
                name: p.name.as_str().into(),
                config: p.clone(),
                steps,
                sink,
                routes,
                retry: RetryPolicy::new(p.retry.clone()),
                ready,
                stats: PipelineStats::default(),
                synthetic_stats: PipelineStats::default(),
                synthetic: super::synthetic::SyntheticChecks::new(
                    p.synthetic.iter().map(|c| c.name.as_str()),
                ),
                lifetime_base: Mutex::default(),
                breaker: Breaker::new(p.breaker.clone()),
                limiter: p.rate_limit.as_ref().map(Limiter::new),
                intake: crate::limit::ByteRate::new(
                    p.max_ingress_bytes_per_sec,
                    p.max_ingress_bytes_per_sec
                        .saturating_mul(2)
                        .max(config.server.max_body_bytes as u64),
                ),
                gate: p.order_by.as_ref().map(|_| KeyGate::default()),
                paused: AtomicBool::new(false),
                pause_reason: Mutex::new(None),
                objectives: super::objectives::Objectives::new(
                    p.slo.as_ref(),
                    p.quality.as_ref(),
                    crate::store::now_ms(),
                ),
                parked: Mutex::new(Vec::new()),
                room: tokio::sync::Notify::new(),
                open: Mutex::default(),
                latency: Histogram::default(),
                step_latency: (0..=p.steps.len()).map(|_| Histogram::default()).collect(),
                batcher: p
                    .sink
                    .as_ref()
                    .and_then(|s| s.batch)
                    .map(super::batch::Batcher::new),
            });
            receivers.push((pipeline.clone(), rx));
            pipelines.insert(p.name.clone(), pipeline);
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                store,
                sandbox,
                pipelines,
                dedup_window_ms: config.server.dedup_window_hours * 3_600_000,
                keep_history_ms: config.server.keep_history_hours * 3_600_000,
                keep_history_events: config.server.keep_history_events,
                keep_dead_letters_ms: match config.server.keep_dead_letters_hours {
                    0 => None,
                    h => Some(h.saturating_mul(3_600_000)),
                },
                runtime: tokio::runtime::Handle::current(),
                redaction: crate::redact::FieldRedaction::new(config.redact_lists()),
                inflight: super::inflight::Inflight::new(config.server.max_inflight_bytes),
                store_usage: Mutex::default(),
                sources: Mutex::default(),
                stop: tokio::sync::watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
                receivers: Mutex::new(receivers),
                switch: switch.clone(),
                successor: std::sync::OnceLock::new(),
            }),
        };
        Ok(engine)
    }
}
