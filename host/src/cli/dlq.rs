//! `weft dlq`: list, show, replay and purge dead letters.

use super::HostArg;
use super::admin::{DlqAction, connect};
use crate::engine::Selection;
use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(super) struct SelectArgs {
    /// Event ids.
    ids: Vec<String>,
    /// Every dead letter (narrowed by --pipeline and --since).
    #[arg(long, conflicts_with = "ids")]
    all: bool,
    /// Only this pipeline.
    #[arg(long)]
    pipeline: Option<String>,
    /// Only those dead-lettered since a time (2026-11-22T10:00:00Z) or a duration ago (2h).
    #[arg(long)]
    since: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum DlqCommand {
    /// List dead letters with their last error.
    List {
        /// Only this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only those dead-lettered since a time or a duration ago (2h).
        #[arg(long)]
        since: Option<String>,
        /// Print JSON (with every attempt and the payload).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
    /// Show one dead letter: every attempt, the error and the payload.
    Show {
        /// Event id.
        id: String,
        #[command(flatten)]
        host: HostArg,
    },
    /// Put dead letters back in their pipeline with the same idempotency key.
    Replay {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Delete dead letters for good.
    Purge {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        host: HostArg,
    },
    /// Queue the compensation of dead letters (pipelines with
    /// `compensate`), once per event key, whether or not their sink ran.
    Compensate {
        #[command(flatten)]
        select: SelectArgs,
        #[command(flatten)]
        host: HostArg,
    },
}

impl DlqCommand {
    pub(super) async fn run(self) -> Result<()> {
        match self {
            DlqCommand::List {
                pipeline,
                since,
                json,
                host,
            } => list(&host, pipeline, since, json).await,
            DlqCommand::Show { id, host } => super::runs::show(&host, &id).await,
            DlqCommand::Replay { select, host } => act(&host, DlqAction::Replay, select).await,
            DlqCommand::Purge { select, host } => act(&host, DlqAction::Purge, select).await,
            DlqCommand::Compensate { select, host } => {
                act(&host, DlqAction::Compensate, select).await
            }
        }
    }
}

async fn list(
    host: &HostArg,
    pipeline: Option<String>,
    since: Option<String>,
    as_json: bool,
) -> Result<()> {
    let list = connect(host).await?.dead_letters(pipeline, since).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("the dead-letter queue is empty");
        return Ok(());
    }
    println!(
        "{:<36}  {:<12}  {:>8}  {:<22}  ERROR",
        "ID", "PIPELINE", "ATTEMPTS", "FAILED IN"
    );
    for d in &list {
        let mut error = format!("{}: {}", d.error_kind, d.error);
        if error.chars().count() > 100 {
            error = error.chars().take(99).collect::<String>() + "…";
        }
        println!(
            "{:<36}  {:<12}  {:>8}  {:<22}  {error}",
            d.id, d.pipeline, d.attempts, d.failed_step
        );
    }
    println!(
        "{} dead letter(s); `weft dlq replay ID` or `weft dlq replay --all` requeues them",
        list.len()
    );
    Ok(())
}

async fn act(host: &HostArg, action: DlqAction, select: SelectArgs) -> Result<()> {
    let admin = connect(host).await?;
    let selection = Selection {
        ids: select.ids,
        all: select.all,
        pipeline: select.pipeline,
        since: select.since,
    };
    if admin.is_local() && action == DlqAction::Replay {
        println!(
            "no host is running: the events are requeued in the store and will be delivered when `weft run` starts"
        );
    }
    let outcomes = admin.dead_letter_action(action, selection).await?;
    let done_word = match action {
        DlqAction::Replay => "requeued",
        DlqAction::Purge => "purged",
        DlqAction::Compensate => "compensation-queued",
    };
    let mut skipped = 0;
    for o in &outcomes {
        if o.result != done_word {
            skipped += 1;
        }
        println!("{}  {}", o.id, o.result);
    }
    println!(
        "{} {done_word}, {skipped} skipped",
        outcomes.len() - skipped
    );
    Ok(())
}
