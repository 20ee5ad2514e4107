//! The audit log in sled: record `i` under the key `i` (big-endian) in the
//! `audit` tree, and the head (count and last MAC) in the `meta` tree,
//! written together in one transaction. The key that MACs the chain
//! (`audit.key`) and an anchored copy of the head (`audit.head`, synced
//! after every append) live in files beside the store, outside sled: a
//! changed, forged, deleted, inserted or reordered record, a truncated
//! tail, a store rolled back to an older copy and a chain rebuilt from
//! scratch are all found.

use super::shelf::{Shelf, Trees};
use crate::store::{AuditBreak, AuditEntry, AuditLog, AuditRecord, GENESIS, StoreError};
use sled::Transactional;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const HEAD_KEY: &[u8] = b"audit-head";

/// The audit log of one sled store.
pub struct SledAuditLog {
    shelf: Arc<Shelf>,
    key: [u8; crate::private::KEY_LEN],
    head_file: PathBuf,
    /// The next index and the last MAC, as read from the database of the
    /// generation given (read again once the database was reopened).
    head: Mutex<(u64, u64, String)>,
}

/// The head to append after, read from the database: the stored head,
/// or past the last record there is when the head says less (never write
/// over a record; verification reports the mismatch).
fn head_of(trees: &Trees) -> Result<(u64, u64, String), String> {
    let stored = trees
        .meta
        .get(HEAD_KEY)
        .map_err(|e| e.to_string())?
        .and_then(|v| parse_head(&String::from_utf8_lossy(&v)))
        .unwrap_or((0, GENESIS.to_string()));
    let last = trees.audit.last().map_err(|e| e.to_string())?;
    let (count, mac) = match last {
        Some((k, v)) => {
            let index = k.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            let rec = serde_json::from_slice::<AuditRecord>(&v).ok();
            if index + 1 > stored.0 {
                (index + 1, rec.map(|r| r.hash).unwrap_or_default())
            } else {
                stored
            }
        }
        None => stored,
    };
    Ok((trees.generation, count, mac))
}

/// A head, `count mac`: how many records, and the last one's MAC.
fn parse_head(text: &str) -> Option<(u64, String)> {
    let (count, mac) = text.trim().split_once(' ')?;
    Some((count.parse().ok()?, mac.to_string()))
}

impl SledAuditLog {
    /// Open the log of the store in `dir`; its key is made when the log is
    /// new (an existing log without its key will not verify).
    pub(super) fn open(shelf: Arc<Shelf>, dir: &Path) -> Result<SledAuditLog, String> {
        let key_file = dir.join("audit.key");
        let key = crate::private::key(&key_file)
            .map_err(|e| format!("cannot make the audit key {}: {e}", key_file.display()))?;
        let trees = shelf.get()?;
        let head = head_of(&trees)?;
        drop(trees);
        Ok(SledAuditLog {
            shelf,
            key,
            head_file: dir.join("audit.head"),
            head: Mutex::new(head),
        })
    }

