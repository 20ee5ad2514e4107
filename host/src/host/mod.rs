//! Assembling and running a host: open the store, load the plugins, build
//! the engine, and only then open the HTTP listener.

mod generation;
mod reload;

use self::generation::Generation;
use crate::config::Config;
use crate::engine::Engine;
use crate::sandbox::Sandbox;
use crate::sandbox::cache::CodeCache;
use crate::server::Server;
use crate::server::live::{Current, Live};
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
    /// The TLS certificate files do not load.
    #[error("{0}")]
    Tls(String),
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
    live: Arc<Live>,
    plugins: Arc<std::sync::Mutex<Plugins>>,
    server: Server,
    /// The tasks of the triggers in force (schedules, polls).
    triggers: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

/// Where a reload reads the configuration: the file (with the command
/// line's overrides), loaded and checked; `Err` says what is wrong.
pub type ConfigSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

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
    let mut bad_names = BTreeMap::new();
    for path in files {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(v) = crate::config::version::version_part(&name)
            && let Err(e) = crate::config::version::check(v, false)
        {
            bad_names.insert(
                name.clone(),
                format!("{}: the version in the file name: {e}", path.display()),
            );
            continue;
        }
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
    let mut errors = bad_names;
    for t in tasks {
        match t.await {
            Ok((name, Ok(mut p))) => {
                sandbox.learn_version(&mut p).await;
                tracing::info!(plugin = %name, version = p.version.as_deref().unwrap_or("-"), world = %p.world, sha256 = %p.sha256, "plugin loaded");
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

    /// Start a host that reloads its configuration from `source` when asked
    /// (`weft reload`, `POST /api/v1/reload`, SIGHUP); `config` is what
    /// `source` gave first.
    pub async fn start_reloadable(
        config: Config,
        source: ConfigSource,
    ) -> Result<RunningHost, StartError> {
        Self::start_inner(config, true, Some(source)).await
    }

    /// Start a host; with `guards` false plugins run without memory caps,
    /// time limits or egress checks. Only the benchmark does that, to measure
    /// what the guards cost; the CLI has no way to ask for it.
    #[doc(hidden)]
    pub async fn start_with_guards(
        config: Config,
        guards: bool,
    ) -> Result<RunningHost, StartError> {
        Self::start_inner(config, guards, None).await
    }

    async fn start_inner(
        config: Config,
        guards: bool,
        source: Option<ConfigSource>,
    ) -> Result<RunningHost, StartError> {
        let data_dir = config.server.data_dir.clone();
        let store = crate::store::open_for(&config)?;
        let cache = CodeCache::in_data_dir(&data_dir).map_err(|e| {
            StartError::Cache(format!(
                "cannot make the compiled-code cache in {} ({e}); check the data directory's permissions",
                data_dir.display()
            ))
        })?;
        let ground = generation::Ground {
            store: store.clone(),
            cache: Arc::new(cache.with_budget(config.plugins.cache_max_bytes)),
            switch: crate::engine::Switch::new(),
            guards,
            oauth: Arc::default(),
        };
        let first = Generation::build(&config, &ground).await?;
        // Code of plugins no longer in the directory only takes up space.
        let in_use: std::collections::HashSet<&str> =
            first.plugins.values().map(|p| p.sha256.as_str()).collect();
        let (pruned, pruned_bytes) = ground
            .cache
            .prune(&in_use, first.engine.sandbox().code_hash());
        if pruned > 0 {
            tracing::info!(
                files = pruned,
                bytes = pruned_bytes,
                "removed compiled code of plugins no longer loaded"
            );
        }
        let engine = first.engine.clone();
        let recovered = engine.start()?;
        let trigger_tasks = first.triggers.start(&engine);
        if recovered > 0 {
            tracing::info!(
                recovered,
                "requeued events that were accepted but not finished"
            );
        }
        let live = Live::new(Current {
            engine: engine.clone(),
            triggers: first.triggers.clone(),
            api: first.api,
        });
        let plugins = Arc::new(std::sync::Mutex::new(first.plugins));
        let triggers = Arc::new(std::sync::Mutex::new(trigger_tasks));
        if let Some(source) = source {
            live.set_reload(Arc::new(reload::Reloader::new(
                source,
                config.clone(),
                ground,
                live.clone(),
                plugins.clone(),
                triggers.clone(),
            )));
        }
        let load = |files: &Option<crate::config::TlsConfig>| match files {
            Some(files) => crate::server::tls::Tls::load(files)
                .map(|t| Some(Arc::new(t)))
                .map_err(StartError::Tls),
            None => Ok(None),
        };
        let tls = [load(&config.server.tls)?, load(&config.server.admin_tls)?];
        let server = Server::start(&config.server, live.clone(), tls).await?;
        let (addr, admin_addr) = (server.addr, server.admin_addr);
        tracing::info!(%addr, %admin_addr, pipelines = ?engine.pipeline_names(), "weft is serving");
        Ok(RunningHost {
            addr,
            admin_addr,
            live,
            plugins,
            server,
            triggers,
        })
    }

    /// The engine in force now.
    pub fn engine(&self) -> Engine {
        self.live.current().engine.clone()
    }

    /// The plugins loaded now, by name.
    pub fn plugins(&self) -> Plugins {
        self.plugins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reload the configuration on behalf of `by`: see
    /// [`RunningHost::start_reloadable`].
    pub async fn reload(&self, by: &str) -> crate::server::live::ReloadResult {
        self.live.reload(by).await
    }

    /// Stop accepting, let requests in progress finish (up to 5 s), and
    /// close the store.
    pub async fn shutdown(self) {
        let RunningHost {
            server,
            live,
            triggers,
            ..
        } = self;
        server.shutdown(Duration::from_secs(5)).await;
        // A reload in progress finishes first: it holds the engine to stop.
        let _reloading = live.hold_reloads().await;
        let engine = live.current().engine.clone();
        engine.stop(Duration::from_secs(10)).await;
        // Triggers end when the engine stops; one caught mid-accept may take
        // a moment to hear it.
        let tasks = std::mem::take(&mut *triggers.lock().unwrap_or_else(|e| e.into_inner()));
        for mut task in tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        let store = engine.store().clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }

    /// Wait until the server task ends (it ends only on shutdown).
    pub async fn wait(&mut self) {
        self.server.wait().await;
    }
}
