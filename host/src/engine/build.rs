//! Building the engine: pipelines resolved against loaded plugins, configs
//! checked by the plugins themselves, and work recovered from the store.

use super::breaker::{Breaker, BreakerState};
use super::order::KeyGate;
use super::retry::RetryPolicy;
use super::run::Job;
use crate::config::{Config, PipelineConfig};
use crate::histogram::Histogram;
use crate::limit::Limiter;
use crate::sandbox::{Plugin, Sandbox, World};
use crate::store::{Store, now_ms};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The webhook verifier a pipeline's config asks for, with its keys.
fn verifier_of(
    p: &PipelineConfig,
    secrets: &crate::secrets::Secrets,
) -> Result<Option<crate::trigger::verify::Verifier>, BuildError> {
    let Some(w) = &p.trigger.webhook else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    for name in w.secret_names() {
        let value = secrets.get(name).ok_or_else(|| {
            BuildError(format!(
                "pipeline {:?}: the webhook secret {name} is not loaded; export {}",
                p.name,
                crate::secrets::env_var(name)
            ))
        })?;
        keys.push(
            crate::trigger::verify::key_bytes(w.verify, value)
                .map_err(|e| BuildError(format!("pipeline {:?}: secret {name}: {e}", p.name)))?,
        );
    }
    Ok(Some(crate::trigger::verify::Verifier {
        preset: w.verify,
        keys,
        tolerance_s: w.tolerance_s,
        header: w
            .header
            .clone()
            .unwrap_or_else(|| "x-signature".into())
            .to_ascii_lowercase(),
    }))
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

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
}

/// Why a webhook was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not `application/json` (415).
    UnsupportedMediaType,
    /// Over `max_body_bytes` (413).
    TooLarge,
    /// The body could not be read (400).
    UnreadableBody,
    /// Not valid JSON (400).
    InvalidJson,
    /// No idempotency key where one is required (422).
    MissingKey,
    /// Queue full, breaker open (429).
    Backpressure,
    /// The store failed (503).
    StoreError,
    /// The webhook signature did not verify (401).
    Signature,
    /// The payload breaks the pipeline's contract (422).
    Contract,
}

impl Rejection {
    /// Every reason, in label order.
    pub const ALL: [Rejection; 9] = [
        Rejection::UnsupportedMediaType,
        Rejection::TooLarge,
        Rejection::UnreadableBody,
        Rejection::InvalidJson,
        Rejection::MissingKey,
        Rejection::Backpressure,
        Rejection::StoreError,
        Rejection::Signature,
        Rejection::Contract,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::TooLarge => "too_large",
            Rejection::UnreadableBody => "unreadable_body",
            Rejection::InvalidJson => "invalid_json",
            Rejection::MissingKey => "missing_key",
            Rejection::Backpressure => "backpressure",
            Rejection::StoreError => "store_error",
            Rejection::Signature => "signature",
            Rejection::Contract => "contract",
        }
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
}

/// Counters of one pipeline since start-up.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Webhook requests for this pipeline.
    pub received: AtomicU64,
    /// Requests refused, by [`Rejection::ALL`] index.
    pub rejected: [AtomicU64; 9],
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
    /// Attempts running now.
    pub in_flight: AtomicU64,
}

