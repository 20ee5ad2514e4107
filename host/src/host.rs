//! Assembling and running a host: open the store, load the plugins, build
//! the engine, and only then open the HTTP listener.

use crate::config::Config;
use crate::engine::Engine;
use crate::http_util::{Body, error, json};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::trigger::Triggers;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A running host.
pub struct RunningHost {
    /// The address the listener is bound to.
    pub addr: SocketAddr,
    /// The engine.
    pub engine: Engine,
    /// Plugins loaded, by name.
    pub plugins: Plugins,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    triggers: Vec<tokio::task::JoinHandle<()>>,
}

pub use crate::sandbox::{LoadFailures, Plugins};

/// Load every `*.wasm` in the plugin directory. Plugins that fail to load are
/// returned as errors next to the ones that loaded.
pub async fn load_plugins(
    config: &Config,
    sandbox: &Arc<Sandbox>,
    cache_dir: Option<&Path>,
) -> Result<(Plugins, LoadFailures), StartError> {
    let dir = &config.plugins.dir;
    let entries = std::fs::read_dir(dir).map_err(|e| {
        StartError(format!(
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
        let cache = cache_dir.map(Path::to_path_buf);
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
                errors.insert(name, e.to_string());
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
        let store = crate::store::open(&data_dir).map_err(|e| StartError(e.to_string()))?;
        let instances: usize = config
            .pipelines
            .iter()
            .map(|p| p.concurrency)
            .sum::<usize>()
            + 8;
        let max_memory = config
            .grants
            .values()
            .map(|g| g.memory_mib)
            .chain([crate::config::DEFAULT_MEMORY_MIB])
            .max()
            .unwrap_or(crate::config::DEFAULT_MEMORY_MIB);
        let secrets = Arc::new(crate::secrets::Secrets::load(&config).map_err(StartError)?);
        let mut options = SandboxOptions::new(instances.min(10_000) as u32, max_memory);
        options.fuel = config.grants.values().any(|g| g.fuel.is_some());
        if !guards {
            tracing::warn!("plugins run without memory caps, time limits or egress checks");
            options.guards = false;
        }
        let sandbox = Arc::new(
            Sandbox::with_options(store.clone(), options)
                .map_err(|e| StartError(e.to_string()))?
                .with_upstreams(Arc::new(crate::limit::UpstreamLimits::new(
                    &config.upstreams,
                )))
                .with_secrets(secrets.clone()),
        );
        let cache = data_dir.join("compiled");
        let (plugins, load_errors) = load_plugins(&config, &sandbox, Some(&cache)).await?;
        for e in load_errors.values() {
            tracing::warn!("{e}");
        }
        let engine = Engine::build(&config, store.clone(), sandbox, &plugins, &load_errors)
            .await
            .map_err(|e| StartError(e.to_string()))?;
        let triggers = Arc::new(
            Triggers::build(&config, &engine, &secrets, &plugins, &load_errors)
                .await
                .map_err(|e| StartError(e.to_string()))?,
        );
        let recovered = engine.start().map_err(|e| StartError(e.to_string()))?;
        let trigger_tasks = triggers.start(&engine);
        if recovered > 0 {
            tracing::info!(
                recovered,
                "requeued events that were accepted but not finished"
            );
        }
        let listener = TcpListener::bind(config.server.listen).await.map_err(|e| {
            StartError(format!(
                "cannot listen on {} ({e}); is another process using the port? Change server.listen or pass --listen",
                config.server.listen
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartError(e.to_string()))?;
        let api = crate::api::ApiState::new(&config, &secrets, plugins.clone());
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(
            listener,
            engine.clone(),
            Arc::new(ServerState { triggers, api }),
            stopped,
        ));
        tracing::info!(%addr, pipelines = ?engine.pipeline_names(), "weft is serving");
        Ok(RunningHost {
            addr,
            engine,
            plugins,
            stop,
            server,
            triggers: trigger_tasks,
        })
    }

    /// Stop accepting, let requests in progress finish (up to 5 s), and
    /// close the store.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
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
        let _ = (&mut self.server).await;
    }
}

struct ServerState {
    triggers: Arc<Triggers>,
    api: crate::api::ApiState,
}

async fn serve(
    listener: TcpListener,
    engine: Engine,
    state: Arc<ServerState>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (engine, state) = (engine.clone(), state.clone());
                let mut conn_stopped = stopped.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let (engine, state) = (engine.clone(), state.clone());
                        async move { Ok::<_, std::convert::Infallible>(route(&engine, &state, req).await) }
                    });
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = conn_stopped.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = stopped.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn route(engine: &Engine, state: &ServerState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::POST, p) if p.starts_with("/hooks/") => {
            let name = p["/hooks/".len()..].trim_end_matches('/');
            match state.triggers.webhook(name) {
                Some(hook) => hook.handle(engine, req).await,
                None => error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "unknown pipeline {name:?}; configured pipelines: {}",
                        engine.pipeline_names().join(", ")
                    ),
                ),
            }
        }
        (_, p) if p.starts_with("/hooks/") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "webhooks take POST with a JSON body",
        ),
        (&Method::GET, "/metrics") => {
            let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(
                crate::metrics::render(engine),
            )));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "pipelines": engine.pipeline_names() }),
        ),
        (_, p) if p == "/api/v1" || p.starts_with("/api/v1/") => {
            crate::api::handle(engine, &state.api, req).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!(
                "no route for {} {path}; webhooks go to POST /hooks/{{pipeline}}",
                req.method()
            ),
        ),
    }
}
