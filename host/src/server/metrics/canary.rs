//! The canaries' metrics: state, rollbacks, calls and failures of each
//! version, and call latency.

use super::{header, label};
use crate::engine::{Engine, PipelineStatus};
use std::fmt::Write as _;

/// Canaries: state, calls and failures of each version, latency, rollbacks.
pub(super) fn render(out: &mut String, engine: &Engine, pipelines: &[PipelineStatus]) {
    use crate::engine::{CanaryState, CanaryView, VersionView};
    // Every canary with its labels, and every version of it with its own.
    let all: Vec<(String, &CanaryView)> = pipelines
        .iter()
        .flat_map(|p| {
            p.canaries.iter().map(|c| {
                (
                    format!(
                        "pipeline=\"{}\",step=\"{}\"",
                        label(&p.name),
                        label(&c.step)
                    ),
                    c,
                )
            })
        })
        .collect();
    let versions = || {
        all.iter().flat_map(|(at, c)| {
            c.versions.iter().map(move |v: &VersionView| {
                (
                    format!(
                        "{at},version=\"{}\",plugin=\"{}\"",
                        v.version,
                        label(&v.plugin)
                    ),
                    v,
                )
            })
        })
    };
    header(
        out,
        "weft_canary_state",
        "gauge",
        "A canary's state: 0 running, 1 rolled back, 2 promoted.",
    );
    for (at, c) in &all {
        let code = match c.state {
            CanaryState::Running => 0,
            CanaryState::RolledBack => 1,
            CanaryState::Promoted => 2,
        };
        let _ = writeln!(
            out,
            "weft_canary_state{{{at},candidate=\"{}\"}} {code}",
            label(&c.candidate)
        );
    }
    header(
        out,
        "weft_canary_rollbacks_total",
        "counter",
        "Canaries rolled back (automatically or by hand) since start.",
    );
    for (at, c) in &all {
        let _ = writeln!(out, "weft_canary_rollbacks_total{{{at}}} {}", c.rollbacks);
    }
    header(
        out,
        "weft_canary_calls_total",
        "counter",
        "Calls of each version of a step with a canary (baseline, candidate).",
    );
    for (at, v) in versions() {
        let _ = writeln!(out, "weft_canary_calls_total{{{at}}} {}", v.calls);
    }
    header(
        out,
        "weft_canary_failures_total",
        "counter",
        "Failed calls of each version of a step with a canary, by error kind.",
    );
    for (at, v) in versions() {
        for (kind, n) in &v.failures {
            let _ = writeln!(
                out,
                "weft_canary_failures_total{{{at},kind=\"{kind}\"}} {n}"
            );
        }
    }
    header(
        out,
        "weft_canary_call_duration_seconds",
        "histogram",
        "One call of each version of a step with a canary.",
    );
    for p in pipelines {
        for (step, hs) in engine.canary_latencies(&p.name) {
            for (version, h) in ["baseline", "candidate"].iter().zip(hs) {
                let at = format!("pipeline=\"{}\",step=\"{}\"", label(&p.name), label(&step));
                h.render(
                    out,
                    "weft_canary_call_duration_seconds",
                    &format!("{at},version=\"{version}\""),
                );
            }
        }
    }
}
