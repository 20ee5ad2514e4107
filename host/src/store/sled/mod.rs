//! The embedded default store: one sled directory.
//!
//! The hot path keeps every state of an event in one tree (`events`), keyed
//! by prefix (see `keys`), and writes through a group-commit thread that
//! applies up to [`MAX_GROUP`] writes as one batch and flushes once for all
//! of them. Plugin state lives in the `kv` tree, the audit log in `audit`
//! with its head in `meta` (its key and an anchored head are files beside
//! the store), each schedule's last fire time in `schedules`.

mod anchor;
mod audit;
mod backup;
mod committer;
mod keys;
mod kv;
mod migrate;
mod payloads;
mod sealing;
mod shelf;
mod sweep;

pub use backup::{
    BACKUP_STAGING, BackupCounts, BackupFile, BackupManifest, Restored, files as backup_files,
    restore, safe_name, verify as verify_backup,
};
pub use committer::MAX_GROUP;

use self::anchor::{Anchor, AnchorTask};
use self::audit::SledAuditLog;
use self::committer::{Item, Write};
use self::keys::*;
use self::payloads::Payloads;
use self::shelf::{OpenError, Shelf, Trees};
use super::{
    AfterAttempt, AfterCommit, AuditLog, Dedup, EventId, EventRecord, EventState, Keyring, KvError,
    Polled, QueueEntry, Retention, Store, StoreCounts, StoreError, StoreFuture, StoreUsage, Swept,
    Ticket,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

/// The sled store.
pub struct SledStore {
    shelf: Arc<Shelf>,
    audit: SledAuditLog,
    flushes: std::sync::Arc<crate::histogram::Histogram>,
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Write>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    payloads: Payloads,
    anchoring: Mutex<Option<AnchorTask>>,
    alarms: Vec<String>,
    failing: committer::Failing,
    /// The keys values are sealed and opened with.
    keys: Arc<Keyring>,
    /// Whether plugin state values are sealed.
    kv_sealed: bool,
    /// In an encrypted store, the key idempotency keys are hashed under
    /// in the dedup index (random, kept sealed under the store key).
    index_key: Option<[u8; 32]>,
}

impl SledStore {
    /// Open (or create) the store in `dir`, unencrypted.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(dir, Keyring::plain())
    }

    /// Open (or create) the store in `dir`, sealing and opening values
    /// with `keys`. A store holding values under keys `keys` lacks is
    /// refused before anything in it is changed.
    pub fn open_with(dir: &Path, keys: Keyring) -> Result<SledStore, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            dir: dir.to_path_buf(),
            reason,
        };
        private_dir(dir).map_err(|e| open_err(e.to_string()))?;
        let shelf = Shelf::open(dir).map_err(|e| match e {
            OpenError::InUse(reason) => StoreError::InUse {
                dir: dir.to_path_buf(),
                reason,
            },
            OpenError::Damaged(text) => open_err(format!(
                "the store is damaged ({text}); weft will not start on it, so nothing it holds is silently lost. Restore the directory from a backup, or move it aside (mv {0} {0}.damaged) to start with an empty store",
                dir.display()
            )),
            OpenError::Other(text) => open_err(text),
        })?;
        let shelf = Arc::new(shelf);
        let (kv_sealed, index_key) = {
            let trees = shelf.get().map_err(open_err)?;
            sealing::check(&trees, &keys).map_err(open_err)?
        };
        // The database holds payloads and plugin state: its files are
        // its owner's alone, whatever the umask made them.
        crate::private::restrict_tree(dir).map_err(|e| open_err(e.to_string()))?;
        let trees = shelf.get().map_err(open_err)?;
        let (db, events) = (&trees.db, &trees.events);
        let read_err = |e: sled::Error| open_err(e.to_string());
        let audit = SledAuditLog::open(shelf.clone(), dir).map_err(open_err)?;
        let alarms = match audit.verify() {
            Ok(_) => Vec::new(),
            Err(b) => {
                let alarm = format!(
                    "the audit log in {} is not intact at record {}: {}. Keep this directory as evidence; `weft audit-log verify` shows this again",
                    dir.display(),
                    b.index,
                    b.reason
                );
                tracing::error!("{alarm}");
                vec![alarm]
            }
        };
        let payloads = Payloads::open(dir).map_err(|e| open_err(e.to_string()))?;
        let moved = migrate::keep_payloads_apart(db, events, &payloads, &keys).map_err(open_err)?;
        if moved > 0 {
            tracing::info!(
                events = moved,
                "event payloads moved out of their records (written once from now on)"
            );
        }
        let orphans = payloads
            .remove_orphans(events)
            .map_err(|e| open_err(format!("cannot tidy the payload files: {e}")))?;
        if orphans > 0 {
            tracing::info!(
                files = orphans,
                "payload files no event names (left by a crash) were removed"
            );
        }
        // A backup staged for the API and never fetched is of no use now.
        let staging = dir.join(BACKUP_STAGING);
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        let committed = events
            .get(COMMITS_KEY)
            .map_err(read_err)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let anchor = Anchor::new(dir);
        if let Some(anchored) = anchor.read()
            && committed < anchored
        {
            return Err(open_err(format!(
                "the store is damaged: it holds {committed} commits but its anchor file says {anchored} were made (it was rolled back, truncated or replaced, and acknowledged events may be gone); weft will not start on it. Restore the directory from a backup, or move it aside (mv {0} {0}.damaged) to start with an empty store",
                dir.display()
            )));
        }
        let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(committed));
        let (tx, rx) = mpsc::channel();
        let failing = committer::Failing::default();
        drop(trees);
        let (cshelf, cpayloads, cfailing) = (shelf.clone(), payloads.clone(), failing.clone());
        let flushes = std::sync::Arc::new(crate::histogram::Histogram::default());
        let cflushes = flushes.clone();
        let ccommits = commits.clone();
        let committer = std::thread::Builder::new()
            .name("weft-commit".into())
            .spawn(move || committer::run(cshelf, cpayloads, rx, cflushes, ccommits, cfailing))
            .map_err(|e| open_err(e.to_string()))?;
        let anchoring = anchor
            .spawn(commits.clone())
            .map_err(|e| open_err(e.to_string()))?;
        Ok(SledStore {
            shelf,
            audit,
            flushes,
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            committer: Mutex::new(Some(committer)),
            payloads,
            anchoring: Mutex::new(Some(anchoring)),
            alarms,
            failing,
            keys: Arc::new(keys),
            kv_sealed,
            index_key,
        })
    }

    /// An event's record without its payload (the whole of it for records
    /// written before payloads were kept apart).
    pub(super) fn meta(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let key = event_key(id);
        match self.trees()?.events.get(&key) {
            Ok(Some(v)) => self.decode(&key, &v).map(|(r, _)| Some(r)),
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Read(e.to_string())),
        }
    }

    /// The write that records an attempt: its queue entry goes, the event
    /// goes where `next` says, and its record is rewritten.
    fn attempt_write(
        &self,
        record: &EventRecord,
        done: QueueEntry,
        next: AfterAttempt,
        after: Option<AfterCommit>,
    ) -> Write {
        let mut write = Write::default();
        write.remove(queue_key(done.due_ms, &done.id));
        match next {
            AfterAttempt::Retry { due_ms, attempt } => {
                write.put(
                    queue_key(due_ms, &record.id),
                    attempt.to_be_bytes().to_vec(),
                );
            }
            AfterAttempt::Finished { at_ms } => {
                // Its payload's size, for the store's usage by kind.
                write.put(done_key(at_ms, &record.id), size_value(record));
            }
            AfterAttempt::DeadLettered { at_ms } => {
                // The time it was dead-lettered, for the retention sweep,
                // then its payload's size.
                let mut v = at_ms.to_be_bytes().to_vec();
                v.extend_from_slice(&size_value(record));
                write.put(dead_key(&record.id), v);
            }
        }
        write.put(event_key(&record.id), self.encode(record));
        write.after = after;
        // The attempt was made: its outcome is written even through a
        // store failure, or the event would be attempted again.
        write.must_land = true;
        write
    }

    /// A new event to store with its own dedup key in a larger write.
    fn queued_item(&self, polled: Polled) -> Item {
        let mut files = Vec::new();
        Item {
            ops: queued_new(self, &polled.record, &mut files),
            files,
            dedup: dedup_of(self, polled.dedup, polled.record.id),
            after: polled.after,
        }
    }

    /// The record stored under `key` as `value`, with its payload.
    fn whole(&self, key: &[u8], value: &[u8]) -> Result<EventRecord, StoreError> {
        let (record, apart) = self.decode(key, value)?;
        self.with_payload(record, apart)
    }

    /// `record` with its payload, read from its own key when the record
    /// leaves it `apart`.
    fn with_payload(
        &self,
        mut record: EventRecord,
        apart: bool,
    ) -> Result<EventRecord, StoreError> {
        if apart {
            record.payload = match self.trees()?.events.get(body_key(&record.id)) {
                Ok(Some(body)) => self.payloads.read(&record.id, &body, &self.keys)?,
                Ok(None) => {
                    return Err(StoreError::Read(format!(
                        "event {} has lost its payload",
                        record.id
                    )));
                }
                Err(e) => return Err(StoreError::Read(e.to_string())),
            };
        }
        Ok(record)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The audit log's tree, for tests that tamper with it.
    #[doc(hidden)]
    pub fn audit_tree(&self) -> sled::Tree {
        self.audit.tree()
    }

    /// Queue a write for the next group commit and return at once.
    fn submit(&self, mut write: Write) -> Ticket {
        let (ticket, reply) = Ticket::new();
        write.reply = Some(reply);
        let unsent = match self.tx.lock() {
            Ok(tx) => match tx.as_ref() {
                Some(tx) => tx.send(write).err().map(|e| e.0),
                None => Some(write),
            },
            Err(_) => Some(write),
        };
        if let Some(mut w) = unsent
            && let Some(reply) = w.reply.take()
        {
            let _ = reply.send(Err(StoreError::Closed));
        }
        ticket
    }

    fn count(&self, prefix: u8) -> usize {
        self.trees()
            .map_or(0, |t| t.events.scan_prefix([prefix]).count())
    }

    /// The text under `key` in the events tree, if any.
    fn text_at(&self, key: Vec<u8>) -> Option<String> {
        self.trees()
            .ok()?
            .events
            .get(key)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn kv_codec(&self) -> kv::Codec<'_> {
        kv::Codec {
            keys: &self.keys,
            sealed: self.kv_sealed,
        }
    }

    /// The open database's trees for plugin state.
    fn kv(&self) -> Result<Arc<Trees>, KvError> {
        self.shelf.get().map_err(KvError::Unavailable)
    }

    /// The open database's trees, or a read error while it reopens.
    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.shelf.get().map_err(StoreError::Read)
    }
}

