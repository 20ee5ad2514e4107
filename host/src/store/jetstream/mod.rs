//! The store on NATS JetStream, shared by several hosts.
//!
//! Key-value buckets (`PREFIX-events`, `-dead`, `-dedup`, `-state`, `-kv`,
//! `-hosts`) and streams (`PREFIX-audit`, `-order`), each kept by
//! `replicas` servers. Every event is one key of the events bucket holding
//! its record, payload, place (queued or finished) and the host working
//! it, so one transition is one write, acknowledged only once the replicas
//! have it; dead letters move to a bucket of their own (`dead.rs`).
//!
//! Each host works the events it accepted. A host says it is alive by
//! renewing its key in the hosts bucket, which expires; the queued events
//! of a host whose key has expired are taken over, each with a
//! compare-and-set on its owner, by whichever host gets there first. A
//! host writes an attempt's outcome only while it still owns the event, so
//! a host that was thought dead cannot undo another's work. Polls and
//! schedules run where their lease is held ([`Store::lease`]).

mod audit;
mod caller;
mod count;
mod dead;
mod hosts;
mod open;
mod ops;
mod order;
mod plugin_state;
mod scan;
mod upkeep;

use self::audit::JsAuditLog;
use self::caller::Caller;
use self::count::Snapshot;
use self::scan::{Found, scan};
use super::*;
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a host's liveness key lasts without renewal.
pub const HOST_TTL: Duration = Duration::from_secs(6);
/// How often a host renews it.
const HOST_BEAT: Duration = Duration::from_secs(1);
/// Orphaned work is also looked for this often, host losses or not.
const ADOPT_SCAN_EVERY: Duration = Duration::from_secs(30);
/// How far the clocks of hosts sharing a store may differ, at most, where
/// a decision compares one host's time with another's.
const CLOCK_SKEW_MS: u64 = 60_000;

/// Where an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Place {
    Queued { due_ms: u64, attempt: u32 },
    Finished { at_ms: u64 },
    Dead { at_ms: u64 },
}

/// One event as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    id: EventId,
    place: Place,
    /// The host working it (while queued).
    owner: String,
    /// Whether `record` and `payload` are sealed under the store key.
    sealed: bool,
    /// Its place in its ordered pipeline's sequence, once the host that
    /// works the pipeline has taken it.
    order_seq: Option<u64>,
    /// The dedup window of the idempotency key it was stored to take, on
    /// the write that stored it new: its host acknowledged it only once it
    /// held the key, so a copy whose host stopped in between is checked
    /// against the key before another host works it.
    key_window_ms: Option<u64>,
    record: Vec<u8>,
    payload: Vec<u8>,
}

/// What the store's tasks share.
struct Shared {
    js: jetstream::Context,
    events: kv::Store,
    /// Dead letters, moved here from `events` (see `dead`).
    dead: kv::Store,
    dedup: kv::Store,
    state: kv::Store,
    kv: kv::Store,
    hosts: kv::Store,
    names: Names,
    keys: Keyring,
    index_key: [u8; 32],
    host: String,
    /// Queued events this host works, by the revision it last wrote.
    owned: Mutex<HashMap<EventId, u64>>,
    /// Events of ordered pipelines this host works, by their place in
    /// the sequence (kept with every write of them).
    sequenced: Mutex<HashMap<EventId, u64>>,
    failing: Mutex<Option<String>>,
    /// Writes of this host so far: counts read before the latest are
    /// read again.
    writes: std::sync::atomic::AtomicU64,
    closed: AtomicBool,
    flushes: crate::histogram::Histogram,
    timeout: Duration,
}

/// The buckets' names.
struct Names {
    prefix: String,
    order: String,
    events: String,
    dead: String,
    dedup: String,
    kv: String,
}

