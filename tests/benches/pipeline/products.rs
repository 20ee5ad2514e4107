//! What pipelines as products cost: the lead pipeline with objectives and
//! a quality gate counted on every event, and with its sink split in two
//! routes (each event stored once more per route and delivered twice),
//! against the same pipeline without them, in the same run.

use super::{load, print_load};
use std::time::{Duration, Instant};
use weft_host::host::RunningHost;
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver};

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Objectives,
    Routes,
}

/// One run: events delivered (to every route) per second.
async fn run(name: &str, variant: Variant, events: usize, senders: usize, prefix: &str) -> f64 {
    let receiver = Receiver::start(Behavior::Accept).await;
    let url = receiver.url("/leads");
    let spec = PipelineSpec::leads("grant", &url);
    let sink = |path: &str| {
        format!(
            "plugin = \"http-sink\", config = {{ url = \"{}\" }}",
            receiver.url(path)
        )
    };
    let tail = match variant {
        Variant::Plain => format!("sink = {{ {} }}", sink("/leads")),
        Variant::Objectives => format!(
            "sink = {{ {} }}\nslo = {{ success = 0.999, latency = {{ within_ms = 5000, objective = 0.99 }}, freshness = \"15m\" }}\nquality = {{ max_invalid_ratio = 0.2, max_sink_error_ratio = 0.5 }}",
            sink("/leads")
        ),
        Variant::Routes => format!(
            "sinks = [{{ name = \"a\", {} }}, {{ name = \"b\", {} }}]",
            sink("/a"),
            sink("/b")
        ),
    };
    let extra = format!(
        "[[pipeline]]\nname = \"leads\"\nidempotency_key = \"/id\"\nconcurrency = 64\nbreaker = {{ enabled = false }}\nsteps = [{}]\n{tail}\n",
        spec.steps.join(", ")
    );
    let setup = HostSetup::with_extra("127.0.0.1:0".parse().expect("addr"), &[spec], &extra)
        .expect("setup");
    let host = RunningHost::start(setup.config())
        .await
        .expect("host starts");
    let start = Instant::now();
    let sent = load(
        &format!("http://{}/hooks/leads", host.addr),
        events,
        senders,
        prefix,
    )
    .await;
    let per_event = if variant == Variant::Routes { 2 } else { 1 };
    let want = sent.ok * per_event;
    while receiver.requests().len() < want && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let delivered = receiver.requests().len() / per_event;
    let rate = delivered as f64 / start.elapsed().as_secs_f64();
    print_load(name, &sent, rate);
    if let Some(o) = host.engine().status("leads").and_then(|s| s.objectives) {
        let success = o.success.unwrap_or_default();
        println!(
            "  objectives: {} of {} delivered, budget left {:.1}%",
            success.good,
            success.total,
            success.budget_remaining * 100.0
        );
    }
    host.shutdown().await;
    rate
}

/// Best of two alternating rounds of each variant, with the ratios.
pub async fn products(events: usize, senders: usize) {
    println!(
        "== pipelines as products: {events} events, {senders} senders: objectives and routes against the plain pipeline =="
    );
    let best = super::best_of_two(
        &[
            ("plain", Variant::Plain),
            ("slo + quality gate", Variant::Objectives),
            (
                "two routes (each event stored per route, delivered twice)",
                Variant::Routes,
            ),
        ],
        |name, variant, prefix| async move { run(&name, variant, events, senders, &prefix).await },
    )
    .await;
    let (plain, objectives, routes) = (best[0], best[1], best[2]);
    println!(
        "slo + quality gate: {objectives:.0} ev/s = {:.1}% of plain ({plain:.0} ev/s); two routes: {routes:.0} ev/s = {:.1}% of plain",
        100.0 * objectives / plain,
        100.0 * routes / plain
    );
}
