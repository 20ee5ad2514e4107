//! Backup and restore of a store of `events` events (1 KiB payloads, one in
//! fifty of 100 KiB, kept as files): how long a backup takes and how long
//! writes wait while it runs, against a plain recursive copy of the same
//! data directory measured in the same run; then a restore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weft_host::store::{EventId, EventRecord, Store};

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

fn record(i: usize) -> EventRecord {
    let size = if i.is_multiple_of(50) {
        100 * 1024
    } else {
        1024
    };
    let payload = format!("{{\"n\": {i}, \"pad\": \"{}\"}}", "x".repeat(size));
    EventRecord::queued(
        EventId::new(),
        "bench",
        &format!("k{i}"),
        payload.into_bytes(),
    )
}

/// Write latencies (each a single accept, waited for) while `busy` holds.
async fn writes_while(store: Arc<dyn Store>, busy: Arc<AtomicBool>) -> Vec<Duration> {
    let mut took = Vec::new();
    let mut i = 10_000_000;
    while busy.load(Ordering::Relaxed) {
        let r = record(i);
        let started = Instant::now();
        let _ = store.accept(&r, None, None).await;
        took.push(started.elapsed());
        i += 1;
    }
    took
}

fn worst(d: &[Duration]) -> f64 {
    d.iter().max().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn p50(d: &mut [Duration]) -> f64 {
    d.sort();
    d.get(d.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub async fn backup(events: usize) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let store = weft_host::store::open(&data).expect("store");
    let mut tickets = Vec::new();
    for i in 0..events {
        tickets.push(store.accept(&record(i), None, None));
        if tickets.len() == 256 {
            for t in tickets.drain(..) {
                t.await.expect("accepted");
            }
        }
    }
    for t in tickets {
        t.await.expect("accepted");
    }
    store.flush().await.expect("flushed");
    let bytes = dir_bytes(&data);

    // Baseline: a plain copy of the directory (what a careless `cp -r` of a
    // running store costs, without being consistent).
    let started = Instant::now();
    weft_tests::copy_dir(&data, &root.path().join("copy"));
    let copy_ms = started.elapsed().as_secs_f64() * 1000.0;

    // Writes alone, then writes while the backup runs.
    let busy = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn(writes_while(store.clone(), busy.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    busy.store(false, Ordering::Relaxed);
    let mut before = writer.await.expect("writer");
    let busy = Arc::new(AtomicBool::new(true));
    let writer = tokio::spawn(writes_while(store.clone(), busy.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let target = root.path().join("backup");
    let started = Instant::now();
    let manifest = {
        let store = store.clone();
        let target = target.clone();
        tokio::task::spawn_blocking(move || store.backup(&target))
            .await
            .expect("backup task")
            .expect("backup")
    };
    let backup_ms = started.elapsed().as_secs_f64() * 1000.0;
    busy.store(false, Ordering::Relaxed);
    let mut during = writer.await.expect("writer");
    store.close();
    drop(store);

    let started = Instant::now();
    weft_host::store::restore(&target, &root.path().join("restored")).expect("restore");
    let restore_ms = started.elapsed().as_secs_f64() * 1000.0;

    println!(
        "\n== backup and restore: {events} events, {:.1} MiB on disk ==",
        bytes as f64 / 1048576.0
    );
    println!("plain copy of the data directory:   {copy_ms:>9.1} ms   (baseline, not consistent)");
    println!(
        "weft backup (dump, links, digests): {backup_ms:>9.1} ms   {:.2}x the copy; {} events, {} files",
        backup_ms / copy_ms.max(0.001),
        manifest.counts.events,
        manifest.files.len() + 1
    );
    println!(
        "a write before the backup:          p50 {:>7.2} ms, worst {:>7.2} ms ({} writes)",
        p50(&mut before),
        worst(&before),
        before.len()
    );
    println!(
        "a write while it runs:              p50 {:>7.2} ms, worst {:>7.2} ms ({} writes): the pause",
        p50(&mut during),
        worst(&during),
        during.len()
    );
    println!("weft restore (verify, build, check): {restore_ms:>8.1} ms");
}
