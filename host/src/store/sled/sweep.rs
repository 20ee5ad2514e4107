//! Retention: drop finished events past the history window (or over the
//! count limit, oldest first), dedup records past the dedup window and dead
//! letters past theirs, in bounded batches through the committer.

use super::SledStore;
use super::committer::Write;
use super::keys::{DEAD, DEDUP, DONE, body_key, dead_key, event_key, parse_dedup_value};
use crate::store::{Committed, EventId, Retention, StoreError, Swept};

/// Most keys removed per sweep batch.
const SWEEP_BATCH: usize = 1000;

/// Delete a dead letter, unless it was replayed (or purged) before the
/// write commits.
pub(super) fn drop_dead_letter(id: &EventId) -> Write {
    let mut write = Write {
        requires: Some(dead_key(id)),
        ..Write::default()
    };
    write.remove(dead_key(id));
    write.remove(event_key(id));
    write.remove(body_key(id));
    write
}

/// When a dead letter was dead-lettered: the time its key holds, or (for
/// keys written before they held one) when its last attempt ended.
fn dead_since_ms(store: &SledStore, id: &EventId, value: &[u8]) -> Result<Option<u64>, StoreError> {
    if let Some(at) = value.get(..8).and_then(|b| b.try_into().ok()) {
        return Ok(Some(u64::from_be_bytes(at)));
    }
    use crate::store::Store;
    Ok(store.event(id)?.map(|record| {
        record
            .attempts
            .last()
            .map(|a| a.started_at_ms + a.duration_us / 1000)
            .unwrap_or(record.received_at_ms)
    }))
}

pub(super) async fn sweep(store: &SledStore, retention: Retention) -> Result<Swept, StoreError> {
    let Retention {
        history_before_ms,
        keep_events,
        dedup_before_ms,
        dead_before_ms,
    } = retention;
    let mut swept = Swept::default();
    // Over the count limit, the oldest finished events go first, whatever their age.
    let mut over = keep_events.map_or(0, |keep| store.count(DONE).saturating_sub(keep));
    loop {
        let keys: Vec<Vec<u8>> = store
            .trees()?
            .events
            .scan_prefix([DONE])
            .keys()
            .take(SWEEP_BATCH)
            .filter_map(Result::ok)
            .map(|k| k.to_vec())
            .collect();
        let expired: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                if k.len() != 25 {
                    return false;
                }
                if over > 0 {
                    over -= 1;
                    return true;
                }
                u64::from_be_bytes(k[1..9].try_into().unwrap_or([0xff; 8])) < history_before_ms
            })
            .collect();
        if expired.is_empty() {
            break;
        }
        let n = expired.len();
        let mut w = Write::default();
        for k in expired {
            if let Some(id) = EventId::from_slice(&k[9..]) {
                w.remove(event_key(&id));
                w.remove(body_key(&id));
            }
            w.remove(k);
        }
        store.submit(w).await?;
        swept.events += n;
        if n < SWEEP_BATCH {
            break;
        }
    }
    let stale: Vec<Vec<u8>> = store
        .trees()?
        .events
        .scan_prefix([DEDUP])
        .filter_map(Result::ok)
        .filter_map(|(k, v)| parse_dedup_value(&v).map(|(_, at)| (k.to_vec(), at)))
        .filter(|(_, at)| *at < dedup_before_ms)
        .map(|(k, _)| k)
        .collect();
    for chunk in stale.chunks(SWEEP_BATCH) {
        let mut w = Write::default();
        for k in chunk {
            w.remove(k.clone());
        }
        store.submit(w).await?;
        swept.dedup_keys += chunk.len();
    }
    if let Some(before) = dead_before_ms {
        sweep_dead_letters(store, before, &mut swept).await?;
    }
    Ok(swept)
}

async fn sweep_dead_letters(
    store: &SledStore,
    before_ms: u64,
    swept: &mut Swept,
) -> Result<(), StoreError> {
    // Only the keys are read: a large dead-letter queue costs no record
    // decoding a minute.
    let dead: Vec<(EventId, Vec<u8>)> = store
        .trees()?
        .events
        .scan_prefix([DEAD])
        .filter_map(Result::ok)
        .filter_map(|(k, v)| EventId::from_slice(&k[1..]).map(|id| (id, v.to_vec())))
        .collect();
    for chunk in dead.chunks(SWEEP_BATCH) {
        let mut tickets = Vec::new();
        for (id, value) in chunk {
            if dead_since_ms(store, id, value)?.is_none_or(|at| at >= before_ms) {
                continue;
            }
            // Only what expires is read, for its pipeline (not its payload).
            if let Some(record) = store.meta(id)? {
                tickets.push((record.pipeline, store.submit(drop_dead_letter(id))));
            }
        }
        for (pipeline, ticket) in tickets {
            if ticket.await? == Committed::Written {
                *swept.dead_letters.entry(pipeline).or_default() += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{
        AfterAttempt, Attempt, AttemptOutcome, EventRecord, EventState, QueueEntry, SledStore,
        Store,
    };

    /// A dead letter whose last attempt ended `ended_ms` after the epoch.
    async fn dead_letter(store: &SledStore, pipeline: &str, ended_ms: u64) -> EventId {
        let mut record = EventRecord::queued(EventId::new(), pipeline, "k", b"{}".to_vec());
        store.accept(&record, None, None).await.unwrap();
        let queued = QueueEntry {
            due_ms: record.received_at_ms,
            id: record.id,
            attempt: 1,
        };
        record.state = EventState::DeadLettered;
        record.attempts.push(Attempt {
            number: 1,
            started_at_ms: ended_ms - 5,
            duration_us: 5_000,
            outcome: AttemptOutcome::Failed {
                step: "sink (http-sink)".into(),
                kind: crate::store::ErrorKind::Fatal,
                message: "refused".into(),
                retry_at_ms: None,
            },
            steps: Vec::new(),
        });
        store
            .record_attempt(
                &record,
                queued,
                AfterAttempt::DeadLettered { at_ms: ended_ms },
                None,
            )
            .await
            .unwrap();
        record.id
    }

    #[tokio::test]
    async fn dead_letters_past_their_retention_go_and_a_replayed_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let old_a = dead_letter(&store, "a", 1_000).await;
        let old_b = dead_letter(&store, "b", 2_000).await;
        let young = dead_letter(&store, "a", 9_000).await;
        let replayed = dead_letter(&store, "a", 1_500).await;
        // Replayed before the sweep's write commits: its delete is skipped.
        let record = store.event(&replayed).unwrap().unwrap();
        store.replay(&record, 1, 2, None).await.unwrap();
        assert_eq!(
            store.submit(drop_dead_letter(&replayed)).await.unwrap(),
            Committed::Gone
        );
        let kept = Retention {
            dead_before_ms: None,
            ..Retention::default()
        };
        assert!(store.sweep(kept).await.unwrap().dead_letters.is_empty());
        let swept = store
            .sweep(Retention {
                dead_before_ms: Some(5_000),
                ..Retention::default()
            })
            .await
            .unwrap();
        assert_eq!(
            swept.dead_letters,
            [("a".to_string(), 1), ("b".to_string(), 1)].into()
        );
        let left: Vec<EventId> = store
            .dead_letters(None)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, vec![young]);
        for gone in [old_a, old_b] {
            assert!(store.event(&gone).unwrap().is_none(), "its record goes too");
        }
        assert!(
            store.event(&replayed).unwrap().is_some(),
            "a replayed event is never swept as a dead letter"
        );
        assert_eq!(store.queue().unwrap().len(), 1);
    }
}