/// The store on a JetStream cluster.
pub struct JetStreamStore {
    s: Arc<Shared>,
    call: Arc<Caller>,
    audit: JsAuditLog,
    location: String,
    alarms: Vec<String>,
    /// The last counts read: when, after how many writes of this host.
    snapshot: Mutex<Option<(Instant, u64, Snapshot)>>,
    /// Hosts alive at the last look, and when orphans were last sought.
    seen: Mutex<(BTreeSet<String>, Option<Instant>)>,
    host_name: String,
    /// Each pipeline's pause as last read.
    pauses: Mutex<HashMap<String, Option<String>>>,
}

/// How to reach the cluster and what to call things.
#[derive(Clone)]
pub struct JetStreamOptions {
    /// Comma-separated seed URLs.
    pub url: String,
    /// User name, if any.
    pub user: Option<String>,
    /// Password (with a user) or token.
    pub secret: Option<String>,
    /// Copies kept of each bucket and stream.
    pub replicas: usize,
    /// Name prefix.
    pub prefix: String,
    /// The shared audit and index key.
    pub audit_key: [u8; 32],
    /// Per-operation time limit.
    pub timeout: Duration,
    /// A name for this host that outlives restarts (its lifetime counters
    /// are kept under it).
    pub host_name: String,
    /// The largest payload the host accepts.
    pub max_body_bytes: usize,
}

fn hexname(s: &[u8]) -> String {
    hex::encode(s)
}

fn lane_of(id: &EventId) -> usize {
    id.as_bytes()[15] as usize ^ ((id.as_bytes()[14] as usize) << 3)
}

fn lane_of_name(name: &str) -> usize {
    name.bytes()
        .fold(7usize, |h, b| h.wrapping_mul(31) ^ b as usize)
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(format!("JetStream: {e}"))
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(format!("JetStream: {e}"))
}

fn is_conflict(e: &kv::UpdateError) -> bool {
    e.kind() == kv::UpdateErrorKind::WrongLastRevision
}

/// Whether a purge expecting a revision found another one.
fn is_purge_conflict(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("wrong last sequence")
}

impl Shared {
    fn seal(&self, what: &[u8], id: &EventId, plain: &[u8]) -> (bool, Vec<u8>) {
        let mut at = what.to_vec();
        at.extend_from_slice(id.as_bytes());
        match self.keys.seal(&at, plain) {
            Some(sealed) => (true, sealed),
            None => (false, plain.to_vec()),
        }
    }

    fn open(
        &self,
        what: &[u8],
        id: &EventId,
        sealed: bool,
        bytes: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        if !sealed {
            return Ok(bytes.to_vec());
        }
        let mut at = what.to_vec();
        at.extend_from_slice(id.as_bytes());
        self.keys.open(&at, bytes).map_err(StoreError::Read)
    }

    fn stored(&self, record: &EventRecord, place: Place, owner: &str) -> bytes::Bytes {
        self.stored_at(record, place, owner, None)
    }

    fn stored_at(
        &self,
        record: &EventRecord,
        place: Place,
        owner: &str,
        order_seq: Option<u64>,
    ) -> bytes::Bytes {
        self.encode_stored(record, place, owner, order_seq, None)
    }

    fn encode_stored(
        &self,
        record: &EventRecord,
        place: Place,
        owner: &str,
        order_seq: Option<u64>,
        key_window_ms: Option<u64>,
    ) -> bytes::Bytes {
        let (sealed, rec) = self.seal(b"rec", &record.id, &record.encode());
        let (_, payload) = self.seal(b"body", &record.id, &record.payload);
        let s = Stored {
            id: record.id,
            place,
            owner: owner.to_string(),
            sealed,
            order_seq,
            key_window_ms,
            record: rec,
            payload,
        };
        postcard::to_stdvec(&s).unwrap_or_default().into()
    }

    fn decode(&self, bytes: &[u8]) -> Result<(Stored, EventRecord), StoreError> {
        let s: Stored = postcard::from_bytes(bytes)
            .map_err(|e| StoreError::Read(format!("corrupt event in JetStream: {e}")))?;
        let plain = self.open(b"rec", &s.id, s.sealed, &s.record)?;
        let mut record = EventRecord::decode(&plain).map_err(StoreError::Read)?;
        record.payload = self.open(b"body", &s.id, s.sealed, &s.payload)?;
        Ok((s, record))
    }

