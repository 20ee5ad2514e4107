//! Group commit: one thread applies queued writes as one sled batch and
//! flushes once for all of them before anyone is told the write is durable.
//!
//! When a group fails (a full disk, an I/O error), its writes are refused,
//! except those that must land: the outcome of an attempt already made is
//! held and written again, first, once the store works, so an event that
//! reached its sink is not delivered a second time. While failing, the
//! committer reopens a broken database and probes the store with backoff,
//! and the store is well again by itself when the cause goes away.

use super::keys::{dedup_value, parse_dedup_value};
use super::shelf::Shelf;
use crate::store::{AfterCommit, Committed, EventId, StoreError, now_ms};
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most writes in one group commit. Larger sled batches were seen to stall
/// sled 0.34.7; 64 keeps each flush small and still covers many events.
pub const MAX_GROUP: usize = 64;

/// One atomic write: its operations all land together or not at all.
#[derive(Default)]
pub(super) struct Write {
    /// `(key, Some(value))` inserts, `(key, None)` removes.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Skip the write if this dedup key was taken within the window:
    /// `(key, id to record, window in ms)`.
    pub dedup: Option<(Vec<u8>, EventId, u64)>,
    /// Run after the write is durable (not run for a duplicate).
    pub after: Option<AfterCommit>,
    /// Parts with their own dedup key, written in the same batch as the rest:
    /// a part whose key was taken is left out, the others and `ops` land.
    pub items: Vec<Item>,
    /// Skip the write (as [`Committed::Gone`]) unless this key is present
    /// when it commits, counting the writes before it in its group.
    pub requires: Option<Vec<u8>>,
    /// Skip the write (as [`Committed::Gone`]) unless this key holds this
    /// value when it commits and no write before it in its group touched it.
    pub unchanged: Option<(Vec<u8>, Vec<u8>)>,
    /// Payload files to write (and sync) before the batch that names them.
    pub files: Vec<(EventId, Vec<u8>)>,
    /// Held and written again when its group fails, until it lands (the
    /// outcome of work already done), instead of being refused.
    pub must_land: bool,
    pub(super) reply: Option<oneshot::Sender<Result<Committed, StoreError>>>,
}

/// A part of a [`Write`] with its own dedup key (one polled event).
pub(super) struct Item {
    /// `(key, id to record, window in ms)`.
    pub dedup: (Vec<u8>, EventId, u64),
    /// Its operations.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Run once durable, if the item was new.
    pub after: Option<AfterCommit>,
    /// Its payload files.
    pub files: Vec<(EventId, Vec<u8>)>,
}

impl Write {
    /// Insert `key = value`.
    pub(super) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push((key, Some(value)));
        self
    }
    /// Remove `key`.
    pub(super) fn remove(&mut self, key: Vec<u8>) -> &mut Self {
        self.ops.push((key, None));
        self
    }
}

/// Why the latest group commit failed, until one succeeds.
pub(super) type Failing = std::sync::Arc<std::sync::Mutex<Option<String>>>;

