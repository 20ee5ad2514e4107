//! Hosts on a JetStream store against one host on sled, on the lead
//! workload: the same host (the release `weft` binary) on sled, on a
//! one-server JetStream (R1), on a three-server cluster (R3), and two
//! hosts sharing the R3 cluster with the load split between them. Each is
//! timed from the first request to the last delivery; CPU is the weft
//! processes' own (user and system), per event delivered. Then the same
//! pipeline ordered by customer (1,000 keys): on sled, and with two hosts
//! on R3, where one host works it in the order accepted by both.

use super::{load, print_load};
use std::time::{Duration, Instant};
use weft_tests::brokers::{Nats, NatsCluster};
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, WeftProcess, free_addr};

const PIPELINE: &str = "concurrency = 64\nbreaker = { enabled = false }";
const ORDERED: &str = "concurrency = 64\nbreaker = { enabled = false }\norder_by = \"/customer\"";
const AUDIT_KEY: &str = "5f1c0b7a9e2d4c6b8a0f1e3d5c7b9a1f2e4d6c8b0a1f3e5d7c9b1a3f5e7d9c0b";

/// One run: `hosts` weft processes on `store` (TOML, empty for sled).
async fn run(
    name: &str,
    bin: &str,
    (store, pipeline): (&str, &str),
    hosts: usize,
    events: usize,
    senders: usize,
) -> f64 {
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads")).with(pipeline);
    let mut setups = Vec::new();
    let mut procs = Vec::new();
    for _ in 0..hosts {
        let listen = free_addr();
        let setup = HostSetup::with_extra(listen, std::slice::from_ref(&spec), store)
            .and_then(|h| h.with_secrets(&[("AUDIT_KEY", AUDIT_KEY)]))
            .and_then(|h| h.server_line("max_body_bytes = 983040"))
            .expect("setup");
        procs.push(WeftProcess::start(
            bin,
            &setup.config_path,
            listen,
            "weft.log",
            &[],
        ));
        setups.push((setup, listen));
    }
    let cpu_before: f64 = procs.iter().map(WeftProcess::cpu_seconds).sum();
    let start = Instant::now();
    let loads =
        futures_util::future::join_all(setups.iter().enumerate().map(|(i, (_, listen))| {
            let url = format!("http://{listen}/hooks/leads");
            async move { load(&url, events / hosts, senders / hosts, &format!("H{i}-")).await }
        }))
        .await;
    let ok: usize = loads.iter().map(|l| l.ok).sum();
    while receiver.requests().len() < ok && start.elapsed() < Duration::from_secs(900) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = receiver.requests().len() as f64 / start.elapsed().as_secs_f64();
    let cpu: f64 = procs.iter().map(WeftProcess::cpu_seconds).sum::<f64>() - cpu_before;
    for l in &loads {
        print_load(name, l, rate);
    }
    println!(
        "{name:<48} {rate:>8.0} ev/s delivered over {hosts} host(s), {:.3} ms of weft CPU per event",
        cpu * 1000.0 / ok.max(1) as f64
    );
    for p in procs {
        p.sigterm();
    }
    rate
}

fn store(urls: &str, replicas: usize, prefix: &str) -> String {
    format!(
        "[store]\nbackend = \"jetstream\"\nurl = \"{urls}\"\nreplicas = {replicas}\nprefix = \"{prefix}\"\naudit_key = \"AUDIT_KEY\"\n"
    )
}

pub async fn cluster(events: usize, senders: usize) {
    println!(
        "== several hosts: {events} events on sled, on JetStream R1 and R3 (nats-server), and two hosts on R3 =="
    );
    let Some(bin) = super::footprint::weft_binary() else {
        println!(
            "(skipped: no release weft binary; cargo build --release -p weft-host, or set WEFT_BIN)"
        );
        return;
    };
    let bin = bin.to_string_lossy().into_owned();
    let sled = run(
        "one host, sled (baseline)",
        &bin,
        ("", PIPELINE),
        1,
        events,
        senders,
    )
    .await;
    let nats = Nats::start();
    let r1 = run(
        "one host, JetStream R1",
        &bin,
        (&store(&nats.url(), 1, "r1"), PIPELINE),
        1,
        events,
        senders,
    )
    .await;
    drop(nats);
    let cluster = NatsCluster::start(3);
    let r3 = run(
        "one host, JetStream R3",
        &bin,
        (&store(&cluster.urls(), 3, "r3"), PIPELINE),
        1,
        events,
        senders,
    )
    .await;
    let two = run(
        "two hosts, JetStream R3",
        &bin,
        (&store(&cluster.urls(), 3, "r3b"), PIPELINE),
        2,
        events,
        senders,
    )
    .await;
    println!(
        "ratios to sled: R1 {:.0}%, R3 {:.0}%, two hosts on R3 {:.0}% (two hosts / one on R3: {:.0}%; the servers, both hosts and the load share two cores here)",
        r1 * 100.0 / sled,
        r3 * 100.0 / sled,
        two * 100.0 / sled,
        two * 100.0 / r3
    );
    let sled_ordered = run(
        "one host, sled, ordered by customer",
        &bin,
        ("", ORDERED),
        1,
        events,
        senders,
    )
    .await;
    let two_ordered = run(
        "two hosts, JetStream R3, ordered by customer",
        &bin,
        (&store(&cluster.urls(), 3, "r3o"), ORDERED),
        2,
        events,
        senders,
    )
    .await;
    println!(
        "ordered: two hosts on R3 {:.0}% of one host on sled ordered ({:.0}% of two hosts on R3 unordered: the cost of one more write per event and one host working the pipeline)",
        two_ordered * 100.0 / sled_ordered,
        two_ordered * 100.0 / two
    );
}
