//! Hosts sharing the store: which are alive (a key each in
//! `PREFIX-hosts`, renewed every second, expiring after [`HOST_TTL`]), and
//! taking over the queued events of those that are not.

use super::*;

/// How many events' keys are checked at once when taking work over.
const CONFIRMING: usize = 64;

impl JetStreamStore {
    /// Take over the queued events of hosts no longer alive, each with a
    /// compare-and-set on its owner, so one host gets each; with
    /// `own_too`, this host's own queued events come too.
    pub(super) async fn claim_orphans(
        s: Arc<Shared>,
        alive: BTreeSet<String>,
        own_too: bool,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        use futures_util::StreamExt;
        let mut claimed = Vec::new();
        let mut events = s.scan_events().await?;
        // In acceptance order: ordered pipelines' events left unplaced
        // are given their places in it.
        events.sort_by_key(|(_, r, _)| r.id);
        // What this host would work, each checked against its key first
        // (many at once: a host may leave thousands).
        let wanted = |st: &Stored, r: &EventRecord| {
            let orphan = st.owner != s.host && !alive.contains(&st.owner);
            matches!(st.place, Place::Queued { .. })
                && if r.order_key.is_some() {
                    // Worked where the pipeline's order is kept, never
                    // here: only given its place.
                    st.order_seq.is_none() && orphan
                } else {
                    orphan || (own_too && st.owner == s.host)
                }
        };
        let checked: Vec<_> = futures_util::stream::iter(events.into_iter().map(|(st, r, rev)| {
            let (s, want) = (s.clone(), wanted(&st, &r));
            async move {
                let keep = if want {
                    s.confirm_key(&st, &r, rev).await
                } else {
                    Ok(false)
                };
                (st, r, rev, keep)
            }
        }))
        .buffered(CONFIRMING)
        .collect()
        .await;
        for (stored, record, rev, keep) in checked {
            if matches!(stored.place, Place::Dead { .. }) {
                // A dead letter whose move a crash left half done.
                s.settle_or_warn(&stored.id).await;
            }
            let (true, Place::Queued { due_ms, attempt }) = (keep?, stored.place) else {
                continue;
            };
            if record.order_key.is_some() {
                s.resequence(&stored, &record, rev).await?;
                continue;
            }
            if stored.owner == s.host {
                claimed.push(QueueEntry {
                    due_ms,
                    id: record.id,
                    attempt,
                });
                continue;
            }
            let value = s.stored(&record, stored.place, &s.host);
            match s.events.update(record.id.to_string(), value, rev).await {
                Ok(new) => {
                    s.owned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(record.id, new);
                    tracing::info!(event = %record.id, from = %stored.owner, "took over a queued event of a host that stopped");
                    claimed.push(QueueEntry {
                        due_ms,
                        id: record.id,
                        attempt,
                    });
                }
                // Another host took it first, or it moved on.
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(write_err(e)),
            }
        }
        Ok(claimed)
    }

    pub(super) async fn alive(s: &Shared) -> Result<BTreeSet<String>, StoreError> {
        let found = scan(&s.js, &s.hosts.name, ">", s.timeout)
            .await
            .map_err(StoreError::Read)?;
        Ok(found.into_iter().map(|f| f.key).collect())
    }
}

impl Shared {
    /// Whether an event a host stopped with may be worked. Its host
    /// acknowledged it only once it held the event's idempotency key; one
    /// that stopped in between left a copy its sender was never answered
    /// for. When the key is free the copy takes it, finishing what its
    /// host began (a resend is then its duplicate); when another event
    /// took the key since (the resend, accepted new), the copy is
    /// removed. A copy older than the key's window is worked: a later
    /// event may have taken the key legitimately.
    async fn confirm_key(
        &self,
        stored: &Stored,
        record: &EventRecord,
        rev: u64,
    ) -> Result<bool, StoreError> {
        let Some(window_ms) = stored.key_window_ms else {
            return Ok(true);
        };
        let d = Dedup {
            pipeline: record.pipeline.clone(),
            key: record.key.clone(),
            window_ms,
        };
        // Mostly the key is its own: one read says so.
        if let Some(e) = self
            .dedup
            .entry(self.dedup_key(&d))
            .await
            .map_err(read_err)?
            && e.operation == kv::Operation::Put
            && parse_dedup(&e.value).is_some_and(|(holder, _)| holder == record.id)
        {
            return Ok(true);
        }
        let Some(holder) = self.take_key(&d, record.id).await? else {
            return Ok(true);
        };
        // Had the copy been acknowledged, the key would be its own for the
        // whole window after it was stored (less what clocks may differ).
        let age = now_ms().saturating_sub(record.received_at_ms);
        if age >= window_ms.saturating_sub(CLOCK_SKEW_MS) {
            return Ok(true);
        }
        match self
            .events
            .purge_expect_revision(record.id.to_string(), Some(rev))
            .await
        {
            Ok(_) => {
                tracing::info!(event = %record.id, from = %stored.owner, key_holder = %holder,
                    "removed an event its host stored but stopped before acknowledging: its sender's resend holds the key");
                Ok(false)
            }
            Err(e) if is_purge_conflict(&e) => Ok(false),
            Err(e) => Err(write_err(e)),
        }
    }
}
