//! The lead workload at several concurrency levels, each beside two
//! baselines on the same receiver: a bare relay (receive, forward, 202) and
//! a durable relay (receive, store with the same group commit weft uses,
//! 202; workers forward and record the delivery), so weft's figure is read
//! as a share of what durability alone costs.

use super::{HttpClient, client, load, print_load, serve_bodies, start_relay, weft_run_with};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_host::store::{
    AfterAttempt, EventId, EventRecord, EventState, QueueEntry, SledStore, Store,
};
use weft_tests::{Behavior, PipelineSpec, Receiver};

/// Forward one stored event and record its delivery.
async fn forward(store: &SledStore, client: &HttpClient, target: &str, record: Arc<EventRecord>) {
    let req = hyper::Request::post(target)
        .header("content-type", "application/json")
        .header("idempotency-key", record.key.as_str())
        .body(Full::new(Bytes::from(record.payload.clone())))
        .expect("request");
    if let Ok(resp) = client.request(req).await {
        let _ = resp.into_body().collect().await;
    }
    let mut done = (*record).clone();
    done.state = EventState::Delivered;
    let entry = QueueEntry {
        due_ms: record.received_at_ms,
        id: record.id,
        attempt: 1,
    };
    let at_ms = weft_host::store::now_ms();
    let _ = store
        .record_attempt(&done, entry, AfterAttempt::Finished { at_ms }, None)
        .await;
}

/// A durable relay: each request is stored (group commit, flushed) before
/// its 202; 64 workers forward stored events and record each delivery.
async fn start_durable_relay(target: String, dir: &std::path::Path) -> SocketAddr {
    let store = Arc::new(SledStore::open(dir).expect("relay store"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Arc<EventRecord>>();
    let workers = Arc::new(tokio::sync::Semaphore::new(64));
    let (wstore, wclient) = (store.clone(), client());
    tokio::spawn(async move {
        while let Some(record) = rx.recv().await {
            let permit = workers.clone().acquire_owned().await.expect("semaphore");
            let (store, client, target) = (wstore.clone(), wclient.clone(), target.clone());
            tokio::spawn(async move {
                forward(&store, &client, &target, record).await;
                drop(permit);
            });
        }
    });
    serve_bodies(move |body| {
        let (store, tx) = (store.clone(), tx.clone());
        async move {
            let id = EventId::new();
            let record = Arc::new(EventRecord::queued(
                id,
                "relay",
                &id.to_string(),
                body.to_vec(),
            ));
            let queued = record.clone();
            let after: weft_host::store::AfterCommit = Box::new(move || {
                let _ = tx.send(queued);
            });
            match store.accept(&record, None, Some(after)).await {
                Ok(_) => 202,
                Err(_) => 503,
            }
        }
    })
    .await
}

/// Delivered events a second through a relay at `url`, measured until the
/// receiver has every accepted event.
async fn relay_rate(
    name: &str,
    url: &str,
    receiver: &Receiver,
    events: usize,
    senders: usize,
    prefix: &str,
) -> f64 {
    let start = Instant::now();
    let l = load(url, events, senders, prefix).await;
    while receiver.requests().len() < l.ok && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = receiver.requests().len() as f64 / start.elapsed().as_secs_f64();
    print_load(name, &l, rate);
    rate
}

/// The lead workload at each level of concurrent senders.
pub async fn levels(events: usize, levels: &[usize]) {
    println!(
        "== lead workload by concurrency: {events} events per run, keep-alive senders with unique ids =="
    );
    let mut table = Vec::new();
    for &c in levels {
        println!("-- c={c}");
        let bare_receiver = Receiver::start(Behavior::Accept).await;
        let bare = start_relay(bare_receiver.url("/leads")).await;
        let bare_rate = relay_rate(
            "bare hyper relay",
            &format!("http://{bare}/hooks/leads"),
            &bare_receiver,
            events,
            c,
            &format!("B{c}-"),
        )
        .await;
        let dir = tempfile::tempdir().expect("tempdir");
        let durable_receiver = Receiver::start(Behavior::Accept).await;
        let durable = start_durable_relay(durable_receiver.url("/leads"), dir.path()).await;
        let durable_rate = relay_rate(
            "durable relay (sled group commit, no wasm)",
            &format!("http://{durable}/hooks/leads"),
            &durable_receiver,
            events,
            c,
            &format!("D{c}-"),
        )
        .await;
        let weft = weft_run_with(
            "weft: webhook→json-map→filter→sink",
            PipelineSpec::leads("leads", "")
                .with("concurrency = 64\nbreaker = { enabled = false }"),
            events,
            c,
            &format!("W{c}-"),
            true,
            "",
        )
        .await;
        let batched = weft_run_with(
            "weft, sink batch = 100 events / 1 s",
            PipelineSpec::leads("leads", "")
                .with("concurrency = 64\nbreaker = { enabled = false }")
                .sink_batch("max_events = 100, max_wait_ms = 1000"),
            events,
            c,
            &format!("X{c}-"),
            true,
            "",
        )
        .await;
        println!(
            "c={c}: weft {weft:.0} ev/s = {:.1}% of the durable relay ({durable_rate:.0}), {:.1}% of the bare relay ({bare_rate:.0}); with a batching sink {batched:.0} ev/s = {:.2}× unbatched, {:.1}% of the durable relay",
            100.0 * weft / durable_rate,
            100.0 * weft / bare_rate,
            batched / weft,
            100.0 * batched / durable_rate
        );
        table.push((c, bare_rate, durable_rate, weft, batched));
    }
    println!(
        "| senders | bare relay ev/s | durable relay ev/s | weft ev/s | weft / durable | weft batched ev/s | batched / unbatched |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (c, bare, durable, weft, batched) in &table {
        println!(
            "| {c} | {bare:.0} | {durable:.0} | {weft:.0} | {:.1}% | {batched:.0} | {:.2}× |",
            100.0 * weft / durable,
            batched / weft
        );
    }
    if let (Some(at64), Some(top)) = (
        table.iter().find(|t| t.0 == 64),
        table.iter().max_by_key(|t| t.0),
    ) && top.0 > 64
    {
        println!(
            "weft at c={}: {:.1}% of its c=64 rate (batched: {:.1}%)",
            top.0,
            100.0 * top.3 / at64.3,
            100.0 * top.4 / at64.4
        );
    }
}
