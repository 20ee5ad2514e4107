//! `weft plugin inspect`: one plugin file, without a config.

use super::scratch::Scratch;
use anyhow::{Result, bail};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
    /// Make a new plugin crate for one world: a working example with unit
    /// tests, fixtures and a README, its weft name in Cargo.toml.
    New(super::author::NewArgs),
    /// Build the plugin crate in a directory to `wasm32-wasip2`, named
    /// after the plugin (target/weft/NAME.wasm), optionally into a plugin
    /// directory.
    Build(super::author::BuildArgs),
    /// Run one event (or one poll) through a plugin in the real sandbox and
    /// print what it returned, its logs and what it cost.
    Call(super::call::CallArgs),
    /// Run the cases in a plugin crate's fixtures/*.test.toml through the
    /// built plugin, with outbound HTTP live, recorded to a cassette
    /// (--record) or replayed from it.
    Test(super::plugin_test::TestArgs),
    /// Every plugin loaded, each version apart: version, world, digest and
    /// the pipelines that run it (from the running host, else from the
    /// config and plugin directory).
    List(super::plugin_list::ListArgs),
    /// Send every event of a pipeline's canary step to the candidate.
    Promote(super::canary::CanaryArgs),
    /// Send every event of a pipeline's canary step back to the baseline.
    Rollback(super::canary::CanaryArgs),
    /// Print a plugin file's digest, world, what it says about itself, and
    /// every interface it imports (its requested capabilities) and exports.
    Inspect {
        /// The `.wasm` file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl PluginCommand {
    /// Whether the command runs a plugin to show what it does.
    pub(super) fn shows_plugin_logs(&self) -> bool {
        matches!(self, PluginCommand::Call(_) | PluginCommand::Test(_))
    }

    pub(super) async fn run(self) -> Result<()> {
        let (file, json) = match self {
            PluginCommand::New(args) => return args.run(),
            PluginCommand::Build(args) => return args.run().await,
            PluginCommand::Call(args) => return args.run().await,
            PluginCommand::Test(args) => return args.run().await,
            PluginCommand::List(args) => return args.run().await,
            PluginCommand::Promote(args) => return args.run("promote").await,
            PluginCommand::Rollback(args) => return args.run("rollback").await,
            PluginCommand::Inspect { file, json } => (file, json),
        };
        let scratch = Scratch::new(64, None)?;
        let report = crate::inspect::inspect(
            &scratch.sandbox,
            &file,
            file.display().to_string(),
            None,
            &[],
        )
        .await;
        if report.refused() && report.sha256.is_none() {
            bail!("{}", report.status.trim_start_matches("refused: "));
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", crate::inspect::render(&report));
        }
        Ok(())
    }
}
