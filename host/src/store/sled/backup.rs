//! Backup and restore of a whole store.
//!
//! A backup is a directory: `store.dump` (every key and value of every
//! tree, taken while no write runs, so events, queue, dead letters, dedup
//! keys, cursors, plugin state, schedules and the audit chain agree with
//! each other), the payload files, the audit key and anchored head, and
//! `manifest.json` last, naming every file with its size and SHA-256. A
//! restore checks all of it before anything is put in place, builds the
//! store beside the data directory, opens it (anchor, audit chain, counts)
//! and only then moves it in.

use super::keys::{COMMITS_KEY, DEAD, DONE, EVENT, QUEUE};
use super::shelf::Trees;
use super::{SledStore, anchor::Anchor};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Component, Path};

/// What a backup holds: written last, read first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct BackupManifest {
    /// Always `weft-backup`.
    pub format: String,
    /// The layout's version.
    pub version: u32,
    /// The weft that took it.
    pub weft: String,
    /// When, in ms since the epoch.
    pub created_at_ms: u64,
    /// The store's group-commit count when it was taken (its anchor).
    pub commits: u64,
    /// What it holds.
    pub counts: BackupCounts,
    /// Every file but the manifest, with its size and digest.
    pub files: Vec<BackupFile>,
}

/// Counts of what a backup holds, checked again after a restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct BackupCounts {
    /// Events (every state).
    pub events: u64,
    /// Events waiting for an attempt.
    pub queued: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Finished events kept as history.
    pub finished: u64,
    /// Records of the audit chain.
    pub audit_records: u64,
    /// Entries of plugin state (values and usage counters).
    pub kv_entries: u64,
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct BackupFile {
    /// Its path inside the backup (`/`-separated).
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// Hex SHA-256 of its contents.
    pub sha256: String,
}

const FORMAT: &str = "weft-backup";
const VERSION: u32 = 1;
/// The dump's first bytes.
const MAGIC: &[u8] = b"weft-dump 1\n";
/// The trees in the dump, by the byte that tags each entry.
const TREES: [(u8, &str); 5] = [
    (1, "events"),
    (2, "kv"),
    (3, "schedules"),
    (4, "audit"),
    (5, "meta"),
];

fn tree(trees: &Trees, tag: u8) -> Option<&sled::Tree> {
    Some(match tag {
        1 => &trees.events,
        2 => &trees.kv,
        3 => &trees.schedules,
        4 => &trees.audit,
        5 => &trees.meta,
        _ => return None,
    })
}

/// Count one entry of tree `tag` in `counts`.
fn count(counts: &mut BackupCounts, tag: u8, key: &[u8]) {
    match (tag, key.first()) {
        (1, Some(&EVENT)) => counts.events += 1,
        (1, Some(&QUEUE)) => counts.queued += 1,
        (1, Some(&DEAD)) => counts.dead_letters += 1,
        (1, Some(&DONE)) => counts.finished += 1,
        (2, _) => counts.kv_entries += 1,
        (4, _) => counts.audit_records += 1,
        _ => {}
    }
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Write(format!("{what}: {e}"))
}

