//! The durable store: one sled directory.
//!
//! The hot path keeps every state of an event in one tree (`events`), keyed by
//! prefix, and writes through a group-commit thread that applies up to
//! [`MAX_GROUP`] writes as one batch and flushes once for all of them. An event
//! is acknowledged only after that flush.
//!
//! Keys in the `events` tree:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `e` | event id | [`EventRecord`] |
//! | `q` | due ms, event id | next attempt number (ready work) |
//! | `d` | event id | empty (dead-letter index) |
//! | `t` | finish ms, event id | empty (history retention index) |
//! | `k` | pipeline, 0, idempotency key | first event id, accept ms (dedup) |
//! | `c` | pipeline | the source's cursor, written with the events it found |
//!
//! Plugin key-value state lives in the `kv` tree; the hash-chained audit log
//! in the `audit` tree, with its head in `meta`; each schedule's last fire
//! time in `schedules`.

pub mod audit;
mod committer;
mod handle;
mod keys;
mod record;

pub use audit::{AuditEntry, AuditLog, AuditRecord};
pub use committer::{Committed, Item, MAX_GROUP, Write};
pub use handle::{Store, StoreError};
pub use keys::*;
pub use record::*;
