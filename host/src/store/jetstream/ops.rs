//! [`Store`] on JetStream: each method as the writes and reads of the
//! buckets it needs.

use super::upkeep::{reencrypt, sweep, take_lease};
use super::*;

/// A boxed write for [`JetStreamStore::submit`].
/// Each try of it gets its own copies of the captured values named.
macro_rules! write {
    ([$($v:ident),*] |$s:ident| $body:block) => {
        move |$s: Arc<Shared>| -> Pin<Box<dyn Future<Output = Result<Committed, StoreError>> + Send>> {
            $(let $v = $v.clone();)*
            Box::pin(async move $body)
        }
    };
}

impl JetStreamStore {
    fn state_key(kind: &str, name: &str) -> String {
        format!("{kind}.{}", hexname(name.as_bytes()))
    }

    fn state_text(&self, kind: &str, name: &str) -> Option<String> {
        let s = self.s.clone();
        let key = Self::state_key(kind, name);
        match self.call.wait(async move { s.state_get(key).await }) {
            Ok(v) => v.map(|(v, _)| String::from_utf8_lossy(&v).into_owned()),
            Err(e) => {
                tracing::warn!("could not read {kind} of {name:?} from the store: {e}");
                None
            }
        }
    }

    fn set_state(&self, kind: &str, name: &str, value: Option<Vec<u8>>) -> Ticket {
        let key = Self::state_key(kind, name);
        self.submit(
            lane_of_name(&key),
            false,
            None,
            write!([key, value] | s | { s.state_put(key.clone(), value.clone()).await }),
        )
    }
}