/// Make the data directory, readable by its owner only when new; warn
/// when an existing one is open to others.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        return crate::private::dir(dir);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777),
                "the data directory can be read by other users; make it private: chmod 700 {}", dir.display());
        }
    }
    Ok(())
}

/// Most memory sled's page cache takes (its default is 1 GiB): recent
/// records and payloads are read from it, older ones from disk. 16 MiB
/// delivered as fast as 64 MiB on the lead workload and left 45 MiB less
/// resident after a run of 100,000 events.
pub const STORE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// A payload's size, as the value of an index key.
fn size_value(record: &EventRecord) -> Vec<u8> {
    (record.payload.len() as u64).to_be_bytes().to_vec()
}

fn dedup_of(store: &SledStore, d: Dedup, id: EventId) -> (Vec<u8>, EventId, u64) {
    (
        dedup_key(&d.pipeline, &d.key, store.index_key.as_ref()),
        id,
        d.window_ms,
    )
}

/// The operations that store a new event (its payload once, apart from
/// the record that attempts rewrite; a large one as a file, added to
/// `files`) and queue its first attempt.
fn queued_new(
    store: &SledStore,
    record: &EventRecord,
    files: &mut Vec<(EventId, Vec<u8>)>,
) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let stored = payloads::store(record.id, &record.payload, &store.keys);
    files.extend(stored.file);
    vec![
        (body_key(&record.id), Some(stored.value)),
        (event_key(&record.id), Some(store.encode(record))),
        (
            queue_key(record.received_at_ms, &record.id),
            Some(1u32.to_be_bytes().to_vec()),
        ),
    ]
}