    /// Append a record; secret values in it are masked first. The record
    /// and the head land in one transaction, are flushed, and the head is
    /// then anchored in its file.
    pub fn append(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let _writing = self.shelf.writing();
        let trees = self.shelf.get().map_err(StoreError::Write)?;
        if head.0 != trees.generation {
            // Reopened after a failed write: what landed is what counts.
            *head = head_of(&trees).map_err(StoreError::Read)?;
        }
        let mut rec = AuditRecord {
            index: head.1,
            at_ms: crate::store::now_ms(),
            kind: entry.kind.to_string(),
            actor: entry.actor,
            pipeline: entry.pipeline,
            action: entry.action,
            detail: crate::redact::mask(&entry.detail).into_owned(),
            prev: head.2.clone(),
            hash: String::new(),
        };
        rec.hash = rec.mac(&self.key);
        let value = serde_json::to_vec(&rec).map_err(|e| StoreError::Write(e.to_string()))?;
        let head_value = format!("{} {}", rec.index + 1, rec.hash);
        (&trees.audit, &trees.meta)
            .transaction(|(tree, meta)| {
                tree.insert(&rec.index.to_be_bytes(), value.as_slice())?;
                meta.insert(HEAD_KEY, head_value.as_bytes())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| {
                if let sled::transaction::TransactionError::Storage(e) = &e {
                    self.shelf.failed(e);
                }
                StoreError::Write(format!("{e:?}"))
            })?;
        self.shelf
            .check(trees.db.flush())
            .map_err(|e| StoreError::Write(e.to_string()))?;
        crate::private::replace(&self.head_file, head_value.as_bytes()).map_err(|e| {
            StoreError::Write(format!(
                "cannot anchor the audit head in {}: {e}",
                self.head_file.display()
            ))
        })?;
        *head = (trees.generation, rec.index + 1, rec.hash.clone());
        Ok(rec)
    }

    /// Every record in key order (unverified), from `from`.
    pub fn records(&self, from: u64) -> Result<Vec<AuditRecord>, StoreError> {
        self.raw()
            .map_err(StoreError::Read)?
            .into_iter()
            .skip_while(|(k, _)| *k < from)
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| StoreError::Read(e.to_string())))
            .collect()
    }

    fn raw(&self) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let trees = self.shelf.get()?;
        Ok(trees
            .audit
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                let key = k
                    .as_ref()
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                (key, v.to_vec())
            })
            .collect())
    }

    /// Check the chain, the head beside it and the head anchored in its
    /// file; `Ok(count)` when intact, else the first bad index.
    pub fn verify(&self) -> Result<u64, AuditBreak> {
        let mut macs = Vec::new();
        let mut prev = GENESIS.to_string();
        let unread = |reason: String| AuditBreak {
            index: 0,
            reason: format!("the log cannot be read now ({reason}); verify it again"),
        };
        for (key, value) in self.raw().map_err(unread)? {
            let expected = macs.len() as u64;
            let bad = |reason: String| AuditBreak {
                index: expected,
                reason,
            };
            let rec: AuditRecord = serde_json::from_slice(&value)
                .map_err(|e| bad(format!("record is unreadable: {e}")))?;
            if key != expected || rec.index != expected {
                return Err(bad(format!(
                    "expected record {expected}, found key {key} holding record {} (a record was deleted, inserted or moved)",
                    rec.index
                )));
            }
            if rec.prev != prev {
                return Err(bad(format!(
                    "it does not link to record {} (that record was changed, or records were reordered or replaced)",
                    expected.saturating_sub(1)
                )));
            }
            if !crate::secrets::constant_time_eq(rec.mac(&self.key).as_bytes(), rec.hash.as_bytes())
            {
                return Err(bad(
                    "its MAC does not match under this host's audit key (the record was changed or forged, or the key file audit.key was replaced)".into(),
                ));
            }
            prev = rec.hash;
            macs.push(prev.clone());
        }
        let count = macs.len() as u64;
        let head = self
            .shelf
            .get()
            .map_err(unread)?
            .meta
            .get(HEAD_KEY)
            .ok()
            .flatten()
            .and_then(|v| parse_head(&String::from_utf8_lossy(&v)))
            .unwrap_or((0, GENESIS.to_string()));
        if head.0 != count || head.1 != prev {
            return Err(AuditBreak {
                index: count.min(head.0),
                reason: format!(
                    "the log holds {count} records but its head says {} (records were removed from the end, or the head was changed)",
                    head.0
                ),
            });
        }
        self.check_anchor(&macs)?;
        Ok(count)
    }

    /// The head anchored in `audit.head` must name a record the log still
    /// holds, with the same MAC.
    fn check_anchor(&self, macs: &[String]) -> Result<(), AuditBreak> {
        let file = self.head_file.display();
        let anchored = match std::fs::read_to_string(&self.head_file) {
            Ok(text) => parse_head(&text).ok_or_else(|| AuditBreak {
                index: 0,
                reason: format!("the anchored head in {file} is unreadable"),
            })?,
            Err(_) if macs.is_empty() => return Ok(()),
            Err(e) => {
                return Err(AuditBreak {
                    index: 0,
                    reason: format!(
                        "the anchored head {file} is missing ({e}), so a truncation or rollback cannot be ruled out"
                    ),
                });
            }
        };
        let count = macs.len() as u64;
        if anchored.0 > count {
            return Err(AuditBreak {
                index: count,
                reason: format!(
                    "the log holds {count} records but {file} anchored {} (records were removed, or the store was rolled back to an older copy)",
                    anchored.0
                ),
            });
        }
        let at = anchored.0.checked_sub(1);
        let found = at.map_or(GENESIS, |i| macs[i as usize].as_str());
        if found != anchored.1 {
            return Err(AuditBreak {
                index: at.unwrap_or(0),
                reason: format!(
                    "record {} is not the one {file} anchored (the chain was rebuilt or the store replaced)",
                    at.unwrap_or(0)
                ),
            });
        }
        Ok(())
    }

    /// For tests of the verifier: raw access to the tree.
    #[doc(hidden)]
    pub fn tree(&self) -> sled::Tree {
        self.trees().audit.clone()
    }

    /// For tests: the database's trees.
    #[doc(hidden)]
    pub(super) fn trees(&self) -> Arc<Trees> {
        self.shelf.get().expect("the store is open")
    }
}

