//! The store handle: open, durable writes through group commit, and reads.

use super::committer::{self, Committed, Write};
use super::keys::*;
use super::{EventId, EventRecord, EventState};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// A store failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The directory could not be opened.
    #[error("cannot open the store at {dir}: {reason}")]
    Open {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A write or flush failed; nothing was acknowledged.
    #[error("store write failed: {0}")]
    Write(String),
    /// A read failed.
    #[error("store read failed: {0}")]
    Read(String),
    /// The store is shutting down.
    #[error("the store is shutting down")]
    Closed,
}

/// The durable store.
pub struct Store {
    db: sled::Db,
    events: sled::Tree,
    kv: sled::Tree,
    audit: super::audit::AuditLog,
    schedules: sled::Tree,
    flushes: std::sync::Arc<crate::histogram::Histogram>,
    dir: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Write>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            dir: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock") || text.contains("WouldBlock") {
                    open_err(format!(
                        "{text}; is another weft process using this data directory? Stop it, or use the admin API of the running host"
                    ))
                } else {
                    open_err(text)
                }
            })?;
        let events = db
            .open_tree("events")
            .map_err(|e| open_err(e.to_string()))?;
        let kv = db.open_tree("kv").map_err(|e| open_err(e.to_string()))?;
        let audit = super::audit::AuditLog::open(&db).map_err(open_err)?;
        let schedules = db
            .open_tree("schedules")
            .map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel();
        let (cdb, ctree) = (db.clone(), events.clone());
        let flushes = std::sync::Arc::new(crate::histogram::Histogram::default());
        let cflushes = flushes.clone();
        let committer = std::thread::Builder::new()
            .name("weft-commit".into())
            .spawn(move || committer::run(cdb, ctree, rx, cflushes))
            .map_err(|e| open_err(e.to_string()))?;
        Ok(Store {
            db,
            events,
            kv,
            audit,
            schedules,
            flushes,
            dir: dir.to_path_buf(),
            tx: Mutex::new(Some(tx)),
            committer: Mutex::new(Some(committer)),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plugin key-value tree.
    pub fn kv_tree(&self) -> &sled::Tree {
        &self.kv
    }

    /// Time of each group commit (batch write and flush).
    pub fn flush_latency(&self) -> &crate::histogram::Histogram {
        &self.flushes
    }

    /// Where a pipeline's source polls next (committed with its events).
    pub fn cursor(&self, pipeline: &str) -> Option<String> {
        self.events
            .get(cursor_key(pipeline))
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    /// When a pipeline's schedule last fired (ms since the Unix epoch).
    pub fn schedule_last(&self, pipeline: &str) -> Option<u64> {
        self.schedules
            .get(pipeline.as_bytes())
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
    }

    /// Record, durably, when a pipeline's schedule fired.
    pub async fn set_schedule_last(&self, pipeline: &str, at_ms: u64) -> Result<(), StoreError> {
        self.schedules
            .insert(pipeline.as_bytes(), &at_ms.to_be_bytes())
            .map_err(|e| StoreError::Write(e.to_string()))?;
        self.db
            .flush_async()
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Write(e.to_string()))
    }

    /// The hash-chained audit log.
    pub fn audit(&self) -> &super::audit::AuditLog {
        &self.audit
    }

    /// The sled database (for flushing kv writes).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Queue a write for the next group commit and return at once; the
    /// receiver resolves when it is durable.
    pub fn submit(&self, mut write: Write) -> oneshot::Receiver<Result<Committed, StoreError>> {
        let (reply, rx) = oneshot::channel();
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
        rx
    }

    /// Write durably and wait for the flush.
    pub async fn commit(&self, write: Write) -> Result<Committed, StoreError> {
        self.submit(write).await.unwrap_or(Err(StoreError::Closed))
    }

    /// Read an event record.
    pub fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        match self.events.get(event_key(id)) {
            Ok(Some(v)) => EventRecord::decode(&v).map(Some).map_err(StoreError::Read),
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Read(e.to_string())),
        }
    }

    /// Every queue entry: (due ms, id, next attempt), in due order.
    pub fn queue(&self) -> Result<Vec<(u64, EventId, u32)>, StoreError> {
        let mut out = Vec::new();
        for item in self.events.scan_prefix([QUEUE]) {
            let (k, v) = item.map_err(|e| StoreError::Read(e.to_string()))?;
            if let Some((due, id)) = parse_queue_key(&k) {
                let attempt = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(1);
                out.push((due, id, attempt));
            }
        }
        Ok(out)
    }

    /// Dead-lettered events, oldest first, optionally of one pipeline.
    pub fn dead_letters(&self, pipeline: Option<&str>) -> Result<Vec<EventRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.events.scan_prefix([DEAD]) {
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

    /// Event records, newest first, that `keep` accepts, at most `limit`.
    pub fn recent_events(
        &self,
        mut keep: impl FnMut(&EventRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.events.scan_prefix([EVENT]).rev() {
            let (_, v) = item.map_err(|e| StoreError::Read(e.to_string()))?;
            let r = EventRecord::decode(&v).map_err(StoreError::Read)?;
            if keep(&r) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Whether a key exists in the `events` tree.
    pub fn events_tree_has(&self, key: &[u8]) -> bool {
        self.events.contains_key(key).unwrap_or(false)
    }

    /// Number of keys with this prefix in the `events` tree.
    pub fn count(&self, prefix: u8) -> usize {
        self.events.scan_prefix([prefix]).count()
    }

    /// Keys with this prefix in the `events` tree, up to `limit`.
    pub fn keys(&self, prefix: u8, limit: usize) -> Vec<Vec<u8>> {
        self.events
            .scan_prefix([prefix])
            .keys()
            .take(limit)
            .filter_map(Result::ok)
            .map(|k| k.to_vec())
            .collect()
    }

    /// Values of dedup records (for the retention sweep).
    pub fn dedup_entries(&self, limit: usize) -> Vec<(Vec<u8>, u64)> {
        self.events
            .scan_prefix([DEDUP])
            .filter_map(Result::ok)
            .filter_map(|(k, v)| parse_dedup_value(&v).map(|(_, at)| (k.to_vec(), at)))
            .take(limit)
            .collect()
    }

    /// Stop the committer after it has written everything queued.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(handle) = self.committer.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
        let _ = self.db.flush();
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}
