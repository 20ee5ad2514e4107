//! The durable store: every state an event goes through, plugin state,
//! cursors, schedules, pause markers and the audit log, behind one trait of
//! typed transitions.
//!
//! The engine, the triggers, the sandbox and the API speak only [`Store`];
//! how it keeps things is the backend's business. The embedded default is
//! [`SledStore`] (one sled directory, group commit); a distributed backend
//! implements the same trait.
//!
//! Every write returns a [`Ticket`] that resolves once the write is durable.
//! A write is queued when the method returns, so a caller that does not wait
//! (or goes away) does not undo it; its `after` callback runs once it is
//! durable, whoever is still waiting.

mod audit;
mod error;
mod event;
mod jetstream;
pub mod migrate;
mod open;
mod record;
mod record_v1;
pub mod seal;
mod sled;

pub use self::jetstream::{HOST_TTL, JetStreamOptions, JetStreamStore};
pub use self::open::{open, open_for, store_secrets};
pub use self::sled::{
    BACKUP_STAGING, BackupCounts, BackupFile, BackupManifest, MAX_GROUP, Restored,
    STORE_CACHE_BYTES, SledStore, backup_files, restore, safe_name, verify_backup,
};
pub use audit::{AuditBreak, AuditEntry, AuditLog, AuditRecord, GENESIS};
pub use error::StoreError;
pub use event::*;
pub use record::*;
pub use seal::Keyring;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;

/// What a payload past its pipeline's retention becomes.
pub const EXPIRED_PAYLOAD: &[u8] = br#"{"expired":true}"#;

/// Run on the store's side once a write is durable.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// What a durable write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Written and flushed.
    Written,
    /// Skipped: the dedup key belongs to this earlier event.
    Duplicate(EventId),
    /// Skipped: what the write was for was gone when it came to commit
    /// (a dead letter replayed before it could be purged or expired).
    Gone,
}

/// Resolves once a write is durable (or failed). Dropping it does not undo
/// or cancel the write.
pub struct Ticket(oneshot::Receiver<Result<Committed, StoreError>>);

impl Ticket {
    /// A ticket and the sender that settles it.
    pub fn new() -> (Ticket, oneshot::Sender<Result<Committed, StoreError>>) {
        let (tx, rx) = oneshot::channel();
        (Ticket(rx), tx)
    }

    /// A ticket already settled.
    pub fn settled(result: Result<Committed, StoreError>) -> Ticket {
        let (ticket, tx) = Ticket::new();
        let _ = tx.send(result);
        ticket
    }
}

impl Future for Ticket {
    type Output = Result<Committed, StoreError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(StoreError::Closed)))
    }
}

/// An idempotency key to take with a write, for `window_ms`: a write whose
/// key was taken within the window is skipped as a duplicate.
#[derive(Debug, Clone)]
pub struct Dedup {
    /// The pipeline the key belongs to.
    pub pipeline: String,
    /// The idempotency key.
    pub key: String,
    /// How long a taken key stays taken, in ms.
    pub window_ms: u64,
}

/// One event a poll found: stored with its own dedup key.
pub struct Polled {
    /// The event, queued for its first attempt.
    pub record: Arc<EventRecord>,
    /// Its key; an item whose key was taken is left out.
    pub dedup: Dedup,
    /// Run once durable, if the item was new.
    pub after: Option<AfterCommit>,
}

/// An event's place in the queue: due time, id and the attempt it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueEntry {
    /// When the attempt is due, in ms since the Unix epoch.
    pub due_ms: u64,
    /// The event.
    pub id: EventId,
    /// The attempt number it is for.
    pub attempt: u32,
}

/// Where an event goes after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// Queued again for `attempt` at `due_ms`.
    Retry {
        /// When.
        due_ms: u64,
        /// Which attempt.
        attempt: u32,
    },
    /// Delivered or filtered at `at_ms`: kept in the history until retention.
    Finished {
        /// When it finished.
        at_ms: u64,
    },
    /// In the dead-letter queue since `at_ms` (kept until
    /// `keep_dead_letters_hours` after it).
    DeadLettered {
        /// When it was dead-lettered.
        at_ms: u64,
    },
}

