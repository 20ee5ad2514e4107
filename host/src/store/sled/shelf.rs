//! The open sled database and its trees, replaced whole when the store
//! reopens after a failed write.
//!
//! sled remembers an I/O error (a full disk, say) and fails every later
//! operation with it until the database is opened again. The shelf holds
//! the one open database; when a write fails in sled, the store marks the
//! shelf broken and the committer reopens it — with backoff, until the
//! cause is gone — so the host recovers without a restart.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The database and the trees weft keeps in it.
pub(super) struct Trees {
    pub db: sled::Db,
    pub events: sled::Tree,
    pub kv: sled::Tree,
    pub schedules: sled::Tree,
    pub audit: sled::Tree,
    pub meta: sled::Tree,
    /// Which opening of the database these are (1 for the first).
    pub generation: u64,
}

/// Where the store's open database lives.
pub(super) struct Shelf {
    dir: PathBuf,
    current: RwLock<Option<Arc<Trees>>>,
    /// A write failed inside sled: the database must be reopened.
    broken: AtomicBool,
    generations: AtomicU64,
    /// Held shared by every write (a group commit, a kv swap, an audit
    /// append, a schedule) and alone by a backup, which sees the store
    /// between writes.
    gate: RwLock<()>,
}

/// How an opening failed.
pub(super) enum OpenError {
    /// Another process holds the directory.
    InUse(String),
    /// The files are not a sound database.
    Damaged(String),
    /// Anything else (permissions, I/O).
    Other(String),
}

fn open_trees(dir: &Path, generation: u64) -> Result<Trees, OpenError> {
    let classify = |e: sled::Error| {
        let text = e.to_string();
        if text.contains("lock") || text.contains("WouldBlock") {
            OpenError::InUse(text)
        } else if matches!(
            e,
            sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
        ) {
            OpenError::Damaged(text)
        } else {
            OpenError::Other(text)
        }
    };
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(super::STORE_CACHE_BYTES)
        .flush_every_ms(Some(1000))
        .open()
        .map_err(classify)?;
    let tree = |name: &str| db.open_tree(name).map_err(classify);
    Ok(Trees {
        events: tree("events")?,
        kv: tree("kv")?,
        schedules: tree("schedules")?,
        audit: tree("audit")?,
        meta: tree("meta")?,
        db,
        generation,
    })
}

impl Shelf {
    /// Open the database in `dir`.
    pub fn open(dir: &Path) -> Result<Shelf, OpenError> {
        let trees = open_trees(dir, 1)?;
        Ok(Shelf {
            dir: dir.to_path_buf(),
            current: RwLock::new(Some(Arc::new(trees))),
            broken: AtomicBool::new(false),
            generations: AtomicU64::new(1),
            gate: RwLock::new(()),
        })
    }

    /// The open trees, or why there are none (the store is reopening).
    pub fn get(&self) -> Result<Arc<Trees>, String> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                "the store is reopening after a failed write; try again shortly".to_string()
            })
    }

    /// Held while writing: a backup waits for it to be let go.
    pub fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Held while taking a backup: no write starts until it is let go.
    pub fn quiet(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Note that a sled operation failed: from now on the database is
    /// taken for broken until it has been reopened.
    pub fn failed(&self, e: &sled::Error) {
        if matches!(e, sled::Error::Io(_)) && !self.broken.swap(true, Ordering::SeqCst) {
            tracing::warn!("the store's database reported an I/O error ({e}); it will be reopened");
        }
    }

    /// A sled result, noting its failure.
    pub fn check<T>(&self, r: Result<T, sled::Error>) -> Result<T, sled::Error> {
        if let Err(e) = &r {
            self.failed(e);
        }
        r
    }

    /// Whether the database must be reopened before it can write again.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Close the database and open it again, waiting up to `patience` for
    /// readers to let go of it. On failure the shelf stays empty (every
    /// read answers that the store is reopening) and this may be tried
    /// again.
    pub fn reopen(&self, patience: Duration) -> Result<u64, String> {
        let mut slot = self.current.write().unwrap_or_else(|e| e.into_inner());
        if let Some(mut held) = slot.take() {
            // Readers hold the trees only for one call: wait them out.
            let deadline = Instant::now() + patience;
            loop {
                match Arc::try_unwrap(held) {
                    Ok(trees) => {
                        drop(trees);
                        break;
                    }
                    Err(still) if Instant::now() < deadline => {
                        held = still;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still) => {
                        *slot = Some(still);
                        return Err("the database is still in use by a reader".into());
                    }
                }
            }
        }
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        // The lock sled holds on its files goes with its last handle, a
        // moment after the trees are dropped.
        let mut last = String::new();
        for _ in 0..20 {
            match open_trees(&self.dir, generation) {
                Ok(trees) => {
                    *slot = Some(Arc::new(trees));
                    self.broken.store(false, Ordering::SeqCst);
                    return Ok(generation);
                }
                Err(OpenError::InUse(why)) => {
                    last = why;
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(OpenError::Damaged(why) | OpenError::Other(why)) => return Err(why),
            }
        }
        Err(last)
    }

    /// Drop the database (the store is closing).
    pub fn close(&self) {
        if let Some(trees) = self
            .current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = trees.db.flush();
        }
    }
}
