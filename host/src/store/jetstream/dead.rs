//! Dead letters in a bucket of their own, `PREFIX-dead`: kept apart from
//! the work, so an operator can watch it (`nats kv watch PREFIX-dead`),
//! size it and read it without reading the queue.
//!
//! An event is dead-lettered in two steps: its host writes the outcome on
//! the event where it is (a compare-and-set on its owner, as every
//! outcome), then moves it here. A replay moves it back the same way:
//! into the events bucket first, then out of this one. Whatever a crash
//! leaves between two steps (a dead-lettered event still among the events,
//! or a replayed one's old copy here) is settled by the next host that
//! meets it ([`Shared::settle`]), and every read counts each event once
//! meanwhile ([`Shared::scan_all`]): a copy among the events wins.

use super::*;
use std::collections::HashSet;

/// Whether the stored event `value` is dead-lettered.
fn is_dead(value: &[u8]) -> bool {
    postcard::from_bytes::<Stored>(value).is_ok_and(|s| matches!(s.place, Place::Dead { .. }))
}

fn present(e: Option<kv::Entry>) -> Option<kv::Entry> {
    e.filter(|e| e.operation == kv::Operation::Put)
}

/// How many times a move is tried again when another write came between.
const TRIES: usize = 16;

impl Shared {
    /// The dead letter `id`, with its revision in the dead-letter bucket.
    pub(super) async fn dead_entry(
        &self,
        id: &EventId,
    ) -> Result<Option<(Stored, EventRecord, u64)>, StoreError> {
        match present(self.dead.entry(id.to_string()).await.map_err(read_err)?) {
            Some(e) => {
                let (s, r) = self.decode(&e.value)?;
                Ok(Some((s, r, e.revision)))
            }
            None => Ok(None),
        }
    }

    /// Finish moving event `id` between the buckets: a dead-lettered copy
    /// among the events moves here; a copy here of an event that is among
    /// the events again (replayed) goes.
    pub(super) async fn settle(&self, id: &EventId) -> Result<(), StoreError> {
        let key = id.to_string();
        for _ in 0..TRIES {
            let live = present(self.events.entry(key.clone()).await.map_err(read_err)?);
            let dead = present(self.dead.entry(key.clone()).await.map_err(read_err)?);
            let moved = match (live, dead) {
                (Some(l), _) if is_dead(&l.value) => {
                    self.dead
                        .put(key.clone(), l.value.clone())
                        .await
                        .map_err(write_err)?;
                    self.events
                        .purge_expect_revision(key.clone(), Some(l.revision))
                        .await
                }
                (Some(_), Some(d)) => {
                    self.dead
                        .purge_expect_revision(key.clone(), Some(d.revision))
                        .await
                }
                _ => return Ok(()),
            };
            match moved {
                Ok(()) => return Ok(()),
                Err(e) if is_purge_conflict(&e) => continue,
                Err(e) => return Err(write_err(e)),
            }
        }
        Err(StoreError::Write(format!(
            "JetStream: event {id} kept changing while it was moved to or from the dead letters"
        )))
    }

    /// Settle `id`, saying so when it could not be now: it stays readable
    /// where it is, and the next host that meets it tries again.
    pub(super) async fn settle_or_warn(&self, id: &EventId) {
        if let Err(e) = self.settle(id).await {
            tracing::warn!(event = %id, "could not move the event between the events and the dead letters yet: {e}");
        }
    }

    /// Every event once: the events bucket, and the dead letters not among
    /// the events (a copy among the events is the newer).
    pub(super) async fn scan_all(&self) -> Result<Vec<(Stored, EventRecord, u64)>, StoreError> {
        let mut all = self.scan_events().await?;
        let live: HashSet<EventId> = all.iter().map(|(s, _, _)| s.id).collect();
        all.extend(
            self.scan_bucket(&self.names.dead)
                .await?
                .into_iter()
                .filter(|(s, _, _)| !live.contains(&s.id)),
        );
        Ok(all)
    }

    /// Event `id` wherever it is.
    pub(super) async fn any_entry(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        if let Some((_, r, _)) = self.entry(id).await? {
            return Ok(Some(r));
        }
        Ok(self.dead_entry(id).await?.map(|(_, r, _)| r))
    }

    /// Queue the dead letter `record` again (due at `due_ms`, as attempt
    /// `attempt`), worked by this host. `Gone` when it is no dead letter.
    pub(super) async fn revive(
        &self,
        record: &EventRecord,
        due_ms: u64,
        attempt: u32,
    ) -> Result<Committed, StoreError> {
        let key = record.id.to_string();
        let value = self.stored(record, Place::Queued { due_ms, attempt }, &self.host);
        let mut written = None;
        for _ in 0..TRIES {
            let live = present(self.events.entry(key.clone()).await.map_err(read_err)?);
            let put = match live {
                Some(l) if is_dead(&l.value) => {
                    match self.events.update(&key, value.clone(), l.revision).await {
                        Ok(rev) => Ok(rev),
                        Err(e) if is_conflict(&e) => continue,
                        Err(e) => Err(write_err(e)),
                    }
                }
                // Among the events already: replayed meanwhile.
                Some(_) => break,
                None => {
                    if self.dead_entry(&record.id).await?.is_none() {
                        break;
                    }
                    match self.events.create(&key, value.clone()).await {
                        Ok(rev) => Ok(rev),
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => Err(write_err(e)),
                    }
                }
            };
            written = Some(put?);
            break;
        }
        self.settle_or_warn(&record.id).await;
        let Some(rev) = written else {
            return Ok(Committed::Gone);
        };
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id, rev);
        Ok(Committed::Written)
    }

    /// Remove the dead letter `id`, wherever it is.
    pub(super) async fn remove_dead(&self, id: &EventId) -> Result<Committed, StoreError> {
        let mut done = self
            .remove_if(id, |st| matches!(st.place, Place::Dead { .. }))
            .await?;
        for _ in 0..TRIES {
            let Some((_, _, rev)) = self.dead_entry(id).await? else {
                return Ok(done);
            };
            match self
                .dead
                .purge_expect_revision(id.to_string(), Some(rev))
                .await
            {
                Ok(()) => {
                    done = Committed::Written;
                    break;
                }
                Err(e) if is_purge_conflict(&e) => continue,
                Err(e) => return Err(write_err(e)),
            }
        }
        Ok(done)
    }

    /// Write `record` over its dead letter in the dead-letter bucket, with
    /// compare-and-set; `Gone` when it is not there (a caller that may meet
    /// a move cut short settles first).
    pub(super) async fn rewrite_dead(&self, record: &EventRecord) -> Result<Committed, StoreError> {
        let id = record.id;
        for _ in 0..TRIES {
            let Some((st, _, rev)) = self.dead_entry(&id).await? else {
                return Ok(Committed::Gone);
            };
            let value = self.stored(record, st.place, "");
            match self.dead.update(id.to_string(), value, rev).await {
                Ok(_) => return Ok(Committed::Written),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(write_err(e)),
            }
        }
        Err(StoreError::Write(format!(
            "JetStream: dead letter {id} kept changing while it was rewritten"
        )))
    }
}