    async fn entry(&self, id: &EventId) -> Result<Option<(Stored, EventRecord, u64)>, StoreError> {
        match self.events.entry(id.to_string()).await.map_err(read_err)? {
            Some(e) if e.operation == kv::Operation::Put => {
                let (s, r) = self.decode(&e.value)?;
                Ok(Some((s, r, e.revision)))
            }
            _ => Ok(None),
        }
    }

    fn fail(&self, e: &StoreError) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    fn ok(&self) {
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Store a new event, queued for its first attempt and owned here,
    /// unless `dedup`'s key was taken (then it is removed again).
    async fn accept(
        &self,
        record: &EventRecord,
        dedup: Option<&Dedup>,
    ) -> Result<Committed, StoreError> {
        let place = Place::Queued {
            due_ms: record.received_at_ms,
            attempt: 1,
        };
        let value = self.encode_stored(record, place, &self.host, None, dedup.map(|d| d.window_ms));
        let rev = self
            .events
            .create(record.id.to_string(), value)
            .await
            .map_err(write_err)?;
        if let Some(d) = dedup {
            // Not acknowledged unless the key is this event's: a duplicate,
            // or a key that could not be taken, leaves nothing behind.
            let taken = self.take_key(d, record.id).await;
            if !matches!(taken, Ok(None)) {
                let _ = self.events.purge(record.id.to_string()).await;
            }
            if let Some(first) = taken? {
                // The sender may send the key's next event once answered:
                // the first must have its place by then, though the host
                // that accepted it stopped before giving it one.
                if record.order_key.is_some() {
                    self.ensure_sequenced(&record.pipeline, first).await?;
                }
                return Ok(Committed::Duplicate(first));
            }
        }
        if record.order_key.is_some()
            && let Err(e) = self.sequence(record).await
        {
            // Not acknowledged: nothing stays behind to hold the key.
            let _ = self.events.purge(record.id.to_string()).await;
            if let Some(d) = dedup {
                let _ = self.release_key(d, record.id).await;
            }
            return Err(e);
        }
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id, rev);
        Ok(Committed::Written)
    }

    /// Queue a compensation unless its key was taken, then `then` (the
    /// write it goes with); the compensation's `after` runs once both
    /// landed, when it is new.
    async fn with_compensation(
        &self,
        comp: &EventRecord,
        dedup: &Dedup,
        after: &Mutex<Option<AfterCommit>>,
        then: impl Future<Output = Result<Committed, StoreError>>,
    ) -> Result<Committed, StoreError> {
        let new = self.accept(comp, Some(dedup)).await? == Committed::Written;
        let done = then.await?;
        if new && let Some(a) = after.lock().unwrap_or_else(|p| p.into_inner()).take() {
            a();
        }
        Ok(done)
    }

    fn dedup_key(&self, d: &Dedup) -> String {
        use hmac::Mac;
        let mut h = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.index_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        h.update(&(d.pipeline.len() as u64).to_be_bytes());
        h.update(d.pipeline.as_bytes());
        h.update(d.key.as_bytes());
        hex::encode(h.finalize().into_bytes())
    }

    /// Take `d`'s key for `id`; the event that holds it when it was taken
    /// within the window.
    async fn take_key(&self, d: &Dedup, id: EventId) -> Result<Option<EventId>, StoreError> {
        let key = self.dedup_key(d);
        let mut value = id.as_bytes().to_vec();
        value.extend_from_slice(&now_ms().to_be_bytes());
        loop {
            match self.dedup.create(&key, value.clone().into()).await {
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(write_err(e)),
            }
            let Some(e) = self.dedup.entry(key.clone()).await.map_err(read_err)? else {
                continue;
            };
            if let Some((first, at)) = parse_dedup(&e.value)
                && e.operation == kv::Operation::Put
            {
                if first == id {
                    // Taken for it by a host that took its work over.
                    return Ok(None);
                }
                if now_ms().saturating_sub(at) < d.window_ms {
                    return Ok(Some(first));
                }
            }
            match self
                .dedup
                .update(&key, value.clone().into(), e.revision)
                .await
            {
                Ok(_) => return Ok(None),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(write_err(e)),
            }
        }
    }

