//! Benchmark: the lead pipeline end to end against a bare hyper relay, and
//! one json-map call in the sandbox against the same mapping code compiled
//! natively. Prints figures and ratios from the same run; it asserts nothing
//! about time.
//!
//! `cargo xtask bench` (or `cargo bench -p weft-tests --bench pipeline`).
//! Environment: `WEFT_BENCH_EVENTS` (default 20000), `WEFT_BENCH_SENDERS` (64),
//! `WEFT_BENCH_ONLY` (`pipeline`, `levels`, `guards`, `observability`,
//! `sandbox`, `footprint`, `backup`, `reload`, `products`, `protection`, `queues` or `cluster`), `WEFT_BENCH_RELOADS` (10),
//! `WEFT_BENCH_LEVELS` (concurrent senders of the
//! `levels` runs, default `16,64,256`), `WEFT_BENCH_STEADY_SECS` (the
//! footprint's steady run, default 60), `WEFT_BIN` (the binary the
//! footprint runs; default `target/release/weft`).

#[path = "pipeline/backup.rs"]
mod backup;
#[path = "pipeline/cluster.rs"]
mod cluster;
#[path = "pipeline/footprint.rs"]
mod footprint;
#[path = "pipeline/levels.rs"]
mod levels;
#[path = "pipeline/products.rs"]
mod products;
#[path = "pipeline/protection.rs"]
mod protection;
#[path = "pipeline/queues.rs"]
mod queues;
#[path = "pipeline/reload.rs"]
mod reload;

use bytes::Bytes;

// As the `weft` binary runs.
#[global_allocator]
static ALLOCATOR: weft_host::Allocator = weft_host::Allocator;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weft_host::host::RunningHost;
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, lead};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build_http()
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Results of one load run.
struct Load {
    sent: usize,
    ok: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Load {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// POST `events` lead bodies to `url` from `senders` concurrent keep-alive clients.
async fn load(url: &str, events: usize, senders: usize, prefix: &str) -> Load {
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..events)
            .map(|n| {
                let mut body = lead(&format!("{prefix}{n}"), n);
                body["customer"] = format!("c{}", n % 1000).into();
                Bytes::from(body.to_string())
            })
            .collect(),
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders {
        let (bodies, next, url, client) = (bodies.clone(), next.clone(), url.to_string(), client());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut ok = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= bodies.len() {
                    break;
                }
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(Full::new(bodies[i].clone()))
                    .expect("request");
                let t = Instant::now();
                if let Ok(resp) = client.request(req).await {
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    if status.is_success() {
                        ok += 1;
                    }
                }
                lat.push(t.elapsed().as_micros() as u64);
            }
            (ok, lat)
        });
    }
    let mut latencies_us = Vec::with_capacity(events);
    let mut ok = 0;
    for (n, lat) in tasks.join_all().await {
        ok += n;
        latencies_us.extend(lat);
    }
    latencies_us.sort_unstable();
    Load {
        sent: events,
        ok,
        elapsed: start.elapsed(),
        latencies_us,
    }
}

/// Serve on a fresh loopback port: each request's whole body goes to
/// `handle`, and the status it returns is answered with `{}`.
async fn serve_bodies<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let addr = listener.local_addr().expect("relay addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let status = handle(body).await;
                        let mut resp = hyper::Response::new(Full::new(Bytes::from_static(b"{}")));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A bare relay: receive, forward to the receiver, reply 202. No store, no wasm.
async fn start_relay(target: String) -> SocketAddr {
    let client = client();
    serve_bodies(move |body| {
        let (client, target) = (client.clone(), target.clone());
        async move {
            let fwd = hyper::Request::post(&target)
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("request");
            match client.request(fwd).await {
                Ok(r) => {
                    let s = r.status();
                    let _ = r.into_body().collect().await;
                    if s.is_success() { 202 } else { 502 }
                }
                Err(_) => 502,
            }
        }
    })
    .await
}

/// The best rate of each variant over two alternating rounds: `run(name,
/// variant, prefix)` is one run, its events keyed under `prefix`.
async fn best_of_two<V: Copy, F, Fut>(variants: &[(&str, V)], mut run: F) -> Vec<f64>
where
    F: FnMut(String, V, String) -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut best = vec![0f64; variants.len()];
    for round in 0..2 {
        for (i, (name, variant)) in variants.iter().enumerate() {
            let rate = run(name.to_string(), *variant, format!("V{i}R{round}")).await;
            best[i] = best[i].max(rate);
        }
    }
    best
}

