//! Reloading a running host: read the configuration again, build and check
//! the whole of it beside the one in force, and only then hand over. A
//! reload that fails anywhere before the hand-over changes nothing.

use super::generation::{Generation, Ground};
use super::{ConfigSource, Plugins};
use crate::config::Config;
use crate::server::live::{Current, Live, Reload, ReloadResult};
use crate::store::AuditEntry;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for attempts in progress to finish on the plugins they
/// started with before the new configuration takes over.
const GRACE: Duration = Duration::from_secs(30);

pub(super) struct Reloader {
    source: ConfigSource,
    /// The configuration in force.
    config: tokio::sync::Mutex<Config>,
    ground: Ground,
    live: Arc<Live>,
    plugins: Arc<Mutex<Plugins>>,
    triggers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Reload for Reloader {
    fn reload<'a>(
        &'a self,
        by: &'a str,
    ) -> Pin<Box<dyn Future<Output = ReloadResult> + Send + 'a>> {
        Box::pin(async move {
            let result = self.run(by).await;
            if let Err(why) = &result {
                tracing::error!(
                    by,
                    "reload refused, the configuration in force is unchanged: {why}"
                );
                self.audit(by, format!("refused: {why}")).await;
            }
            result
        })
    }
}

/// The server settings a running host cannot change: its sockets and
/// where its data lives.
fn fixed(c: &Config) -> [(&'static str, String); 9] {
    let s = &c.server;
    [
        ("server.listen", s.listen.to_string()),
        ("server.admin_listen", s.admin_addr().to_string()),
        ("server.data_dir", s.data_dir.display().to_string()),
        ("server.max_connections", s.max_connections.to_string()),
        (
            "server.max_connections_per_peer",
            s.max_connections_per_peer.to_string(),
        ),
        ("server.header_timeout_ms", s.header_timeout_ms.to_string()),
        // The files are read again when they change; which files is fixed.
        ("server.tls", format!("{:?}", s.tls)),
        ("server.admin_tls", format!("{:?}", s.admin_tls)),
        // The store is opened with its keys.
        ("server.encryption", format!("{:?}", s.encryption)),
    ]
}

impl Reloader {
    pub(super) fn new(
        source: ConfigSource,
        config: Config,
        ground: Ground,
        live: Arc<Live>,
        plugins: Arc<Mutex<Plugins>>,
        triggers: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    ) -> Reloader {
        Reloader {
            source,
            config: tokio::sync::Mutex::new(config),
            ground,
            live,
            plugins,
            triggers,
        }
    }

    async fn audit(&self, by: &str, detail: String) {
        let store = &self.ground.store;
        if let Err(e) = store.audit().append(AuditEntry {
            kind: "admin",
            actor: by.to_string(),
            pipeline: String::new(),
            action: "reload".into(),
            detail,
        }) {
            tracing::error!("could not write a reload to the audit log: {e}");
        }
        let _ = store.flush().await;
    }

    async fn run(&self, by: &str) -> ReloadResult {
        let started = Instant::now();
        let mut in_force = self.config.lock().await;
        let source = self.source.clone();
        let config = tokio::task::spawn_blocking(move || source())
            .await
            .map_err(|e| format!("reading the configuration failed: {e}"))??;
        for ((key, was), (_, now)) in fixed(&in_force).into_iter().zip(fixed(&config)) {
            if was != now {
                return Err(format!(
                    "{key} changed from {was} to {now}: that takes a restart (put it back to reload the rest)"
                ));
            }
        }
        if let Some(why) = self.ground.store.failing() {
            return Err(format!(
                "the store cannot write ({why}); reload once it recovers"
            ));
        }
        let next = Generation::build(&config, &self.ground)
            .await
            .map_err(|e| e.to_string())?;
        let old = self.live.current();
        let old_plugins = self
            .plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut summary = changes(&in_force, &config, &old_plugins, &next.plugins);
        let handed = old.engine.hand_over(&next.engine, GRACE).await;
        let tasks = next.triggers.start(&next.engine);
        self.live.replace(Current {
            engine: next.engine.clone(),
            triggers: next.triggers.clone(),
            api: next.api,
        });
        let old_tasks = std::mem::replace(
            &mut *self.triggers.lock().unwrap_or_else(|e| e.into_inner()),
            tasks,
        );
        *self.plugins.lock().unwrap_or_else(|e| e.into_inner()) = next.plugins;
        // The old schedules and polls ended with their engine; one caught
        // mid-poll hands its items over to the new engine.
        for mut t in old_tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
        summary["recovered"] = handed.recovered.into();
        summary["kept"] = serde_json::to_value(&handed.kept).unwrap_or_default();
        summary["attempts_unfinished"] = handed.still_running.into();
        summary["took_ms"] = (started.elapsed().as_millis() as u64).into();
        for (pipeline, n) in &handed.kept {
            tracing::warn!(pipeline = %pipeline, queued = n,
                "pipeline removed by the reload: its queued events stay in the store until it is configured again or purged (weft pipeline purge)");
        }
        if handed.still_running > 0 {
            tracing::warn!(
                attempts = handed.still_running,
                "attempts still running after {} s; their outcome is written, and what they leave queued waits for the next start or reload",
                GRACE.as_secs()
            );
        }
        tracing::info!(by, summary = %summary, "configuration reloaded");
        self.audit(by, summary.to_string()).await;
        *in_force = config;
        drop(next.load_errors);
        Ok(summary)
    }
}

/// What a reload changes: pipelines added, removed and changed (their
/// settings, or a plugin they use), and plugins by digest.
fn changes(
    was: &Config,
    now: &Config,
    old_plugins: &Plugins,
    new_plugins: &Plugins,
) -> serde_json::Value {
    let digest = |ps: &Plugins| -> BTreeMap<String, String> {
        ps.iter()
            .map(|(n, p)| (n.clone(), p.sha256.clone()))
            .collect()
    };
    let (before, after) = (digest(old_plugins), digest(new_plugins));
    let plugins_changed: Vec<&String> = after
        .iter()
        .filter(|(n, d)| before.get(*n).is_some_and(|b| b != *d))
        .map(|(n, _)| n)
        .collect();
    let old: BTreeMap<&str, &crate::config::PipelineConfig> =
        was.pipelines.iter().map(|p| (p.name.as_str(), p)).collect();
    let (mut added, mut changed, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    for p in &now.pipelines {
        match old.get(p.name.as_str()) {
            None => added.push(p.name.clone()),
            Some(o) => {
                let uses_changed = p
                    .steps
                    .iter()
                    .chain(&p.sink)
                    .any(|s| plugins_changed.contains(&&s.plugin));
                if format!("{o:?}") != format!("{p:?}") || uses_changed {
                    changed.push(p.name.clone());
                } else {
                    unchanged.push(p.name.clone());
                }
            }
        }
    }
    let removed: Vec<&str> = old
        .keys()
        .filter(|n| !now.pipelines.iter().any(|p| p.name == **n))
        .copied()
        .collect();
    serde_json::json!({
        "pipelines": {
            "added": added,
            "changed": changed,
            "removed": removed,
            "unchanged": unchanged,
        },
        "plugins": {
            "added": after.keys().filter(|n| !before.contains_key(*n)).collect::<Vec<_>>(),
            "changed": plugins_changed,
            "removed": before.keys().filter(|n| !after.contains_key(*n)).collect::<Vec<_>>(),
        },
    })
}
