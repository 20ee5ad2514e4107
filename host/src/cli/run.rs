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
        let mut config = super::load_config(&self.config.config)?;
        if let Some(listen) = self.listen {
            config.server.listen = listen;
        }
        if let Some(dir) = self.data_dir {
            config.server.data_dir = dir;
        }
        let host = crate::host::RunningHost::start(config).await?;
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests in progress and flushing the store");
        host.shutdown().await;
        Ok(())
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
