//! The poll trigger: a source plugin asked for what is new since its
//! cursor. The items it finds and its next cursor are committed in one
//! write, with a dedup key per item, so a crash between poll and commit
//! polls again from the old cursor and nothing is accepted twice.

use super::schedule::{OnMissed, Schedule};
use super::{Running, Trigger, TriggerError};
use crate::config::{PipelineConfig, PollConfig};
use crate::engine::Engine;
use crate::sandbox::{CallContext, Plugin, Plugins, World};
use crate::store::ErrorKind;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A pipeline's poll trigger: its source plugin, config and pace.
pub struct PollTrigger {
    pipeline: String,
    plugin: Arc<Plugin>,
    config: String,
    pace: Pace,
    max_backoff: Duration,
}

impl PollTrigger {
    /// The poll trigger of pipeline `p`: its plugin must be a loaded source
    /// that accepts its config.
    pub async fn build(
        p: &PipelineConfig,
        poll: &PollConfig,
        engine: &Engine,
        plugins: &Plugins,
        load_failures: &BTreeMap<String, String>,
        plugin_dir: &std::path::Path,
    ) -> Result<PollTrigger, TriggerError> {
        let sandbox = engine.sandbox();
        let plugin =
            crate::sandbox::versions::find(plugins, load_failures, &poll.plugin, plugin_dir)
                .map_err(|why| {
                    TriggerError(format!("pipeline {:?}, trigger.poll: {why}", p.name))
                })?;
        if plugin.world != World::Source {
            return Err(TriggerError(format!(
                "pipeline {:?}, trigger.poll: plugin {:?} implements {} but a poll trigger needs {}",
                p.name,
                poll.plugin,
                plugin.world,
                World::Source
            )));
        }
        crate::schema::check_plugin_config(sandbox, &plugin, &poll.config, "trigger.poll.config")
            .await
            .map_err(|e| {
                TriggerError(format!(
                    "pipeline {:?}, trigger.poll: the config breaks the plugin's own schema: {e}",
                    p.name
                ))
            })?;
        sandbox
            .check_config(&plugin, &poll.config.to_string(), &p.name)
            .await
            .map_err(|e| {
                TriggerError(format!(
                    "pipeline {:?}, trigger.poll: the plugin rejected its config: {}",
                    p.name, e.message
                ))
            })?;
        sandbox
            .check_plan(&plugin, &poll.config.to_string(), &p.name)
            .await
            .map_err(|e| {
                TriggerError(format!(
                    "pipeline {:?}, trigger.poll: {}",
                    p.name, e.message
                ))
            })?;

        engine.uses_source(plugin.clone());
        // With a schedule too, the source is polled on its ticks.
        let pace = match &p.trigger.schedule {
            Some(s) => Pace::Schedule(Box::new(super::schedule::schedule_of(p, s)?)),
            None => Pace::Every(Duration::from_millis(poll.every_ms)),
        };
        Ok(PollTrigger {
            pipeline: p.name.clone(),
            plugin,
            config: poll.config.to_string(),
            pace,
            max_backoff: Duration::from_millis(poll.max_backoff_ms),
        })
    }
}

impl Trigger for PollTrigger {
    fn kind(&self) -> &'static str {
        "poll"
    }

    fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn run(self: Arc<Self>, engine: Engine) -> Running {
        Box::pin(async move { run(engine, &self).await })
    }
}

/// How one poll went, for the loop's pacing.
enum Next {
    /// Poll again at once (a next page).
    Now,
    /// Wait the regular interval.
    Later,
    /// Back off this long.
    Backoff(Duration),
}

/// When to poll: every so often, or on a schedule's ticks.
pub enum Pace {
    /// A fixed pause between polls that found nothing more.
    Every(Duration),
    /// At each tick of a schedule (`on_missed = "once"` polls at start-up).
    Schedule(Box<Schedule>),
}