impl Store for JetStreamStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn flush_latency(&self) -> &crate::histogram::Histogram {
        &self.s.flushes
    }

    fn accept(
        &self,
        record: &EventRecord,
        dedup: Option<Dedup>,
        after: Option<AfterCommit>,
    ) -> Ticket {
        let record = Arc::new(record.clone());
        self.submit(
            lane_of(&record.id),
            false,
            after,
            write!([record, dedup] | s | { s.accept(&record, dedup.as_ref()).await }),
        )
    }

    fn accept_polled(&self, pipeline: &str, items: Vec<Polled>, cursor: Option<&str>) -> Ticket {
        // Each new item lands (and its `after` runs) before the cursor
        // moves: a crash in between polls the same items again, and their
        // keys turn them away.
        let mut tickets = Vec::with_capacity(items.len());
        for p in items {
            let (record, dedup) = (p.record.clone(), p.dedup);
            tickets.push(self.submit(
                lane_of(&record.id),
                false,
                p.after,
                write!([record, dedup] | s | { s.accept(&record, Some(&dedup)).await }),
            ));
        }
        let cursor_key = Self::state_key("cursor", pipeline);
        let cursor = cursor.map(|c| c.as_bytes().to_vec());
        let (ticket, tx) = Ticket::new();
        let s = self.s.clone();
        self.call.spawn(async move {
            for t in tickets {
                if let Err(e) = t.await {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            let r = match cursor {
                Some(c) => s.state_put(cursor_key, Some(c)).await,
                None => Ok(Committed::Written),
            };
            let _ = tx.send(r);
        });
        ticket
    }

    fn record_attempt(
        &self,
        record: &EventRecord,
        _done: QueueEntry,
        next: AfterAttempt,
        after: Option<AfterCommit>,
    ) -> Ticket {
        let place = match next {
            AfterAttempt::Retry { due_ms, attempt } => Place::Queued { due_ms, attempt },
            AfterAttempt::Finished { at_ms } => Place::Finished { at_ms },
            AfterAttempt::DeadLettered { at_ms } => Place::Dead { at_ms },
        };
        let record = Arc::new(record.clone());
        self.submit(
            lane_of(&record.id),
            true,
            after,
            write!([record] | s | { s.transition(&record, place).await }),
        )
    }

    fn drop_queue_entry(&self, _entry: QueueEntry) -> Ticket {
        // An event's queue entry is its key: one without a record does not exist.
        Ticket::settled(Ok(Committed::Written))
    }

    fn drop_queued(&self, entry: QueueEntry) -> Ticket {
        self.submit(
            lane_of(&entry.id),
            false,
            None,
            write!(
                [] | s | {
                    s.remove_if(&entry.id, |st| matches!(st.place, Place::Queued { .. }))
                        .await
                }
            ),
        )
    }

    fn replay(
        &self,
        record: &EventRecord,
        due_ms: u64,
        attempt: u32,
        after: Option<AfterCommit>,
    ) -> Ticket {
        let record = Arc::new(record.clone());
        self.submit(
            lane_of(&record.id),
            false,
            after,
            write!(
                [record] | s | {
                    let done = s.revive(&record, due_ms, attempt).await?;
                    // An ordered pipeline's replay takes its place at the
                    // end of the order, as a new event would.
                    if done == Committed::Written && record.order_key.is_some() {
                        s.sequence(&record).await?;
                    }
                    Ok(done)
                }
            ),
        )
    }

    fn split(
        &self,
        parent: &EventRecord,
        _done: QueueEntry,
        children: &[Arc<EventRecord>],
        after: Option<AfterCommit>,
    ) -> Ticket {
        let parent = Arc::new(parent.clone());
        let children = children.to_vec();
        self.submit(
            lane_of(&parent.id),
            true,
            after,
            write!(
                [parent, children] | s | {
                    // The children first: a crash before the parent is written
                    // attempts the parent again (at least once, never lost).
                    for child in &children {
                        match s.accept(child, None).await {
                            Ok(_) => {}
                            // Written by an earlier try of this write (given
                            // its place again: the holder takes it once).
                            Err(_) if matches!(s.entry(&child.id).await, Ok(Some(_))) => {
                                if child.order_key.is_some() {
                                    s.sequence(child).await?;
                                }
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    s.transition(&parent, Place::Finished { at_ms: now_ms() })
                        .await
                }
            ),
        )
    }

    fn purge(&self, id: &EventId) -> Ticket {
        let id = *id;
        self.submit(
            lane_of(&id),
            false,
            None,
            write!([] | s | { s.remove_dead(&id).await }),
        )
    }

    fn rewrite(&self, record: &EventRecord) -> Ticket {
        let record = Arc::new(record.clone());
        self.submit(
            lane_of(&record.id),
            false,
            None,
            write!(
                [record] | s | {
                    match s
                        .modify(&record.id, |st, _| {
                            Some((st.place, st.owner.clone(), (*record).clone()))
                        })
                        .await?
                    {
                        Committed::Gone => s.rewrite_dead(&record).await,
                        done => Ok(done),
                    }
                }
            ),
        )
    }

    fn sweep(&self, retention: Retention) -> StoreFuture<'_, Swept> {
        let s = self.s.clone();
        Box::pin(self.call.run(async move { sweep(&s, retention).await }))
    }

    fn event(&self, id: &EventId) -> Result<Option<EventRecord>, StoreError> {
        let (s, id) = (self.s.clone(), *id);
        self.call.wait(async move { s.any_entry(&id).await })
    }

    fn queue(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let s = self.s.clone();
        let mut q: Vec<QueueEntry> = self
            .call
            .wait(async move { s.scan_events().await })?
            .into_iter()
            .filter_map(|(st, r, _)| match st.place {
                Place::Queued { due_ms, attempt } => Some(QueueEntry {
                    due_ms,
                    id: r.id,
                    attempt,
                }),
                _ => None,
            })
            .collect();
        q.sort_by_key(|e| (e.due_ms, e.id));
        Ok(q)
    }

    fn dead_letters(&self, pipeline: Option<&str>) -> Result<Vec<EventRecord>, StoreError> {
        let s = self.s.clone();
        let mut dead: Vec<(u64, EventRecord)> = self
            .call
            .wait(async move { s.scan_all().await })?
            .into_iter()
            .filter_map(|(st, r, _)| match st.place {
                Place::Dead { at_ms } => Some((at_ms, r)),
                _ => None,
            })
            .filter(|(_, r)| pipeline.is_none_or(|p| r.pipeline == p))
            .collect();
        dead.sort_by_key(|(at, r)| (*at, r.id));
        Ok(dead.into_iter().map(|(_, r)| r).collect())
    }

    fn scan_recent(
        &self,
        keep: &mut dyn FnMut(&EventRecord) -> bool,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let s = self.s.clone();
        let mut all: Vec<EventRecord> = self
            .call
            .wait(async move { s.scan_all().await })?
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.id));
        Ok(all.into_iter().filter(|r| keep(r)).take(limit).collect())
    }

    fn each_event(
        &self,
        wanted: &mut dyn FnMut(&EventRecord) -> bool,
        visit: &mut dyn FnMut(EventRecord) -> bool,
    ) -> Result<(), StoreError> {
        let s = self.s.clone();
        let mut all: Vec<EventRecord> = self
            .call
            .wait(async move { s.scan_all().await })?
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.id));
        for r in all {
            if wanted(&r) && !visit(r) {
                break;
            }
        }
        Ok(())
    }

    fn counts(&self) -> StoreCounts {
        self.snapshot().counts
    }

    fn usage(&self) -> StoreUsage {
        self.snapshot().usage
    }

    fn pause_reason(&self, pipeline: &str) -> Option<String> {
        // While the cluster cannot answer, the pause stays as last read:
        // a read that fails must not resume a paused pipeline.
        let s = self.s.clone();
        let key = Self::state_key("pause", pipeline);
        let read = self.call.wait(async move { s.state_get(key).await });
        let mut known = self.pauses.lock().unwrap_or_else(|p| p.into_inner());
        match read {
            Ok(v) => {
                let reason = v.map(|(v, _)| String::from_utf8_lossy(&v).into_owned());
                known.insert(pipeline.to_string(), reason.clone());
                reason
            }
            Err(e) => {
                tracing::warn!("could not read whether {pipeline:?} is paused: {e}; as last read");
                known.get(pipeline).cloned().flatten()
            }
        }
    }

    fn set_paused(&self, pipeline: &str, reason: Option<&str>) -> Ticket {
        self.set_state("pause", pipeline, reason.map(|r| r.as_bytes().to_vec()))
    }

    fn canary(&self, key: &str) -> Option<String> {
        self.state_text("canary", key)
    }

    fn set_canary(&self, key: &str, state: &str) -> Ticket {
        self.set_state("canary", key, Some(state.as_bytes().to_vec()))
    }

    fn totals(&self, pipeline: &str) -> Option<String> {
        // Each host's counters are its own, kept under its lasting name.
        self.state_text("totals", &format!("{}/{pipeline}", self.host_name))
    }

    fn set_totals(&self, pipeline: &str, json: &str) -> Ticket {
        self.set_state(
            "totals",
            &format!("{}/{pipeline}", self.host_name),
            Some(json.as_bytes().to_vec()),
        )
    }

    fn dead_letter_counts(&self) -> BTreeMap<String, u64> {
        self.snapshot().dead_by_pipeline
    }

    fn cursor(&self, pipeline: &str) -> Option<String> {
        self.state_text("cursor", pipeline)
    }

    fn schedule_last(&self, pipeline: &str) -> Option<u64> {
        self.state_text("schedule", pipeline)
            .and_then(|t| t.parse().ok())
    }

    fn set_schedule_last(&self, pipeline: &str, at_ms: u64) -> Ticket {
        let key = Self::state_key("schedule", pipeline);
        // Never backwards: a host that fired an older tick late does not
        // move the time back.
        self.submit(
            lane_of_name(&key),
            false,
            None,
            write!(
                [key] | s | {
                    loop {
                        let current = s.state_get(key.clone()).await?;
                        let value = at_ms.to_string().into_bytes().into();
                        let r = match &current {
                            Some((v, _))
                                if String::from_utf8_lossy(v)
                                    .parse::<u64>()
                                    .is_ok_and(|c| c >= at_ms) =>
                            {
                                return Ok(Committed::Written);
                            }
                            Some((_, rev)) => s.state.update(&key, value, *rev).await,
                            None => s.state.create(&key, value).await.map_err(|e| {
                                kv::UpdateError::new(
                                    if e.kind() == kv::CreateErrorKind::AlreadyExists {
                                        kv::UpdateErrorKind::WrongLastRevision
                                    } else {
                                        kv::UpdateErrorKind::Other
                                    },
                                )
                            }),
                        };
                        match r {
                            Ok(_) => return Ok(Committed::Written),
                            Err(e) if is_conflict(&e) => continue,
                            Err(e) => return Err(write_err(e)),
                        }
                    }
                }
            ),
        )
    }

    fn kv_get(&self, namespace: &[u8], key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.plugin_get(namespace, key)
    }

    fn kv_swap(
        &self,
        namespace: &[u8],
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
        quota_bytes: u64,
    ) -> Result<bool, KvError> {
        self.plugin_swap(namespace, key, expected, new, quota_bytes)
    }

    fn kv_list(
        &self,
        namespace: &[u8],
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        self.plugin_list(namespace, prefix, limit)
    }

    fn audit(&self) -> &dyn AuditLog {
        &self.audit
    }

    fn alarms(&self) -> Vec<String> {
        self.alarms.clone()
    }

    fn failing(&self) -> Option<String> {
        self.s
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn flush(&self) -> Ticket {
        // Every lane's writes so far are done once a marker queued behind
        // them has run on each.
        let (ticket, tx) = Ticket::new();
        let mut marks = Vec::new();
        for lane in 0..caller::LANES {
            let (mtx, mrx) = tokio::sync::oneshot::channel::<()>();
            self.call.queue(lane, async move {
                let _ = mtx.send(());
            });
            marks.push(mrx);
        }
        self.call.spawn(async move {
            for m in marks {
                let _ = m.await;
            }
            let _ = tx.send(Ok(Committed::Written));
        });
        ticket
    }

    fn close(&self) {
        let _ = self.call.wait(self.flush());
        self.s.closed.store(true, Ordering::SeqCst);
        let s = self.s.clone();
        let _ = self.call.wait(async move { s.hosts.purge(&s.host).await });
    }

    fn backup(&self, _to: &std::path::Path) -> Result<BackupManifest, StoreError> {
        Err(StoreError::Write(
            "weft backup copies a sled store; for a JetStream store, copy it into a sled store with `weft store migrate --to sled DIR` and back that up, or back up the streams with the nats CLI".into(),
        ))
    }

    fn dead_letter_compensated(
        &self,
        record: &EventRecord,
        _done: QueueEntry,
        at_ms: u64,
        compensation: Polled,
        after: Option<AfterCommit>,
    ) -> Ticket {
        let record = Arc::new(record.clone());
        let (comp, dedup) = (compensation.record.clone(), compensation.dedup);
        let comp_after = Arc::new(std::sync::Mutex::new(compensation.after));
        self.submit(
            lane_of(&record.id),
            true,
            after,
            write!(
                [record, comp, dedup, comp_after] | s | {
                    // The compensation first: a crash before the dead letter lands
                    // attempts the event again, and the compensation's key turns
                    // the second one away.
                    s.with_compensation(
                        &comp,
                        &dedup,
                        &comp_after,
                        s.transition(&record, Place::Dead { at_ms }),
                    )
                    .await
                }
            ),
        )
    }

    fn dedup_taken(&self, dedup: &Dedup) -> Option<EventId> {
        let (s, d) = (self.s.clone(), dedup.clone());
        self.call.wait(async move {
            let e = s.dedup.entry(s.dedup_key(&d)).await.ok()??;
            let (first, at) = parse_dedup(&e.value)?;
            (e.operation == kv::Operation::Put && now_ms().saturating_sub(at) < d.window_ms)
                .then_some(first)
        })
    }

    fn compensate(&self, record: &EventRecord, compensation: Polled) -> Ticket {
        let record = Arc::new(record.clone());
        let (comp, dedup) = (compensation.record.clone(), compensation.dedup);
        let comp_after = Arc::new(std::sync::Mutex::new(compensation.after));
        self.submit(
            lane_of(&record.id),
            false,
            None,
            write!(
                [record, comp, dedup, comp_after] | s | {
                    s.settle(&record.id).await?;
                    if s.dead_entry(&record.id).await?.is_none() {
                        return Ok(Committed::Gone);
                    }
                    s.with_compensation(&comp, &dedup, &comp_after, s.rewrite_dead(&record))
                        .await
                }
            ),
        )
    }

    fn credential_state(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let s = self.s.clone();
        let key = Self::state_key("credential", name);
        let at = key.clone();
        let value = self.call.wait(async move { s.state_get(key).await })?;
        match value {
            None => Ok(None),
            Some((v, _)) if crate::store::seal::sealed_id(&v).is_some() && self.s.keys.seals() => {
                self.s
                    .keys
                    .open(at.as_bytes(), &v)
                    .map(Some)
                    .map_err(StoreError::Read)
            }
            Some((v, _)) => Ok(Some(v)),
        }
    }

    fn set_credential_state(&self, name: &str, value: &[u8]) -> Ticket {
        let key = Self::state_key("credential", name);
        let value = self.s.keys.seal_or_keep(key.as_bytes(), value.to_vec());
        self.submit(
            lane_of_name(&key),
            false,
            None,
            write!([key, value] | s | { s.state_put(key.clone(), Some(value.clone())).await }),
        )
    }

    fn encryption(&self) -> Encryption {
        let ids = self.s.keys.ids();
        Encryption {
            current_key: self
                .s
                .keys
                .current_id()
                .map(|id| crate::store::seal::show_id(&id)),
            keys_in_use: ids.iter().map(crate::store::seal::show_id).collect(),
        }
    }

    fn reencrypt(&self) -> StoreFuture<'_, Reencrypted> {
        let s = self.s.clone();
        let done = self.call.run(async move { reencrypt(&s).await });
        let encryption = self.encryption();
        Box::pin(async move {
            let mut done = done.await?;
            done.encryption = Encryption {
                keys_in_use: encryption.current_key.iter().cloned().collect(),
                ..encryption
            };
            Ok(done)
        })
    }

    fn import(&self, record: &EventRecord, place: Imported, take_key: bool) -> Ticket {
        let record = Arc::new(record.clone());
        let place = match place {
            Imported::Queued { due_ms, attempt } => Place::Queued { due_ms, attempt },
            Imported::Finished { at_ms } => Place::Finished { at_ms },
            Imported::Dead { at_ms } => Place::Dead { at_ms },
        };
        self.submit(
            lane_of(&record.id),
            false,
            None,
            write!(
                [record] | s | {
                    // No owner: the first host to start takes queued ones over.
                    let value = s.stored(&record, place, "");
                    s.events
                        .put(record.id.to_string(), value)
                        .await
                        .map_err(write_err)?;
                    // A dead letter moves to its bucket; a copy an earlier
                    // run left there goes.
                    s.settle(&record.id).await?;
                    if take_key {
                        let d = Dedup {
                            pipeline: record.pipeline.clone(),
                            key: record.key.clone(),
                            window_ms: 0,
                        };
                        let mut v = record.id.as_bytes().to_vec();
                        v.extend_from_slice(&record.received_at_ms.to_be_bytes());
                        s.dedup
                            .put(s.dedup_key(&d), v.into())
                            .await
                            .map_err(write_err)?;
                    }
                    Ok(Committed::Written)
                }
            ),
        )
    }

    fn kv_export(&self) -> Result<Vec<KvEntry>, StoreError> {
        let s = self.s.clone();
        let found = self.call.wait(async move {
            scan(&s.js, &s.names.kv, ">", s.timeout)
                .await
                .map_err(StoreError::Read)
        })?;
        Ok(found
            .into_iter()
            .filter_map(|f| {
                let (ns, key) = f.key.split_once('.')?;
                Some((
                    hex::decode(ns).ok()?,
                    String::from_utf8(hex::decode(key).ok()?).ok()?,
                    f.value.to_vec(),
                ))
            })
            .collect())
    }

    fn claim_queue(&self) -> Result<Vec<QueueEntry>, StoreError> {
        let s = self.s.clone();
        let claimed = self.call.wait(async move {
            let alive = JetStreamStore::alive(&s).await?;
            let claimed = JetStreamStore::claim_orphans(s.clone(), alive.clone(), true).await?;
            Ok::<_, StoreError>((alive, claimed))
        })?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = (claimed.0, Some(Instant::now()));
        Ok(claimed.1)
    }

    fn adopt(&self) -> StoreFuture<'_, Vec<QueueEntry>> {
        let s = self.s.clone();
        let (before, last) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let found = self.call.run(async move {
            let alive = JetStreamStore::alive(&s).await?;
            let lost = before.iter().any(|h| !alive.contains(h));
            let due = last.is_none_or(|t| t.elapsed() >= ADOPT_SCAN_EVERY);
            let claimed = if lost || due {
                Some(JetStreamStore::claim_orphans(s.clone(), alive.clone(), false).await?)
            } else {
                None
            };
            Ok((alive, claimed))
        });
        Box::pin(async move {
            let (alive, claimed) = found.await?;
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.0 = alive;
            if claimed.is_some() {
                seen.1 = Some(Instant::now());
            }
            Ok(claimed.unwrap_or_default())
        })
    }

    fn lease(&self, name: &str, ttl: Duration) -> StoreFuture<'_, bool> {
        let s = self.s.clone();
        let key = Self::state_key("lease", name);
        Box::pin(self.call.run(async move { take_lease(&s, key, ttl).await }))
    }

    fn release_lease(&self, name: &str) -> StoreFuture<'_, ()> {
        let s = self.s.clone();
        let key = Self::state_key("lease", name);
        Box::pin(self.call.run(async move {
            if let Some((held, rev)) = s.state_get(key.clone()).await?
                && String::from_utf8_lossy(&held).split(' ').next() == Some(s.host.as_str())
            {
                // Only if still ours: a changed revision means another took it.
                let _ = s.state.purge_expect_revision(&key, Some(rev)).await;
            }
            Ok(())
        }))
    }

    fn shared(&self) -> bool {
        true
    }

    fn breaker_open_until(&self, pipeline: &str) -> Option<u64> {
        self.state_text("breaker", pipeline)?.parse().ok()
    }

    fn set_breaker_open_until(&self, pipeline: &str, until_ms: u64) -> Ticket {
        self.set_state("breaker", pipeline, Some(until_ms.to_string().into_bytes()))
    }

    fn order_feed(&self, pipeline: &str) -> Option<Box<dyn OrderFeed>> {
        Some(Box::new(order::JsOrderFeed::start(
            self.s.clone(),
            &self.call,
            pipeline.to_string(),
        )))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
