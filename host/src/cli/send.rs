//! `weft send`: post a JSON file (or NDJSON lines) to a pipeline's webhook.

use super::HostArg;
use super::admin::{Listener, client, not_running};
use super::client::ClientError;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::Read;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub(super) struct SendArgs {
    /// Pipeline to send to.
    pipeline: String,
    /// JSON file to send, or `-` for standard input.
    file: PathBuf,
    /// Treat the input as newline-delimited JSON and send each line as one event.
    #[arg(long)]
    ndjson: bool,
    /// Idempotency-Key header to send (single events only).
    #[arg(long)]
    key: Option<String>,
    /// Do not wait and retry when the host answers 429 (busy): report it
    /// as not accepted at once.
    #[arg(long)]
    no_retry: bool,
    #[command(flatten)]
    host: HostArg,
}

/// How often `weft send` sends one body again after a 429.
const SEND_RETRIES: u32 = 5;

impl SendArgs {
    pub(super) async fn run(self) -> Result<()> {
        let (client, _) = client(&self.host, Listener::Public)?;
        let mut input = Vec::new();
        if self.file.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut input)?;
        } else {
            input = std::fs::read(&self.file)
                .with_context(|| format!("reading {}", self.file.display()))?;
        }
        let bodies: Vec<Vec<u8>> = if self.ndjson {
            input
                .split(|b| *b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec)
                .collect()
        } else {
            vec![input]
        };
        let path = format!("/hooks/{}", self.pipeline);
        let headers: Vec<(&str, String)> = self
            .key
            .iter()
            .map(|k| ("idempotency-key", k.clone()))
            .collect();
        let mut failed = 0;
        for body in bodies {
            // A busy host says when to come back: wait that long (within
            // reason) and send the same body again, a few times.
            let mut tries = 0;
            let reply = loop {
                let reply = match client
                    .call(hyper::Method::POST, &path, Some(body.clone()), &headers)
                    .await
                {
                    Ok(reply) => reply,
                    Err(ClientError::NotRunning(url)) => return Err(not_running(&url)),
                    Err(e) => return Err(e.into()),
                };
                tries += 1;
                if reply.status != 429 || self.no_retry || tries > SEND_RETRIES {
                    break reply;
                }
                let wait = reply.retry_after_s.unwrap_or(1).clamp(1, 60);
                eprintln!("429 (busy): sending again in {wait} s");
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
            };
            println!("{} {}", reply.status, reply.body);
            if reply.status >= 400 {
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} event(s) were not accepted");
        }
        Ok(())
    }
}
