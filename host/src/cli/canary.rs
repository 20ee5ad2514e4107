//! `weft plugin promote` and `weft plugin rollback`: settle a pipeline's
//! canary by hand on the running host.

use super::HostArg;
use super::admin::{Listener, client};
use super::client::ClientError;
use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(super) struct CanaryArgs {
    /// The pipeline whose canary to settle.
    pipeline: String,
    /// Which canary, when the pipeline has several: a step number (1, 2, …)
    /// or `sink`.
    #[arg(long)]
    step: Option<String>,
    #[command(flatten)]
    host: HostArg,
}

impl CanaryArgs {
    /// `promote`: every event on the candidate; `rollback`: every event on
    /// the baseline.
    pub(super) async fn run(self, action: &str) -> Result<()> {
        let (client, _) = client(&self.host, Listener::Admin)?;
        let mut path = format!("/api/v1/pipelines/{}/canary/{action}", self.pipeline);
        if let Some(step) = &self.step {
            path.push_str(&format!("?step={step}"));
        }
        let reply = match client
            .call(hyper::Method::POST, &path, Some(b"{}".to_vec()), &[])
            .await
        {
            Ok(r) => r,
            Err(ClientError::NotRunning(url)) => bail!(
                "no weft host answers at {url}; a canary is settled on a running host (or in weft.toml: name the candidate as the step's plugin, or remove the canary)"
            ),
            Err(e) => return Err(e.into()),
        };
        if reply.status != 200 {
            bail!(
                "{}",
                reply.body["error"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| reply.body.to_string())
            );
        }
        let b = &reply.body;
        println!(
            "pipeline {}, {}: canary {} is {} ({} on {}); make it last by naming it in weft.toml",
            self.pipeline,
            b["step"].as_str().unwrap_or("-"),
            b["candidate"].as_str().unwrap_or("-"),
            b["state"].as_str().unwrap_or("-"),
            if action == "promote" {
                "every event"
            } else {
                "no event"
            },
            b["candidate"].as_str().unwrap_or("-"),
        );
        Ok(())
    }
}
