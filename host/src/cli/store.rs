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
    /// Move an installation between its sled store (server.data_dir) and
    /// the JetStream cluster `[store]` names: queued events, dead letters,
    /// the history, idempotency keys, poll cursors, schedule times, pauses
    /// and plugin state. Stop every host first.
    Migrate {
        #[command(flatten)]
        config: super::ConfigArg,
        /// `sled` copies server.data_dir into the cluster; `jetstream`
        /// copies the cluster into server.data_dir (which must be empty).
        #[arg(long, value_parser = ["sled", "jetstream"])]
        from: String,
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
            StoreCommand::Migrate { config, from } => migrate(&config.config, &from).await?,
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

/// `weft store migrate --from sled|jetstream`.
async fn migrate(path: &std::path::Path, from: &str) -> Result<()> {
    use crate::store::{JetStreamStore, SledStore, Store};
    let config = super::load_config(path)?;
    if config.store.backend != crate::config::StoreBackend::Jetstream {
        anyhow::bail!(
            "{}: set [store] backend = \"jetstream\" with the cluster's url and audit_key first; the migration copies between server.data_dir and that cluster",
            path.display()
        );
    }
    let dir = &config.server.data_dir;
    if from == "jetstream" && std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        anyhow::bail!(
            "{} already holds files: a migration from JetStream writes a new sled store there; move them away or point server.data_dir at an empty directory",
            dir.display()
        );
    }
    let (keys, Some(options)) = crate::store::store_secrets(&config)? else {
        unreachable!("the backend is jetstream")
    };
    let sled = SledStore::open_with(dir, keys.clone())?;
    let js = JetStreamStore::open(options, keys)?;
    let others = js.other_hosts()?;
    if others > 0 {
        js.close();
        anyhow::bail!(
            "{others} weft host(s) are running on this cluster ({}); stop them before migrating",
            js.location()
        );
    }
    let pipelines: Vec<String> = config.pipelines.iter().map(|p| p.name.clone()).collect();
    let (source, target): (&dyn Store, &dyn Store) = if from == "sled" {
        (&sled, &js)
    } else {
        (&js, &sled)
    };
    let done = crate::store::migrate::copy(source, target, &pipelines).await;
    js.close();
    sled.close();
    let done = done?;
    println!(
        "copied from {} to {}: {} queued events, {} dead letters, {} finished events, {} cursors, schedule times and pauses, {} plugin state values",
        source.location(),
        target.location(),
        done.queued,
        done.dead_letters,
        done.history,
        done.trigger_state,
        done.kv_values
    );
    println!(
        "now set [store] backend = \"{}\" and start the hosts",
        if from == "sled" { "jetstream" } else { "sled" }
    );
    Ok(())
}
