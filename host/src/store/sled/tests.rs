//! Tests of the sled store: payloads apart and as files, a failed write
//! and its recovery, records of earlier versions moved apart at open.

use super::*;
use crate::store::{Committed, Store};

/// The raw value under `key` in the events tree.
fn raw(store: &SledStore, key: Vec<u8>) -> Option<sled::IVec> {
    store.trees().unwrap().events.get(key).unwrap()
}

fn count(store: &SledStore, prefix: u8) -> usize {
    store.trees().unwrap().events.scan_prefix([prefix]).count()
}

/// A store in a new directory, and a new event with a JSON payload of
/// about `pad` bytes, accepted into it.
async fn accepted(pad: usize) -> (tempfile::TempDir, SledStore, EventRecord) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let payload = format!("{{\"pad\": \"{}\"}}", "p".repeat(pad)).into_bytes();
    let record = EventRecord::queued(EventId::new(), "p", "k", payload);
    store.accept(&record, None, None).await.unwrap();
    (dir, store, record)
}

/// Record `record`'s first attempt as delivered.
async fn delivered(store: &SledStore, record: &mut EventRecord) {
    record.state = EventState::Delivered;
    let entry = QueueEntry {
        due_ms: record.received_at_ms,
        id: record.id,
        attempt: 1,
    };
    store
        .record_attempt(record, entry, AfterAttempt::Finished { at_ms: 1 }, None)
        .await
        .unwrap();
}

/// Sweep every finished event out of the history.
async fn sweep_history(store: &SledStore) {
    store
        .sweep(crate::store::Retention {
            history_before_ms: u64::MAX,
            ..crate::store::Retention::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_payload_is_written_once_and_attempts_rewrite_only_the_record() {
    let (_dir, store, mut record) = accepted(50_000).await;
    let payload = record.payload.clone();
    let stored = raw(&store, event_key(&record.id)).unwrap();
    assert!(stored.len() < 200, "the record is small: {}", stored.len());
    delivered(&store, &mut record).await;
    let read = store.event(&record.id).unwrap().unwrap();
    assert_eq!(read.payload, payload);
    assert_eq!(read.state, EventState::Delivered);
    // Retention takes the payload with the record.
    sweep_history(&store).await;
    assert!(store.event(&record.id).unwrap().is_none());
    assert_eq!(count(&store, BODY), 0, "no payload outlives its record");
}

#[tokio::test]
async fn a_large_payload_is_a_file_checked_when_read_and_removed_with_its_event() {
    let (dir, store, mut record) = accepted(300_000).await;
    let payload = record.payload.clone();
    let file = dir.path().join("payloads").join(record.id.to_string());
    assert_eq!(std::fs::read(&file).unwrap(), payload);
    let usage = store.usage();
    assert!(usage.disk_bytes >= payload.len() as u64, "{usage:?}");
    assert_eq!(store.event(&record.id).unwrap().unwrap().payload, payload);
    // Changed behind weft's back: refused, not handed on.
    let mut tampered = payload.clone();
    tampered[10] = b'X';
    std::fs::write(&file, &tampered).unwrap();
    let err = store.event(&record.id).unwrap_err().to_string();
    assert!(err.contains("changed on disk"), "{err}");
    std::fs::write(&file, &payload).unwrap();
    // Finished and swept: the file goes with the record.
    delivered(&store, &mut record).await;
    assert!(file.exists(), "an attempt does not rewrite the payload");
    sweep_history(&store).await;
    assert!(!file.exists(), "removed once its record's removal commits");
    // A file no event names (a crash before its commit) goes at open.
    let stray = dir.path().join("payloads").join(EventId::new().to_string());
    std::fs::write(&stray, b"left by a crash").unwrap();
    store.close();
    drop(store);
    let _store = SledStore::open(dir.path()).unwrap();
    assert!(!stray.exists());
}

#[tokio::test]
async fn a_failed_write_is_reported_until_a_write_succeeds_again() {
    let (dir, store, _) = accepted(10).await;
    assert_eq!(store.failing(), None);
    // The payload directory made unusable, as a full disk would.
    let payloads = dir.path().join("payloads");
    std::fs::remove_dir_all(&payloads).unwrap();
    std::fs::write(&payloads, b"in the way").unwrap();
    let big = EventRecord::queued(EventId::new(), "p", "big", vec![b'x'; 100_000]);
    let err = store.accept(&big, None, None).await.unwrap_err();
    assert!(err.to_string().contains("payload file"), "{err}");
    assert!(
        store
            .failing()
            .is_some_and(|why| why.contains("payload file"))
    );
    assert!(
        store.event(&big.id).unwrap().is_none(),
        "nothing of it was stored"
    );
    // Within the backoff, writes are refused without touching the disk.
    let err = store.accept(&big, None, None).await.unwrap_err();
    assert!(err.to_string().contains("payload file"), "{err}");
    // The cause goes away: the store probes itself well again, with
    // no write sent, and the next write succeeds.
    std::fs::remove_file(&payloads).unwrap();
    std::fs::create_dir(&payloads).unwrap();
    let mut waited = 0;
    while store.failing().is_some() {
        assert!(waited < 200, "the store did not recover by itself");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    store.accept(&big, None, None).await.unwrap();
    assert_eq!(store.failing(), None);
    assert_eq!(
        store.event(&big.id).unwrap().unwrap().payload.len(),
        100_000
    );
}

#[tokio::test]
async fn records_with_the_payload_inline_are_moved_apart_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let record = EventRecord::queued(EventId::new(), "p", "k", b"{\"old\": true}".to_vec());
    {
        let store = SledStore::open(dir.path()).unwrap();
        // As an earlier weft wrote it: version 3, the payload inline.
        let mut v3 = vec![3];
        v3.extend(postcard::to_stdvec(&record).unwrap());
        v3.extend(postcard::to_stdvec(&record.lineage).unwrap());
        store
            .trees()
            .unwrap()
            .events
            .insert(event_key(&record.id), v3)
            .unwrap();
        store.close();
    }
    let store = SledStore::open(dir.path()).unwrap();
    let current = raw(&store, event_key(&record.id)).unwrap();
    assert!(
        EventRecord::payload_apart(&current),
        "rewritten as the current version"
    );
    assert_eq!(
        raw(&store, body_key(&record.id)).unwrap().as_ref(),
        b"\0{\"old\": true}",
        "a small payload stays in sled, tagged inline"
    );
    assert_eq!(store.event(&record.id).unwrap().unwrap(), record);
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_holding(&path, needle));
        } else if std::fs::read(&path)
            .is_ok_and(|b| needle.is_empty() || b.windows(needle.len()).any(|w| w == needle))
        {
            out.push(path);
        }
    }
    out
}

