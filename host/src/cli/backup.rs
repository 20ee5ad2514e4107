//! `weft backup DIR` (a running host through its API, or the store when no
//! host runs) and `weft restore DIR` (onto a stopped host).

use super::admin::{Listener, client, not_running};
use super::client::ClientError;
use super::{ConfigArg, HostArg};
use crate::store::BackupManifest;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// A new (or empty) directory to write the backup into.
    dir: PathBuf,
    #[command(flatten)]
    host: HostArg,
}

#[derive(Debug, Args)]
pub(super) struct RestoreArgs {
    /// A directory written by `weft backup`.
    dir: PathBuf,
    #[command(flatten)]
    config: ConfigArg,
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn summary(m: &BackupManifest) -> String {
    let c = &m.counts;
    format!(
        "{} events ({} queued, {} dead letters, {} finished), {} audit records, {} plugin-state entries, {} in {} files",
        c.events,
        c.queued,
        c.dead_letters,
        c.finished,
        c.audit_records,
        c.kv_entries,
        mib(m.files.iter().map(|f| f.bytes).sum()),
        m.files.len() + 1
    )
}

fn empty_or_new(dir: &Path) -> Result<()> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; a backup goes into a new directory",
            dir.display()
        );
    }
    crate::private::dir(dir).with_context(|| format!("making {}", dir.display()))
}

impl BackupArgs {
    pub(super) async fn run(self) -> Result<()> {
        empty_or_new(&self.dir)?;
        let (client, config) = client(&self.host, Listener::Admin)?;
        let taken = client
            .call(
                hyper::Method::POST,
                "/api/v1/backups",
                Some(b"{}".to_vec()),
                &[],
            )
            .await;
        let manifest = match taken {
            Ok(reply) if reply.status == 200 => {
                let id = reply.body["id"].as_str().unwrap_or_default().to_string();
                let manifest: BackupManifest =
                    serde_json::from_value(reply.body["manifest"].clone())
                        .context("unexpected answer from the host")?;
                let fetched = fetch(&client, &id, &manifest, &self.dir).await;
                // The staged copy goes whether or not the download worked.
                let _ = client
                    .call(
                        hyper::Method::DELETE,
                        &format!("/api/v1/backups/{id}"),
                        Some(b"{}".to_vec()),
                        &[],
                    )
                    .await;
                fetched?;
                crate::store::verify_backup(&self.dir).map_err(anyhow::Error::msg)?
            }
            Ok(reply) => bail!("the host answered {}: {}", reply.status, reply.body),
            Err(ClientError::NotRunning(url)) => {
                let Some(config) = config else {
                    return Err(not_running(&url));
                };
                // No host runs: the store itself, opened here.
                let store = crate::store::open_for(&config)?;
                let manifest = store.backup(&self.dir)?;
                store.close();
                manifest
            }
            Err(e) => return Err(e.into()),
        };
        println!(
            "backup in {}: {}; verified against its manifest. Restore it on a stopped host with `weft restore {}`. It holds every payload and the audit key: keep it as private as the data directory.",
            self.dir.display(),
            summary(&manifest),
            self.dir.display()
        );
        Ok(())
    }
}

/// Download every file of staged backup `id` into `dir`, manifest last.
async fn fetch(
    client: &super::client::HostClient,
    id: &str,
    manifest: &BackupManifest,
    dir: &Path,
) -> Result<()> {
    let names = manifest
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.bytes))
        .chain([("manifest.json", u64::MAX)]);
    for (name, bytes) in names {
        if !crate::store::safe_name(name) {
            bail!("the host named a backup file {name:?}, outside the backup");
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            crate::private::dir(parent)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        let mut offset = 0u64;
        loop {
            let (status, chunk) = client
                .get_bytes(&format!("/api/v1/backups/{id}/{name}?offset={offset}"))
                .await?;
            if status != 200 {
                bail!(
                    "the host answered {status} for {name}: {}",
                    String::from_utf8_lossy(&chunk)
                );
            }
            file.write_all(&chunk)?;
            offset += chunk.len() as u64;
            if chunk.is_empty() || offset >= bytes {
                break;
            }
        }
        file.sync_all()?;
    }
    Ok(())
}

impl RestoreArgs {
    pub(super) async fn run(self) -> Result<()> {
        let config = super::load_config(&self.config.config)?;
        let data_dir = &config.server.data_dir;
        let restored = crate::store::restore(&self.dir, data_dir).map_err(anyhow::Error::msg)?;
        println!(
            "restored {} into {}: {}; the audit chain verifies.",
            self.dir.display(),
            data_dir.display(),
            summary(&restored.manifest)
        );
        if let Some(aside) = restored.moved_aside {
            println!(
                "the data directory that was there is now {} (remove it once the restored host runs as it should)",
                aside.display()
            );
        }
        Ok(())
    }
}
