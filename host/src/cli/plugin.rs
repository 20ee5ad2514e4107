//! `weft plugin inspect`: one plugin file, without a config.

use super::scratch::Scratch;
use anyhow::{Result, bail};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub(super) enum PluginCommand {
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
    pub(super) async fn run(self) -> Result<()> {
        let PluginCommand::Inspect { file, json } = self;
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
