//! The audit log in sled: record `i` under the key `i` (big-endian) in the
//! `audit` tree; the `meta` tree keeps the head (count and last hash), so a
//! truncated tail is found as well as a changed, deleted, inserted or
//! reordered record.

use crate::store::{AuditBreak, AuditEntry, AuditLog, AuditRecord, GENESIS, StoreError};
use std::sync::Mutex;

const HEAD_KEY: &[u8] = b"audit-head";

/// The audit log of one sled store.
pub struct SledAuditLog {
    tree: sled::Tree,
    meta: sled::Tree,
    head: Mutex<(u64, String)>,
}

impl SledAuditLog {
    pub(super) fn open(db: &sled::Db) -> Result<SledAuditLog, String> {
        let tree = db.open_tree("audit").map_err(|e| e.to_string())?;
        let meta = db.open_tree("meta").map_err(|e| e.to_string())?;
        let head = match tree.last().map_err(|e| e.to_string())? {
            Some((_, v)) => {
                let last: AuditRecord = serde_json::from_slice(&v).map_err(|e| e.to_string())?;
                (last.index + 1, last.hash)
            }
            None => (0, GENESIS.to_string()),
        };
        Ok(SledAuditLog {
            tree,
            meta,
            head: Mutex::new(head),
        })
    }

    /// Append a record; secret values in it are masked first.
    pub fn append(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError> {
        let mut head = self.head.lock().unwrap_or_else(|e| e.into_inner());
        let mut rec = AuditRecord {
            index: head.0,
            at_ms: crate::store::now_ms(),
            kind: entry.kind.to_string(),
            actor: entry.actor,
            pipeline: entry.pipeline,
            action: entry.action,
            detail: crate::redact::mask(&entry.detail).into_owned(),
            prev: head.1.clone(),
            hash: String::new(),
        };
        rec.hash = rec.compute_hash();
        let value = serde_json::to_vec(&rec).map_err(|e| StoreError::Write(e.to_string()))?;
        let head_value = format!("{} {}", rec.index + 1, rec.hash);
        self.tree
            .insert(rec.index.to_be_bytes(), value)
            .and_then(|_| self.meta.insert(HEAD_KEY, head_value.as_bytes()))
            .map_err(|e| StoreError::Write(e.to_string()))?;
        *head = (rec.index + 1, rec.hash.clone());
        Ok(rec)
    }

    /// Every record in key order (unverified), from `from`.
    pub fn records(&self, from: u64) -> Result<Vec<AuditRecord>, StoreError> {
        self.raw()
            .into_iter()
            .skip_while(|(k, _)| *k < from)
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| StoreError::Read(e.to_string())))
            .collect()
    }

    fn raw(&self) -> Vec<(u64, Vec<u8>)> {
        self.tree
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
            .collect()
    }

    /// Check the chain; `Ok(count)` when intact, else the first bad index.
    pub fn verify(&self) -> Result<u64, AuditBreak> {
        let mut prev = GENESIS.to_string();
        let mut expected = 0u64;
        for (key, value) in self.raw() {
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
                    "it does not link to record {} (that record was changed and re-hashed, or records were reordered or replaced)",
                    expected.saturating_sub(1)
                )));
            }
            if rec.compute_hash() != rec.hash {
                return Err(bad(
                    "its contents do not match its hash (the record was changed)".into(),
                ));
            }
            prev = rec.hash;
            expected += 1;
        }
        let head = self
            .meta
            .get(HEAD_KEY)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_else(|| format!("0 {GENESIS}"));
        let (count, last) = head.split_once(' ').unwrap_or(("0", GENESIS));
        let count: u64 = count.parse().unwrap_or(0);
        if count != expected || last != prev {
            return Err(AuditBreak {
                index: expected.min(count),
                reason: format!(
                    "the log holds {expected} records but its head says {count} ending in {last:.12}… (records were removed from the end or the head was changed)"
                ),
            });
        }
        Ok(expected)
    }

    /// For tests of the verifier: raw access to the tree.
    #[doc(hidden)]
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
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

    fn log_with(n: u64) -> (tempfile::TempDir, sled::Db, SledAuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let log = SledAuditLog::open(&db).unwrap();
        for i in 0..n {
            log.append(AuditEntry {
                kind: "denial",
                actor: format!("plugin-{i}"),
                pipeline: "p".into(),
                action: "http".into(),
                detail: format!("request to host {i}"),
            })
            .unwrap();
        }
        (dir, db, log)
    }

    fn rewrite(log: &SledAuditLog, key: u64, f: impl FnOnce(&mut AuditRecord)) {
        let mut rec: AuditRecord =
            serde_json::from_slice(&log.tree.get(key.to_be_bytes()).unwrap().unwrap()).unwrap();
        f(&mut rec);
        log.tree
            .insert(key.to_be_bytes(), serde_json::to_vec(&rec).unwrap())
            .unwrap();
    }

    #[test]
    fn an_intact_log_verifies_and_survives_reopening() {
        let (_dir, db, log) = log_with(5);
        assert_eq!(log.verify(), Ok(5));
        drop(log);
        let log = SledAuditLog::open(&db).unwrap();
        log.append(AuditEntry {
            kind: "admin",
            ..Default::default()
        })
        .unwrap();
        assert_eq!(log.verify(), Ok(6));
        assert_eq!(log.records(4).unwrap().len(), 2);
    }

    #[test]
    fn every_kind_of_tampering_names_the_first_bad_index() {
        // Changed.
        let (_d, _db, log) = log_with(6);
        rewrite(&log, 3, |r| r.detail = "nothing happened".into());
        assert_eq!(log.verify().unwrap_err().index, 3);
        // Changed, with the hash recomputed: the next link breaks.
        let (_d, _db, log) = log_with(6);
        rewrite(&log, 2, |r| {
            r.actor = "someone-else".into();
            r.hash = r.compute_hash();
        });
        assert_eq!(log.verify().unwrap_err().index, 3);
        // Deleted.
        let (_d, _db, log) = log_with(6);
        log.tree.remove(4u64.to_be_bytes()).unwrap();
        assert_eq!(log.verify().unwrap_err().index, 4);
        // Inserted (a forged record at the position of a real one, the rest shifted).
        let (_d, _db, log) = log_with(6);
        let all = log.records(0).unwrap();
        for r in all.iter().skip(2).rev() {
            log.tree
                .insert((r.index + 1).to_be_bytes(), serde_json::to_vec(r).unwrap())
                .unwrap();
        }
        let mut forged = all[2].clone();
        forged.detail = "forged".into();
        forged.hash = forged.compute_hash();
        log.tree
            .insert(2u64.to_be_bytes(), serde_json::to_vec(&forged).unwrap())
            .unwrap();
        assert_eq!(log.verify().unwrap_err().index, 3);
        // Reordered.
        let (_d, _db, log) = log_with(6);
        let (a, b) = (
            log.tree.get(1u64.to_be_bytes()).unwrap().unwrap(),
            log.tree.get(2u64.to_be_bytes()).unwrap().unwrap(),
        );
        log.tree.insert(1u64.to_be_bytes(), b).unwrap();
        log.tree.insert(2u64.to_be_bytes(), a).unwrap();
        assert_eq!(log.verify().unwrap_err().index, 1);
        // Truncated.
        let (_d, _db, log) = log_with(6);
        log.tree.remove(5u64.to_be_bytes()).unwrap();
        log.tree.remove(4u64.to_be_bytes()).unwrap();
        let err = log.verify().unwrap_err();
        assert_eq!(err.index, 4, "{err:?}");
    }
}