fn dedup(key: &str) -> Dedup {
    Dedup {
        pipeline: "p".into(),
        key: key.into(),
        window_ms: 3_600_000,
    }
}

#[tokio::test]
async fn sealed_values_never_reach_the_disk_and_survive_a_key_rotation() {
    const CANARY: &str = "canary-1f9e77c2";
    let dir = tempfile::tempdir().unwrap();
    let k1 = Keyring::new([1; 32], &[]);
    // A store written without encryption first: a plain record and a
    // plain plugin state value.
    let plain = EventRecord::queued(EventId::new(), "p", "k0", b"{\"v\":\"early\"}".to_vec());
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .accept(&plain, Some(dedup("order-early")), None)
            .await
            .unwrap();
        store
            .kv_swap(b"ns", "early", None, Some(b"early-state"), 1 << 20)
            .unwrap();
        store.close();
    }
    let store = SledStore::open_with(dir.path(), k1.clone()).unwrap();
    // Plugin state was sealed at open; the plain record still reads.
    assert_eq!(
        store.kv_get(b"ns", "early").unwrap().as_deref(),
        Some(&b"early-state"[..])
    );
    assert_eq!(
        store.event(&plain.id).unwrap().unwrap().payload,
        plain.payload
    );
    // The dedup index was hashed when encryption came on: still a duplicate.
    let again = EventRecord::queued(EventId::new(), "p", "order-early", b"{}".to_vec());
    assert_eq!(
        store
            .accept(&again, Some(dedup("order-early")), None)
            .await
            .unwrap(),
        Committed::Duplicate(plain.id)
    );
    let small = EventRecord {
        headers: vec![("x-note".into(), CANARY.into())],
        ..EventRecord::queued(
            EventId::new(),
            "p",
            CANARY,
            format!("{{\"c\":\"{CANARY}\"}}").into_bytes(),
        )
    };
    let large = EventRecord::queued(
        EventId::new(),
        "p",
        "k2",
        format!("{{\"c\":\"{CANARY}\",\"pad\":\"{}\"}}", "x".repeat(100_000)).into_bytes(),
    );
    store
        .accept(&small, Some(dedup(CANARY)), None)
        .await
        .unwrap();
    store.accept(&large, None, None).await.unwrap();
    store
        .kv_swap(b"ns", "state", None, Some(CANARY.as_bytes()), 1 << 20)
        .unwrap();
    // A compare-and-swap compares plaintext.
    assert!(
        store
            .kv_swap(
                b"ns",
                "state",
                Some(Some(CANARY.as_bytes())),
                Some(b"next"),
                1 << 20
            )
            .unwrap()
    );
    store
        .kv_swap(b"ns", "state", None, Some(CANARY.as_bytes()), 1 << 20)
        .unwrap();
    assert_eq!(
        store.event(&large.id).unwrap().unwrap().payload,
        large.payload
    );
    assert_eq!(
        store.event(&small.id).unwrap().unwrap().headers,
        small.headers
    );
    // The plain record is sealed by a pass.
    let r = store.reencrypt().await.unwrap();
    assert_eq!((r.records, r.payloads), (1, 1), "{r:?}");
    store.close();
    drop(store);
    let held = files_holding(dir.path(), CANARY.as_bytes());
    assert!(held.is_empty(), "the canary is in {held:?}");

    // A wrong key is refused before anything changes.
    let contents = || {
        let store = SledStore::open_with(dir.path(), Keyring::opaque()).unwrap();
        let t = store.trees().unwrap();
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for tree in [&t.events, &t.kv, &t.meta, &t.audit, &t.schedules] {
            all.extend(tree.iter().map(|kv| {
                let (k, v) = kv.unwrap();
                (k.to_vec(), v.to_vec())
            }));
        }
        drop(t);
        store.close();
        let files: Vec<Vec<u8>> = files_holding(&dir.path().join("payloads"), b"")
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            .collect();
        (all, files)
    };
    let before = contents();
    let err = SledStore::open_with(dir.path(), Keyring::new([9; 32], &[]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not among the configured keys"), "{err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    let err = SledStore::open(dir.path()).err().unwrap().to_string();
    assert!(err.contains("is encrypted"), "{err}");
    assert!(before == contents(), "a refused open changed the store");

    // Rotated: old values read under the previous key, new ones go under
    // the new key, and a pass moves the old ones over.
    let k2 = Keyring::new([2; 32], &[[1; 32]]);
    let store = SledStore::open_with(dir.path(), k2).unwrap();
    assert_eq!(
        store.event(&large.id).unwrap().unwrap().payload,
        large.payload
    );
    assert_eq!(store.encryption().keys_in_use.len(), 2);
    let r = store.reencrypt().await.unwrap();
    assert_eq!((r.records, r.payloads, r.kv_values), (3, 3, 2), "{r:?}");
    assert_eq!(
        r.encryption.keys_in_use,
        vec![r.encryption.current_key.clone().unwrap()]
    );
    store.close();
    drop(store);
    // Only the new key is needed now, and idempotency keys still match.
    let store = SledStore::open_with(dir.path(), Keyring::new([2; 32], &[])).unwrap();
    let again = EventRecord::queued(EventId::new(), "p", CANARY, b"{}".to_vec());
    assert_eq!(
        store
            .accept(&again, Some(dedup(CANARY)), None)
            .await
            .unwrap(),
        Committed::Duplicate(small.id)
    );
    // A backup stays sealed, restores without the key, and opens with it.
    let copies = tempfile::tempdir().unwrap();
    store.backup(&copies.path().join("b")).unwrap();
    let held = files_holding(copies.path(), CANARY.as_bytes());
    assert!(held.is_empty(), "the canary is in the backup: {held:?}");
    restore(&copies.path().join("b"), &copies.path().join("data")).unwrap();
    let restored =
        SledStore::open_with(&copies.path().join("data"), Keyring::new([2; 32], &[])).unwrap();
    assert_eq!(
        restored.event(&large.id).unwrap().unwrap().payload,
        large.payload
    );
    assert_eq!(
        restored
            .accept(&again, Some(dedup(CANARY)), None)
            .await
            .unwrap(),
        Committed::Duplicate(small.id),
        "the restored dedup index still knows the key"
    );
    restored.close();
    assert_eq!(
        store.event(&small.id).unwrap().unwrap().payload,
        small.payload
    );
    assert_eq!(
        store.kv_get(b"ns", "state").unwrap().as_deref(),
        Some(CANARY.as_bytes())
    );
    assert_eq!(
        store.event(&plain.id).unwrap().unwrap().payload,
        plain.payload
    );
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_record_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_with(dir.path(), Keyring::new([3; 32], &[])).unwrap();
    let a = EventRecord::queued(EventId::new(), "p", "a", b"{\"who\":\"a\"}".to_vec());
    let b = EventRecord::queued(EventId::new(), "p", "b", b"{\"who\":\"b\"}".to_vec());
    for r in [&a, &b] {
        store.accept(r, None, None).await.unwrap();
    }
    // Someone with the files swaps b's payload for a's.
    let a_body = raw(&store, body_key(&a.id)).unwrap();
    store
        .trees()
        .unwrap()
        .events
        .insert(body_key(&b.id), a_body)
        .unwrap();
    let err = store.event(&b.id).unwrap_err().to_string();
    assert!(err.contains("moved from another place"), "{err}");
}