/// How many of each thing the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Event records (any state).
    pub events: usize,
    /// Queue entries (attempts waiting).
    pub queued: usize,
    /// Dead letters.
    pub dead_letters: usize,
    /// Finished events in the history.
    pub finished: usize,
    /// Idempotency keys remembered.
    pub dedup_keys: usize,
}

/// What the store holds, in bytes, by kind.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub struct StoreUsage {
    /// The store's files on disk, all kinds together (sled's own count;
    /// space is given back as sled rewrites its segments).
    pub disk_bytes: u64,
    /// Finished events kept in the run history: how many, and their payload bytes.
    pub history_events: u64,
    /// Payload bytes of the run history.
    pub history_bytes: u64,
    /// Dead letters kept for replay.
    pub dead_letter_events: u64,
    /// Payload bytes of the dead letters.
    pub dead_letter_bytes: u64,
    /// Plugin state (kv), keys and values.
    pub kv_bytes: u64,
}

/// Where an event copied in from another store goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// Queued for `attempt` at `due_ms`.
    Queued {
        /// When.
        due_ms: u64,
        /// Which attempt.
        attempt: u32,
    },
    /// In the history since `at_ms`.
    Finished {
        /// When it finished.
        at_ms: u64,
    },
    /// A dead letter since `at_ms`.
    Dead {
        /// When it was dead-lettered.
        at_ms: u64,
    },
}

/// What a retention sweep drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Finished events that finished before this (ms since the epoch).
    pub history_before_ms: u64,
    /// Beyond this many finished events, the oldest, whatever their age.
    pub keep_events: Option<usize>,
    /// Idempotency keys taken before this.
    pub dedup_before_ms: u64,
    /// Dead letters whose last attempt ended before this; `None` keeps
    /// them until they are replayed or purged.
    pub dead_before_ms: Option<u64>,
    /// Each pipeline's own retention, where it has one.
    pub by_pipeline: std::collections::BTreeMap<String, PipelineRetention>,
}

/// One pipeline's retention, as times before which things go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineRetention {
    /// Payloads of events finished before this are dropped.
    pub payloads_before_ms: Option<u64>,
    /// Dead letters dead-lettered before this are dropped.
    pub dead_before_ms: Option<u64>,
}

/// What a retention sweep removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Finished events dropped from the history.
    pub events: usize,
    /// Idempotency keys forgotten.
    pub dedup_keys: usize,
    /// Dead letters past their retention, by pipeline.
    pub dead_letters: std::collections::BTreeMap<String, usize>,
    /// Finished events whose payload was dropped past its retention.
    pub payloads: usize,
}

/// The store's encryption at rest, for status and `weft store reencrypt`.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Encryption {
    /// The id of the key new values are sealed under (a hash of the key,
    /// never the key); `None` when the store is not encrypted.
    pub current_key: Option<String>,
    /// Ids of the keys values in the store may be sealed under (the
    /// current one and those not yet moved off).
    pub keys_in_use: Vec<String>,
}

/// What `weft store reencrypt` did.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Reencrypted {
    /// Event records sealed again under the current key (or for the first
    /// time, when they were written before encryption was on).
    pub records: u64,
    /// Payloads sealed again.
    pub payloads: u64,
    /// Plugin state values sealed again.
    pub kv_values: u64,
    /// Values changed by the host while the pass ran (written under the
    /// current key already).
    pub changed_meanwhile: u64,
    /// The encryption once done: `keys_in_use` is the current key alone
    /// when nothing is left under another.
    pub encryption: Encryption,
}

/// One plugin state value: its namespace, key and value.
pub type KvEntry = (Vec<u8>, String, Vec<u8>);

/// Why a plugin's kv operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The write would pass the plugin's quota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The store could not do it.
    #[error("{0}")]
    Unavailable(String),
}

