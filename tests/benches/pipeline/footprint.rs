//! Memory and disk against the data: the real `weft` binary (its RSS read
//! from `/proc`), large events (400 × 900 KiB from 32 senders) and a steady
//! run of 1 KiB events from 64 senders, printing peak RSS over the event
//! bytes weft held in memory at its peak, store growth over the payload
//! bytes it retains, and throughput.

use super::{HttpClient, client, serve_bodies};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use weft_tests::{HostSetup, PipelineSpec, WeftProcess, free_addr};

const MIB: f64 = 1024.0 * 1024.0;

/// The `weft` binary: `WEFT_BIN`, or the workspace's release build.
pub(super) fn weft_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_BIN") {
        return Some(PathBuf::from(p));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let p = target.join("release").join("weft");
    p.exists().then_some(p)
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn get_json(client: &HttpClient, url: &str) -> serde_json::Value {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("request");
    match client.request(req).await {
        Ok(resp) => {
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            body.ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default()
        }
        Err(_) => serde_json::Value::Null,
    }
}

/// A weft process on the lead pipeline, warm (started once to compile its
/// plugins, then again), delivering to a receiver that only counts.
struct Subject {
    process: Arc<WeftProcess>,
    setup: HostSetup,
    url: String,
    usage_url: String,
    delivered: Arc<AtomicUsize>,
}

async fn start(bin: &Path) -> Subject {
    let delivered = Arc::new(AtomicUsize::new(0));
    let counter = delivered.clone();
    let sink = serve_bodies(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { 200 }
    })
    .await;
    let listen = free_addr();
    let spec = PipelineSpec::leads("leads", &format!("http://{sink}/leads"))
        .with("max_ingress_bytes_per_sec = 1073741824\nbreaker = { enabled = false }");
    let setup = HostSetup::new(listen, &[spec]).expect("setup");
    let bin = bin.to_string_lossy().into_owned();
    WeftProcess::start(&bin, &setup.config_path, listen, "weft.log", &[]).sigterm();
    let process = WeftProcess::start(&bin, &setup.config_path, listen, "weft.log", &[]);
    let admin = setup
        .config()
        .server
        .admin_listen
        .expect("the test config names an admin listener");
    tokio::time::sleep(Duration::from_secs(1)).await;
    Subject {
        process: Arc::new(process),
        url: format!("http://{listen}/hooks/leads"),
        usage_url: format!("http://{admin}/api/v1/usage"),
        setup,
        delivered,
    }
}

/// Send `events` bodies of `size` bytes from `senders` connections for at
/// most `limit`, retrying on 429, while sampling RSS; returns (sent, peak
/// RSS, seconds until all were delivered).
async fn drive(
    s: &Subject,
    events: usize,
    size: usize,
    senders: usize,
    limit: Duration,
) -> (usize, u64, f64) {
    let peak = Arc::new(AtomicU64::new(s.process.rss_bytes()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (p, peak, done) = (s.process.clone(), peak.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(p.rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let pad = "x".repeat(size.saturating_sub(120));
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders {
        let (next, accepted, url, pad, client) = (
            next.clone(),
            accepted.clone(),
            s.url.clone(),
            pad.clone(),
            client(),
        );
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events || started.elapsed() > limit {
                    break;
                }
                let body = Bytes::from(
                    serde_json::json!({ "id": format!("f{i}"), "email": format!("p{i}@example.com"), "pad": pad })
                        .to_string(),
                );
                loop {
                    let req = hyper::Request::post(&url)
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .expect("request");
                    let status = match client.request(req).await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let _ = resp.into_body().collect().await;
                            status
                        }
                        Err(_) => 0,
                    };
                    if status == 202 {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let sent = accepted.load(Ordering::Relaxed);
    while s.delivered.load(Ordering::Relaxed) < sent && started.elapsed() < limit * 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    (sent, peak.load(Ordering::Relaxed), secs)
}

async fn run(bin: &Path, name: &str, events: usize, size: usize, senders: usize, limit: Duration) {
    let s = start(bin).await;
    let data = s.setup.data_dir();
    let idle = s.process.rss_bytes();
    let disk_before = dir_bytes(&data);
    let (sent, peak, secs) = drive(&s, events, size, senders, limit).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = s.process.rss_bytes();
    let usage = get_json(&client(), &s.usage_url).await;
    let held_peak = usage["inflight_peak_bytes"].as_u64().unwrap_or(0).max(1);
    let grown = dir_bytes(&data).saturating_sub(disk_before);
    let retained = (sent * size) as u64;
    println!(
        "{name}: {sent} events of {} KiB from {senders} senders, {:.0} ev/s delivered ({:.1} MiB/s)",
        size / 1024,
        s.delivered.load(Ordering::Relaxed) as f64 / secs,
        retained as f64 / MIB / secs
    );
    println!(
        "  memory: idle {:.1} MiB, peak {:.1} MiB, {:.1} MiB 2 s after; peak event bytes in memory {:.1} MiB; (peak − idle) / that = {:.2}× (target ≤ 4×); after / idle = {:.2}×",
        idle as f64 / MIB,
        peak as f64 / MIB,
        after as f64 / MIB,
        held_peak as f64 / MIB,
        peak.saturating_sub(idle) as f64 / held_peak as f64,
        after as f64 / idle.max(1) as f64
    );
    println!(
        "  disk: the store grew {:.1} MiB for {:.1} MiB of payloads retained in the run history = {:.2}× (target ≤ 1.5×)",
        grown as f64 / MIB,
        retained as f64 / MIB,
        grown as f64 / retained.max(1) as f64
    );
    if let Ok(p) = Arc::try_unwrap(s.process) {
        p.sigterm();
    }
}

/// Both runs; skipped (with how to run it) without a release binary.
pub async fn footprint(steady_secs: u64) {
    println!("== memory and disk against the data (the weft binary, RSS from /proc) ==");
    let Some(bin) = weft_binary() else {
        println!(
            "skipped: no release binary; `cargo xtask bench` builds it (or `cargo build --release -p weft-host`, or set WEFT_BIN)"
        );
        return;
    };
    run(
        &bin,
        "large events",
        400,
        900 * 1024,
        32,
        Duration::from_secs(120),
    )
    .await;
    run(
        &bin,
        "steady small events",
        usize::MAX / 2,
        1024,
        64,
        Duration::from_secs(steady_secs),
    )
    .await;
}
