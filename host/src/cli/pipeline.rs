//! `weft pipeline`: pause, resume, and the status table with its
//! reconciliation check.

use super::HostArg;
use super::admin::connect;
use anyhow::{Result, bail};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(super) enum PipelineCommand {
    /// Stop delivering (events are still accepted); survives a restart.
    /// The pipelines as products: owner, tier, description, runbook, tags,
    /// upstream and downstream systems, routes.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
    Pause {
        /// Pipeline name.
        name: String,
        #[command(flatten)]
        host: HostArg,
    },
    /// Delete for good the queued events of a pipeline that is no longer
    /// configured (they wait in the store for it to come back otherwise).
    Purge {
        /// Pipeline name.
        name: String,
        #[command(flatten)]
        host: HostArg,
    },
    /// Deliver again.
    Resume {
        /// Pipeline name.
        name: String,
        #[command(flatten)]
        host: HostArg,
    },
    /// Counters, queue depth, breaker state and pause state of the pipelines.
    Status {
        /// Only this pipeline.
        name: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        host: HostArg,
    },
}

impl PipelineCommand {
    pub(super) async fn run(self) -> Result<()> {
        match self {
            PipelineCommand::Pause { name, host } => set(&host, name, true).await,
            PipelineCommand::Resume { name, host } => set(&host, name, false).await,
            PipelineCommand::Status { name, json, host } => status(&host, name, json).await,
            PipelineCommand::List { json, host } => list(&host, json).await,
            PipelineCommand::Purge { name, host } => {
                let admin = connect(&host).await?;
                let n = admin.purge_queued(name.clone()).await?;
                println!("pipeline {name}: {n} queued events deleted");
                Ok(())
            }
        }
    }
}

async fn set(host: &HostArg, name: String, pause: bool) -> Result<()> {
    let admin = connect(host).await?;
    admin.set_paused(name.clone(), pause).await?;
    let done = if pause { "paused" } else { "resumed" };
    if admin.is_local() {
        println!(
            "pipeline {name}: {done} (no host is running; it takes effect when `weft run` starts)"
        );
    } else {
        println!("pipeline {name}: {done}");
    }
    Ok(())
}

