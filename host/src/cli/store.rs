//! `weft store`: the store's encryption at rest — a new key, which keys
//! the store uses, and moving every value to the current key.

use super::HostArg;
use super::admin::connect;
use anyhow::Result;
use clap::Subcommand;

/// The store's encryption at rest.
#[derive(Debug, Subcommand)]
pub(super) enum StoreCommand {
    /// Print a new random store key (64 hex digits) to put in the secrets
    /// source, e.g. `weft store keygen > key && WEFT_SECRET_STORE_KEY=$(cat key)`.
    Keygen,
    /// Show the current key's id and the ids of the keys values are sealed
    /// under (ids are hashes, never keys).
    Status {
        #[command(flatten)]
        host: HostArg,
    },
    /// Seal every value not under the current key again under it: after a
    /// key rotation (then drop the old key from `previous`), or once
    /// encryption is turned on for a store that has plain values. Runs on
    /// the running host, or on the store of a stopped one.
    Reencrypt {
        #[command(flatten)]
        host: HostArg,
    },
}

impl StoreCommand {
    pub(super) async fn run(self) -> Result<()> {
        match self {
            StoreCommand::Keygen => {
                println!("{}", crate::store::seal::generate_key());
            }
            StoreCommand::Status { host } => {
                let e = connect(&host).await?.encryption().await?;
                match &e.current_key {
                    None if e.keys_in_use.is_empty() => println!("the store is not encrypted"),
                    None => println!(
                        "the store is sealed under key {} but no key is configured",
                        e.keys_in_use.join(", ")
                    ),
                    Some(current) => {
                        println!("encrypted: new values are sealed under key {current}");
                        let old: Vec<&String> =
                            e.keys_in_use.iter().filter(|k| *k != current).collect();
                        if !old.is_empty() {
                            println!(
                                "values may still be under key {}: run `weft store reencrypt`, then drop it from server.encryption.previous",
                                old.iter()
                                    .map(|k| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            );
                        }
                    }
                }
            }
            StoreCommand::Reencrypt { host } => {
                let r = connect(&host).await?.reencrypt().await?;
                println!(
                    "sealed under key {}: {} records, {} payloads, {} plugin state values ({} changed by the host meanwhile, already under it)",
                    r.encryption.current_key.as_deref().unwrap_or("none"),
                    r.records,
                    r.payloads,
                    r.kv_values,
                    r.changed_meanwhile
                );
                let current = r.encryption.current_key.clone().unwrap_or_default();
                if r.encryption.keys_in_use.iter().all(|k| *k == current) {
                    println!(
                        "no value is under another key: earlier keys can be dropped from server.encryption.previous"
                    );
                } else {
                    println!(
                        "values written meanwhile are still under another key ({}); run this again",
                        r.encryption.keys_in_use.join(", ")
                    );
                }
            }
        }
        Ok(())
    }
}
