//! The anchor file beside the store: a recent count of its group commits,
//! kept outside sled, so a store that lost commits (rolled back, truncated,
//! overwritten) is found when it opens.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

/// The anchor file beside the store: a recent count of its group commits,
/// written (and fsynced) outside sled about once a second.
pub(super) struct Anchor {
    file: PathBuf,
}

/// The thread that keeps the anchor file up to date; stopped on close.
pub(super) struct AnchorTask {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    anchor: Anchor,
    thread: JoinHandle<()>,
}

impl Anchor {
    pub(super) fn new(dir: &Path) -> Anchor {
        Anchor {
            file: dir.join("anchor"),
        }
    }

    pub(super) fn read(&self) -> Option<u64> {
        std::fs::read_to_string(&self.file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub(super) fn write(&self, count: u64) -> std::io::Result<()> {
        crate::private::replace(&self.file, count.to_string().as_bytes())
    }

    pub(super) fn spawn(self, commits: Arc<AtomicU64>) -> std::io::Result<AnchorTask> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tstop, tcommits, file) = (stop.clone(), commits.clone(), self.file.clone());
        let thread = std::thread::Builder::new()
            .name("weft-anchor".into())
            .spawn(move || {
                let anchor = Anchor { file };
                let mut written = anchor.read().unwrap_or(0);
                while !tstop.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(250));
                    let now = tcommits.load(Ordering::SeqCst);
                    if now > written {
                        if let Err(e) = anchor.write(now) {
                            tracing::warn!("cannot write the store's anchor file: {e}");
                        }
                        written = now;
                    }
                }
            })?;
        Ok(AnchorTask {
            stop,
            commits,
            anchor: self,
            thread,
        })
    }
}

impl AnchorTask {
    /// Stop the thread and anchor the final count.
    pub(super) fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let _ = self.anchor.write(self.commits.load(Ordering::SeqCst));
    }
}

#[cfg(test)]
mod tests {
    use super::super::SledStore;
    use crate::store::{EventId, EventRecord, Store};

    #[test]
    fn a_damaged_store_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        {
            let store = SledStore::open(&data).unwrap();
            let record = EventRecord::queued(EventId::new(), "p", "k", vec![b'x'; 4096]);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(store.accept(&record, None, None)).unwrap();
            store.close();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "a new data directory is private");
        }
        let db = data.join("db");
        // Rolled back: an older copy of the store put back behind the anchor.
        let old = std::fs::read(&db).unwrap();
        {
            let store = SledStore::open(&data).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(store.flush()).unwrap();
            rt.block_on(store.flush()).unwrap();
            store.close();
        }
        let newer = std::fs::read(&db).unwrap();
        std::fs::write(&db, &old).unwrap();
        let err = SledStore::open(&data)
            .err()
            .expect("a rolled-back store is refused");
        assert!(err.to_string().contains("anchor file says"), "{err}");
        std::fs::write(&db, &newer).unwrap();
        SledStore::open(&data)
            .expect("the current store opens")
            .close();
        // Overwritten: sled starts empty on garbage; the anchor catches it.
        let len = newer.len();
        std::fs::write(&db, vec![0x5a; len]).unwrap();
        let err = SledStore::open(&data)
            .err()
            .expect("a damaged store is refused");
        let text = err.to_string();
        assert!(text.contains(&data.display().to_string()), "{text}");
        assert!(
            text.contains("damaged") && text.contains(".damaged"),
            "{text}"
        );
    }

    #[test]
    fn a_removed_snapshot_is_rebuilt_from_the_log_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        {
            let store = SledStore::open(&data).unwrap();
            for i in 0..200 {
                let record =
                    EventRecord::queued(EventId::new(), "p", &format!("k{i}"), vec![b'x'; 512]);
                rt.block_on(store.accept(&record, None, None)).unwrap();
            }
            store.close();
        }
        // sled writes its snapshot when it opens a store that has a log.
        SledStore::open(&data).unwrap().close();
        let snapshots: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("snap.")
            })
            .collect();
        assert!(!snapshots.is_empty(), "sled wrote a snapshot");
        for s in &snapshots {
            std::fs::remove_file(s).unwrap();
        }
        let store = SledStore::open(&data).expect("sled rebuilds its state from the log");
        assert_eq!(
            store.counts().events,
            200,
            "{} snapshot files removed",
            snapshots.len()
        );
    }
}