/// The first wait before the store is tried again after a failure; it
/// doubles with each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Run the commit loop until every sender is gone.
pub(super) fn run(
    shelf: std::sync::Arc<Shelf>,
    payloads: super::payloads::Payloads,
    rx: mpsc::Receiver<Write>,
    flushes: std::sync::Arc<crate::histogram::Histogram>,
    commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
    failing: Failing,
) {
    let failing_now = || failing.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let set_failing = |why: Option<String>| {
        let mut f = failing.lock().unwrap_or_else(|e| e.into_inner());
        match (&*f, &why) {
            (None, Some(e)) => tracing::error!(
                "the store cannot write: {e}; senders get 503 until it can, and weft keeps trying"
            ),
            (Some(_), None) => tracing::info!("the store writes again"),
            _ => {}
        }
        *f = why;
    };
    // Writes that must land, held through a failure.
    let mut held: Vec<Write> = Vec::new();
    let mut backoff = MIN_BACKOFF;
    let mut retry_at = Instant::now();
    let mut open = true;
    while open || !held.is_empty() {
        let recovering = !held.is_empty() || failing_now().is_some();
        let first = if recovering {
            let wait = retry_at.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(w) => Some(w),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Shutting down: one last try for what is held.
                    open = false;
                    None
                }
            }
        } else {
            match rx.recv() {
                Ok(w) => Some(w),
                Err(_) => break,
            }
        };
        let mut fresh: Vec<Write> = first.into_iter().collect();
        while fresh.len() + held.len().min(MAX_GROUP) < MAX_GROUP {
            match rx.try_recv() {
                Ok(w) => fresh.push(w),
                Err(_) => break,
            }
        }
        let due = Instant::now() >= retry_at || !open;
        if recovering && !due {
            // Not yet time to try the store again: refuse what came in.
            let why = failing_now().unwrap_or_default();
            refuse(fresh, &StoreError::Write(why), &mut held);
            continue;
        }
        if shelf.is_broken() {
            match shelf.reopen(Duration::from_secs(2)) {
                Ok(generation) => {
                    tracing::info!(generation, "the store's database was reopened");
                    // Files written for batches that did not land name
                    // nothing now.
                    if let Ok(trees) = shelf.get() {
                        let _ = payloads.remove_orphans(&trees.events);
                    }
                }
                Err(why) => {
                    let why = format!("the store cannot be reopened yet: {why}");
                    set_failing(Some(why.clone()));
                    refuse(fresh, &StoreError::Write(why), &mut held);
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        // Recovering, the database answering is not enough: the payload
        // files must be writable too before the store says it is well.
        if recovering && let Err(e) = payloads.probe() {
            let why = format!("cannot write a payload file: {e}");
            set_failing(Some(why.clone()));
            refuse(fresh, &StoreError::Write(why), &mut held);
            retry_at = Instant::now() + backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        let take = held.len().min(MAX_GROUP);
        let mut group: Vec<Write> = held.drain(..take).collect();
        group.append(&mut fresh);
        let started = std::time::Instant::now();
        let writing = shelf.writing();
        let result = match shelf.get() {
            Ok(trees) => commit_group(
                &shelf,
                &trees,
                &payloads,
                group,
                &commits,
                &mut held,
                &set_failing,
            ),
            Err(why) => {
                set_failing(Some(why.clone()));
                refuse(group, &StoreError::Write(why.clone()), &mut held);
                Err(StoreError::Write(why))
            }
        };
        drop(writing);
        match result {
            Ok(()) => {
                set_failing(None);
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                set_failing(Some(e.to_string()));
                retry_at = Instant::now() + backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        flushes.observe(started.elapsed());
    }
    if !held.is_empty() {
        tracing::warn!(
            writes = held.len(),
            "the store closed while outcomes were waiting to be written; their events are attempted again at the next start"
        );
    }
}

/// Answer writes the store cannot take now: refused, or held when they
/// must land.
fn refuse(writes: Vec<Write>, error: &StoreError, held: &mut Vec<Write>) {
    for mut w in writes {
        if w.must_land {
            held.push(w);
        } else if let Some(reply) = w.reply.take() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

fn commit_group(
    shelf: &Shelf,
    trees: &super::shelf::Trees,
    payloads: &super::payloads::Payloads,
    mut group: Vec<Write>,
    commits: &std::sync::atomic::AtomicU64,
    held: &mut Vec<Write>,
    failing: &dyn Fn(Option<String>),
) -> Result<(), StoreError> {
    let (db, tree) = (&trees.db, &trees.events);
    use std::sync::atomic::Ordering;
    let mut batch = sled::Batch::default();
    // Every group commit counts itself in the same batch: the anchor file
    // beside the store holds a recent count, so a store that lost commits
    // (rolled back, truncated, replaced) is found at open.
    let count = commits.load(Ordering::SeqCst) + 1;
    batch.insert(super::keys::COMMITS_KEY, &count.to_be_bytes());
    let mut taken: HashMap<Vec<u8>, EventId> = HashMap::new();
    let mut outcomes = Vec::with_capacity(group.len());
    let mut new_items: Vec<Vec<bool>> = Vec::with_capacity(group.len());
    let now = now_ms();
    // Keys put (true) or removed (false) by earlier writes of this group,
    // kept only when a write has a precondition to check against them.
    let track = group
        .iter()
        .any(|w| w.requires.is_some() || w.unchanged.is_some());
    let mut pending: HashMap<Vec<u8>, bool> = HashMap::new();
    // Payload files to write before the batch, and keys whose files go
    // once it is durable.
    let mut files: Vec<(EventId, Vec<u8>)> = Vec::new();
    let mut removed: Vec<Vec<u8>> = Vec::new();
    // Values move into the batch: a payload is not copied again here,
    // except for a write that must land, which keeps its own to try again.
    fn ops_of(
        must_land: bool,
        ops: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        if must_land {
            ops.clone()
        } else {
            std::mem::take(ops)
        }
    }
    fn files_of(must_land: bool, files: &mut Vec<(EventId, Vec<u8>)>) -> Vec<(EventId, Vec<u8>)> {
        if must_land {
            files.clone()
        } else {
            std::mem::take(files)
        }
    }
    fn apply(
        batch: &mut sled::Batch,
        pending: &mut HashMap<Vec<u8>, bool>,
        track: bool,
        (k, v): (Vec<u8>, Option<Vec<u8>>),
    ) {
        if track {
            pending.insert(k.clone(), v.is_some());
        }
        match v {
            Some(v) => batch.insert(k, v),
            None => batch.remove(k),
        }
    }
    let earlier =
        |taken: &HashMap<Vec<u8>, EventId>, key: &Vec<u8>, window: u64| match taken.get(key) {
            Some(first) => Some(*first),
            None => match tree.get(key) {
                Ok(Some(v)) => parse_dedup_value(&v)
                    .filter(|(_, at)| now.saturating_sub(*at) < window)
                    .map(|(first, _)| first),
                _ => None,
            },
        };
    for w in &mut group {
        let keep = w.must_land;
        if let Some(key) = &w.requires {
            let present = match pending.get(key) {
                Some(p) => *p,
                None => tree.contains_key(key).unwrap_or(false),
            };
            if !present {
                outcomes.push(Committed::Gone);
                new_items.push(Vec::new());
                continue;
            }
        }
        if let Some((key, value)) = &w.unchanged {
            let same = !pending.contains_key(key)
                && matches!(tree.get(key), Ok(Some(v)) if v.as_ref() == value.as_slice());
            if !same {
                outcomes.push(Committed::Gone);
                new_items.push(Vec::new());
                continue;
            }
        }
        if let Some((key, id, window)) = &w.dedup {
            if let Some(first) = earlier(&taken, key, *window) {
                outcomes.push(Committed::Duplicate(first));
                new_items.push(Vec::new());
                continue;
            }
            taken.insert(key.clone(), *id);
            batch.insert(key.clone(), dedup_value(id, now));
        }
        let mut fresh = Vec::with_capacity(w.items.len());
        for item in &mut w.items {
            let (key, id, window) = &item.dedup;
            if earlier(&taken, key, *window).is_some() {
                fresh.push(false);
                continue;
            }
            taken.insert(key.clone(), *id);
            batch.insert(key.clone(), dedup_value(id, now));
            for op in ops_of(keep, &mut item.ops) {
                apply(&mut batch, &mut pending, track, op);
            }
            files.extend(files_of(keep, &mut item.files));
            fresh.push(true);
        }
        new_items.push(fresh);
        for op in ops_of(keep, &mut w.ops) {
            match &op.1 {
                None => removed.push(op.0.clone()),
                // Put again as a file: the file just written stays.
                Some(v) if super::payloads::names_file(&op.0, v) => {
                    removed.retain(|k| *k != op.0);
                }
                Some(_) => {}
            }
            apply(&mut batch, &mut pending, track, op);
        }
        files.extend(files_of(keep, &mut w.files));
        outcomes.push(Committed::Written);
    }
    let result = payloads
        .write(&files)
        .map_err(|e| StoreError::Write(format!("cannot write a payload file: {e}")))
        .and_then(|()| {
            shelf
                .check(
                    tree.apply_batch(batch)
                        .and_then(|()| db.flush().map(|_| ())),
                )
                .map_err(|e| StoreError::Write(e.to_string()))
        });
    // Whether the store is failing is set before any writer hears how
    // its write went: a caller that asks at once is told the same.
    match &result {
        Ok(()) => {
            commits.store(count, Ordering::SeqCst);
            payloads.remove(&super::payloads::ids_of(&removed));
            failing(None);
        }
        Err(e) => failing(Some(e.to_string())),
    }
    for ((mut w, outcome), fresh) in group.into_iter().zip(outcomes).zip(new_items) {
        match &result {
            Ok(()) => {
                for (item, new) in w.items.iter_mut().zip(fresh) {
                    if new && let Some(after) = item.after.take() {
                        after();
                    }
                }
                if outcome == Committed::Written
                    && let Some(after) = w.after.take()
                {
                    after();
                }
                if let Some(reply) = w.reply.take() {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => refuse(vec![w], e, held),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use crate::store::{Committed, Dedup, EventId, EventRecord, SledStore, Store};

    fn keyed(window_ms: u64) -> (EventRecord, Dedup) {
        let record = EventRecord::queued(EventId::new(), "p", "k", b"{}".to_vec());
        let dedup = Dedup {
            pipeline: "p".into(),
            key: "k".into(),
            window_ms,
        };
        (record, dedup)
    }

    async fn accept(store: &SledStore, window_ms: u64) -> (EventId, Committed) {
        let (record, dedup) = keyed(window_ms);
        let done = store.accept(&record, Some(dedup), None).await.unwrap();
        (record.id, done)
    }

    #[tokio::test]
    async fn a_dedup_key_is_free_again_once_its_window_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let (first, done) = accept(&store, 150).await;
        assert_eq!(done, Committed::Written);
        assert_eq!(
            accept(&store, 150).await.1,
            Committed::Duplicate(first),
            "within the window the key is taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (later, done) = accept(&store, 150).await;
        assert_eq!(done, Committed::Written, "past the window the key is free");
        assert_eq!(accept(&store, 150).await.1, Committed::Duplicate(later));
        assert_eq!(store.counts().events, 2, "duplicates store nothing");
    }
}
