//! `weft runs`: the history of events, and one event in full.

use super::HostArg;
use super::admin::{RunQuery, connect};
use crate::store::EventId;
use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(super) enum RunsCommand {
    /// List events, newest first: state, attempts, time spent, last outcome.
    List {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only this state: queued, delivered, filtered, dead-lettered.
        #[arg(long)]
        state: Option<String>,
        /// Only events accepted since (RFC 3339, or an age such as `2h`).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
    /// Show one event: state, every attempt with each step's time, fuel and
    /// memory, and the payload.
    Show {
        /// Event id.
        id: String,
        #[command(flatten)]
        host: HostArg,
    },
}

impl RunsCommand {
    pub(super) async fn run(self) -> Result<()> {
        match self {
            RunsCommand::Show { id, host } => show(&host, &id).await,
            RunsCommand::List {
                pipeline,
                state,
                since,
                limit,
                json,
                host,
            } => {
                let query = RunQuery {
                    pipeline,
                    state,
                    since,
                    limit,
                };
                list(&host, query, json).await
            }
        }
    }
}

async fn list(host: &HostArg, query: RunQuery, as_json: bool) -> Result<()> {
    let list = connect(host).await?.runs(query).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<36}  {:<12} {:<13} {:<24} {:>8} {:>9}  LAST",
        "ID", "PIPELINE", "STATE", "RECEIVED", "ATTEMPTS", "BUSY MS"
    );
    for r in &list {
        let last: String = r.last.chars().take(60).collect();
        println!(
            "{:<36}  {:<12} {:<13} {:<24} {:>8} {:>9.1}  {last}",
            r.id, r.pipeline, r.state, r.received_at, r.attempts, r.busy_ms
        );
    }
    Ok(())
}

/// Print one event as JSON.
pub(super) async fn show(host: &HostArg, id: &str) -> Result<()> {
    let id: EventId = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
    let view = connect(host).await?.event(id).await?;
    println!("{}", serde_json::to_string_pretty(&view)?);
    Ok(())
}
