//! Assembling and running a host: open the store, load the plugins, build
//! the engine, and only then open the HTTP listener.

use crate::config::Config;
use crate::engine::Engine;
use crate::sandbox::cache::CodeCache;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::server::Server;
use crate::server::api::ApiState;
use crate::trigger::Triggers;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why a host could not start; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A credential the config uses is missing or unusable.
    #[error("{0}")]
    Secrets(String),
    /// The plugin directory cannot be read.
    #[error("{0}")]
    PluginDir(String),
    /// The compiled-code cache cannot be made.
    #[error("{0}")]
    Cache(String),
    /// The WebAssembly engine could not be set up.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// Pipelines and plugins do not fit together.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    /// A trigger cannot be built.
    #[error(transparent)]
    Trigger(#[from] crate::trigger::TriggerError),
    /// The admin API would be open, or a token is too short.
    #[error("{0}")]
    Admin(String),
    /// The listener cannot be bound.
    #[error(transparent)]
    Bind(#[from] crate::server::BindError),
}

/// A running host.
pub struct RunningHost {
    /// The public listener's address (webhooks, health).
    pub addr: SocketAddr,
    /// The admin listener's address (API, metrics, health).
    pub admin_addr: SocketAddr,
    /// The engine.
    pub engine: Engine,
    /// Plugins loaded, by name.
    pub plugins: Plugins,
    server: Server,
    triggers: Vec<tokio::task::JoinHandle<()>>,
}

pub use crate::sandbox::{LoadFailures, Plugins};

/// Load every `*.wasm` in the plugin directory. Plugins that fail to load are
/// returned as errors next to the ones that loaded.
pub async fn load_plugins(
    config: &Config,
    sandbox: &Arc<Sandbox>,
    cache: Option<Arc<CodeCache>>,
) -> Result<(Plugins, LoadFailures), StartError> {
    let dir = &config.plugins.dir;
    let entries = std::fs::read_dir(dir).map_err(|e| {
        StartError::PluginDir(format!(
            "cannot read the plugin directory {} ({e}); create it and put the .wasm files there, or fix plugins.dir",
            dir.display()
        ))
    })?;
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    let mut tasks = Vec::new();
    for path in files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let grant = config.grant(&name);
        let sandbox = sandbox.clone();
        let cache = cache.clone();
        tasks.push(tokio::task::spawn_blocking(move || {
            (
                name.clone(),
                sandbox.load(&path, &name, &grant, cache.as_deref()),
            )
        }));
    }
    let mut plugins = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok((name, Ok(p))) => {
                tracing::info!(plugin = %name, world = %p.world, sha256 = %p.sha256, "plugin loaded");
                plugins.insert(name, Arc::new(p));
            }
            Ok((name, Err(e))) => {
                let mut why = e.to_string();
                // cargo names a build after the crate, with `_`: the grant
                // (and the pipeline) name the plugin another way.
                let hyphenated = name.replace('_', "-");
                if hyphenated != name
                    && (config.grants.contains_key(&hyphenated) || config.uses_plugin(&hyphenated))
                {
                    why.push_str(&format!(
                        " (a plugin's name is its file stem, and this file is {name}.wasm while the config says {hyphenated}: rename it to {hyphenated}.wasm, or build it with `weft plugin build`, which names it after the plugin)"
                    ));
                }
                errors.insert(name, why);
            }
            Err(e) => {
                errors.insert(String::new(), format!("plugin loader failed: {e}"));
            }
        }
    }
    Ok((plugins, errors))
}

impl RunningHost {
    /// Start a host from a validated config.
    pub async fn start(config: Config) -> Result<RunningHost, StartError> {
        Self::start_with_guards(config, true).await
    }

