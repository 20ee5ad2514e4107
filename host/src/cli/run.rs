//! `weft run`: start the host and serve until SIGINT or SIGTERM.

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    config: super::ConfigArg,
    /// Listen on this address instead of server.listen.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Keep data in this directory instead of server.data_dir.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// The level of plugins' own log lines (target `weft::plugin`), apart
    /// from the host's: `debug` shows a plugin's debug lines without any
    /// dependency's.
    #[arg(long, value_name = "LEVEL")]
    plugin_log: Option<tracing::Level>,
    /// Reload when a `.wasm` file in the plugin directory (or the config
    /// file) changes, as `weft reload` does: a change that does not load
    /// is logged and leaves what runs untouched.
    #[arg(long)]
    watch: bool,
}

impl RunArgs {
    pub(super) fn log_format(&self) -> crate::logging::LogFormat {
        match self.log_format {
            LogFormat::Text => crate::logging::LogFormat::Text,
            LogFormat::Json => crate::logging::LogFormat::Json,
        }
    }

    /// The level asked for plugins' log lines.
    pub(super) fn plugin_log(&self) -> Option<tracing::Level> {
        self.plugin_log
    }

    pub(super) async fn run(self) -> Result<()> {
        crate::private::only_owner_creates();
        let overrides = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
        };
        let config = overrides.load(&self.config.config)?;
        let file = self.config.config.clone();
        let source: crate::host::ConfigSource =
            std::sync::Arc::new(move || overrides.load(&file).map_err(|e| format!("{e:#}")));
        let host = crate::host::RunningHost::start_reloadable(config.clone(), source).await?;
        let host = std::sync::Arc::new(host);
        let watching = self
            .watch
            .then(|| tokio::spawn(watch(host.clone(), self.config.config.clone(), config)));
        serve_until_stopped(&host).await;
        if let Some(w) = watching {
            w.abort();
        }
        tracing::info!("shutting down: finishing requests in progress and flushing the store");
        match std::sync::Arc::try_unwrap(host) {
            Ok(host) => host.shutdown().await,
            Err(_) => {
                tracing::error!("the host is still in use; stopping without a clean shutdown")
            }
        }
        Ok(())
    }
}

/// Serve until SIGINT or SIGTERM; reload on SIGHUP.
async fn serve_until_stopped(host: &crate::host::RunningHost) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            let stop = shutdown_signal();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the configuration");
                        // The outcome is logged and audited by the reload.
                        let _ = host.reload("signal").await;
                    }
                }
            }
        }
    }
    shutdown_signal().await;
}

/// What the command line puts over the config file.
struct Overrides {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
}

impl Overrides {
    fn load(&self, file: &std::path::Path) -> Result<crate::config::Config> {
        let mut config = super::load_config(file)?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.server.data_dir = dir.clone();
        }
        Ok(config)
    }
}

/// What a watched file looked like: size and modification time.
type Seen = std::collections::BTreeMap<PathBuf, (u64, Option<std::time::SystemTime>)>;

fn look(config_file: &std::path::Path, plugins: &std::path::Path) -> Seen {
    let mut seen = Seen::new();
    let mut note = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            seen.insert(p, (m.len(), m.modified().ok()));
        }
    };
    note(config_file.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(plugins) {
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "wasm") {
                note(p);
            }
        }
    }
    seen
}

/// Wait until a watched file changes and stays unchanged for a moment (a
/// copy in progress is not half-loaded); the files that changed.
async fn changed(
    config_file: &std::path::Path,
    plugins: &std::path::Path,
    was: &mut Seen,
) -> Vec<String> {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let now = look(config_file, plugins);
        if now == *was {
            continue;
        }
        // Settled: the same twice in a row.
        let mut settled = now;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let again = look(config_file, plugins);
            if again == settled {
                break;
            }
            settled = again;
        }
        let names = settled
            .keys()
            .chain(was.keys())
            .filter(|k| settled.get(*k) != was.get(*k))
            .map(|k| k.display().to_string())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        *was = settled;
        return names;
    }
}

/// `weft run --watch`: reload on every change of the config file or a
/// plugin; a change that does not load leaves what runs as it was.
async fn watch(
    host: std::sync::Arc<crate::host::RunningHost>,
    config_file: PathBuf,
    config: crate::config::Config,
) {
    let dir = config.plugins.dir.clone();
    let mut seen = look(&config_file, &dir);
    tracing::info!(dir = %dir.display(), "watching the plugins and the config; a change reloads them");
    loop {
        let names = changed(&config_file, &dir, &mut seen).await;
        tracing::info!(changed = %names.join(", "), "reloading");
        // The outcome is logged and audited by the reload.
        let _ = host.reload("watch").await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
