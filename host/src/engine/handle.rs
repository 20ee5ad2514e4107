//! The engine handle: the pipelines and the shared parts every file of the
//! engine works with, and what the rest of the host may read.

use super::EngineError;
use super::job::Job;
use super::pipeline::Pipeline;
use super::stats::PipelineStats;
use crate::histogram::Histogram;
use crate::sandbox::{Plugin, Sandbox};
use crate::store::Store;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub(super) struct Inner {
    pub store: Arc<dyn Store>,
    pub sandbox: Arc<Sandbox>,
    pub pipelines: HashMap<String, Arc<Pipeline>>,
    pub dedup_window_ms: u64,
    pub keep_history_ms: u64,
    pub keep_history_events: Option<usize>,
    pub keep_dead_letters_ms: Option<u64>,
    pub runtime: tokio::runtime::Handle,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub redaction: crate::redact::FieldRedaction,
    /// Event bytes held in memory, against `server.max_inflight_bytes`.
    pub inflight: super::inflight::Inflight,
    /// Source plugins of poll triggers.
    pub sources: Mutex<Vec<Arc<Plugin>>>,
    /// The store's usage by kind, as last measured.
    pub store_usage: Mutex<crate::store::StoreUsage>,
    pub(super) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(super) receivers: Mutex<Vec<(Arc<Pipeline>, mpsc::UnboundedReceiver<Job>)>>,
    /// Shared with the engines before and after this one.
    pub(super) switch: Arc<super::Switch>,
    /// The engine that replaced this one on a reload.
    pub(super) successor: std::sync::OnceLock<Engine>,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

impl Engine {
    /// Resolves when the engine is told to stop.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Event bytes held in memory now, against `server.max_inflight_bytes`.
    pub fn inflight(&self) -> &super::inflight::Inflight {
        &self.inner.inflight
    }

    /// The payload fields each pipeline hides.
    pub fn redaction(&self) -> &crate::redact::FieldRedaction {
        &self.inner.redaction
    }

    /// The plugin sandbox.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.inner.sandbox
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Names of the configured pipelines.
    pub fn pipeline_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.pipelines.keys().cloned().collect();
        names.sort();
        names
    }

    /// Counters of a pipeline.
    pub fn stats(&self, pipeline: &str) -> Option<&PipelineStats> {
        self.inner.pipelines.get(pipeline).map(|p| &p.stats)
    }

    /// The latency histograms of a pipeline: accept to delivery, and each
    /// step's calls by step label (`step 1 (json-map)`, …, `sink (http-sink)`).
    pub fn latencies(&self, pipeline: &str) -> Option<(&Histogram, Vec<(&str, &Histogram)>)> {
        let p = self.inner.pipelines.get(pipeline)?;
        let steps = p
            .steps
            .iter()
            .chain(&p.sink)
            .map(|s| s.label.as_str())
            .zip(&p.step_latency)
            .collect();
        Some((&p.latency, steps))
    }

    /// Every plugin some pipeline uses, once each, by name.
    pub fn plugins(&self) -> BTreeMap<String, Arc<Plugin>> {
        let mut all: BTreeMap<String, Arc<Plugin>> = self
            .inner
            .pipelines
            .values()
            .flat_map(|p| p.every_step())
            .map(|s| (s.plugin.name.clone(), s.plugin.clone()))
            .collect();
        for p in self
            .inner
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            all.insert(p.name.clone(), p.clone());
        }
        all
    }

    /// The pipelines that run each plugin (by its file name), as a step,
    /// the sink or a canary's candidate.
    pub fn plugin_users(&self) -> BTreeMap<String, Vec<String>> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in self.pipeline_names() {
            let p = &self.inner.pipelines[&name];
            for s in p.every_step() {
                let list = users.entry(s.plugin.name.clone()).or_default();
                if !list.contains(&name) {
                    list.push(name.clone());
                }
            }
        }
        users
    }

    /// Count `plugin` among the plugins in use: a poll trigger's source,
    /// which the pipelines do not hold.
    pub fn uses_source(&self, plugin: Arc<Plugin>) {
        self.inner
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(plugin);
    }

    pub(super) fn pipeline(&self, name: &str) -> Result<&Arc<Pipeline>, EngineError> {
        self.inner
            .pipelines
            .get(name)
            .ok_or_else(|| EngineError::UnknownPipeline {
                name: name.to_string(),
                known: self.pipeline_names().join(", "),
            })
    }
}