impl Store for SledStore {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn flush_latency(&self) -> &crate::histogram::Histogram {
        &self.flushes
    }

    fn accept(
        &self,
        record: &EventRecord,
        dedup: Option<Dedup>,
        after: Option<AfterCommit>,
    ) -> Ticket {
        let mut files = Vec::new();
        self.submit(Write {
            ops: queued_new(self, record, &mut files),
            files,
            dedup: dedup.map(|d| dedup_of(self, d, record.id)),
            after,
            ..Write::default()
        })
    }

    fn accept_polled(&self, pipeline: &str, items: Vec<Polled>, cursor: Option<&str>) -> Ticket {
        let mut write = Write::default();
        if let Some(c) = cursor {
            write.put(cursor_key(pipeline), c.as_bytes().to_vec());
        }
        write.items = items
            .into_iter()
            .map(|p| {
                let mut files = Vec::new();
                Item {
                    ops: queued_new(self, &p.record, &mut files),
                    files,
                    dedup: dedup_of(self, p.dedup, p.record.id),
                    after: p.after,
                }
            })
            .collect();
        self.submit(write)
    }

    fn record_attempt(
        &self,
        record: &EventRecord,
        done: QueueEntry,
        next: AfterAttempt,
        after: Option<AfterCommit>,
    ) -> Ticket {
        self.submit(self.attempt_write(record, done, next, after))
    }

