//! Reloads under load: webhook latency while nothing changes, against the
//! latency of the requests that overlap a reload, measured in the same run;
//! how long each reload takes (build and check, hand-over); and that no
//! webhook was refused and every event was delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use weft_host::host::RunningHost;
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, lead, post_event};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    ms(sorted[((sorted.len() - 1) as f64 * p).round() as usize])
}

pub async fn reload(reloads: usize) {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        weft_tests::any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))],
    )
    .expect("setup");
    let file = setup.config_path.clone();
    let source: weft_host::host::ConfigSource =
        Arc::new(move || weft_host::config::Config::load(&file).map_err(|e| e.to_string()));
    let host = Arc::new(
        RunningHost::start_reloadable(setup.config(), source)
            .await
            .expect("host"),
    );
    let addr = host.addr;
    let stop = Arc::new(AtomicBool::new(false));
    const SENDERS: usize = 16;
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let stop = stop.clone();
        senders.spawn(async move {
            // (sent at, took, status)
            let mut out = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let at = started.elapsed();
                let t = Instant::now();
                let (status, _) = post_event(addr, "leads", &lead(&format!("r{s}-{i}"), i)).await;
                out.push((at, t.elapsed(), status));
                i += 1;
            }
            out
        });
    }
    // Steady, then reloads one after another with a pause between.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = std::fs::read_to_string(&setup.config_path).expect("config");
    let mut windows = Vec::new();
    let mut took = Vec::new();
    for n in 0..reloads {
        // Alternate the mapping, so every reload changes a pipeline.
        let next = if n % 2 == 0 {
            text.replacen(r#"lowercase = ["/email"], "#, "", 1)
        } else {
            text.clone()
        };
        std::fs::write(&setup.config_path, next).expect("write config");
        let from = started.elapsed();
        let t = Instant::now();
        host.reload("bench").await.expect("reload");
        took.push(t.elapsed());
        windows.push((from, started.elapsed()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    while let Some(r) = senders.join_next().await {
        all.extend(r.expect("sender"));
    }
    let refused = all.iter().filter(|(_, _, s)| *s != 202).count();
    let overlaps = |at: Duration, d: Duration| {
        windows
            .iter()
            .any(|(from, to)| at <= *to && at + d >= *from)
    };
    let steady_end = Duration::from_secs(3);
    let mut steady: Vec<Duration> = all
        .iter()
        .filter(|(at, _, _)| *at < steady_end)
        .map(|(_, d, _)| *d)
        .collect();
    let mut during: Vec<Duration> = all
        .iter()
        .filter(|(at, d, _)| overlaps(*at, *d))
        .map(|(_, d, _)| *d)
        .collect();
    steady.sort();
    during.sort();
    took.sort();
    let accepted = all.len() - refused;
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.effect_count() < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "reload: {SENDERS} senders, {} webhooks, {reloads} reloads of a changed mapping: {refused} refused, {} of {accepted} delivered",
        all.len(),
        receiver.effect_count()
    );
    println!(
        "reload: webhook latency steady p50 {:.2} ms p99 {:.2} ms max {:.1} ms ({} requests); overlapping a reload p50 {:.2} ms p99 {:.2} ms max {:.1} ms ({} requests); p99 ratio {:.1}x",
        pct(&steady, 0.5),
        pct(&steady, 0.99),
        pct(&steady, 1.0),
        steady.len(),
        pct(&during, 0.5),
        pct(&during, 0.99),
        pct(&during, 1.0),
        during.len(),
        pct(&during, 0.99) / pct(&steady, 0.99).max(0.001)
    );
    println!(
        "reload: one reload (read, build and check every plugin, hand over) p50 {:.0} ms, max {:.0} ms",
        pct(&took, 0.5),
        pct(&took, 1.0)
    );
    match Arc::try_unwrap(host) {
        Ok(h) => h.shutdown().await,
        Err(_) => eprintln!("host still shared"),
    }
}