    /// Give up `d`'s key if `id` still holds it.
    async fn release_key(&self, d: &Dedup, id: EventId) -> Result<(), StoreError> {
        let key = self.dedup_key(d);
        if let Some(e) = self.dedup.entry(key.clone()).await.map_err(read_err)?
            && e.operation == kv::Operation::Put
            && parse_dedup(&e.value).is_some_and(|(held, _)| held == id)
        {
            self.dedup
                .purge_expect_revision(&key, Some(e.revision))
                .await
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// Write `record` at `place`, while this host owns it. `Gone` when
    /// another host has taken it over (or it is no longer there).
    async fn transition(
        &self,
        record: &EventRecord,
        place: Place,
    ) -> Result<Committed, StoreError> {
        let key = record.id.to_string();
        let owner = match place {
            Place::Queued { .. } => self.host.as_str(),
            _ => "",
        };
        let order_seq = {
            let mut sequenced = self.sequenced.lock().unwrap_or_else(|p| p.into_inner());
            match place {
                Place::Queued { .. } => sequenced.get(&record.id).copied(),
                _ => sequenced.remove(&record.id),
            }
        };
        let value = self.stored_at(record, place, owner, order_seq);
        let cached = self
            .owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&record.id)
            .copied();
        let mut rev = cached;
        loop {
            let r = match rev {
                Some(r) => r,
                None => match self.entry(&record.id).await? {
                    Some((s, _, r)) if s.owner == self.host => r,
                    Some((s, _, _)) => {
                        self.owned
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&record.id);
                        tracing::warn!(event = %record.id, owner = %s.owner,
                            "another host took this event over (this one missed its liveness renewals): its outcome here is dropped, and that host attempts it");
                        return Ok(Committed::Gone);
                    }
                    None => return Ok(Committed::Gone),
                },
            };
            match self.events.update(&key, value.clone(), r).await {
                Ok(new) => {
                    {
                        let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
                        if matches!(place, Place::Queued { .. }) {
                            owned.insert(record.id, new);
                        } else {
                            owned.remove(&record.id);
                        }
                    }
                    if matches!(place, Place::Dead { .. }) {
                        self.settle_or_warn(&record.id).await;
                    }
                    return Ok(Committed::Written);
                }
                Err(e) if is_conflict(&e) => rev = None,
                Err(e) => return Err(write_err(e)),
            }
        }
    }