fn print_load(name: &str, l: &Load, delivered_per_s: f64) {
    println!(
        "{name:<48} {:>8.0} ev/s delivered  {:>8.0} req/s accepted  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} of {} ok)",
        delivered_per_s,
        l.ok as f64 / l.elapsed.as_secs_f64(),
        l.percentile_ms(0.50),
        l.percentile_ms(0.99),
        l.ok,
        l.sent
    );
}

async fn end_to_end(events: usize, senders: usize) {
    println!("== end to end: {events} events, {senders} concurrent senders, 127.0.0.1 ==");
    // Baseline first: a bare relay to its own receiver.
    let relay_receiver = Receiver::start(Behavior::Accept).await;
    let relay = start_relay(relay_receiver.url("/leads")).await;
    let relay_load = load(&format!("http://{relay}/hooks/leads"), events, senders, "R").await;
    let relay_rate = relay_receiver.requests().len() as f64 / relay_load.elapsed.as_secs_f64();
    print_load(
        "bare hyper relay (no store, no wasm)",
        &relay_load,
        relay_rate,
    );

    let plain = weft_run(
        "weft: webhook→json-map→filter→sink",
        PipelineSpec::leads("leads", "").with("concurrency = 64\nbreaker = { enabled = false }"),
        events,
        senders,
        "W",
    )
    .await;
    println!(
        "weft durable accept + delivery: {plain:.0} ev/s = {:.1}% of the bare relay",
        100.0 * plain / relay_rate
    );
    let guarded = weft_run(
        "  + rate limit, breaker, order_by",
        PipelineSpec::leads("leads", "").with(
            "concurrency = 64\nrate_limit = { per_second = 1000000, burst = 100000 }\norder_by = \"/customer\"",
        ),
        events,
        senders,
        "G",
    )
    .await;
    println!(
        "rate limit far above the load + closed breaker + order_by over 1000 keys: {guarded:.0} ev/s = {:.1}% of the same pipeline without them",
        100.0 * guarded / plain
    );
}

/// The sandbox's guards (memory cap, epoch deadline, egress checks) against
/// the same pipeline without them, and fuel metering on top. Runs alternate
/// and the best of each is kept, so a noisy neighbour hurts both sides alike.
async fn guards(events: usize, senders: usize) {
    println!("== plugin guards: {events} events, {senders} concurrent senders ==");
    let spec =
        || PipelineSpec::leads("leads", "").with("concurrency = 64\nbreaker = { enabled = false }");
    let fuel = "fuel = 1000000000\n[grants.json-map]\nfuel = 1000000000\n[grants.filter]\nfuel = 1000000000\n";
    let (mut on, mut off, mut fueled) = (0f64, 0f64, 0f64);
    for round in 0..2 {
        let r = weft_run_with(
            "guards on (memory cap, deadline, egress checks)",
            spec(),
            events,
            senders,
            &format!("N{round}"),
            true,
            "",
        )
        .await;
        on = on.max(r);
        let r = weft_run_with(
            "guards off",
            spec(),
            events,
            senders,
            &format!("F{round}"),
            false,
            "",
        )
        .await;
        off = off.max(r);
        let r = weft_run_with(
            "guards on + fuel metering",
            spec(),
            events,
            senders,
            &format!("U{round}"),
            true,
            fuel,
        )
        .await;
        fueled = fueled.max(r);
    }
    println!(
        "guards on: {on:.0} ev/s = {:.1}% of guards off ({off:.0} ev/s); with fuel as well: {fueled:.0} ev/s = {:.1}% of guards off",
        100.0 * on / off,
        100.0 * fueled / off
    );
}

/// Whether runs scrape `/metrics` every second while under load.
static SCRAPE: AtomicBool = AtomicBool::new(false);

