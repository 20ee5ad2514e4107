//! `GET /metrics`: the engine's per-pipeline counters and gauges in the
//! Prometheus text format.

use crate::engine::Engine;
use std::fmt::Write as _;

/// One metric family: name, type, help, and the JSON field of the pipeline
/// status it comes from.
const FAMILIES: &[(&str, &str, &str, &str)] = &[
    (
        "weft_events_accepted_total",
        "counter",
        "Events accepted and durably stored since start.",
        "accepted",
    ),
    (
        "weft_events_duplicate_total",
        "counter",
        "Events answered as duplicates of an earlier idempotency key.",
        "duplicates",
    ),
    (
        "weft_events_delivered_total",
        "counter",
        "Events the sink delivered.",
        "delivered",
    ),
    (
        "weft_events_filtered_total",
        "counter",
        "Events a step dropped on purpose.",
        "filtered",
    ),
    (
        "weft_attempts_retried_total",
        "counter",
        "Failed attempts that were scheduled again.",
        "retried",
    ),
    (
        "weft_events_dead_lettered_total",
        "counter",
        "Events moved to the dead-letter queue.",
        "dead_lettered",
    ),
    (
        "weft_events_in_flight",
        "gauge",
        "Attempts running now.",
        "in_flight",
    ),
    (
        "weft_queue_depth",
        "gauge",
        "Events accepted and not yet finished.",
        "queued",
    ),
    (
        "weft_rate_limit_waits_total",
        "counter",
        "Sink calls that waited for the pipeline's rate limit.",
        "rate_limit_waits",
    ),
];

/// Render every metric.
pub fn render(engine: &Engine) -> String {
    let pipelines: Vec<serde_json::Value> = engine
        .pipeline_names()
        .iter()
        .filter_map(|n| engine.stats_json(n))
        .collect();
    let mut out = String::new();
    for (name, kind, help, field) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for p in &pipelines {
            let value = p[*field]
                .as_u64()
                .or_else(|| p[*field].as_i64().map(|v| v.max(0) as u64))
                .unwrap_or(0);
            let _ = writeln!(out, "{name}{{pipeline=\"{}\"}} {value}", label(&p["name"]));
        }
    }
    let _ = writeln!(
        out,
        "# HELP weft_breaker_state Circuit breaker of the sink: 0 closed, 1 half-open, 2 open.\n# TYPE weft_breaker_state gauge"
    );
    for p in &pipelines {
        let state = match p["breaker"].as_str() {
            Some("open") => 2,
            Some("half-open") => 1,
            _ => 0,
        };
        let _ = writeln!(
            out,
            "weft_breaker_state{{pipeline=\"{}\"}} {state}",
            label(&p["name"])
        );
    }
    let _ = writeln!(
        out,
        "# HELP weft_pipeline_paused Whether delivery of the pipeline is paused.\n# TYPE weft_pipeline_paused gauge"
    );
    for p in &pipelines {
        let paused = u8::from(p["paused"] == true);
        let _ = writeln!(
            out,
            "weft_pipeline_paused{{pipeline=\"{}\"}} {paused}",
            label(&p["name"])
        );
    }
    out
}

/// A label value, escaped as the text format requires.
fn label(v: &serde_json::Value) -> String {
    v.as_str()
        .unwrap_or_default()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