    /// Change an event where it is (`change` gets its place and record
    /// and says what to write, or `None` to leave it), with
    /// compare-and-set, trying again when another write came between.
    async fn modify(
        &self,
        id: &EventId,
        mut change: impl FnMut(&Stored, &EventRecord) -> Option<(Place, String, EventRecord)>,
    ) -> Result<Committed, StoreError> {
        loop {
            let Some((s, r, rev)) = self.entry(id).await? else {
                return Ok(Committed::Gone);
            };
            let Some((place, owner, record)) = change(&s, &r) else {
                return Ok(Committed::Gone);
            };
            // Its place in the sequence stays while the same host works it.
            let order_seq = s
                .order_seq
                .filter(|_| matches!(place, Place::Queued { .. }) && owner == s.owner);
            let value = self.stored_at(&record, place, &owner, order_seq);
            match self.events.update(id.to_string(), value, rev).await {
                Ok(new) => {
                    let mut owned = self.owned.lock().unwrap_or_else(|p| p.into_inner());
                    if (owner == self.host && matches!(place, Place::Queued { .. }))
                        || owned.contains_key(id)
                    {
                        owned.insert(*id, new);
                    }
                    return Ok(Committed::Written);
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(write_err(e)),
            }
        }
    }

    /// Remove an event if `wanted` says so of it as it is now.
    async fn remove_if(
        &self,
        id: &EventId,
        wanted: impl Fn(&Stored) -> bool,
    ) -> Result<Committed, StoreError> {
        loop {
            let Some((s, _, rev)) = self.entry(id).await? else {
                return Ok(Committed::Gone);
            };
            if !wanted(&s) {
                return Ok(Committed::Gone);
            }
            match self
                .events
                .purge_expect_revision(id.to_string(), Some(rev))
                .await
            {
                Ok(()) => {
                    self.owned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(id);
                    return Ok(Committed::Written);
                }
                Err(e) if is_purge_conflict(&e) => continue,
                Err(e) => return Err(write_err(e)),
            }
        }
    }

    /// The events bucket (dead letters not yet moved included).
    async fn scan_events(&self) -> Result<Vec<(Stored, EventRecord, u64)>, StoreError> {
        self.scan_bucket(&self.names.events).await
    }

    async fn scan_bucket(&self, name: &str) -> Result<Vec<(Stored, EventRecord, u64)>, StoreError> {
        let found = scan(&self.js, name, ">", self.timeout)
            .await
            .map_err(StoreError::Read)?;
        let mut out = Vec::with_capacity(found.len());
        for Found {
            value,
            revision,
            key,
        } in found
        {
            match self.decode(&value) {
                Ok((s, r)) => out.push((s, r, revision)),
                Err(e) => tracing::error!(key, "skipping an event the store cannot read: {e}"),
            }
        }
        Ok(out)
    }

    async fn state_get(&self, key: String) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        match self.state.entry(key).await.map_err(read_err)? {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((e.value.to_vec(), e.revision)))
            }
            _ => Ok(None),
        }
    }

    async fn state_put(
        &self,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<Committed, StoreError> {
        match value {
            Some(v) => self.state.put(key, v.into()).await.map_err(write_err)?,
            None => {
                self.state.purge(key).await.map_err(write_err)?;
                0
            }
        };
        Ok(Committed::Written)
    }
}

fn parse_dedup(v: &[u8]) -> Option<(EventId, u64)> {
    let id = EventId::from_slice(v.get(..16)?)?;
    let at = u64::from_be_bytes(v.get(16..24)?.try_into().ok()?);
    Some((id, at))
}

impl JetStreamStore {
    /// How many other hosts are alive on this installation now.
    pub fn other_hosts(&self) -> Result<usize, StoreError> {
        let s = self.s.clone();
        let alive = self
            .call
            .wait(async move { JetStreamStore::alive(&s).await })?;
        Ok(alive.iter().filter(|h| **h != self.s.host).count())
    }

    /// Run a write on its lane: the ticket settles with its result, and
    /// `after` runs once it is durable.
    fn submit<F>(
        &self,
        lane: usize,
        must_land: bool,
        after: Option<AfterCommit>,
        write: F,
    ) -> Ticket
    where
        F: Fn(Arc<Shared>) -> Pin<Box<dyn Future<Output = Result<Committed, StoreError>> + Send>>
            + Send
            + 'static,
    {
        let (ticket, tx) = Ticket::new();
        let s = self.s.clone();
        self.call.queue(lane, async move {
            let mut wait = Duration::from_millis(100);
            let result = loop {
                let started = Instant::now();
                let r = write(s.clone()).await;
                s.writes.fetch_add(1, Ordering::SeqCst);
                match &r {
                    Ok(_) => {
                        s.flushes.observe(started.elapsed());
                        s.ok();
                        break r;
                    }
                    Err(e) => {
                        s.fail(e);
                        // An attempt was made: its outcome is written
                        // once the cluster takes writes again.
                        if must_land && !s.closed.load(Ordering::SeqCst) {
                            tracing::warn!("an attempt's outcome could not be written yet ({e}); trying again in {wait:?}");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                            continue;
                        }
                        break r;
                    }
                }
            };
            if let (Ok(Committed::Written), Some(after)) = (&result, after) {
                after();
            }
            let _ = tx.send(result);
        });
        ticket
    }
}