    fn dead_letter_compensated(
        &self,
        record: &EventRecord,
        done: QueueEntry,
        at_ms: u64,
        compensation: Polled,
        after: Option<AfterCommit>,
    ) -> Ticket {
        let mut write =
            self.attempt_write(record, done, AfterAttempt::DeadLettered { at_ms }, after);
        write.items = vec![self.queued_item(compensation)];
        self.submit(write)
    }

    fn dedup_taken(&self, dedup: &Dedup) -> Option<EventId> {
        let key = dedup_key(&dedup.pipeline, &dedup.key, self.index_key.as_ref());
        let value = self.trees().ok()?.events.get(key).ok()??;
        let (first, at) = parse_dedup_value(&value)?;
        (super::now_ms().saturating_sub(at) < dedup.window_ms).then_some(first)
    }

    fn compensate(&self, record: &EventRecord, compensation: Polled) -> Ticket {
        let mut write = Write {
            requires: Some(dead_key(&record.id)),
            ..Write::default()
        };
        write.put(event_key(&record.id), self.encode(record));
        write.items = vec![self.queued_item(compensation)];
        self.submit(write)
    }

    fn split(
        &self,
        parent: &EventRecord,
        done: QueueEntry,
        children: &[std::sync::Arc<EventRecord>],
        after: Option<AfterCommit>,
    ) -> Ticket {
        let mut write = Write::default();
        write.remove(queue_key(done.due_ms, &done.id));
        write.put(done_key(super::now_ms(), &parent.id), size_value(parent));
        write.put(event_key(&parent.id), self.encode(parent));
        for child in children {
            let ops = queued_new(self, child, &mut write.files);
            write.ops.extend(ops);
        }
        write.after = after;
        write.must_land = true;
        self.submit(write)
    }

    fn drop_queue_entry(&self, entry: QueueEntry) -> Ticket {
        let mut write = Write {
            must_land: true,
            ..Write::default()
        };
        write.remove(queue_key(entry.due_ms, &entry.id));
        self.submit(write)
    }

    fn drop_queued(&self, entry: QueueEntry) -> Ticket {
        let key = queue_key(entry.due_ms, &entry.id);
        let mut write = Write {
            requires: Some(key.clone()),
            ..Write::default()
        };
        write.remove(key);
        write.remove(event_key(&entry.id));
        write.remove(body_key(&entry.id));
        self.submit(write)
    }

    fn replay(
        &self,
        record: &EventRecord,
        due_ms: u64,
        attempt: u32,
        after: Option<AfterCommit>,
    ) -> Ticket {
        let mut write = Write::default();
        write.remove(dead_key(&record.id));
        write.put(
            queue_key(due_ms, &record.id),
            attempt.to_be_bytes().to_vec(),
        );
        write.put(event_key(&record.id), self.encode(record));
        write.after = after;
        self.submit(write)
    }

    fn purge(&self, id: &EventId) -> Ticket {
        self.submit(sweep::drop_dead_letter(id))
    }

    fn rewrite(&self, record: &EventRecord) -> Ticket {
        let stored = payloads::store(record.id, &record.payload, &self.keys);
        let mut write = Write {
            requires: Some(event_key(&record.id)),
            files: stored.file.into_iter().collect(),
            ..Write::default()
        };
        // Removed first: a payload file of the old one goes once this lands.
        write.remove(body_key(&record.id));
        write.put(body_key(&record.id), stored.value);
        write.put(event_key(&record.id), self.encode(record));
        self.submit(write)
    }

