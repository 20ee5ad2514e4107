//! Pipelines as products: the catalog as an info metric, the objectives'
//! burn rates, budgets and freshness, the quality gate, and the synthetic
//! checks.

use super::{header, label};
use crate::engine::PipelineStatus;
use std::fmt::Write as _;

/// A float the way Prometheus reads one.
fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

/// One family: its header, then a sample for each (labels, value).
fn family(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    samples: impl IntoIterator<Item = (String, String)>,
) {
    header(out, name, kind, help);
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The catalog, objectives, quality gate and synthetic checks.
pub(super) fn render(out: &mut String, pipelines: &[PipelineStatus]) {
    family(
        out,
        (
            "weft_pipeline_info",
            "gauge",
            "Always 1: the pipeline's catalog entry as labels (owner, tier, runbook, tags, upstream, downstream, route_of), to group and route alerts by.",
        ),
        pipelines.iter().map(|p| {
            let c = &p.catalog;
            let or_empty = |v: &Option<String>| label(v.as_deref().unwrap_or(""));
            let labels = format!(
                "pipeline=\"{}\",owner=\"{}\",tier=\"{}\",runbook=\"{}\",tags=\"{}\",upstream=\"{}\",downstream=\"{}\",route_of=\"{}\"",
                label(&p.name),
                or_empty(&c.owner),
                or_empty(&c.tier),
                or_empty(&c.runbook),
                label(&c.tags.join(",")),
                label(&c.upstream.join(",")),
                label(&c.downstream.join(",")),
                or_empty(&p.route_of),
            );
            (labels, "1".to_string())
        }),
    );
    // (pipeline="…",slo="…", its report) of every objective.
    let slis: Vec<_> = pipelines
        .iter()
        .filter_map(|p| p.objectives.as_ref().map(|o| (label(&p.name), o)))
        .flat_map(|(name, o)| {
            [("success", &o.success), ("latency", &o.latency)]
                .into_iter()
                .filter_map(move |(slo, r)| {
                    r.as_ref()
                        .map(|r| (format!("pipeline=\"{name}\",slo=\"{slo}\""), r))
                })
        })
        .collect();
    family(
        out,
        (
            "weft_slo_objective",
            "gauge",
            "The objective: the share of good events promised (success: delivered rather than dead-lettered; latency: delivered within the objective's time).",
        ),
        slis.iter().map(|(at, r)| (at.clone(), number(r.objective))),
    );
    family(
        out,
        (
            "weft_slo_burn_rate",
            "gauge",
            "How fast the error budget burns over the window: the window's share of bad events over the share the objective allows (1 spends the budget exactly over its period).",
        ),
        slis.iter().flat_map(|(at, r)| {
            r.burn_rates
                .iter()
                .map(move |(window, rate)| (format!("{at},window=\"{window}\""), number(*rate)))
        }),
    );
    family(
        out,
        (
            "weft_slo_error_budget_remaining",
            "gauge",
            "Share of the error budget left over its period (budget_days); below 0 it is overspent.",
        ),
        slis.iter()
            .map(|(at, r)| (at.clone(), number(r.budget_remaining))),
    );
    let at = |p: &PipelineStatus| format!("pipeline=\"{}\"", label(&p.name));
    let fresh: Vec<_> = pipelines
        .iter()
        .filter_map(|p| Some((at(p), p.objectives.as_ref()?.freshness.as_ref()?)))
        .collect();
    family(
        out,
        (
            "weft_slo_freshness_stale_seconds",
            "gauge",
            "How long events have waited with no delivery (0 when none wait).",
        ),
        fresh
            .iter()
            .map(|(at, f)| (at.clone(), f.stale_s.to_string())),
    );
    family(
        out,
        (
            "weft_slo_freshness_limit_seconds",
            "gauge",
            "The freshness objective: longest allowed without a delivery while events wait.",
        ),
        fresh
            .iter()
            .map(|(at, f)| (at.clone(), f.limit_s.to_string())),
    );
    let gates: Vec<_> = pipelines
        .iter()
        .filter_map(|p| Some((at(p), p.objectives.as_ref()?.quality.as_ref()?)))
        .collect();
    family(
        out,
        (
            "weft_quality_invalid_ratio",
            "gauge",
            "Share of events over the quality gate's window that broke the contract or were dead-lettered as invalid-input.",
        ),
        gates
            .iter()
            .map(|(at, q)| (at.clone(), number(q.invalid_ratio))),
    );
    family(
        out,
        (
            "weft_quality_gate_tripped",
            "gauge",
            "Whether the quality gate has acted (paused delivery, or warns under dead-letter-only) and stands tripped.",
        ),
        gates
            .iter()
            .map(|(at, q)| (at.clone(), u8::from(q.tripped.is_some()).to_string())),
    );
    let checks: Vec<_> = pipelines
        .iter()
        .flat_map(|p| {
            p.synthetic
                .iter()
                .map(move |c| (format!("{},check=\"{}\"", at(p), label(&c.check)), c))
        })
        .collect();
    family(
        out,
        (
            "weft_synthetic_runs_total",
            "counter",
            "Synthetic check runs by result: sent into the pipeline, ok (reached a sink), failed (dead-lettered, filtered or refused).",
        ),
        checks.iter().flat_map(|(at, c)| {
            [("sent", c.sent), ("ok", c.ok), ("failed", c.failed)]
                .map(|(result, n)| (format!("{at},result=\"{result}\""), n.to_string()))
        }),
    );
    family(
        out,
        (
            "weft_synthetic_last_success_timestamp_seconds",
            "gauge",
            "When the check last reached a sink, in seconds since the epoch (0: not since start).",
        ),
        checks
            .iter()
            .map(|(at, c)| (at.clone(), (c.last_ok_ms / 1000).to_string())),
    );
    family(
        out,
        (
            "weft_synthetic_latency_seconds",
            "gauge",
            "Accept to delivery of the check's last success.",
        ),
        checks
            .iter()
            .map(|(at, c)| (at.clone(), number(c.last_latency_ms as f64 / 1000.0))),
    );
}