impl PipelineStats {
    /// Count a refused webhook.
    pub fn reject(&self, why: Rejection) {
        let i = Rejection::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A pipeline's state and counters at one moment.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineStatus {
    /// Pipeline name.
    pub name: String,
    /// Delivery paused.
    pub paused: bool,
    /// Events accepted and not yet finished.
    pub queued: u64,
    /// `closed`, `half-open` or `open`.
    pub breaker: &'static str,
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
    /// Attempts running now.
    pub in_flight: u64,
    /// Webhook requests received.
    pub received: u64,
    /// Requests refused, by reason.
    pub rejected: BTreeMap<&'static str, u64>,
    /// Unfinished events found in the store at start-up.
    pub recovered: u64,
    /// Dead letters replayed.
    pub replayed: u64,
    /// Attempts started.
    pub attempts: u64,
    /// Age of the oldest unfinished event, in ms (0 when none).
    pub oldest_age_ms: u64,
    /// Reconciliation: `accepted + recovered + replayed - (delivered +
    /// dead_lettered + filtered + queued)`. Anything but 0 is an event that
    /// went missing (or was counted twice), visible at once.
    pub unaccounted: i64,
}

/// One pipeline at run time.
pub(super) struct Pipeline {
    pub name: Arc<str>,
    pub config: PipelineConfig,
    pub steps: Vec<Step>,
    pub sink: Step,
    pub retry: RetryPolicy,
    pub ready: mpsc::UnboundedSender<Job>,
    pub stats: PipelineStats,
    pub breaker: Breaker,
    pub limiter: Option<Limiter>,
    pub gate: Option<KeyGate>,
    pub paused: AtomicBool,
    /// Jobs that arrived while paused.
    pub parked: Mutex<Vec<Job>>,
    /// Ids of the events accepted and not yet finished (time-ordered: the
    /// first is the oldest); their number is the queue depth.
    pub open: Mutex<std::collections::BTreeSet<crate::store::EventId>>,
    /// Accept to delivery, for delivered events.
    pub latency: Histogram,
    /// One call of each step, then the sink (last).
    pub step_latency: Vec<Histogram>,
    /// Signature check of the pipeline's webhooks.
    pub verifier: Option<crate::trigger::verify::Verifier>,
    /// What webhook payloads must look like.
    pub contract: Option<crate::contract::Contract>,
    /// The source plugin of a poll trigger.
    pub source: Option<Arc<Plugin>>,
}

impl Pipeline {
    /// An event left the pipeline for good.
    pub(super) fn close(&self, id: &crate::store::EventId) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Events accepted and not yet finished, and the oldest one's id.
    fn open_events(&self) -> (usize, Option<crate::store::EventId>) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        (open.len(), open.first().copied())
    }
}