/// Whether `name` (from a manifest or a host) is a plain relative path
/// inside a backup: no root, no `..`, nothing hidden at the top.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Take a backup of `store` into the new directory `to`.
pub(super) fn take(store: &SledStore, to: &Path) -> Result<BackupManifest, StoreError> {
    if to.exists()
        && std::fs::read_dir(to)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(StoreError::Write(format!(
            "{} is not empty; a backup goes into a new directory",
            to.display()
        )));
    }
    crate::private::dir(&to.join("payloads"))
        .map_err(io_err("cannot make the backup directory"))?;
    let mut counts = BackupCounts::default();
    let commits;
    {
        // No write runs while the dump is taken: it is one moment of the store.
        let _quiet = store.shelf.quiet();
        let trees = store.trees()?;
        let dump = to.join("store.dump");
        let mut out =
            BufWriter::new(create_private(&dump).map_err(io_err("cannot write the dump"))?);
        out.write_all(MAGIC)
            .map_err(io_err("cannot write the dump"))?;
        for (tag, _) in TREES {
            let Some(t) = tree(&trees, tag) else { continue };
            for item in t.iter() {
                let (k, v) = item.map_err(|e| StoreError::Read(e.to_string()))?;
                count(&mut counts, tag, &k);
                out.write_all(&[tag])
                    .and_then(|()| out.write_all(&(k.len() as u32).to_be_bytes()))
                    .and_then(|()| out.write_all(&k))
                    .and_then(|()| out.write_all(&(v.len() as u32).to_be_bytes()))
                    .and_then(|()| out.write_all(&v))
                    .map_err(io_err("cannot write the dump"))?;
            }
        }
        out.into_inner()
            .map_err(|e| StoreError::Write(format!("cannot write the dump: {e}")))?
            .sync_all()
            .map_err(io_err("cannot write the dump"))?;
        commits = trees
            .events
            .get(COMMITS_KEY)
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        // Payload files never change once written: a link (or a copy on
        // another file system) taken now is the file at this moment.
        let from = store.dir.join("payloads");
        for entry in std::fs::read_dir(&from)
            .map_err(io_err("cannot list the payload files"))?
            .filter_map(Result::ok)
        {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            link_or_copy(&entry.path(), &to.join("payloads").join(&name))
                .map_err(io_err("cannot copy a payload file"))?;
        }
        for name in ["audit.key", "audit.head"] {
            let file = store.dir.join(name);
            if file.exists() {
                let bytes = std::fs::read(&file).map_err(io_err("cannot read the audit files"))?;
                crate::private::write_new(&to.join(name), &bytes)
                    .map_err(io_err("cannot copy the audit files"))?;
            }
        }
    }
    // Digests are taken after writes resume: every file is settled.
    let mut files = Vec::new();
    for name in ["store.dump", "audit.key", "audit.head"] {
        if to.join(name).exists() {
            files.push(describe(to, name)?);
        }
    }
    let mut payloads: Vec<String> = std::fs::read_dir(to.join("payloads"))
        .map_err(io_err("cannot list the payload copies"))?
        .filter_map(Result::ok)
        .map(|e| format!("payloads/{}", e.file_name().to_string_lossy()))
        .collect();
    payloads.sort();
    for name in payloads {
        files.push(describe(to, &name)?);
    }
    let manifest = BackupManifest {
        format: FORMAT.into(),
        version: VERSION,
        weft: env!("CARGO_PKG_VERSION").into(),
        created_at_ms: crate::store::now_ms(),
        commits,
        counts,
        files,
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Write(e.to_string()))?;
    crate::private::write_new(&to.join("manifest.json"), &text)
        .map_err(io_err("cannot write the manifest"))?;
    Ok(manifest)
}

fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    let bytes = std::fs::read(from)?;
    crate::private::write_new(to, &bytes)
}

fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut reader = BufReader::new(std::fs::File::open(path)?);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(hasher.finalize())))
}

fn describe(dir: &Path, name: &str) -> Result<BackupFile, StoreError> {
    let (bytes, sha256) =
        sha256_file(&dir.join(name)).map_err(io_err("cannot read a backup file"))?;
    Ok(BackupFile {
        name: name.into(),
        bytes,
        sha256,
    })
}

/// The directory, inside a data directory, where backups taken through the
/// admin API wait to be fetched (removed when the store opens).
pub const BACKUP_STAGING: &str = ".backup-staging";

/// The names of the files a backup's manifest lists, unchecked.
pub fn files(dir: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read(dir.join("manifest.json")).map_err(|e| e.to_string())?;
    let manifest: BackupManifest = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    Ok(manifest.files.into_iter().map(|f| f.name).collect())
}