impl AuditLog for SledAuditLog {
    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        SledAuditLog::append(self, entry)
    }
    fn records(&self, from: u64) -> Result<Vec<AuditRecord>, StoreError> {
        SledAuditLog::records(self, from)
    }
    fn verify(&self) -> Result<u64, AuditBreak> {
        SledAuditLog::verify(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(log: &SledAuditLog, i: u64) {
        log.append(AuditEntry {
            kind: "denial",
            actor: format!("plugin-{i}"),
            pipeline: "p".into(),
            action: "http".into(),
            detail: format!("request to host {i}"),
        })
        .unwrap();
    }

    fn shelf(dir: &Path) -> Arc<Shelf> {
        Arc::new(Shelf::open(dir).ok().unwrap())
    }

    fn log_with(n: u64) -> (tempfile::TempDir, Arc<Shelf>, SledAuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let db = shelf(&dir.path().join("db"));
        let log = SledAuditLog::open(db.clone(), dir.path()).unwrap();
        for i in 0..n {
            append(&log, i);
        }
        (dir, db, log)
    }

    fn rewrite(log: &SledAuditLog, key: u64, f: impl FnOnce(&mut AuditRecord)) {
        let mut rec: AuditRecord =
            serde_json::from_slice(&log.tree().get(key.to_be_bytes()).unwrap().unwrap()).unwrap();
        f(&mut rec);
        log.tree()
            .insert(key.to_be_bytes(), serde_json::to_vec(&rec).unwrap())
            .unwrap();
    }

    #[test]
    fn an_intact_log_verifies_and_survives_reopening() {
        let (dir, db, log) = log_with(5);
        assert_eq!(log.verify(), Ok(5));
        drop(log);
        let log = SledAuditLog::open(db.clone(), dir.path()).unwrap();
        append(&log, 5);
        assert_eq!(log.verify(), Ok(6));
        assert_eq!(log.records(4).unwrap().len(), 2);
        let head = std::fs::read_to_string(dir.path().join("audit.head")).unwrap();
        assert!(head.starts_with("6 "), "{head}");
    }

    #[test]
    fn every_kind_of_tampering_names_the_first_bad_index() {
        // Changed.
        let (_d, _db, log) = log_with(6);
        rewrite(&log, 3, |r| r.detail = "nothing happened".into());
        assert_eq!(log.verify().unwrap_err().index, 3);
        // Changed, with an unkeyed hash recomputed by someone without the key.
        let (_d, _db, log) = log_with(6);
        rewrite(&log, 2, |r| {
            r.actor = "someone-else".into();
            r.hash = r.mac(b"a guess at the key");
        });
        assert_eq!(log.verify().unwrap_err().index, 2);
        // Deleted.
        let (_d, _db, log) = log_with(6);
        log.tree().remove(4u64.to_be_bytes()).unwrap();
        assert_eq!(log.verify().unwrap_err().index, 4);
        // Inserted (a forged record at the position of a real one, the rest shifted).
        let (_d, _db, log) = log_with(6);
        let all = log.records(0).unwrap();
        for r in all.iter().skip(2).rev() {
            log.tree()
                .insert((r.index + 1).to_be_bytes(), serde_json::to_vec(r).unwrap())
                .unwrap();
        }
        let mut forged = all[2].clone();
        forged.detail = "forged".into();
        log.tree()
            .insert(2u64.to_be_bytes(), serde_json::to_vec(&forged).unwrap())
            .unwrap();
        assert_eq!(log.verify().unwrap_err().index, 2);
        // Reordered.
        let (_d, _db, log) = log_with(6);
        let (a, b) = (
            log.tree().get(1u64.to_be_bytes()).unwrap().unwrap(),
            log.tree().get(2u64.to_be_bytes()).unwrap().unwrap(),
        );
        log.tree().insert(1u64.to_be_bytes(), b).unwrap();
        log.tree().insert(2u64.to_be_bytes(), a).unwrap();
        assert_eq!(log.verify().unwrap_err().index, 1);
        // Truncated.
        let (_d, _db, log) = log_with(6);
        log.tree().remove(5u64.to_be_bytes()).unwrap();
        log.tree().remove(4u64.to_be_bytes()).unwrap();
        let err = log.verify().unwrap_err();
        assert_eq!(err.index, 4, "{err:?}");
    }

    #[test]
    fn truncation_with_its_head_rollback_and_a_rebuilt_chain_are_caught_by_the_anchor() {
        // Truncated, and the head in the store rewritten to match.
        let (_d, _db, log) = log_with(6);
        let keep = log.records(0).unwrap();
        log.tree().remove(5u64.to_be_bytes()).unwrap();
        log.trees()
            .meta
            .insert(HEAD_KEY, format!("5 {}", keep[4].hash).as_bytes())
            .unwrap();
        let err = log.verify().unwrap_err();
        assert!(err.reason.contains("anchored 6"), "{err:?}");
        assert_eq!(err.index, 5);

        // Rolled back: an older copy of the whole store put back.
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("db");
        let old = dir.path().join("old");
        {
            let db = shelf(&db_dir);
            let log = SledAuditLog::open(db.clone(), dir.path()).unwrap();
            append(&log, 0);
            append(&log, 1);
            db.close();
        }
        copy_dir(&db_dir, &old);
        {
            let db = shelf(&db_dir);
            let log = SledAuditLog::open(db.clone(), dir.path()).unwrap();
            append(&log, 2);
        }
        std::fs::remove_dir_all(&db_dir).unwrap();
        copy_dir(&old, &db_dir);
        let db = shelf(&db_dir);
        let log = SledAuditLog::open(db.clone(), dir.path()).unwrap();
        let err = log.verify().unwrap_err();
        assert!(err.reason.contains("rolled back"), "{err:?}");
        drop((log, db));

        // Rebuilt: a new chain of the same length, made with a new key.
        let (dir, db, log) = log_with(3);
        let records = log.records(0).unwrap();
        let forger = [7u8; 32];
        let mut prev = GENESIS.to_string();
        for mut r in records {
            r.detail = "nothing to see".into();
            r.prev = prev;
            r.hash = r.mac(&forger);
            prev = r.hash.clone();
            log.tree()
                .insert(r.index.to_be_bytes(), serde_json::to_vec(&r).unwrap())
                .unwrap();
        }
        log.trees()
            .meta
            .insert(HEAD_KEY, format!("3 {prev}").as_bytes())
            .unwrap();
        std::fs::write(dir.path().join("audit.key"), forger).unwrap();
        drop(log);
        let log = SledAuditLog::open(db.clone(), dir.path()).unwrap();
        let err = log.verify().unwrap_err();
        assert!(err.reason.contains("rebuilt"), "{err:?}");
        // And the anchor removed too: still not intact.
        std::fs::remove_file(dir.path().join("audit.head")).unwrap();
        let err = log.verify().unwrap_err();
        assert!(err.reason.contains("missing"), "{err:?}");
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
}