pub(super) struct Inner {
    pub store: Arc<dyn Store>,
    pub sandbox: Arc<Sandbox>,
    pub pipelines: HashMap<String, Arc<Pipeline>>,
    pub dedup_window_ms: u64,
    pub keep_history_ms: u64,
    pub keep_history_events: Option<usize>,
    pub runtime: tokio::runtime::Handle,
    pub stop: tokio::sync::watch::Sender<bool>,
    pub redaction: crate::redact::FieldRedaction,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    receivers: Mutex<Vec<(Arc<Pipeline>, mpsc::UnboundedReceiver<Job>)>>,
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

impl Engine {
    /// Resolve every pipeline's plugins and check each step's config by
    /// configuring a real instance. Nothing runs until [`Engine::start`].
    pub async fn build(
        config: &Config,
        store: Arc<dyn Store>,
        sandbox: Arc<Sandbox>,
        plugins: &BTreeMap<String, Arc<Plugin>>,
        load_failures: &BTreeMap<String, String>,
    ) -> Result<Engine, BuildError> {
        let mut pipelines = HashMap::new();
        let mut receivers = Vec::new();
        for p in &config.pipelines {
            let step = |i: Option<usize>,
                        s: &crate::config::StepConfig|
             -> Result<Step, BuildError> {
                let label = match i {
                    Some(i) => format!("step {} ({})", i + 1, s.plugin),
                    None => format!("sink ({})", s.plugin),
                };
                if let Some(why) = load_failures.get(&s.plugin) {
                    return Err(BuildError(format!(
                        "pipeline {:?}, {label}: plugin {:?} failed to load: {why}",
                        p.name, s.plugin
                    )));
                }
                let plugin = plugins.get(&s.plugin).cloned().ok_or_else(|| {
                    let wanted = config.plugins.dir.join(format!("{}.wasm", s.plugin));
                    let alt = config
                        .plugins
                        .dir
                        .join(format!("{}.wasm", s.plugin.replace('-', "_")));
                    let hint = if alt != wanted && alt.exists() {
                        format!("; found {}, rename it to {}.wasm", alt.display(), s.plugin)
                    } else {
                        String::new()
                    };
                    BuildError(format!(
                        "pipeline {:?}, {label}: plugin {:?} not found: looked for {}{hint}",
                        p.name,
                        s.plugin,
                        wanted.display()
                    ))
                })?;
                let want = if i.is_some() {
                    World::Transform
                } else {
                    World::Sink
                };
                if plugin.world != want {
                    return Err(BuildError(format!(
                        "pipeline {:?}, {label}: plugin {:?} implements {} but this place needs {want}",
                        p.name, s.plugin, plugin.world
                    )));
                }
                let contract = s
                    .contract
                    .as_deref()
                    .map(crate::contract::Contract::load)
                    .transpose()
                    .map_err(|e| BuildError(format!("pipeline {:?}, {label}: {e}", p.name)))?;
                Ok(Step {
                    plugin,
                    config_json: s.config.to_string(),
                    label,
                    retry: s.retry.clone().map(RetryPolicy::new),
                    contract,
                })
            };
            let steps = p
                .steps
                .iter()
                .enumerate()
                .map(|(i, s)| step(Some(i), s))
                .collect::<Result<Vec<_>, _>>()?;
            let sink = step(None, &p.sink)?;
            let source = match &p.trigger.poll {
                None => None,
                Some(poll) => {
                    let plugin = plugins.get(&poll.plugin).cloned().ok_or_else(|| {
                        let why = load_failures
                            .get(&poll.plugin)
                            .map(|e| format!(": {e}"))
                            .unwrap_or_else(|| " (no such .wasm in the plugin directory)".into());
                        BuildError(format!(
                            "pipeline {:?}, trigger.poll: plugin {:?} is not loaded{why}",
                            p.name, poll.plugin
                        ))
                    })?;
                    if plugin.world != World::Source {
                        return Err(BuildError(format!(
                            "pipeline {:?}, trigger.poll: plugin {:?} implements {} but a poll trigger needs {}",
                            p.name,
                            poll.plugin,
                            plugin.world,
                            World::Source
                        )));
                    }
                    sandbox
                        .check_config(&plugin, &poll.config.to_string(), &p.name)
                        .await
                        .map_err(|e| {
                            BuildError(format!(
                                "pipeline {:?}, trigger.poll: the plugin rejected its config: {}",
                                p.name, e.message
                            ))
                        })?;
                    Some(plugin)
                }
            };
            for s in steps.iter().chain([&sink]) {
                sandbox
                    .check_config(&s.plugin, &s.config_json, &p.name)
                    .await
                    .map_err(|e| {
                        BuildError(format!(
                            "pipeline {:?}, {}: the plugin rejected its config: {}",
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
                retry: RetryPolicy::new(p.retry.clone()),
                ready,
                stats: PipelineStats::default(),
                breaker: Breaker::new(p.breaker.clone()),
                limiter: p.rate_limit.as_ref().map(Limiter::new),
                gate: p.order_by.as_ref().map(|_| KeyGate::default()),
                paused: AtomicBool::new(store.is_paused(&p.name)),
                parked: Mutex::new(Vec::new()),
                open: Mutex::default(),
                latency: Histogram::default(),
                step_latency: (0..=p.steps.len()).map(|_| Histogram::default()).collect(),
                verifier: verifier_of(p, sandbox.secrets())?,
                source,
                contract: p
                    .contract
                    .as_deref()
                    .map(crate::contract::Contract::load)
                    .transpose()
                    .map_err(|e| BuildError(format!("pipeline {:?}: {e}", p.name)))?,
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
                runtime: tokio::runtime::Handle::current(),
                redaction: crate::redact::FieldRedaction::from_config(config),
                stop: tokio::sync::watch::channel(false).0,
                tasks: Mutex::new(Vec::new()),
                receivers: Mutex::new(receivers),
            }),
        };
        Ok(engine)
    }

    /// Start the workers, requeue the work found in the store, and start the
    /// retention sweep. Returns how many queued events were recovered.
    pub fn start(&self) -> Result<usize, BuildError> {
        let receivers = std::mem::take(
            &mut *self
                .inner
                .receivers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut tasks = Vec::new();
        for (pipeline, rx) in receivers {
            tasks.push(tokio::spawn(super::run::dispatch(
                self.clone(),
                pipeline,
                rx,
            )));
        }
        let mut queued = self
            .inner
            .store
            .queue()
            .map_err(|e| BuildError(e.to_string()))?;
        // Event ids are time-ordered: this is acceptance order, which ordered
        // pipelines must keep.
        queued.sort_by_key(|e| e.id);
        let mut recovered = 0;
        for crate::store::QueueEntry {
            due_ms: due,
            id,
            attempt,
        } in queued
        {
            let Ok(Some(rec)) = self.inner.store.event(&id) else {
                continue;
            };
            if self.inner.pipelines.contains_key(&rec.pipeline) {
                self.requeued(
                    Job {
                        pipeline: rec.pipeline.clone(),
                        id,
                        attempt,
                        due_ms: due,
                        order_key: rec.order_key.clone(),
                        record: None,
                    },
                    Entry::Recovered,
                );
                recovered += 1;
            } else {
                tracing::warn!(event = %id, pipeline = %rec.pipeline,
                    "queued event belongs to a pipeline that is no longer configured; it stays in the store");
            }
        }
        tasks.push(tokio::spawn(super::janitor::run(self.clone())));
        for p in self.inner.pipelines.values() {
            if let Some((poll, plugin)) = p.config.trigger.poll.as_ref().zip(p.source.clone()) {
                // With a schedule too, the source is polled on its ticks.
                let pace = match &p.config.trigger.schedule {
                    Some(s) => crate::trigger::poll::Pace::Schedule(Box::new(
                        s.schedule().map_err(BuildError)?,
                    )),
                    None => crate::trigger::poll::Pace::Every(std::time::Duration::from_millis(
                        poll.every_ms,
                    )),
                };
                tasks.push(tokio::spawn(crate::trigger::poll::run(
                    self.clone(),
                    p.name.to_string(),
                    plugin,
                    poll.config.to_string(),
                    pace,
                    std::time::Duration::from_millis(poll.max_backoff_ms),
                )));
                continue;
            }
            if let Some(trigger) = &p.config.trigger.schedule {
                let schedule = trigger.schedule().map_err(BuildError)?;
                tasks.push(tokio::spawn(crate::trigger::schedule::run(
                    self.clone(),
                    p.name.to_string(),
                    schedule,
                )));
            }
        }
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        Ok(recovered)
    }

    /// Stop taking jobs, wait (up to `grace`) for attempts in progress to
    /// finish, and end the engine's tasks. Unfinished work stays queued in
    /// the store for the next start.
    pub async fn stop(&self, grace: std::time::Duration) {
        let _ = self.inner.stop.send(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for mut task in tasks {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
    }

    /// Send a job to its pipeline now, or when it is due.
    pub(super) fn schedule(&self, job: Job) {
        let wait = job.due_ms.saturating_sub(now_ms());
        self.send_later(job, std::time::Duration::from_millis(wait));
    }

    /// Hand a job to its pipeline's dispatcher after `wait` (at once when zero).
    /// The job keeps its due time, which names its queue entry.
    pub(super) fn send_later(&self, job: Job, wait: std::time::Duration) {
        let Some(p) = self.inner.pipelines.get(&job.pipeline) else {
            return;
        };
        if wait.is_zero() {
            let _ = p.ready.send(job);
        } else {
            let ready = p.ready.clone();
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = ready.send(job);
            });
        }
    }

    /// An event entered (or re-entered) its pipeline's queue: count it, give
    /// it its place in its key's lane, and schedule it.
    pub(super) fn requeued(&self, job: Job, entry: Entry) {
        if let Some(p) = self.inner.pipelines.get(&job.pipeline) {
            p.open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job.id);
            match entry {
                Entry::Accepted => {}
                Entry::Recovered => {
                    p.stats.recovered.fetch_add(1, Ordering::Relaxed);
                }
                Entry::Replayed => {
                    p.stats.replayed.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let (Some(gate), Some(key)) = (&p.gate, &job.order_key) {
                gate.enter(key, job.id);
            }
        }
        self.schedule(job);
    }

    /// An event left its pipeline for good: release the next one of its key.
    pub(super) fn finished(
        &self,
        pipeline: &str,
        order_key: Option<&str>,
        id: crate::store::EventId,
    ) {
        let Some(p) = self.inner.pipelines.get(pipeline) else {
            return;
        };
        if let (Some(gate), Some(key)) = (&p.gate, order_key)
            && let Some(next) = gate.leave(key, id)
        {
            self.schedule(next);
        }
    }

    /// The contract of a pipeline's webhook payloads, if it has one.
    pub fn contract(&self, pipeline: &str) -> Option<&crate::contract::Contract> {
        self.inner.pipelines.get(pipeline)?.contract.as_ref()
    }

    /// The signature check of a pipeline's webhooks, if it has one.
    pub fn verifier(&self, pipeline: &str) -> Option<&crate::trigger::verify::Verifier> {
        self.inner.pipelines.get(pipeline)?.verifier.as_ref()
    }

    /// Resolves when the engine is told to stop.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Run the retention sweep now (it also runs every minute).
    pub async fn sweep_history(&self) {
        super::janitor::sweep(self).await;
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

    /// A snapshot of one pipeline's state and counters.
    pub fn status(&self, pipeline: &str) -> Option<PipelineStatus> {
        let p = self.inner.pipelines.get(pipeline)?;
        let s = &p.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (queued, oldest) = p.open_events();
        let oldest_age_ms = oldest.map_or(0, |id| now_ms().saturating_sub(id.created_ms()));
        let entered = get(&s.accepted) + get(&s.recovered) + get(&s.replayed);
        let left = get(&s.delivered) + get(&s.dead_lettered) + get(&s.filtered);
        Some(PipelineStatus {
            name: pipeline.to_string(),
            paused: p.paused.load(Ordering::Relaxed),
            queued: queued as u64,
            breaker: p.breaker.state().as_str(),
            rate_limit_waits: p.limiter.as_ref().map_or(0, |l| l.waits()),
            order_keys_active: p.gate.as_ref().map_or(0, |g| g.keys()),
            accepted: get(&s.accepted),
            duplicates: get(&s.duplicates),
            delivered: get(&s.delivered),
            filtered: get(&s.filtered),
            retried: get(&s.retried),
            dead_lettered: get(&s.dead_lettered),
            in_flight: get(&s.in_flight),
            received: get(&s.received),
            rejected: Rejection::ALL
                .iter()
                .zip(&s.rejected)
                .map(|(r, n)| (r.as_str(), get(n)))
                .collect(),
            recovered: get(&s.recovered),
            replayed: get(&s.replayed),
            attempts: get(&s.attempts),
            oldest_age_ms,
            unaccounted: entered as i64 - left as i64 - queued as i64,
        })
    }

    /// The latency histograms of a pipeline: accept to delivery, and each
    /// step's calls by step label (`step 1 (json-map)`, …, `sink (http-sink)`).
    pub fn latencies(&self, pipeline: &str) -> Option<(&Histogram, Vec<(&str, &Histogram)>)> {
        let p = self.inner.pipelines.get(pipeline)?;
        let steps = p
            .steps
            .iter()
            .chain([&p.sink])
            .map(|s| s.label.as_str())
            .zip(&p.step_latency)
            .collect();
        Some((&p.latency, steps))
    }

    /// Every plugin some pipeline uses, once each, by name.
    pub fn plugins(&self) -> BTreeMap<String, Arc<Plugin>> {
        self.inner
            .pipelines
            .values()
            .flat_map(|p| p.steps.iter().chain([&p.sink]))
            .map(|s| (s.plugin.name.clone(), s.plugin.clone()))
            .collect()
    }

    /// [`Engine::status`] as JSON, for the API.
    pub fn stats_json(&self, pipeline: &str) -> Option<serde_json::Value> {
        self.status(pipeline)
            .and_then(|s| serde_json::to_value(s).ok())
    }

    /// Pause delivery (accepting goes on); the state survives a restart.
    pub async fn pause(&self, pipeline: &str) -> Result<(), BuildError> {
        self.set_paused(pipeline, true).await
    }

    /// Resume delivery of a paused pipeline.
    pub async fn resume(&self, pipeline: &str) -> Result<(), BuildError> {
        self.set_paused(pipeline, false).await
    }

    async fn set_paused(&self, pipeline: &str, paused: bool) -> Result<(), BuildError> {
        let p = self.pipeline(pipeline)?;
        self.inner
            .store
            .set_paused(pipeline, paused)
            .await
            .map_err(|e| BuildError(e.to_string()))?;
        p.paused.store(paused, Ordering::SeqCst);
        if paused {
            tracing::warn!(
                pipeline,
                "pipeline paused: events are accepted but not delivered"
            );
            return Ok(());
        }
        let parked = std::mem::take(&mut *p.parked.lock().unwrap_or_else(|e| e.into_inner()));
        tracing::info!(pipeline, released = parked.len(), "pipeline resumed");
        for job in parked {
            self.schedule(job);
        }
        Ok(())
    }

    fn pipeline(&self, name: &str) -> Result<&Arc<Pipeline>, BuildError> {
        self.inner.pipelines.get(name).ok_or_else(|| {
            BuildError(format!(
                "unknown pipeline {name:?}; configured pipelines: {}",
                self.pipeline_names().join(", ")
            ))
        })
    }

    /// Whether a pipeline takes new events now; `Err` carries the seconds a
    /// sender should wait and why.
    pub fn admission(&self, pipeline: &str) -> Result<(), (u64, String)> {
        let Some(p) = self.inner.pipelines.get(pipeline) else {
            return Ok(());
        };
        let (queued, _) = p.open_events();
        if queued >= p.config.max_queue {
            return Err((
                1,
                format!(
                    "pipeline {pipeline:?} has {queued} events waiting (max_queue = {}); retry later",
                    p.config.max_queue
                ),
            ));
        }
        if let BreakerState::Open(until) = p.breaker.state() {
            let secs = until
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
                .max(1);
            return Err((
                secs,
                format!(
                    "the sink of pipeline {pipeline:?} is failing and its circuit breaker is open; retry later"
                ),
            ));
        }
        Ok(())
    }
}