/// Check a backup directory against its manifest: every file there, of
/// its size and digest. The manifest, or what is wrong.
pub fn verify(dir: &Path) -> Result<BackupManifest, String> {
    let text = std::fs::read(dir.join("manifest.json")).map_err(|e| {
        format!(
            "{} has no readable manifest.json ({e}); it is not a weft backup, or it is incomplete",
            dir.display()
        )
    })?;
    let manifest: BackupManifest = serde_json::from_slice(&text)
        .map_err(|e| format!("the manifest in {} is unreadable: {e}", dir.display()))?;
    if manifest.format != FORMAT || manifest.version != VERSION {
        return Err(format!(
            "{} is a {} backup of version {}; this weft reads {FORMAT} version {VERSION}",
            dir.display(),
            manifest.format,
            manifest.version
        ));
    }
    if !manifest.files.iter().any(|f| f.name == "store.dump") {
        return Err("the manifest names no store.dump".into());
    }
    for f in &manifest.files {
        if !safe_name(&f.name) {
            return Err(format!(
                "the manifest names {:?}, outside the backup",
                f.name
            ));
        }
        let (bytes, sha256) = sha256_file(&dir.join(&f.name))
            .map_err(|e| format!("{} is missing or unreadable: {e}", f.name))?;
        if bytes != f.bytes || sha256 != f.sha256 {
            return Err(format!(
                "{} does not match the manifest ({bytes} bytes, sha256 {sha256}; the manifest says {} bytes, {}): the backup was changed or damaged",
                f.name, f.bytes, f.sha256
            ));
        }
    }
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The backup's manifest.
    pub manifest: BackupManifest,
    /// Where the data directory that was there went, if there was one.
    pub moved_aside: Option<std::path::PathBuf>,
}

/// Put the backup in `from` in place as the store in `data_dir`, which no
/// host may be using. The backup is verified first; the store is built
/// beside `data_dir` and checked (anchor, audit chain, counts) before it
/// takes its place; a data directory already there is moved aside, never
/// deleted.
pub fn restore(from: &Path, data_dir: &Path) -> Result<Restored, String> {
    let unchanged = |e: String| format!("{e}; nothing was changed");
    let manifest = verify(from).map_err(unchanged)?;
    let has_data = data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true);
    if has_data {
        // A running host holds the store: refuse rather than pull it away.
        match SledStore::open_with(data_dir, crate::store::Keyring::opaque()) {
            Ok(store) => store.close(),
            Err(StoreError::InUse { .. }) => {
                return Err(unchanged(format!(
                    "a weft host is using {}; stop it first, then restore",
                    data_dir.display()
                )));
            }
            Err(_) => {} // damaged: that is what a restore is for
        }
    }
    let stamp = crate::store::now_ms();
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let building = data_dir.with_file_name(format!(".{name}.restoring-{stamp}"));
    let result = build(from, &building, &manifest);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&building);
        return Err(unchanged(e));
    }
    let moved_aside = if has_data {
        let aside = data_dir.with_file_name(format!("{name}.before-restore-{stamp}"));
        if let Err(e) = std::fs::rename(data_dir, &aside) {
            let _ = std::fs::remove_dir_all(&building);
            return Err(unchanged(format!(
                "cannot move {} aside: {e}",
                data_dir.display()
            )));
        }
        Some(aside)
    } else {
        if data_dir.exists() {
            let _ = std::fs::remove_dir(data_dir);
        }
        None
    };
    std::fs::rename(&building, data_dir).map_err(|e| {
        format!(
            "the restored store is complete in {} but could not be moved to {}: {e}",
            building.display(),
            data_dir.display()
        )
    })?;
    Ok(Restored {
        manifest,
        moved_aside,
    })
}