async fn list(host: &HostArg, as_json: bool) -> Result<()> {
    let admin = connect(host).await?;
    let list = admin.pipelines().await?;
    if as_json {
        let catalog: Vec<_> = list
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "catalog": p.catalog,
                    "route_of": p.route_of,
                    "routes": p.routes,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    println!(
        "{:<22} {:<16} {:<6} {:<24} {:<24} DESCRIPTION",
        "PIPELINE", "OWNER", "TIER", "UPSTREAM", "DOWNSTREAM"
    );
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let joined = |v: &[String]| {
        if v.is_empty() {
            "-".into()
        } else {
            v.join(",")
        }
    };
    for p in &list {
        let c = &p.catalog;
        let what = match (&p.route_of, p.routes.is_empty()) {
            (Some(parent), _) => format!("route of {parent}"),
            (None, false) => format!("{} (routes: {})", dash(&c.description), p.routes.join(", ")),
            (None, true) => dash(&c.description),
        };
        println!(
            "{:<22} {:<16} {:<6} {:<24} {:<24} {}",
            p.name,
            dash(&c.owner),
            dash(&c.tier),
            joined(&c.upstream),
            joined(&c.downstream),
            what
        );
        if let Some(r) = &c.runbook {
            println!("{:<22} runbook {r}", "");
        }
        if !c.tags.is_empty() {
            println!("{:<22} tags {}", "", c.tags.join(", "));
        }
    }
    Ok(())
}

/// The objectives, quality gate, synthetic checks and pause reason of
/// each pipeline, one line each.
fn print_products(list: &[crate::engine::PipelineStatus]) {
    for p in list {
        if let Some(why) = p.pause_reason.as_ref().filter(|_| p.paused) {
            println!("{}: paused: {why}", p.name);
        }
        let Some(o) = &p.objectives else {
            continue;
        };
        for (slo, r) in [("success", &o.success), ("latency", &o.latency)] {
            let Some(r) = r else { continue };
            let burn = |w: &str| r.burn_rates.get(w).copied().unwrap_or(0.0);
            println!(
                "{} slo {slo} {:.3}%: budget left {:.1}% ({} of {} good); burn 5m {:.2}×, 1h {:.2}×, 6h {:.2}×, 3d {:.2}×{}",
                p.name,
                r.objective * 100.0,
                r.budget_remaining * 100.0,
                r.good,
                r.total,
                burn("5m"),
                burn("1h"),
                burn("6h"),
                burn("3d"),
                if r.alerts.is_empty() {
                    String::new()
                } else {
                    format!("; ALERT {}", r.alerts.join("; "))
                }
            );
        }
        if let Some(f) = &o.freshness {
            println!(
                "{} slo freshness {}s: {} (no delivery for {}s while events wait)",
                p.name,
                f.limit_s,
                if f.ok { "ok" } else { "VIOLATED" },
                f.stale_s
            );
        }
        if let Some(q) = &o.quality {
            println!(
                "{} quality: {:.1}% invalid of {} events (max {:.1}%, action {}), sink errors {:.1}%{}",
                p.name,
                q.invalid_ratio * 100.0,
                q.window_events,
                q.max_invalid_ratio * 100.0,
                q.action,
                q.sink_error_ratio * 100.0,
                q.tripped
                    .as_ref()
                    .map_or(String::new(), |t| format!("; TRIPPED: {t}"))
            );
        }
    }
    for p in list {
        for c in &p.synthetic {
            println!(
                "{} synthetic {}: sent {}, ok {}, failed {}; last success {}{}",
                p.name,
                c.check,
                c.sent,
                c.ok,
                c.failed,
                if c.last_ok_ms == 0 {
                    "never".to_string()
                } else {
                    format!(
                        "{} ({} ms)",
                        crate::engine::rfc3339(c.last_ok_ms),
                        c.last_latency_ms
                    )
                },
                c.last_error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; last error: {e}"))
            );
        }
    }
}

async fn status(host: &HostArg, name: Option<String>, as_json: bool) -> Result<()> {
    let admin = connect(host).await?;
    let list: Vec<_> = admin
        .pipelines()
        .await?
        .into_iter()
        .filter(|p| name.as_deref().is_none_or(|n| p.name == n))
        .collect();
    if as_json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if admin.is_local() {
        println!(
            "no host is running: from the store (counters since start need a running host; lifetime counters are below)"
        );
    }
    println!(
        "{:<14} {:<7} {:<9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>6} {:>8} {:>6} {:>5} {:>9}  RECONCILED",
        "PIPELINE",
        "STATE",
        "BREAKER",
        "QUEUED",
        "OLDEST",
        "ACCEPTED",
        "DELIVERED",
        "FILTERED",
        "SPLIT",
        "RETRIED",
        "DEAD",
        "DLQ",
        "IN FLIGHT"
    );
    let mut unbalanced = Vec::new();
    for p in &list {
        let oldest = match p.oldest_age_ms {
            0 => "-".to_string(),
            ms => humantime::format_duration(
                std::time::Duration::from_secs(ms / 1000).max(std::time::Duration::from_secs(1)),
            )
            .to_string(),
        };
        println!(
            "{:<14} {:<7} {:<9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>6} {:>8} {:>6} {:>5} {:>9}  {}",
            p.name,
            if p.paused { "paused" } else { "running" },
            p.breaker,
            p.queued,
            oldest,
            p.accepted + p.recovered + p.replayed + p.children,
            p.delivered,
            p.filtered,
            p.split,
            p.retried,
            p.dead_lettered,
            p.dead_letters,
            p.in_flight,
            if p.unaccounted == 0 {
                "yes".to_string()
            } else {
                format!("NO ({} unaccounted)", p.unaccounted)
            }
        );
        if p.unaccounted != 0 {
            unbalanced.push(p.name.clone());
        }
    }
    println!(
        "ACCEPTED counts events accepted, recovered at start, replayed and split off as children since start; it equals DELIVERED + FILTERED + SPLIT + DEAD + QUEUED when nothing was lost. DEAD counts dead-lettering since start; DLQ is what the dead-letter queue holds now."
    );
    println!("since the first start:");
    for p in &list {
        let t = &p.lifetime;
        println!(
            "  {:<14} accepted {}, delivered {}, filtered {}, split {}, dead-lettered {}, replayed {}, retried {}, duplicates {}",
            p.name,
            t.accepted,
            t.delivered,
            t.filtered,
            t.split,
            t.dead_lettered,
            t.replayed,
            t.retried,
            t.duplicates
        );
    }
    for p in &list {
        for c in &p.canaries {
            let [base, cand] = &c.versions;
            let failed = |v: &crate::engine::VersionView| v.failures.values().sum::<u64>();
            println!(
                "canary {} {}: {} at {:.0}% against {}: {}; candidate {} calls, {} failed; baseline {} calls, {} failed{}",
                p.name,
                c.step,
                c.candidate,
                c.share * 100.0,
                c.baseline,
                c.state.as_str(),
                cand.calls,
                failed(cand),
                base.calls,
                failed(base),
                if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.reason)
                }
            );
        }
    }
    print_products(&list);
    let usage = admin.usage().await;
    if let Ok(u) = &usage {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0));
        println!(
            "memory: {} of events in flight (peak {}, limit {} = server.max_inflight_bytes)",
            mib(u.inflight_bytes),
            mib(u.inflight_peak_bytes),
            mib(u.max_inflight_bytes)
        );
        let s = &u.store;
        println!(
            "store: {} on disk; payloads: queued {}, history {} ({} events), dead letters {} ({} events); plugin state {}",
            mib(s.disk_bytes),
            mib(u.queued_bytes),
            mib(s.history_bytes),
            s.history_events,
            mib(s.dead_letter_bytes),
            s.dead_letter_events,
            mib(s.kv_bytes)
        );
    }
    if let Some(why) = usage.ok().and_then(|u| u.store_failing) {
        bail!(
            "the store cannot write: {why}. Senders get 503 and /readyz says not ready; weft retries the store by itself and is ready again once the cause is gone (free space on the data volume; `weft check` shows how much the compiled cache takes)"
        );
    }
    if !unbalanced.is_empty() {
        bail!(
            "events unaccounted for in {}; see the log for events that went missing",
            unbalanced.join(", ")
        );
    }
    Ok(())
}