/// Spans and JSON logs at `info` (written to a sink, as a log shipper would
/// read them) plus a `/metrics` scrape every second, against the same
/// pipeline with logging off and nobody scraping. Best of alternating runs.
async fn observability(
    events: usize,
    senders: usize,
    logs: &tracing_subscriber::reload::Handle<
        tracing_subscriber::filter::LevelFilter,
        tracing_subscriber::Registry,
    >,
) {
    use tracing_subscriber::filter::LevelFilter;
    println!("== observability: {events} events, {senders} concurrent senders ==");
    let spec =
        || PipelineSpec::leads("leads", "").with("concurrency = 64\nbreaker = { enabled = false }");
    let (mut on, mut off) = (0f64, 0f64);
    for round in 0..2 {
        let _ = logs.reload(LevelFilter::OFF);
        SCRAPE.store(false, Ordering::Relaxed);
        let r = weft_run(
            "logs off, no scraping",
            spec(),
            events,
            senders,
            &format!("O{round}"),
        )
        .await;
        off = off.max(r);
        let _ = logs.reload(LevelFilter::INFO);
        SCRAPE.store(true, Ordering::Relaxed);
        let r = weft_run(
            "spans + JSON logs at info + /metrics every 1 s",
            spec(),
            events,
            senders,
            &format!("I{round}"),
        )
        .await;
        on = on.max(r);
    }
    let _ = logs.reload(LevelFilter::OFF);
    SCRAPE.store(false, Ordering::Relaxed);
    println!(
        "observability on: {on:.0} ev/s = {:.1}% of off ({off:.0} ev/s); cost {:.1}%",
        100.0 * on / off,
        100.0 * (1.0 - on / off)
    );
}

/// Run the lead pipeline under load; returns delivered events/s.
async fn weft_run(
    name: &str,
    spec: PipelineSpec,
    events: usize,
    senders: usize,
    prefix: &str,
) -> f64 {
    weft_run_with(name, spec, events, senders, prefix, true, "").await
}

/// [`weft_run`] with the guards on or off and extra TOML after the
/// http-sink grant (its first lines still belong to that grant).
async fn weft_run_with(
    name: &str,
    mut spec: PipelineSpec,
    events: usize,
    senders: usize,
    prefix: &str,
    guards: bool,
    extra: &str,
) -> f64 {
    let receiver = Receiver::start(Behavior::Accept).await;
    spec.sink_url = receiver.url("/leads");
    let setup =
        HostSetup::with_extra("127.0.0.1:0".parse().expect("addr"), &[spec], extra).expect("setup");
    let host = RunningHost::start_with_guards(setup.config(), guards)
        .await
        .expect("host starts");
    let scraper = SCRAPE.load(Ordering::Relaxed).then(|| {
        let url = format!("http://{}/metrics", host.admin_addr);
        tokio::spawn(async move {
            let client = client();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let req = hyper::Request::get(&url)
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                if let Ok(resp) = client.request(req).await {
                    let _ = resp.into_body().collect().await;
                }
            }
        })
    });
    let start = Instant::now();
    let weft_load = load(
        &format!("http://{}/hooks/leads", host.addr),
        events,
        senders,
        prefix,
    )
    .await;
    let backlog = host.engine().status("leads").map_or(0, |s| s.queued);
    let load_ended = Instant::now();
    while receiver.effect_count() < weft_load.ok && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = receiver.effect_count() as f64 / start.elapsed().as_secs_f64();
    if let Some(s) = scraper {
        s.abort();
    }
    print_load(name, &weft_load, rate);
    println!(
        "  backlog when the load ended: {backlog} events, delivered {:.2} s later",
        load_ended.elapsed().as_secs_f64()
    );
    let dupes = receiver.effects().values().filter(|n| **n > 1).count();
    if dupes > 0 {
        println!("  duplicates at the receiver: {dupes}");
    }
    host.shutdown().await;
    rate
}

