//! The audit log: an append-only, hash-chained record of capability
//! denials, broken limits and mutating admin calls. Record `i` holds the hash
//! of record `i - 1`; its own hash covers every other field.

use super::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log, from 0.
    pub index: u64,
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// `denial` (a plugin went outside its grant) or `admin` (a mutating call).
    pub kind: String,
    /// Who: the plugin, or the admin token's name.
    pub actor: String,
    /// Pipeline, when there is one.
    pub pipeline: String,
    /// What was attempted: `http`, `connect`, `credential`, `reveal`, `kv`, …
    pub action: String,
    /// The details (secret values masked).
    pub detail: String,
    /// Hash of the previous record.
    pub prev: String,
    /// Hash of this record.
    pub hash: String,
}

impl AuditRecord {
    /// The hash of every field but `hash`.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.index.to_string().as_str(),
            &self.at_ms.to_string(),
            &self.kind,
            &self.actor,
            &self.pipeline,
            &self.action,
            &self.detail,
            &self.prev,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// What is appended.
#[derive(Debug, Clone, Default)]
pub struct AuditEntry {
    /// `denial` or `admin`.
    pub kind: &'static str,
    /// Who.
    pub actor: String,
    /// Pipeline, or empty.
    pub pipeline: String,
    /// What was attempted.
    pub action: String,
    /// Details.
    pub detail: String,
}

/// The first record that fails verification, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditBreak {
    /// Index of the first bad record (or the count, for a truncated tail).
    pub index: u64,
    /// What is wrong.
    pub reason: String,
}

/// The audit log as the host uses it.
pub trait AuditLog: Send + Sync {
    /// Append a record; secret values in it are masked first.
    fn append(&self, entry: AuditEntry) -> Result<AuditRecord, StoreError>;
    /// Every record in order (unverified), from `from`.
    fn records(&self, from: u64) -> Result<Vec<AuditRecord>, StoreError>;
    /// Check the chain; `Ok(count)` when intact, else the first bad index.
    fn verify(&self) -> Result<u64, AuditBreak>;
}
