//! `weft erase --subject NAME=VALUE`: a data subject's erasure, through the
//! running host's API, or on the store of a stopped one.

use super::HostArg;
use super::admin::connect;
use anyhow::{Result, bail};
use clap::Args;

/// Erase a data subject from the run history and the dead-letter queue.
#[derive(Debug, Args)]
pub(super) struct EraseArgs {
    /// The subject, as `NAME=VALUE`: NAME as the pipelines' `subjects`
    /// call it (`email=ann@example.com`).
    #[arg(long)]
    subject: String,
    /// Also send the request into this pipeline, for the systems
    /// downstream (needs a running host).
    #[arg(long)]
    emit: Option<String>,
    #[command(flatten)]
    host: HostArg,
}

impl EraseArgs {
    pub(super) async fn run(self) -> Result<()> {
        let Some((subject, value)) = self.subject.split_once('=') else {
            bail!("--subject takes NAME=VALUE, like --subject email=ann@example.com");
        };
        let admin = connect(&self.host).await?;
        let request = crate::engine::EraseRequest {
            subject: subject.trim().to_string(),
            value: value.to_string(),
            emit: self.emit,
        };
        let e = admin.erase(request).await?;
        println!(
            "subject {}: {} events erased in the history, {} dead letters erased",
            e.subject, e.history, e.dead_letters
        );
        if let Some(id) = &e.emitted {
            println!("the erasure request went into the pipeline as event {id}");
        }
        if e.queued_left > 0 {
            println!(
                "{} of the subject's events are still queued: run this again once they are delivered",
                e.queued_left
            );
        }
        Ok(())
    }
}
