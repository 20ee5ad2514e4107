//! Retention: drop finished events past the history window (or over the
//! count limit, oldest first), dedup records past the dedup window and dead
//! letters past theirs, in bounded batches through the committer.

use super::SledStore;
use super::committer::Write;
use super::keys::{DEAD, DEDUP, DONE, body_key, dead_key, event_key, parse_dedup_value};
use crate::store::{Committed, EventId, PipelineRetention, Retention, StoreError, Swept};
use std::collections::BTreeMap;

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
        by_pipeline,
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
    sweep_payloads(store, &by_pipeline, &mut swept).await?;
    let pipelines_dead = by_pipeline.values().filter_map(|r| r.dead_before_ms).max();
    if dead_before_ms.is_some() || pipelines_dead.is_some() {
        sweep_dead_letters(store, dead_before_ms, &by_pipeline, &mut swept).await?;
    }
    Ok(swept)
}

use crate::store::EXPIRED_PAYLOAD as EXPIRED;

/// Drop the payloads of finished events past their pipeline's
/// `retention.payloads` (at most a batch a sweep). The history key's value
/// (the payload's size) becomes 0, so a payload dropped is not looked at
/// again.
async fn sweep_payloads(
    store: &SledStore,
    by_pipeline: &BTreeMap<String, PipelineRetention>,
    swept: &mut Swept,
) -> Result<(), StoreError> {
    let Some(latest) = by_pipeline
        .values()
        .filter_map(|r| r.payloads_before_ms)
        .max()
    else {
        return Ok(());
    };
    let mut tickets = Vec::new();
    for item in store.trees()?.events.scan_prefix([DONE]) {
        let (k, v) = item.map_err(|e| StoreError::Read(e.to_string()))?;
        if k.len() != 25 {
            continue;
        }
        let at = u64::from_be_bytes(k[1..9].try_into().unwrap_or([0xff; 8]));
        if at >= latest || tickets.len() >= SWEEP_BATCH {
            break;
        }
        if v.get(..8).is_some_and(|b| b == [0; 8]) {
            continue;
        }
        let Some(id) = EventId::from_slice(&k[9..]) else {
            continue;
        };
        let Some(record) = store.meta(&id)? else {
            continue;
        };
        let before = by_pipeline
            .get(&record.pipeline)
            .and_then(|r| r.payloads_before_ms);
        if before.is_none_or(|before| at >= before) {
            continue;
        }
        let stored = super::payloads::store(id, EXPIRED, &store.keys);
        // Only while the event is still in the history.
        let mut w = Write {
            requires: Some(k.to_vec()),
            ..Write::default()
        };
        w.remove(body_key(&id));
        w.put(body_key(&id), stored.value);
        w.put(k.to_vec(), 0u64.to_be_bytes().to_vec());
        tickets.push(store.submit(w));
    }
    for t in tickets {
        if t.await? == Committed::Written {
            swept.payloads += 1;
        }
    }
    Ok(())
}

async fn sweep_dead_letters(
    store: &SledStore,
    global_before_ms: Option<u64>,
    by_pipeline: &BTreeMap<String, PipelineRetention>,
    swept: &mut Swept,
) -> Result<(), StoreError> {
    // Whichever retention comes first: the latest "before" wins.
    let pipeline_before = |pipeline: &str| {
        by_pipeline
            .get(pipeline)
            .and_then(|r| r.dead_before_ms)
            .max(global_before_ms)
    };
    let before_ms = by_pipeline
        .values()
        .filter_map(|r| r.dead_before_ms)
        .chain(global_before_ms)
        .max()
        .unwrap_or(0);
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
            // Only what may expire is read, for its pipeline (not its payload).
            if let Some(record) = store.meta(id)?
                && dead_since_ms(store, id, value)?
                    .is_some_and(|at| pipeline_before(&record.pipeline).is_some_and(|b| at < b))
            {
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

    /// A finished event of `pipeline`, finished at `at_ms`.
    async fn finished(store: &SledStore, pipeline: &str, at_ms: u64, payload: &[u8]) -> EventId {
        let mut record = EventRecord::queued(EventId::new(), pipeline, "k", payload.to_vec());
        store.accept(&record, None, None).await.unwrap();
        let queued = QueueEntry {
            due_ms: record.received_at_ms,
            id: record.id,
            attempt: 1,
        };
        record.state = EventState::Delivered;
        store
            .record_attempt(&record, queued, AfterAttempt::Finished { at_ms }, None)
            .await
            .unwrap();
        record.id
    }

    #[tokio::test]
    async fn each_pipeline_keeps_payloads_and_dead_letters_as_long_as_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let big = vec![b'x'; 100 * 1024];
        let old_a = finished(&store, "a", 1_000, &big).await;
        let young_a = finished(&store, "a", 9_000, b"{\"young\":1}").await;
        let old_b = finished(&store, "b", 1_000, b"{\"b\":1}").await;
        let dead_a = dead_letter(&store, "a", 1_000).await;
        let dead_b = dead_letter(&store, "b", 1_000).await;
        let files = || {
            std::fs::read_dir(dir.path().join("payloads"))
                .unwrap()
                .count()
        };
        assert_eq!(files(), 1, "the large payload is a file");
        let retention = Retention {
            by_pipeline: [(
                "a".to_string(),
                PipelineRetention {
                    payloads_before_ms: Some(5_000),
                    dead_before_ms: Some(5_000),
                },
            )]
            .into(),
            ..Retention::default()
        };
        let swept = store.sweep(retention.clone()).await.unwrap();
        assert_eq!(swept.payloads, 1);
        assert_eq!(swept.dead_letters, [("a".to_string(), 1)].into());
        assert_eq!(store.event(&old_a).unwrap().unwrap().payload, EXPIRED);
        assert_eq!(files(), 0, "its file is gone");
        assert_eq!(
            store.event(&young_a).unwrap().unwrap().payload,
            b"{\"young\":1}"
        );
        assert_eq!(
            store.event(&old_b).unwrap().unwrap().payload,
            b"{\"b\":1}",
            "b keeps its own"
        );
        assert!(store.event(&dead_a).unwrap().is_none());
        assert!(store.event(&dead_b).unwrap().is_some());
        // Nothing more to do the next time round.
        let again = store.sweep(retention).await.unwrap();
        assert_eq!((again.payloads, again.dead_letters.len()), (0, 0));
    }
}