    fn sweep(&self, retention: Retention) -> StoreFuture<'_, Swept> {
        Box::pin(sweep::sweep(self, retention))
    }

    fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let key = event_key(id);
        match self.trees()?.events.get(&key) {
            Ok(Some(v)) => self.whole(&key, &v).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Read(e.to_string())),
        }
    }

    fn queue(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees()?.events.scan_prefix([QUEUE]) {
            let (k, v) = item.map_err(|e| StoreError::Read(e.to_string()))?;
            if let Some((due_ms, id)) = parse_queue_key(&k) {
                let attempt = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(1);
                out.push(QueueEntry {
                    due_ms,
                    id,
                    attempt,
                });
            }
        }
        Ok(out)
    }

    fn dead_letters(&self, pipeline: Option<&str>) -> Result<Vec<EventRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees()?.events.scan_prefix([DEAD]) {
            let (k, _) = item.map_err(|e| StoreError::Read(e.to_string()))?;
            let Some(id) = EventId::from_slice(&k[1..]) else {
                continue;
            };
            if let Some(rec) = self.event(&id)?
                && rec.state == EventState::DeadLettered
                && pipeline.is_none_or(|p| p == rec.pipeline)
            {
                out.push(rec);
            }
        }
        Ok(out)
    }

    fn scan_recent(
        &self,
        keep: &mut dyn FnMut(&EventRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.trees()?.events.scan_prefix([EVENT]).rev() {
            let (k, v) = item.map_err(|e| StoreError::Read(e.to_string()))?;
            let (r, apart) = self.decode(&k, &v)?;
            if keep(&r) {
                out.push(self.with_payload(r, apart)?);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn each_event(
        &self,
        wanted: &mut dyn FnMut(&EventRecord) -> bool,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<(), StoreError> {
        for item in self.trees()?.events.scan_prefix([EVENT]).rev() {
            let (k, v) = item.map_err(|e| StoreError::Read(e.to_string()))?;
            let (record, apart) = self.decode(&k, &v)?;
            if wanted(&record) && !visit(self.with_payload(record, apart)?) {
                break;
            }
        }
        Ok(())
    }

    fn counts(&self) -> StoreCounts {
        StoreCounts {
            events: self.count(EVENT),
            queued: self.count(QUEUE),
            dead_letters: self.count(DEAD),
            finished: self.count(DONE),
            dedup_keys: self.count(DEDUP),
        }
    }

    fn usage(&self) -> StoreUsage {
        // The payload size a key's value ends with (0 for keys written
        // before they held one).
        let tail = |v: &[u8], at: usize| {
            v.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        let Ok(trees) = self.trees() else {
            return StoreUsage::default();
        };
        let mut usage = StoreUsage {
            disk_bytes: trees.db.size_on_disk().unwrap_or(0) + self.payloads.bytes(),
            ..StoreUsage::default()
        };
        for (_, v) in trees.events.scan_prefix([DONE]).filter_map(Result::ok) {
            usage.history_events += 1;
            usage.history_bytes += tail(&v, 0);
        }
        for (_, v) in trees.events.scan_prefix([DEAD]).filter_map(Result::ok) {
            usage.dead_letter_events += 1;
            usage.dead_letter_bytes += tail(&v, 8);
        }
        for (k, v) in trees.kv.iter().filter_map(Result::ok) {
            usage.kv_bytes += (k.len() + v.len()) as u64;
        }
        usage
    }

    fn pause_reason(&self, pipeline: &str) -> Option<String> {
        let value = self.trees().ok()?.events.get(paused_key(pipeline)).ok()??;
        Some(String::from_utf8_lossy(&value).into_owned())
    }

    fn set_paused(&self, pipeline: &str, reason: Option<&str>) -> Ticket {
        let mut w = Write::default();
        if let Some(reason) = reason {
            w.put(paused_key(pipeline), reason.as_bytes().to_vec());
        } else {
            w.remove(paused_key(pipeline));
        }
        self.submit(w)
    }

    fn totals(&self, pipeline: &str) -> Option<String> {
        self.text_at(totals_key(pipeline))
    }

    fn canary(&self, key: &str) -> Option<String> {
        self.text_at(keys::canary_key(key))
    }

    fn set_canary(&self, key: &str, state: &str) -> Ticket {
        let mut w = Write::default();
        w.put(keys::canary_key(key), state.as_bytes().to_vec());
        self.submit(w)
    }

    fn set_totals(&self, pipeline: &str, json: &str) -> Ticket {
        let mut w = Write::default();
        w.put(totals_key(pipeline), json.as_bytes().to_vec());
        self.submit(w)
    }

    fn dead_letter_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        let Ok(trees) = self.trees() else {
            return out;
        };
        for (k, _) in trees.events.scan_prefix([DEAD]).filter_map(Result::ok) {
            if let Some(id) = EventId::from_slice(&k[1..])
                && let Ok(Some(record)) = self.meta(&id)
            {
                *out.entry(record.pipeline).or_default() += 1;
            }
        }
        out
    }

    fn cursor(&self, pipeline: &str) -> Option<String> {
        self.text_at(cursor_key(pipeline))
    }

    fn schedule_last(&self, pipeline: &str) -> Option<u64> {
        self.trees()
            .ok()?
            .schedules
            .get(pipeline.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
    }

    fn set_schedule_last(&self, pipeline: &str, at_ms: u64) -> Ticket {
        let writing = self.shelf.writing();
        let written = self.trees().and_then(|t| {
            self.shelf
                .check(
                    t.schedules
                        .insert(pipeline.as_bytes(), &at_ms.to_be_bytes()),
                )
                .map_err(|e| StoreError::Write(e.to_string()))
        });
        drop(writing);
        if let Err(e) = written {
            return Ticket::settled(Err(e));
        }
        self.flush()
    }

    fn kv_get(&self, namespace: &[u8], key: &str) -> Result<Option<Vec<u8>>, KvError> {
        kv::get(&self.kv()?.kv, self.kv_codec(), namespace, key)
    }

    fn kv_swap(
        &self,
        namespace: &[u8],
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
        quota_bytes: u64,
    ) -> Result<bool, KvError> {
        let _writing = self.shelf.writing();
        let trees = self.kv()?;
        let swapped = kv::swap(
            &trees.kv,
            self.kv_codec(),
            namespace,
            key,
            expected,
            new,
            quota_bytes,
        );
        if let Err(KvError::Unavailable(_)) = &swapped {
            // A failed kv write leaves sled's error behind as any other.
            self.shelf.check(trees.db.flush()).ok();
        }
        swapped
    }

    fn kv_list(
        &self,
        namespace: &[u8],
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        kv::list(&self.kv()?.kv, namespace, prefix, limit)
    }

    fn audit(&self) -> &dyn AuditLog {
        &self.audit
    }

    fn alarms(&self) -> Vec<String> {
        self.alarms.clone()
    }

    fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn flush(&self) -> Ticket {
        // An empty write through the committer flushes everything written
        // before it, in order with the group commits.
        self.submit(Write::default())
    }

    fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(handle) = self.committer.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
        self.shelf.close();
        if let Some(task) = self.anchoring.lock().ok().and_then(|mut a| a.take()) {
            task.finish();
        }
    }

    fn backup(&self, to: &Path) -> Result<BackupManifest, StoreError> {
        backup::take(self, to)
    }

    fn credential_state(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = credential_key(name);
        match self.trees()?.events.get(&key) {
            Ok(Some(v)) => self.open_credential(&key, &v).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Read(e.to_string())),
        }
    }

    fn set_credential_state(&self, name: &str, value: &[u8]) -> Ticket {
        let key = credential_key(name);
        let value = self.seal_credential(&key, value);
        let mut w = Write::default();
        w.put(key, value);
        self.submit(w)
    }

    fn encryption(&self) -> super::Encryption {
        sealing::status(self)
    }

    fn reencrypt(&self) -> StoreFuture<'_, super::Reencrypted> {
        Box::pin(sealing::reencrypt(self))
    }

    fn import(&self, record: &EventRecord, place: super::Imported, take_key: bool) -> Ticket {
        let stored = payloads::store(record.id, &record.payload, &self.keys);
        let mut write = Write {
            files: stored.file.into_iter().collect(),
            ..Write::default()
        };
        write.put(body_key(&record.id), stored.value);
        write.put(event_key(&record.id), self.encode(record));
        match place {
            super::Imported::Queued { due_ms, attempt } => {
                write.put(
                    queue_key(due_ms, &record.id),
                    attempt.to_be_bytes().to_vec(),
                );
            }
            super::Imported::Finished { at_ms } => {
                write.put(done_key(at_ms, &record.id), size_value(record));
            }
            super::Imported::Dead { at_ms } => {
                let mut v = at_ms.to_be_bytes().to_vec();
                v.extend_from_slice(&size_value(record));
                write.put(dead_key(&record.id), v);
            }
        }
        if take_key {
            write.put(
                dedup_key(&record.pipeline, &record.key, self.index_key.as_ref()),
                dedup_value(&record.id, record.received_at_ms),
            );
        }
        self.submit(write)
    }

    fn kv_export(&self) -> Result<Vec<super::KvEntry>, StoreError> {
        kv::export(
            &self.kv().map_err(|e| StoreError::Read(e.to_string()))?.kv,
            self.kv_codec(),
        )
        .map_err(|e| StoreError::Read(e.to_string()))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
