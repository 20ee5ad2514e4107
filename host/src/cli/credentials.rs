//! `weft credentials status`: every credential the grants attach, and for
//! OAuth clients how their tokens stand — never a secret or a token.

use super::HostArg;
use super::admin::connect;
use anyhow::Result;
use clap::Subcommand;

/// Credentials held by the host.
#[derive(Debug, Subcommand)]
pub(super) enum CredentialsCommand {
    /// Each credential: kind, the plugins that attach it, and for OAuth
    /// clients the token's state, valid until, last refresh and last error.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
}

fn when(ms: Option<u64>) -> String {
    ms.and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

impl CredentialsCommand {
    pub(super) async fn run(self) -> Result<()> {
        let CredentialsCommand::Status { json, host } = self;
        let list = connect(&host).await?.credentials().await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&list)?);
            return Ok(());
        }
        if list.is_empty() {
            println!("no grant attaches a credential");
        }
        for c in list {
            let used = if c.used_by.is_empty() {
                "no plugin".to_string()
            } else {
                c.used_by.join(", ")
            };
            println!("{} ({}, used by {used}): {}", c.name, c.kind, c.state);
            if c.kind == "oauth" {
                println!(
                    "  {} from {}{}",
                    c.grant.as_deref().unwrap_or("tokens"),
                    c.token_url.as_deref().unwrap_or("?"),
                    if c.scopes.is_empty() {
                        String::new()
                    } else {
                        format!(", scopes {}", c.scopes.join(" "))
                    }
                );
                println!(
                    "  valid until {}, last refresh {}, {} refreshes, {} rotations, {} failures",
                    when(c.valid_until_ms),
                    when(c.last_refresh_ms),
                    c.refreshes,
                    c.rotations,
                    c.failures
                );
                if let Some(e) = &c.last_error {
                    println!("  last error: {e}");
                }
            }
        }
        Ok(())
    }
}
