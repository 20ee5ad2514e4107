//! `weft audit` (every plugin against its grant) and `weft audit-log`
//! (the hash-chained record of denials and admin calls).

use super::scratch::Scratch;
use super::{ConfigArg, HostArg};
use crate::store::Store;
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Args)]
pub(super) struct AuditArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

impl AuditArgs {
    pub(super) async fn run(self) -> Result<()> {
        let path = &self.config.config;
        let config = super::load_config(path)?;
        let max_memory = config
            .grants
            .values()
            .map(|g| g.memory_mib)
            .max()
            .unwrap_or(64)
            .max(64);
        let scratch = Scratch::new(max_memory, None)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let base = if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base
        };
        let reports = crate::inspect::audit(&scratch.sandbox, &config, base)
            .await
            .map_err(anyhow::Error::msg)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&reports)?);
        } else {
            for (i, r) in reports.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", crate::inspect::render(r));
            }
        }
        let refused: Vec<&str> = reports
            .iter()
            .filter(|r| r.refused() && !r.unused())
            .map(|r| r.name.as_str())
            .collect();
        let unused: Vec<&str> = reports
            .iter()
            .filter(|r| r.unused() && r.sha256.is_some())
            .map(|r| r.name.as_str())
            .collect();
        if !unused.is_empty() && !self.json {
            println!(
                "\nunused plugins (no pipeline names them): {}",
                unused.join(", ")
            );
        }
        let unset: Vec<String> = reports
            .iter()
            .flat_map(|r| {
                r.mismatches
                    .iter()
                    .filter(|m| m.kind == "credential-unavailable")
                    .map(move |m| format!("{} (for {})", m.subject, r.name))
            })
            .collect();
        let outside: Vec<String> = reports
            .iter()
            .flat_map(|r| {
                r.mismatches
                    .iter()
                    .filter(|m| m.kind == "url-outside-grant")
                    .map(move |m| format!("{} (pipeline {})", r.name, m.subject))
            })
            .collect();
        let mut blockers = Vec::new();
        if !outside.is_empty() {
            blockers.push(format!(
                "the host would not start: configured URLs outside the grant of {}",
                outside.join(", ")
            ));
        }
        if !refused.is_empty() {
            blockers.push(format!("the host would not load: {}", refused.join(", ")));
        }
        if !unset.is_empty() {
            blockers.push(format!(
                "the host would not start: credentials set nowhere: {}",
                unset.join(", ")
            ));
        }
        if !blockers.is_empty() {
            bail!("{}", blockers.join("; "));
        }
        let tampered: Vec<&str> = reports
            .iter()
            .filter(|r| crate::inspect::cache_tampered(r))
            .map(|r| r.name.as_str())
            .collect();
        if !tampered.is_empty() {
            bail!(
                "the compiled-code cache of {} was changed behind weft's back; the host will not run that code (it compiles again), but find out who wrote to {}",
                tampered.join(", "),
                config.server.data_dir.join("compiled").display()
            );
        }
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum AuditLogCommand {
    /// Print the records (from the running host's API, or from the store
    /// when no host runs).
    Show {
        #[command(flatten)]
        host: HostArg,
        /// Start at this index.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Check the hash chain; names the first bad record and exits with 1.
    Verify {
        #[command(flatten)]
        host: HostArg,
    },
}

fn open_store(path: &Path) -> Result<Arc<dyn Store>> {
    let config = super::load_config(path)?;
    Ok(crate::store::open_for(&config)?)
}

/// The running host's answer to an audit-log call, or `None` when no
/// host runs (the store is then read directly).
async fn from_host(host: &HostArg, path: &str) -> Result<Option<serde_json::Value>> {
    let (client, _) = super::admin::client(host, super::admin::Listener::Admin)?;
    match client.call(hyper::Method::GET, path, None, &[]).await {
        Ok(reply) if reply.status == 200 => Ok(Some(reply.body)),
        Ok(reply) => bail!("the host answered {}: {}", reply.status, reply.body),
        Err(super::client::ClientError::NotRunning(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl AuditLogCommand {
    pub(super) async fn run(self) -> Result<()> {
        match self {
            AuditLogCommand::Show { host, from, json } => {
                let records =
                    match from_host(&host, &format!("/api/v1/audit-log?from={from}")).await? {
                        Some(answer) => serde_json::from_value(answer["records"].clone())?,
                        None => open_store(&host.config.config)?.audit().records(from)?,
                    };
                for r in records {
                    if json {
                        println!("{}", serde_json::to_string(&r)?);
                        continue;
                    }
                    let at = crate::engine::rfc3339(r.at_ms);
                    let pipeline = if r.pipeline.is_empty() {
                        "-"
                    } else {
                        &r.pipeline
                    };
                    println!(
                        "{:>6}  {at}  {:<6} {:<16} {:<12} {:<10} {}",
                        r.index, r.kind, r.actor, pipeline, r.action, r.detail
                    );
                }
                Ok(())
            }
            AuditLogCommand::Verify { host } => {
                let verdict = match from_host(&host, "/api/v1/audit-log/verify").await? {
                    Some(a) if a["intact"] == true => Ok(a["records"].as_u64().unwrap_or(0)),
                    Some(a) => Err((
                        a["index"].as_u64().unwrap_or(0),
                        a["reason"].as_str().unwrap_or_default().to_string(),
                    )),
                    None => open_store(&host.config.config)?
                        .audit()
                        .verify()
                        .map_err(|b| (b.index, b.reason)),
                };
                match verdict {
                    Ok(n) => {
                        println!("audit log intact: {n} records, hash chain verified");
                        Ok(())
                    }
                    Err((index, reason)) => bail!("audit log broken at record {index}: {reason}"),
                }
            }
        }
    }
}
