//! Pipelines as products: the catalog as an info metric, the objectives'
//! burn rates, budgets and freshness, the quality gate, and the synthetic
//! checks.

use super::{header, label};
use crate::engine::{PipelineStatus, SliReport};
use std::fmt::Write as _;

/// A float the way Prometheus reads one.
fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

/// The catalog, objectives, quality gate and synthetic checks.
pub(super) fn render(out: &mut String, pipelines: &[PipelineStatus]) {
    header(
        out,
        "weft_pipeline_info",
        "gauge",
        "Always 1: the pipeline's catalog entry as labels (owner, tier, runbook, tags, upstream, downstream, route_of), to group and route alerts by.",
    );
    for p in pipelines {
        let c = &p.catalog;
        let _ = writeln!(
            out,
            "weft_pipeline_info{{pipeline=\"{}\",owner=\"{}\",tier=\"{}\",runbook=\"{}\",tags=\"{}\",upstream=\"{}\",downstream=\"{}\",route_of=\"{}\"}} 1",
            label(&p.name),
            label(c.owner.as_deref().unwrap_or("")),
            label(c.tier.as_deref().unwrap_or("")),
            label(c.runbook.as_deref().unwrap_or("")),
            label(&c.tags.join(",")),
            label(&c.upstream.join(",")),
            label(&c.downstream.join(",")),
            label(p.route_of.as_deref().unwrap_or("")),
        );
    }
    let slis: Vec<(String, &str, &SliReport)> = pipelines
        .iter()
        .filter_map(|p| p.objectives.as_ref().map(|o| (label(&p.name), o)))
        .flat_map(|(name, o)| {
            [("success", &o.success), ("latency", &o.latency)]
                .into_iter()
                .filter_map(move |(slo, r)| r.as_ref().map(|r| (name.clone(), slo, r)))
        })
        .collect();
    header(
        out,
        "weft_slo_objective",
        "gauge",
        "The objective: the share of good events promised (success: delivered rather than dead-lettered; latency: delivered within the objective's time).",
    );
    for (name, slo, r) in &slis {
        let _ = writeln!(
            out,
            "weft_slo_objective{{pipeline=\"{name}\",slo=\"{slo}\"}} {}",
            number(r.objective)
        );
    }
    header(
        out,
        "weft_slo_burn_rate",
        "gauge",
        "How fast the error budget burns over the window: the window's share of bad events over the share the objective allows (1 spends the budget exactly over its period).",
    );
    for (name, slo, r) in &slis {
        for (window, rate) in &r.burn_rates {
            let _ = writeln!(
                out,
                "weft_slo_burn_rate{{pipeline=\"{name}\",slo=\"{slo}\",window=\"{window}\"}} {}",
                number(*rate)
            );
        }
    }
    header(
        out,
        "weft_slo_error_budget_remaining",
        "gauge",
        "Share of the error budget left over its period (budget_days); below 0 it is overspent.",
    );
    for (name, slo, r) in &slis {
        let _ = writeln!(
            out,
            "weft_slo_error_budget_remaining{{pipeline=\"{name}\",slo=\"{slo}\"}} {}",
            number(r.budget_remaining)
        );
    }
    let fresh: Vec<_> = pipelines
        .iter()
        .filter_map(|p| {
            let f = p.objectives.as_ref()?.freshness.as_ref()?;
            Some((label(&p.name), f))
        })
        .collect();
    header(
        out,
        "weft_slo_freshness_stale_seconds",
        "gauge",
        "How long events have waited with no delivery (0 when none wait).",
    );
    for (name, f) in &fresh {
        let _ = writeln!(
            out,
            "weft_slo_freshness_stale_seconds{{pipeline=\"{name}\"}} {}",
            f.stale_s
        );
    }
    header(
        out,
        "weft_slo_freshness_limit_seconds",
        "gauge",
        "The freshness objective: longest allowed without a delivery while events wait.",
    );
    for (name, f) in &fresh {
        let _ = writeln!(
            out,
            "weft_slo_freshness_limit_seconds{{pipeline=\"{name}\"}} {}",
            f.limit_s
        );
    }
    let gates: Vec<_> = pipelines
        .iter()
        .filter_map(|p| Some((label(&p.name), p.objectives.as_ref()?.quality.as_ref()?)))
        .collect();
    header(
        out,
        "weft_quality_invalid_ratio",
        "gauge",
        "Share of events over the quality gate's window that broke the contract or were dead-lettered as invalid-input.",
    );
    for (name, q) in &gates {
        let _ = writeln!(
            out,
            "weft_quality_invalid_ratio{{pipeline=\"{name}\"}} {}",
            number(q.invalid_ratio)
        );
    }
    header(
        out,
        "weft_quality_gate_tripped",
        "gauge",
        "Whether the quality gate has acted (paused delivery, or warns under dead-letter-only) and stands tripped.",
    );
    for (name, q) in &gates {
        let _ = writeln!(
            out,
            "weft_quality_gate_tripped{{pipeline=\"{name}\"}} {}",
            u8::from(q.tripped.is_some())
        );
    }
    let checks: Vec<_> = pipelines
        .iter()
        .flat_map(|p| p.synthetic.iter().map(move |c| (label(&p.name), c)))
        .collect();
    header(
        out,
        "weft_synthetic_runs_total",
        "counter",
        "Synthetic check runs by result: sent into the pipeline, ok (reached a sink), failed (dead-lettered, filtered or refused).",
    );
    for (name, c) in &checks {
        for (result, n) in [("sent", c.sent), ("ok", c.ok), ("failed", c.failed)] {
            let _ = writeln!(
                out,
                "weft_synthetic_runs_total{{pipeline=\"{name}\",check=\"{}\",result=\"{result}\"}} {n}",
                label(&c.check)
            );
        }
    }
    header(
        out,
        "weft_synthetic_last_success_timestamp_seconds",
        "gauge",
        "When the check last reached a sink, in seconds since the epoch (0: not since start).",
    );
    for (name, c) in &checks {
        let _ = writeln!(
            out,
            "weft_synthetic_last_success_timestamp_seconds{{pipeline=\"{name}\",check=\"{}\"}} {}",
            label(&c.check),
            c.last_ok_ms / 1000
        );
    }
    header(
        out,
        "weft_synthetic_latency_seconds",
        "gauge",
        "Accept to delivery of the check's last success.",
    );
    for (name, c) in &checks {
        let _ = writeln!(
            out,
            "weft_synthetic_latency_seconds{{pipeline=\"{name}\",check=\"{}\"}} {}",
            label(&c.check),
            number(c.last_latency_ms as f64 / 1000.0)
        );
    }
}
