//! `GET /metrics`: the engine's per-pipeline counters and gauges in the
//! Prometheus text format.

use crate::engine::{Engine, PipelineStatus};
use std::fmt::Write as _;

/// A metric family: name, type, help, and how to read it off a pipeline's status.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PipelineStatus) -> u64,
);

const FAMILIES: &[Family] = &[
    (
        "weft_events_accepted_total",
        "counter",
        "Events accepted and durably stored since start.",
        |s| s.accepted,
    ),
    (
        "weft_events_duplicate_total",
        "counter",
        "Events answered as duplicates of an earlier idempotency key.",
        |s| s.duplicates,
    ),
    (
        "weft_events_delivered_total",
        "counter",
        "Events the sink delivered.",
        |s| s.delivered,
    ),
    (
        "weft_events_filtered_total",
        "counter",
        "Events a step dropped on purpose.",
        |s| s.filtered,
    ),
    (
        "weft_attempts_retried_total",
        "counter",
        "Failed attempts that were scheduled again.",
        |s| s.retried,
    ),
    (
        "weft_events_dead_lettered_total",
        "counter",
        "Events moved to the dead-letter queue.",
        |s| s.dead_lettered,
    ),
    (
        "weft_events_in_flight",
        "gauge",
        "Attempts running now.",
        |s| s.in_flight,
    ),
    (
        "weft_queue_depth",
        "gauge",
        "Events accepted and not yet finished.",
        |s| s.queued,
    ),
    (
        "weft_rate_limit_waits_total",
        "counter",
        "Sink calls that waited for the pipeline's rate limit.",
        |s| s.rate_limit_waits,
    ),
    (
        "weft_breaker_state",
        "gauge",
        "Circuit breaker of the sink: 0 closed, 1 half-open, 2 open.",
        |s| match s.breaker {
            "open" => 2,
            "half-open" => 1,
            _ => 0,
        },
    ),
    (
        "weft_pipeline_paused",
        "gauge",
        "Whether delivery of the pipeline is paused.",
        |s| u64::from(s.paused),
    ),
];

/// Render every metric.
pub fn render(engine: &Engine) -> String {
    let pipelines: Vec<PipelineStatus> = engine
        .pipeline_names()
        .iter()
        .filter_map(|n| engine.status(n))
        .collect();
    let mut out = String::new();
    for (name, kind, help, read) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &pipelines {
            let _ = writeln!(out, "{name}{{pipeline=\"{}\"}} {}", label(&p.name), read(p));
        }
    }
    let _ = writeln!(
        out,
        "# HELP weft_capability_denials_total Plugin calls refused because they went outside the plugin's grant.\n# TYPE weft_capability_denials_total counter"
    );
    for ((plugin, capability), n) in engine.sandbox().denial_counts() {
        let _ = writeln!(
            out,
            "weft_capability_denials_total{{plugin=\"{}\",capability=\"{capability}\"}} {n}",
            label(&plugin)
        );
    }
    out
}

/// A label value, escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