/// Build the store of a verified backup in the new directory `dir`, and
/// open it to check it.
fn build(from: &Path, dir: &Path, manifest: &BackupManifest) -> Result<(), String> {
    crate::private::dir(&dir.join("payloads")).map_err(|e| e.to_string())?;
    {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|e| format!("cannot make the store: {e}"))?;
        let mut reader = BufReader::new(
            std::fs::File::open(from.join("store.dump")).map_err(|e| e.to_string())?,
        );
        let mut magic = vec![0; MAGIC.len()];
        reader
            .read_exact(&mut magic)
            .map_err(|e| format!("the dump is unreadable: {e}"))?;
        if magic != MAGIC {
            return Err("store.dump is not a weft dump".into());
        }
        let trees: Vec<(u8, sled::Tree)> = TREES
            .iter()
            .map(|(tag, name)| db.open_tree(name).map(|t| (*tag, t)))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let mut batches: Vec<(sled::Batch, usize)> =
            trees.iter().map(|_| (sled::Batch::default(), 0)).collect();
        let mut tag = [0u8; 1];
        let mut read = BackupCounts::default();
        loop {
            match reader.read_exact(&mut tag) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(format!("the dump is unreadable: {e}")),
            }
            let Some(i) = trees.iter().position(|(t, _)| *t == tag[0]) else {
                return Err(format!("the dump names an unknown tree {}", tag[0]));
            };
            let key = read_chunk(&mut reader)?;
            let value = read_chunk(&mut reader)?;
            count(&mut read, tag[0], &key);
            let (batch, n) = &mut batches[i];
            batch.insert(key, value);
            *n += 1;
            if *n == 1000 {
                trees[i]
                    .1
                    .apply_batch(std::mem::take(batch))
                    .map_err(|e| e.to_string())?;
                *n = 0;
            }
        }
        for ((_, t), (batch, _)) in trees.iter().zip(batches) {
            t.apply_batch(batch).map_err(|e| e.to_string())?;
        }
        db.flush().map_err(|e| e.to_string())?;
        if read != manifest.counts {
            return Err(format!(
                "the dump holds {read:?}, the manifest says {:?}",
                manifest.counts
            ));
        }
    }
    for f in &manifest.files {
        if f.name == "store.dump" {
            continue;
        }
        let bytes = std::fs::read(from.join(&f.name)).map_err(|e| e.to_string())?;
        crate::private::write_new(&dir.join(&f.name), &bytes)
            .map_err(|e| format!("cannot write {}: {e}", f.name))?;
    }
    Anchor::new(dir)
        .write(manifest.commits)
        .map_err(|e| format!("cannot write the anchor: {e}"))?;
    // Opened as a host would open it: anchor, payloads, audit chain.
    // Opened without its keys: a backup of an encrypted store stays sealed.
    let store =
        SledStore::open_with(dir, crate::store::Keyring::opaque()).map_err(|e| e.to_string())?;
    let alarms = store.alarms();
    if let Some(alarm) = alarms.first() {
        return Err(format!("the restored store raised an alarm: {alarm}"));
    }
    let chain = store.audit().verify().map_err(|b| {
        format!(
            "the restored audit chain breaks at {}: {}",
            b.index, b.reason
        )
    })?;
    let counts = store.counts();
    let found = BackupCounts {
        events: counts.events as u64,
        queued: counts.queued as u64,
        dead_letters: counts.dead_letters as u64,
        finished: counts.finished as u64,
        audit_records: chain,
        kv_entries: manifest.counts.kv_entries,
    };
    store.close();
    drop(store);
    if found != manifest.counts {
        return Err(format!(
            "the restored store holds {found:?}, the backup says {:?}",
            manifest.counts
        ));
    }
    Ok(())
}

fn read_chunk(reader: &mut impl Read) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    reader
        .read_exact(&mut len)
        .map_err(|e| format!("the dump is cut short: {e}"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 30 {
        return Err("the dump holds an entry over 1 GiB; it is damaged".into());
    }
    let mut buf = vec![0; len];
    reader
        .read_exact(&mut buf)
        .map_err(|e| format!("the dump is cut short: {e}"))?;
    Ok(buf)
}