    /// Start a host; with `guards` false plugins run without memory caps,
    /// time limits or egress checks. Only the benchmark does that, to measure
    /// what the guards cost; the CLI has no way to ask for it.
    #[doc(hidden)]
    pub async fn start_with_guards(
        config: Config,
        guards: bool,
    ) -> Result<RunningHost, StartError> {
        let data_dir = config.server.data_dir.clone();
        let store = crate::store::open(&data_dir)?;
        let instances: usize = config
            .pipelines
            .iter()
            .map(|p| p.in_flight())
            .sum::<usize>()
            + 8;
        let max_memory = config
            .grants
            .values()
            .map(|g| g.memory_mib)
            .chain([crate::config::DEFAULT_MEMORY_MIB])
            .max()
            .unwrap_or(crate::config::DEFAULT_MEMORY_MIB);
        let secrets =
            Arc::new(crate::secrets::Secrets::load(&config).map_err(StartError::Secrets)?);
        let mut options = SandboxOptions::new(instances.min(10_000) as u32, max_memory);
        options.fuel = config.grants.values().any(|g| g.fuel.is_some());
        if !guards {
            tracing::warn!("plugins run without memory caps, time limits or egress checks");
            options.guards = false;
        }
        let sandbox = Arc::new(
            Sandbox::with_options(store.clone(), options)?
                .with_upstreams(Arc::new(crate::limit::UpstreamLimits::new(
                    &config.upstreams,
                )))
                .with_secrets(secrets.clone()),
        );
        let cache = CodeCache::in_data_dir(&data_dir).map_err(|e| {
            StartError::Cache(format!(
                "cannot make the compiled-code cache in {} ({e}); check the data directory's permissions",
                data_dir.display()
            ))
        })?;
        let cache = Arc::new(cache.with_budget(config.plugins.cache_max_bytes));
        let (plugins, load_errors) = load_plugins(&config, &sandbox, Some(cache.clone())).await?;
        // Code of plugins no longer in the directory only takes up space.
        let in_use: std::collections::HashSet<&str> =
            plugins.values().map(|p| p.sha256.as_str()).collect();
        let (pruned, pruned_bytes) = cache.prune(&in_use, sandbox.code_hash());
        if pruned > 0 {
            tracing::info!(
                files = pruned,
                bytes = pruned_bytes,
                "removed compiled code of plugins no longer loaded"
            );
        }
        for (name, e) in &load_errors {
            if config.uses_plugin(name) {
                tracing::warn!("{e}");
            } else {
                // Nothing would run it: not worth a warning on every start.
                tracing::info!(plugin = %name, "unused plugin not loaded (no pipeline names it): {e}");
            }
        }
        let api = ApiState::new(&config, &secrets, plugins.clone()).map_err(StartError::Admin)?;
        let engine = Engine::build(&config, store.clone(), sandbox, &plugins, &load_errors).await?;
        let triggers =
            Arc::new(Triggers::build(&config, &engine, &secrets, &plugins, &load_errors).await?);
        let recovered = engine.start()?;
        let trigger_tasks = triggers.start(&engine);
        if recovered > 0 {
            tracing::info!(
                recovered,
                "requeued events that were accepted but not finished"
            );
        }
        let server = Server::start(&config.server, engine.clone(), triggers, api).await?;
        let (addr, admin_addr) = (server.addr, server.admin_addr);
        tracing::info!(%addr, %admin_addr, pipelines = ?engine.pipeline_names(), "weft is serving");
        Ok(RunningHost {
            addr,
            admin_addr,
            engine,
            plugins,
            server,
            triggers: trigger_tasks,
        })
    }

    /// Stop accepting, let requests in progress finish (up to 5 s), and
    /// close the store.
    pub async fn shutdown(self) {
        self.server.shutdown(Duration::from_secs(5)).await;
        self.engine.stop(Duration::from_secs(10)).await;
        // Triggers end when the engine stops; one caught mid-accept may take
        // a moment to hear it.
        for mut task in self.triggers {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let store = self.engine.store().clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }

    /// Wait until the server task ends (it ends only on shutdown).
    pub async fn wait(&mut self) {
        self.server.wait().await;
    }
}
