//! The audit log: an append-only, keyed hash chain of capability denials,
//! broken limits, refused logins and mutating admin calls. Record `i` holds
//! the MAC of record `i - 1`; its own MAC (HMAC-SHA256 under a key kept
//! outside the store) covers every other field, so a record can be neither
//! changed nor forged, nor the chain rebuilt, without the key.

use super::StoreError;
use hmac::Mac;
use serde::{Deserialize, Serialize};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// MAC of the previous record.
    pub prev: String,
    /// MAC of this record.
    pub hash: String,
}

impl AuditRecord {
    /// The MAC, under `key`, of every field but `hash`.
    pub fn mac(&self, key: &[u8]) -> String {
        let mut h = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
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
            h.update(&(part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize().into_bytes())
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
    /// Check the chain, its head and its anchor beside the store;
    /// `Ok(count)` when intact, else the first bad index and why.
    fn verify(&self) -> Result<u64, AuditBreak>;
}
