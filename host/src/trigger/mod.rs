//! Triggers: how events enter the host. Each kind implements [`Trigger`]:
//! a webhook is handed requests by the server, a schedule and a poll run a
//! task of their own. Triggers depend on the engine; the engine does not
//! know they exist.

pub mod poll;
pub mod queue;
pub mod schedule;
pub mod synthetic;
pub mod webhook;

use crate::config::Config;
use crate::engine::Engine;
use crate::sandbox::Plugins;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a trigger's [`Trigger::run`] returns: its work until the engine stops.
pub type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One way events enter one pipeline.
pub trait Trigger: Send + Sync + 'static {
    /// The kind, as `trigger = { KIND = … }` names it.
    fn kind(&self) -> &'static str;
    /// The pipeline it feeds.
    fn pipeline(&self) -> &str;
    /// Feed the pipeline until the engine stops.
    fn run(self: Arc<Self>, engine: Engine) -> Running;
}

/// Why the triggers could not be built: the message names the pipeline,
/// the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TriggerError(pub String);

/// Every pipeline's triggers: its webhook (always there), and its schedule
/// or poll when configured.
pub struct Triggers {
    webhooks: HashMap<String, Arc<webhook::Webhook>>,
    all: Vec<Arc<dyn Trigger>>,
}

impl Triggers {
    /// Build every pipeline's triggers: webhook verifiers from `secrets`,
    /// contracts from their files, poll sources from the loaded plugins
    /// (their config checked by the plugin itself).
    pub async fn build(
        config: &Config,
        engine: &Engine,
        secrets: &crate::secrets::Secrets,
        plugins: &Plugins,
        load_failures: &BTreeMap<String, String>,
    ) -> Result<Triggers, TriggerError> {
        let mut webhooks = HashMap::new();
        let mut all: Vec<Arc<dyn Trigger>> = Vec::new();
        // A route's pipeline takes events from its parent only.
        for p in config.pipelines.iter().filter(|p| p.route_of.is_none()) {
            let hook = Arc::new(webhook::Webhook::build(p, secrets, &config.server)?);
            webhooks.insert(p.name.clone(), hook.clone());
            all.push(hook);
            if let Some(poll) = &p.trigger.poll {
                let trigger = poll::PollTrigger::build(
                    p,
                    poll,
                    engine,
                    plugins,
                    load_failures,
                    &config.plugins.dir,
                )
                .await?;
                all.push(Arc::new(trigger));
            } else if let Some(q) = &p.trigger.queue {
                all.push(Arc::new(queue::QueueTrigger::build(
                    p,
                    q,
                    engine,
                    config.server.max_body_bytes,
                )?));
            } else if let Some(s) = &p.trigger.schedule {
                let schedule = schedule::schedule_of(p, s)?;
                all.push(Arc::new(schedule::ScheduleTrigger::new(&p.name, schedule)));
            }
            for c in &p.synthetic {
                all.push(Arc::new(synthetic::SyntheticTrigger::build(p, c)?));
            }
        }
        Ok(Triggers { webhooks, all })
    }

    /// Start every trigger's work; the tasks end when the engine stops.
    /// On a store several hosts share, a poll or a schedule runs only
    /// where its lease is held.
    pub fn start(&self, engine: &Engine) -> Vec<tokio::task::JoinHandle<()>> {
        self.all
            .iter()
            .map(|t| {
                tracing::debug!(pipeline = t.pipeline(), kind = t.kind(), "trigger started");
                if engine.store().shared() && matches!(t.kind(), "poll" | "schedule") {
                    // One host at a time polls a source or fires a schedule.
                    let run = {
                        let (t, engine) = (t.clone(), engine.clone());
                        move || t.clone().run(engine.clone())
                    };
                    tokio::spawn(crate::engine::while_leased(
                        engine.clone(),
                        format!("{}:{}", t.kind(), t.pipeline()),
                        t.pipeline().to_string(),
                        t.kind(),
                        run,
                    ))
                } else {
                    tokio::spawn(t.clone().run(engine.clone()))
                }
            })
            .collect()
    }

    /// A pipeline's webhook.
    pub fn webhook(&self, pipeline: &str) -> Option<&webhook::Webhook> {
        self.webhooks.get(pipeline).map(|w| w.as_ref())
    }
}

/// How long a poll's or a schedule's lease lasts unless renewed.
pub use crate::engine::LEASE_TTL;
