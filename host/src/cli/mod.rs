//! The `weft` command line: one file per command group, each a struct with
//! `run()`. Admin commands go through [`admin::Admin`], served by a running
//! host's API or, when none runs, by the store directly.

pub mod admin;
mod audit;
mod author;
mod backup;
mod call;
mod canary;
mod check;
pub mod client;
mod credentials;
mod dlq;
mod erase;
mod pipeline;
mod plugin;
mod plugin_list;
mod plugin_test;
mod reload;
mod run;
mod runs;
mod scratch;
mod send;
mod store;

/// The version `weft --version` prints: the crate version, the git
/// revision it was built from and the build profile.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("WEFT_GIT_REV"),
    ", ",
    env!("WEFT_BUILD_PROFILE"),
    " build, mimalloc)"
);

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// weft — durable webhook pipelines with sandboxed WebAssembly plugins.
///
/// Events arrive at POST /hooks/{pipeline}, are stored durably, run through
/// the pipeline's transform plugins and are delivered by its sink plugin,
/// with retries, backoff and a dead-letter queue.
#[derive(Debug, Parser)]
#[command(name = "weft", version = VERSION, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the host: load plugins, build pipelines, serve webhooks and the admin API.
    Run(run::RunArgs),
    /// Make a running host read its config file and plugin directory again
    /// and switch to them without a restart; nothing changes if any part of
    /// the new configuration fails its checks.
    Reload(reload::ReloadArgs),
    /// Check a config file and the plugins it names, without serving.
    Check(ConfigArg),
    /// Send a JSON file to a pipeline of a running host, as a webhook would.
    Send(send::SendArgs),
    /// Inspect, replay and purge the dead-letter queue.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Pause, resume and inspect pipelines.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Show the history of events.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// Look inside plugin files.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// For every plugin in the config's plugin directory: digest, world,
    /// requested capabilities, the grant, what it may do, and every mismatch.
    /// Exits with status 1 when the host would refuse a plugin.
    Audit(audit::AuditArgs),
    /// Show and verify the hash-chained audit log (capability denials).
    #[command(subcommand, name = "audit-log")]
    AuditLog(audit::AuditLogCommand),
    /// Take a consistent backup of the store (of the running host through
    /// its API, else of the data directory) into a new directory.
    Backup(backup::BackupArgs),
    /// Put a backup in place on a stopped host, after verifying it; the data
    /// directory that was there is moved aside, not deleted.
    Restore(backup::RestoreArgs),
    /// Erase a data subject (`--subject email=ann@example.com`) from the run
    /// history and the dead-letter queue, as the pipelines' `subjects` name
    /// it; audited without the value.
    Erase(erase::EraseArgs),
    /// Credentials held by the host: static secrets and OAuth clients.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// Encryption at rest: make a key, show the keys in use, seal every
    /// value again under the current key.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Print shell completions: `weft completions bash > /etc/bash_completion.d/weft`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `weft man > /usr/local/share/man/man1/weft.1`.
    Man,
}

/// `--config FILE`
#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file.
    #[arg(short, long, default_value = "weft.toml", env = "WEFT_CONFIG")]
    pub(super) config: PathBuf,
}

/// `--config FILE --url URL`: which host an admin command talks to.
#[derive(Debug, Args)]
pub struct HostArg {
    #[command(flatten)]
    config: ConfigArg,
    /// Address of the running host (default: server.listen from the config).
    #[arg(long)]
    url: Option<String>,
    /// A file holding the admin token (instead of `WEFT_TOKEN`).
    #[arg(long)]
    token_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM chain) to show a listener that asks for
    /// one (`client_ca` in server.admin_tls or server.tls); with `--client-key`.
    #[arg(long, env = "WEFT_CLIENT_CERT", requires = "client_key")]
    client_cert: Option<std::path::PathBuf>,
    /// The private key of `--client-cert` (PEM).
    #[arg(long, env = "WEFT_CLIENT_KEY", requires = "client_cert")]
    client_key: Option<std::path::PathBuf>,
}

impl HostArg {
    /// The client certificate and key files, when given.
    fn client_identity(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        }
    }
}

impl Cli {
    /// The log format the command asks for (only `run` has a choice).
    pub fn log_format(&self) -> crate::logging::LogFormat {
        match &self.command {
            Command::Run(r) => r.log_format(),
            _ => crate::logging::LogFormat::Text,
        }
    }

    /// The level of plugins' log lines (`weft run --plugin-log`; debug for
    /// `weft plugin call`, which is there to show them).
    pub fn plugin_log(&self) -> Option<tracing::Level> {
        match &self.command {
            Command::Run(r) => r.plugin_log(),
            Command::Plugin(p) if p.shows_plugin_logs() => Some(tracing::Level::DEBUG),
            _ => None,
        }
    }

    /// Run the command.
    pub async fn run(self) -> Result<()> {
        match self.command {
            Command::Run(args) => args.run().await,
            Command::Check(args) => check::run(&args.config).await,
            Command::Reload(args) => args.run().await,
            Command::Send(args) => args.run().await,
            Command::Dlq(c) => c.run().await,
            Command::Pipeline(c) => c.run().await,
            Command::Runs(c) => c.run().await,
            Command::Plugin(c) => c.run().await,
            Command::Audit(args) => args.run().await,
            Command::AuditLog(c) => c.run().await,
            Command::Backup(args) => args.run().await,
            Command::Restore(args) => args.run().await,
            Command::Erase(args) => args.run().await,
            Command::Store(c) => c.run().await,
            Command::Credentials(c) => c.run().await,
            Command::Completions { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "weft", &mut std::io::stdout());
                Ok(())
            }
            Command::Man => {
                let cmd = <Cli as clap::CommandFactory>::command()
                    .about("durable webhook pipelines with sandboxed WebAssembly plugins");
                clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?;
                Ok(())
            }
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<crate::config::Config> {
    Ok(crate::config::Config::load(path)?)
}
