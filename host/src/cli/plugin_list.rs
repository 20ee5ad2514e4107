//! `weft plugin list`: every plugin file loaded (each version apart), its
//! digest, and the pipelines that run it; from the running host, or from
//! the config and plugin directory when none runs.

use super::HostArg;
use super::admin::{Listener, client};
use super::client::ClientError;
use super::scratch::Scratch;
use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    host: HostArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// One row of the list: the API's own view of a plugin.
type Row = crate::server::api::PluginView;

impl ListArgs {
    pub(super) async fn run(self) -> Result<()> {
        let (client, config) = client(&self.host, Listener::Admin)?;
        let rows: Vec<Row> = match client
            .call(hyper::Method::GET, "/api/v1/plugins", None, &[])
            .await
        {
            Ok(reply) if reply.status == 200 => {
                serde_json::from_value(reply.body["plugins"].clone())?
            }
            Ok(reply) => bail!("the host answered {}: {}", reply.status, reply.body),
            Err(ClientError::NotRunning(url)) => {
                let Some(config) = config else {
                    return Err(super::admin::not_running(&url));
                };
                from_files(&config).await?
            }
            Err(e) => return Err(e.into()),
        };
        if self.json {
            println!("{}", serde_json::to_string_pretty(&rows)?);
            return Ok(());
        }
        println!(
            "{:<28} {:<12} {:<10} {:<14} USED BY",
            "PLUGIN", "VERSION", "WORLD", "SHA256"
        );
        for r in rows {
            println!(
                "{:<28} {:<12} {:<10} {:<14} {}",
                r.name,
                r.version.as_deref().unwrap_or("-"),
                r.world,
                &r.sha256[..r.sha256.len().min(12)],
                if r.used_by.is_empty() {
                    "-".to_string()
                } else {
                    r.used_by.join(", ")
                }
            );
        }
        Ok(())
    }
}

/// No host runs: load the plugin directory and resolve each pipeline's
/// plugin names against it, as a start would.
async fn from_files(config: &crate::config::Config) -> Result<Vec<Row>> {
    let scratch = Scratch::new(4096, None)?;
    let (plugins, failures) = crate::host::load_plugins(config, &scratch.sandbox, None).await?;
    for why in failures.values() {
        eprintln!("warning: {why}");
    }
    let mut rows: Vec<Row> = plugins
        .values()
        .map(|p| Row::of(p, Vec::new(), Default::default()))
        .collect();
    for p in &config.pipelines {
        let specs = p
            .steps
            .iter()
            .chain(&p.sink)
            .flat_map(|s| {
                [
                    Some(s.plugin.as_str()),
                    s.canary.as_ref().map(|c| c.plugin.as_str()),
                ]
            })
            .flatten()
            .chain(p.trigger.poll.as_ref().map(|poll| poll.plugin.as_str()));
        for spec in specs {
            if let Some(found) = crate::sandbox::versions::resolve(&plugins, spec)
                && let Some(row) = rows.iter_mut().find(|r| r.name == found.name)
                && !row.used_by.contains(&p.name)
            {
                row.used_by.push(p.name.clone());
            }
        }
    }
    Ok(rows)
}