impl Pace {
    fn wait(&self) -> Duration {
        match self {
            Pace::Every(d) => *d,
            Pace::Schedule(s) => {
                let now = crate::store::now_ms();
                Duration::from_millis(s.next_after(now).map_or(u64::MAX / 4, |t| t - now))
            }
        }
    }
}

/// Poll one pipeline's source until the engine stops.
async fn run(engine: Engine, t: &PollTrigger) {
    let (pipeline, plugin, config, pace, max_backoff) =
        (&t.pipeline, &t.plugin, &t.config, &t.pace, t.max_backoff);
    let mut stop = engine.stopping();
    let mut failures: u32 = 0;
    if let Pace::Schedule(s) = &pace
        && s.on_missed == OnMissed::Skip
    {
        tokio::select! {
            _ = tokio::time::sleep(pace.wait()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    loop {
        let next = poll_once(
            &engine,
            pipeline,
            plugin,
            config,
            &mut failures,
            max_backoff,
        )
        .await;
        let wait = match next {
            Next::Now => Duration::ZERO,
            Next::Later => pace.wait(),
            Next::Backoff(d) => d,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

async fn poll_once(
    engine: &Engine,
    pipeline: &str,
    plugin: &Plugin,
    config: &str,
    failures: &mut u32,
    max_backoff: Duration,
) -> Next {
    let cursor = engine.store().cursor(pipeline);
    let ctx = CallContext::background(pipeline, &plugin.name);
    let stats = engine.stats(pipeline);
    let failed = |kind: &'static str| {
        if let Some(s) = stats {
            s.poll_failed(kind);
        }
    };
    let backoff = |failures: u32, asked: Option<u64>| {
        let exp = 1000u64.saturating_mul(1 << failures.min(16));
        let ceiling = exp.min(max_backoff.as_millis() as u64);
        let jittered = rand::random_range(ceiling / 2..=ceiling.max(1));
        Duration::from_millis(asked.map_or(jittered, |a| a.max(jittered.min(a))))
    };
    match engine
        .sandbox()
        .poll(plugin, config, ctx, cursor.as_deref())
        .await
    {
        Ok(batch) => {
            let found = batch.events.len();
            let moves = batch.next_cursor.is_some() && batch.next_cursor != cursor;
            match engine
                .accept_polled(pipeline, batch.events, batch.next_cursor.as_deref())
                .await
            {
                Ok(new) => {
                    *failures = 0;
                    if let Some(s) = stats {
                        s.polls.fetch_add(1, Ordering::Relaxed);
                        s.polled_items.fetch_add(found as u64, Ordering::Relaxed);
                        s.polled_new.fetch_add(new as u64, Ordering::Relaxed);
                        if moves {
                            s.cursor_moved_ms
                                .store(crate::store::now_ms(), Ordering::Relaxed);
                        }
                    }
                    if found > 0 {
                        tracing::info!(pipeline, found, new, more = batch.more, "polled");
                    }
                    if batch.more { Next::Now } else { Next::Later }
                }
                Err(e) => {
                    // Nothing was committed: the next poll starts from the old cursor.
                    *failures += 1;
                    failed("store");
                    tracing::warn!(pipeline, "could not store what the poll found: {e}");
                    Next::Backoff(backoff(*failures, None))
                }
            }
        }
        Err(e) => {
            *failures += 1;
            failed(e.kind.as_str());
            let wait = backoff(*failures, e.retry_after_ms);
            let level_fatal = matches!(e.kind, ErrorKind::Fatal | ErrorKind::InvalidInput);
            if level_fatal {
                tracing::error!(pipeline, plugin = %plugin.name, kind = e.kind.as_str(), retry_in_ms = wait.as_millis() as u64, "poll failed: {}", e.message);
            } else {
                tracing::warn!(pipeline, plugin = %plugin.name, kind = e.kind.as_str(), retry_in_ms = wait.as_millis() as u64, "poll failed: {}", e.message);
            }
            Next::Backoff(wait)
        }
    }
}