/// A future of a store operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The events of one ordered pipeline, in order, for the host that works
/// them ([`Store::order_feed`]).
pub trait OrderFeed: Send {
    /// The next events in order (each with its queue entry), now this
    /// host's to work: at first the ones a previous holder had taken and
    /// left unfinished, then those accepted since, waiting up to a second
    /// for one.
    fn next(&mut self) -> StoreFuture<'_, Vec<(QueueEntry, EventRecord)>>;
}

/// The store as the rest of the host uses it: typed transitions of an
/// event's life, plugin state, trigger state and the audit log.
pub trait Store: Send + Sync + 'static {
    /// Where it keeps its data, for messages.
    fn location(&self) -> String;

    /// Time of each group commit (write and flush).
    fn flush_latency(&self) -> &crate::histogram::Histogram;

    // ---- the event lifecycle ----

    /// Store a new event and queue its first attempt, unless `dedup` says it
    /// is a duplicate. `after` runs once durable (not for a duplicate).
    fn accept(
        &self,
        record: &EventRecord,
        dedup: Option<Dedup>,
        after: Option<AfterCommit>,
    ) -> Ticket;

    /// Store what a poll found and the pipeline's next cursor in one write;
    /// items whose key was taken are left out.
    fn accept_polled(&self, pipeline: &str, items: Vec<Polled>, cursor: Option<&str>) -> Ticket;

    /// Record an attempt: the event's updated record, its queue entry
    /// removed, and where it goes next.
    fn record_attempt(
        &self,
        record: &EventRecord,
        done: QueueEntry,
        next: AfterAttempt,
        after: Option<AfterCommit>,
    ) -> Ticket;

    /// Drop a queue entry whose event has no record.
    fn drop_queue_entry(&self, entry: QueueEntry) -> Ticket;

    /// Delete a queued event for good: its queue entry, record and
    /// payload (`Gone` when the entry is no longer there).
    fn drop_queued(&self, entry: QueueEntry) -> Ticket;

    /// Put a dead letter back in the queue: `record` is its updated record
    /// (queued, with the replay noted), due now for `attempt`.
    fn replay(
        &self,
        record: &EventRecord,
        due_ms: u64,
        attempt: u32,
        after: Option<AfterCommit>,
    ) -> Ticket;

    /// A step split `parent` into `children`: the parent is finished (its
    /// record as given, with its queue entry `done` gone) and each child
    /// stored and queued for its first attempt, all in one durable write.
    fn split(
        &self,
        parent: &EventRecord,
        done: QueueEntry,
        children: &[Arc<EventRecord>],
        after: Option<AfterCommit>,
    ) -> Ticket;

    /// Delete a dead letter for good.
    fn purge(&self, id: &EventId) -> Ticket;

    /// Replace a stored event's record and payload where they are (an
    /// erasure): its place in the history, the dead-letter queue or the
    /// queue does not change, and a payload kept in a file of its own is
    /// removed once the new one is durable.
    fn rewrite(&self, record: &EventRecord) -> Ticket;

    /// Drop what `retention` says is past keeping.
    fn sweep(&self, retention: Retention) -> StoreFuture<'_, Swept>;

    // ---- reads ----

    /// An event's record.
    fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError>;

    /// Every queue entry, in due order.
    fn queue(&self) -> Result<Vec<QueueEntry>, StoreError>;

    /// Dead-lettered events, oldest first, optionally of one pipeline.
    fn dead_letters(&self, pipeline: Option<&str>) -> Result<Vec<EventRecord>, StoreError>;

    /// Event records, newest first, that `keep` accepts, at most `limit`
    /// (see [`recent_events`](#method.recent_events) for a closure).
    fn scan_recent(
        &self,
        keep: &mut dyn FnMut(&EventRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError>;

    /// Every event record that `wanted` takes (it sees the record without
    /// its payload, which is read only for those), with its payload,
    /// newest first, one at a time, until `visit` returns `false`.
    fn each_event(
        &self,
        wanted: &mut dyn FnMut(&EventRecord) -> bool,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<(), StoreError>;

    /// How many of each thing it holds.
    fn counts(&self) -> StoreCounts;

    /// Bytes held by kind (reads every history, dead-letter and kv key:
    /// the engine refreshes it once a minute, not per request).
    fn usage(&self) -> StoreUsage;

    // ---- pipeline and trigger state ----

    /// Whether a pipeline's delivery is paused.
    fn is_paused(&self, pipeline: &str) -> bool {
        self.pause_reason(pipeline).is_some()
    }

    /// Why a pipeline's delivery is paused (empty when paused by hand with
    /// no reason given), or `None` when it is not.
    fn pause_reason(&self, pipeline: &str) -> Option<String>;

    /// Record, durably, that a pipeline is paused, and why (or not: `None`).
    fn set_paused(&self, pipeline: &str, reason: Option<&str>) -> Ticket;

    /// A canary's state as last set (`rolled-back`, `promoted`), by its key.
    fn canary(&self, key: &str) -> Option<String>;

    /// Set a canary's state.
    fn set_canary(&self, key: &str, state: &str) -> Ticket;

    /// A pipeline's lifetime counters as last saved (JSON).
    fn totals(&self, pipeline: &str) -> Option<String>;

    /// Save a pipeline's lifetime counters (JSON).
    fn set_totals(&self, pipeline: &str, json: &str) -> Ticket;

    /// Dead letters in the queue now, by pipeline.
    fn dead_letter_counts(&self) -> std::collections::BTreeMap<String, u64>;

    /// Where a pipeline's source polls next (committed with its events).
    fn cursor(&self, pipeline: &str) -> Option<String>;

    /// When a pipeline's schedule last fired (ms since the Unix epoch).
    fn schedule_last(&self, pipeline: &str) -> Option<u64>;

    /// Record, durably, when a pipeline's schedule fired.
    fn set_schedule_last(&self, pipeline: &str, at_ms: u64) -> Ticket;

    // ---- plugin state (namespaced by pipeline and plugin) ----

    /// A plugin's value.
    fn kv_get(&self, namespace: &[u8], key: &str) -> Result<Option<Vec<u8>>, KvError>;

    /// Replace (or with `None` remove) a value if its current value is
    /// `expected` (when given), keeping the namespace within `quota_bytes`.
    /// Not durable until [`Store::flush`].
    fn kv_swap(
        &self,
        namespace: &[u8],
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
        quota_bytes: u64,
    ) -> Result<bool, KvError>;

    /// A plugin's keys starting with `prefix`, at most `limit`.
    fn kv_list(&self, namespace: &[u8], prefix: &str, limit: usize)
    -> Result<Vec<String>, KvError>;

    // ---- the rest ----

    /// The keyed, hash-chained audit log.
    fn audit(&self) -> &dyn AuditLog;

    /// What the store found wrong with itself when it opened and could
    /// still serve on (an audit log that is not intact): each one is
    /// logged, counted in `weft_store_alarms` and fails `weft check`.
    fn alarms(&self) -> Vec<String>;

    /// Why the latest write failed (a full disk, an I/O error), while no
    /// write has succeeded since; `None` when writes go through.
    fn failing(&self) -> Option<String>;

    /// Make every write so far durable.
    fn flush(&self) -> Ticket;

    /// Finish queued writes and stop.
    fn close(&self);

    /// Write a consistent snapshot of the whole store into the new (or
    /// empty) directory `to`; writes pause while it is taken.
    fn backup(&self, to: &std::path::Path) -> Result<BackupManifest, StoreError>;

    /// Record an attempt that dead-lettered `record` (as
    /// [`Store::record_attempt`] with [`AfterAttempt::DeadLettered`]) and,
    /// in the same durable write, queue `compensation` unless its key was
    /// taken within its window (it is then left out; the dead letter lands).
    fn dead_letter_compensated(
        &self,
        record: &EventRecord,
        done: QueueEntry,
        at_ms: u64,
        compensation: Polled,
        after: Option<AfterCommit>,
    ) -> Ticket;

    /// The event that took `dedup`'s key within its window, if one did.
    fn dedup_taken(&self, dedup: &Dedup) -> Option<EventId>;

    /// Mark dead letter `record` (rewritten, with its compensation named)
    /// and queue `compensation` in one durable write, unless the event is
    /// no longer a dead letter ([`Committed::Gone`]); a compensation whose
    /// key was taken is left out.
    fn compensate(&self, record: &EventRecord, compensation: Polled) -> Ticket;

    /// What the host keeps for credential `name` (an OAuth client's
    /// rotated refresh token), as given to [`Store::set_credential_state`].
    fn credential_state(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Keep `value` for credential `name`, sealed under the store key when
    /// the store is encrypted; durable once the ticket resolves.
    fn set_credential_state(&self, name: &str, value: &[u8]) -> Ticket;

    /// The store's encryption at rest.
    fn encryption(&self) -> Encryption;

    /// Seal every value not under the current key again under it (and
    /// plain ones written before encryption was on), while the store
    /// serves; then record that no value is under another key.
    fn reencrypt(&self) -> StoreFuture<'_, Reencrypted>;

    /// Copy in an event another store held (a migration): its record and
    /// payload at `place`; with `take_key`, its idempotency key is taken
    /// for it as of its acceptance. Writing the same event again replaces it.
    fn import(&self, record: &EventRecord, place: Imported, take_key: bool) -> Ticket;

    /// Every plugin state value, as (namespace, key, value) (a migration).
    fn kv_export(&self) -> Result<Vec<KvEntry>, StoreError>;

    /// The queue entries this host should work when its engine starts:
    /// every one, for a store only this host uses; on a store hosts
    /// share, those of hosts no longer alive, taken over by this one.
    fn claim_queue(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.queue()
    }

    /// Queued events of hosts that stopped since the last call, now this
    /// host's to work (none for a store only this host uses).
    fn adopt(&self) -> StoreFuture<'_, Vec<QueueEntry>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Take or renew the lease `name` for `ttl`: `false` while another
    /// host holds it. A store only this host uses always grants it.
    fn lease(&self, _name: &str, _ttl: std::time::Duration) -> StoreFuture<'_, bool> {
        Box::pin(async { Ok(true) })
    }

    /// Give up the lease `name` if this host holds it (a host stopping),
    /// so another takes it at once rather than when it runs out.
    fn release_lease(&self, _name: &str) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// Whether several hosts share this store.
    fn shared(&self) -> bool {
        false
    }

    /// On a store hosts share, until when (ms since the epoch) the sink
    /// breaker of `pipeline` stays open, as the last host to open it said;
    /// `None` when none did (always, on a store only this host uses).
    fn breaker_open_until(&self, _pipeline: &str) -> Option<u64> {
        None
    }

    /// Say that this host opened the sink breaker of `pipeline` until
    /// `until_ms`, so the other hosts sharing the store hold their calls
    /// too (nothing to say on a store only this host uses).
    fn set_breaker_open_until(&self, _pipeline: &str, _until_ms: u64) -> Ticket {
        Ticket::settled(Ok(Committed::Written))
    }

    /// On a store hosts share, the events of the ordered pipeline
    /// `pipeline` in the order they were accepted by any host, for the one
    /// host that works them (the holder of the lease `order:PIPELINE`).
    /// `None` for a store only this host uses: its queue is in order.
    fn order_feed(&self, _pipeline: &str) -> Option<Box<dyn OrderFeed>> {
        None
    }

    /// The backend, for tests that tamper with it.
    #[doc(hidden)]
    fn as_any(&self) -> &dyn std::any::Any;
}

impl dyn Store {
    /// Event records, newest first, that `keep` accepts, at most `limit`.
    pub fn recent_events(
        &self,
        mut keep: impl FnMut(&EventRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        self.scan_recent(&mut keep, limit)
    }
}
