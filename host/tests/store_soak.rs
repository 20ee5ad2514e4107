//! Soak test of the store under the engine's real write pattern (accept with
//! dedup, attempt, retry, dead-letter, finish) at the largest group-commit
//! batch the engine uses: progress must never stall and the books must balance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weft_host::store::*;

fn record(id: EventId, attempts: usize) -> EventRecord {
    EventRecord {
        id,
        pipeline: "soak".into(),
        key: id.to_string(),
        correlation_id: id.to_string(),
        content_type: "application/json".into(),
        headers: vec![],
        payload: vec![b'x'; 300],
        received_at_ms: now_ms(),
        state: EventState::Queued,
        attempts: (0..attempts)
            .map(|n| Attempt {
                number: n as u32 + 1,
                started_at_ms: now_ms(),
                duration_us: 10,
                outcome: AttemptOutcome::Failed {
                    step: "sink (x)".into(),
                    kind: ErrorKind::Transient,
                    message: "HTTP 503".into(),
                    retry_at_ms: None,
                },
                // As the engine writes them: one run per plugin call.
                steps: ["step 1 (json-map)", "step 2 (filter)", "sink (x)"]
                    .iter()
                    .map(|step| weft_host::store::StepRun {
                        step: step.to_string(),
                        offset_us: 5,
                        duration_us: 20,
                        outcome: "ok".into(),
                        events_out: 1,
                        fuel: 0,
                        memory_bytes: 1 << 20,
                    })
                    .collect(),
            })
            .collect(),
        replays_at_ms: vec![],
        round_base: 0,
        order_key: None,
        lineage: Lineage::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_moving_under_the_engine_write_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let store = weft_host::store::open(dir.path()).unwrap();
    let duration = Duration::from_secs(
        std::env::var("WEFT_SOAK_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(8),
    );
    let done = Arc::new(AtomicU64::new(0));
    let dead = Arc::new(AtomicU64::new(0));
    let dupes = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut workers = tokio::task::JoinSet::new();
    // More writers than MAX_GROUP, so groups fill to the largest batch.
    for w in 0..(MAX_GROUP * 2) {
        let (store, done, dead, dupes) = (store.clone(), done.clone(), dead.clone(), dupes.clone());
        workers.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let id = EventId::new();
                // Accept, with a dedup record; every 10th key repeats an earlier one.
                let key = if n.is_multiple_of(10) {
                    format!("w{w}-{}", n - 1)
                } else {
                    format!("w{w}-{n}")
                };
                let accepted = record(id, 0);
                let dedup = Dedup {
                    pipeline: "soak".into(),
                    key,
                    window_ms: 3_600_000,
                };
                match store.accept(&accepted, Some(dedup), None).await.unwrap() {
                    Committed::Duplicate(_) => {
                        dupes.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Committed::Written => {}
                    Committed::Gone => panic!("a new event's write has no precondition"),
                }
                // A failed attempt: the queue entry moves, the record is rewritten.
                let first = QueueEntry {
                    due_ms: accepted.received_at_ms,
                    id,
                    attempt: 1,
                };
                let due_ms = now_ms() + 1;
                let retry = AfterAttempt::Retry { due_ms, attempt: 2 };
                store
                    .record_attempt(&record(id, 1), first, retry, None)
                    .await
                    .unwrap();
                // Then delivered, or (every 7th) dead-lettered.
                let second = QueueEntry {
                    due_ms,
                    id,
                    attempt: 2,
                };
                let mut rec = record(id, 2);
                let then = if n.is_multiple_of(7) {
                    rec.state = EventState::DeadLettered;
                    dead.fetch_add(1, Ordering::Relaxed);
                    AfterAttempt::DeadLettered { at_ms: now_ms() }
                } else {
                    rec.state = EventState::Delivered;
                    done.fetch_add(1, Ordering::Relaxed);
                    AfterAttempt::Finished { at_ms: now_ms() }
                };
                store
                    .record_attempt(&rec, second, then, None)
                    .await
                    .unwrap();
            }
        });
    }
    // Watch progress every 250 ms: it must never stall for 5 s.
    let mut last = 0;
    let mut last_change = Instant::now();
    let mut longest_stall = Duration::ZERO;
    while !workers.is_empty() {
        tokio::select! {
            r = workers.join_next() => { r.unwrap().unwrap(); }
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let now = done.load(Ordering::Relaxed) + dead.load(Ordering::Relaxed);
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        longest_stall = longest_stall.max(last_change.elapsed());
        assert!(
            last_change.elapsed() < Duration::from_secs(5),
            "the store stalled for 5 s"
        );
    }
    let finished = done.load(Ordering::Relaxed) + dead.load(Ordering::Relaxed);
    println!(
        "soak {duration:?}: {finished} events through accept→retry→finish ({:.0}/s), {} duplicates refused, {} dead-lettered; longest stall {longest_stall:?}",
        finished as f64 / duration.as_secs_f64(),
        dupes.load(Ordering::Relaxed),
        dead.load(Ordering::Relaxed),
    );
    assert!(finished > 0);
    let counts = store.counts();
    assert_eq!(counts.queued, 0, "every queue entry was moved or removed");
    assert_eq!(
        counts.events as u64, finished,
        "one record per accepted event"
    );
    assert_eq!(counts.dead_letters as u64, dead.load(Ordering::Relaxed));
    assert_eq!(counts.finished as u64, done.load(Ordering::Relaxed));
    assert_eq!(
        counts.dedup_keys as u64, finished,
        "one dedup record per accepted key"
    );
    store.close();
}