async fn sandbox_vs_native(calls: usize) {
    use weft_host::sandbox::{CallContext, Sandbox};
    println!(
        "\n== one json-map call: sandbox (fresh instance per call) vs native, {calls} calls =="
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = weft_host::store::open(&dir.path().join("data")).expect("store");
    let sandbox = Sandbox::new(store, 16, 64).expect("sandbox");
    let plugin = sandbox
        .load(
            std::path::Path::new(weft_tests::plugins::JSON_MAP),
            "json-map",
            &weft_host::config::Grant::default(),
            None,
        )
        .expect("json-map loads");
    let config = serde_json::json!({
        "lowercase": ["/email"], "title_case": ["/name"],
        "date": [{"field": "/created", "from": "%m/%d/%Y", "to": "%Y-%m-%d"}],
        "cents_to_decimal": ["/amount_cents"]
    });
    let config_text = config.to_string();
    let payload = lead("B1", 1).to_string().into_bytes();
    let event = weft_host::sandbox::bindings::WitEvent {
        id: "e".into(),
        key: "B1".into(),
        source: "bench".into(),
        content_type: "application/json".into(),
        headers: vec![],
        payload: payload.clone(),
        attempt: 1,
        correlation_id: "c".into(),
        received_at_ms: 0,
    };
    let ctx = || CallContext {
        pipeline: "bench".into(),
        plugin: "json-map".into(),
        event_id: "e".into(),
        correlation_id: "c".into(),
        ..Default::default()
    };
    for _ in 0..200 {
        sandbox
            .transform(&plugin, &config_text, ctx(), &event)
            .await
            .0
            .expect("warm-up");
    }
    let t = Instant::now();
    for _ in 0..calls {
        let out = sandbox
            .transform(&plugin, &config_text, ctx(), &event)
            .await
            .0
            .expect("call");
        std::hint::black_box(out);
    }
    let wasm_us = t.elapsed().as_secs_f64() * 1e6 / calls as f64;

    // The same work natively: parse the config, parse the payload, map, serialise.
    let t = Instant::now();
    for _ in 0..calls {
        let mapping: json_map::mapping::Config =
            serde_json::from_str(&config_text).expect("config");
        mapping.validate().expect("valid");
        let mut doc: serde_json::Value =
            serde_json::from_slice(std::hint::black_box(&payload)).expect("json");
        mapping.apply(&mut doc).expect("apply");
        std::hint::black_box(serde_json::to_vec(&doc).expect("serialise"));
    }
    let native_us = t.elapsed().as_secs_f64() * 1e6 / calls as f64;

    // The mapping alone, configured once, on both sides.
    let warm = sandbox
        .time_warm_transform(&plugin, &config_text, ctx(), &event, calls as u32)
        .await
        .expect("warm calls");
    let warm_us = warm.as_secs_f64() * 1e6;
    let mapping: json_map::mapping::Config = serde_json::from_str(&config_text).expect("config");
    let t = Instant::now();
    for _ in 0..calls {
        let mut doc: serde_json::Value =
            serde_json::from_slice(std::hint::black_box(&payload)).expect("json");
        mapping.apply(&mut doc).expect("apply");
        std::hint::black_box(serde_json::to_vec(&doc).expect("serialise"));
    }
    let native_map_us = t.elapsed().as_secs_f64() * 1e6 / calls as f64;
    println!(
        "native json-map, configured once (parse + map + serialise): {native_map_us:>8.2} µs/call"
    );
    println!("sandboxed json-map, one configured instance (call only):     {warm_us:>8.2} µs/call");
    println!(
        "sandboxed code / native code: {:.2}x (the mapping itself, no instance set-up)",
        warm_us / native_map_us
    );
    println!("native json-map (config + parse + map + serialise): {native_us:>8.2} µs/call");
    println!("sandboxed json-map (instantiate + configure + call): {wasm_us:>8.2} µs/call");
    println!(
        "sandbox / native: {:.2}x; sandbox overhead per fresh-instance call: {:.2} µs",
        wasm_us / native_us,
        wasm_us - native_us
    );
}

fn main() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let (filter, logs) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::filter::LevelFilter::OFF);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_writer(std::io::sink),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let events = env_usize("WEFT_BENCH_EVENTS", 20_000);
    let senders = env_usize("WEFT_BENCH_SENDERS", 64);
    let only = std::env::var("WEFT_BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        if only.is_empty() || only == "pipeline" {
            end_to_end(events, senders).await;
        }
        if only.is_empty() || only == "levels" {
            let list = std::env::var("WEFT_BENCH_LEVELS").unwrap_or_else(|_| "16,64,256".into());
            let list: Vec<usize> = list
                .split(',')
                .filter_map(|v| v.trim().parse().ok())
                .collect();
            levels::levels(events, &list).await;
        }
        if only.is_empty() || only == "guards" {
            guards(events, senders).await;
        }
        if only.is_empty() || only == "observability" {
            observability(events, senders, &logs).await;
        }
        if only.is_empty() || only == "sandbox" {
            sandbox_vs_native(env_usize("WEFT_BENCH_CALLS", 20_000)).await;
        }
        if only.is_empty() || only == "footprint" {
            footprint::footprint(env_usize("WEFT_BENCH_STEADY_SECS", 60) as u64).await;
        }
        if only.is_empty() || only == "backup" {
            backup::backup(events).await;
        }
        if only.is_empty() || only == "reload" {
            reload::reload(env_usize("WEFT_BENCH_RELOADS", 10)).await;
        }
        if only.is_empty() || only == "products" {
            products::products(events, senders).await;
        }
        if only.is_empty() || only == "protection" {
            protection::protection(events, senders).await;
        }
        if only.is_empty() || only == "queues" {
            queues::queues(events, senders).await;
        }
        if only.is_empty() || only == "cluster" {
            cluster::cluster(events, senders).await;
        }
    });
}
