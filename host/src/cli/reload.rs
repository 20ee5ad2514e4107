//! `weft reload`: ask a running host to read its configuration and plugin
//! directory again and switch to them, or say why it did not.

use super::HostArg;
use super::admin::{Listener, client};
use super::client::ClientError;
use anyhow::{Result, bail};
use clap::Args;

#[derive(Debug, Args)]
pub(super) struct ReloadArgs {
    #[command(flatten)]
    host: HostArg,
    /// Print the host's answer as JSON.
    #[arg(long)]
    json: bool,
}

impl ReloadArgs {
    pub(super) async fn run(self) -> Result<()> {
        let (client, _) = client(&self.host, Listener::Admin)
            .map_err(|e| anyhow::anyhow!("nothing was changed: {e:#}"))?;
        let reply = match client
            .call(
                hyper::Method::POST,
                "/api/v1/reload",
                Some(b"{}".to_vec()),
                &[],
            )
            .await
        {
            Ok(reply) => reply,
            Err(ClientError::NotRunning(url)) => bail!(
                "no weft host answers at {url}; a host reads its configuration when it starts (`weft run`), so there is nothing to reload"
            ),
            Err(e) => return Err(e.into()),
        };
        if reply.status != 200 {
            let why = reply.body["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| reply.body.to_string());
            bail!("reload refused ({}): {why}", reply.status);
        }
        if self.json {
            println!("{}", serde_json::to_string_pretty(&reply.body)?);
            return Ok(());
        }
        print!("{}", describe(&reply.body));
        Ok(())
    }
}

/// The host's reload summary, as lines for a person.
fn describe(s: &serde_json::Value) -> String {
    let names = |v: &serde_json::Value| -> String {
        let list: Vec<&str> = v
            .as_array()
            .map(|a| a.iter().filter_map(|n| n.as_str()).collect())
            .unwrap_or_default();
        if list.is_empty() {
            "-".into()
        } else {
            list.join(", ")
        }
    };
    let mut out = format!(
        "reloaded in {} ms\npipelines added: {}\npipelines changed: {}\npipelines removed: {}\nplugins changed: {}\n",
        s["took_ms"],
        names(&s["pipelines"]["added"]),
        names(&s["pipelines"]["changed"]),
        names(&s["pipelines"]["removed"]),
        names(&s["plugins"]["changed"]),
    );
    if let Some(kept) = s["kept"].as_object() {
        for (pipeline, n) in kept {
            out.push_str(&format!(
                "{n} queued events of {pipeline} (no longer configured) stay in the store until it is configured again, or `weft pipeline purge {pipeline}` deletes them\n"
            ));
        }
    }
    out
}
