//! `GET /metrics`: the engine's per-pipeline counters and gauges in the
//! Prometheus text format.

mod canary;
mod product;

use crate::engine::{Engine, PipelineStatus};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

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
        "weft_events_split_total",
        "counter",
        "Events a step split into child events (each child is then an event of its own).",
        |s| s.split,
    ),
    (
        "weft_events_children_total",
        "counter",
        "Child events made by splits.",
        |s| s.children,
    ),
    (
        "weft_polls_total",
        "counter",
        "Polls of the pipeline's source that answered.",
        |s| s.polls,
    ),
    (
        "weft_poll_items_total",
        "counter",
        "Items the source's polls found.",
        |s| s.polled_items,
    ),
    (
        "weft_poll_new_items_total",
        "counter",
        "Items that were new; the others had keys already taken and were skipped.",
        |s| s.polled_new,
    ),
    (
        "weft_poll_cursor_age_seconds",
        "gauge",
        "Since the source's cursor last moved (0 before it ever moved).",
        |s| s.cursor_age_ms / 1000,
    ),
    (
        "weft_queue_bytes",
        "gauge",
        "Payload bytes of the pipeline's unfinished events (kept on disk).",
        |s| s.queued_bytes,
    ),
    (
        "weft_sink_batches_total",
        "counter",
        "Batches handed to the sink in one call each (pipelines with batch set on the sink).",
        |s| s.batches,
    ),
    (
        "weft_dead_letters_expired_total",
        "counter",
        "Dead letters dropped because they were kept longer than keep_dead_letters_hours.",
        |s| s.dead_letters_expired,
    ),
    (
        "weft_events_received_total",
        "counter",
        "Webhook requests for the pipeline, accepted or not.",
        |s| s.received,
    ),
    (
        "weft_events_recovered_total",
        "counter",
        "Unfinished events found in the store at start-up and queued again.",
        |s| s.recovered,
    ),
    (
        "weft_events_replayed_total",
        "counter",
        "Dead letters replayed into the pipeline.",
        |s| s.replayed,
    ),
    (
        "weft_attempts_total",
        "counter",
        "Attempts started (each runs the steps and the sink once).",
        |s| s.attempts,
    ),
    (
        "weft_queue_oldest_age_seconds",
        "gauge",
        "Age of the oldest event accepted and not yet finished (0 when none).",
        |s| s.oldest_age_ms / 1000,
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
        |s| match s.breaker.as_str() {
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

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Render every metric.
pub fn render(engine: &Engine, live: &super::live::Live) -> String {
    let pipelines: Vec<PipelineStatus> = engine
        .pipeline_names()
        .iter()
        .filter_map(|n| engine.status(n))
        .collect();
    let mut out = String::new();
    for (name, kind, help, read) in FAMILIES {
        header(&mut out, name, kind, help);
        for p in &pipelines {
            let _ = writeln!(out, "{name}{{pipeline=\"{}\"}} {}", label(&p.name), read(p));
        }
    }
    header(
        &mut out,
        "weft_events_unaccounted",
        "gauge",
        "Reconciliation: accepted + recovered + replayed + children - (delivered + dead-lettered + filtered + split + queued); anything but 0 is an event lost or counted twice.",
    );
    for p in &pipelines {
        let _ = writeln!(
            out,
            "weft_events_unaccounted{{pipeline=\"{}\"}} {}",
            label(&p.name),
            p.unaccounted
        );
    }
    header(
        &mut out,
        "weft_events_rejected_total",
        "counter",
        "Webhook requests refused, by reason; nothing was stored for them.",
    );
    for p in &pipelines {
        for (reason, n) in &p.rejected {
            let _ = writeln!(
                out,
                "weft_events_rejected_total{{pipeline=\"{}\",reason=\"{reason}\"}} {n}",
                label(&p.name)
            );
        }
    }
    header(
        &mut out,
        "weft_poll_failures_total",
        "counter",
        "Polls that failed, by error kind (store: what was found could not be stored).",
    );
    for p in &pipelines {
        for (kind, n) in &p.poll_failures {
            let _ = writeln!(
                out,
                "weft_poll_failures_total{{pipeline=\"{}\",kind=\"{kind}\"}} {n}",
                label(&p.name)
            );
        }
    }
    header(
        &mut out,
        "weft_dlq_depth",
        "gauge",
        "Events in the dead-letter queue.",
    );
    let mut depth: std::collections::BTreeMap<String, u64> =
        pipelines.iter().map(|p| (p.name.clone(), 0)).collect();
    if let Ok(dead) = engine.store().dead_letters(None) {
        for r in dead {
            *depth.entry(r.pipeline).or_default() += 1;
        }
    }
    for (p, n) in &depth {
        let _ = writeln!(out, "weft_dlq_depth{{pipeline=\"{}\"}} {n}", label(p));
    }
    header(
        &mut out,
        "weft_event_latency_seconds",
        "histogram",
        "From accept to delivery, for delivered events (retries included).",
    );
    for p in &pipelines {
        if let Some((latency, _)) = engine.latencies(&p.name) {
            latency.render(
                &mut out,
                "weft_event_latency_seconds",
                &format!("pipeline=\"{}\"", label(&p.name)),
            );
        }
    }
    header(
        &mut out,
        "weft_step_duration_seconds",
        "histogram",
        "One call of a step or the sink, by pipeline and step.",
    );
    for p in &pipelines {
        if let Some((_, steps)) = engine.latencies(&p.name) {
            for (step, h) in steps {
                h.render(
                    &mut out,
                    "weft_step_duration_seconds",
                    &format!("pipeline=\"{}\",step=\"{}\"", label(&p.name), label(step)),
                );
            }
        }
    }
    canary::render(&mut out, engine, &pipelines);
    product::render(&mut out, &pipelines);
    let plugins = engine.plugins();
    header(
        &mut out,
        "weft_plugin_call_duration_seconds",
        "histogram",
        "Wall time of one plugin call (instantiate, configure, run).",
    );
    for (name, plugin) in &plugins {
        plugin.stats.duration.render(
            &mut out,
            "weft_plugin_call_duration_seconds",
            &format!("plugin=\"{}\"", label(name)),
        );
    }
    type PluginFamily = (
        &'static str,
        &'static str,
        &'static str,
        fn(&crate::sandbox::PluginStats) -> u64,
    );
    const PLUGIN_FAMILIES: &[PluginFamily] = &[
        ("weft_plugin_calls_total", "counter", "Plugin calls.", |s| {
            s.calls.load(Ordering::Relaxed)
        }),
        (
            "weft_plugin_call_failures_total",
            "counter",
            "Plugin calls that failed (error, trap or broken limit).",
            |s| s.failures.load(Ordering::Relaxed),
        ),
        (
            "weft_plugin_fuel_consumed_total",
            "counter",
            "Fuel the plugin's calls used (0 unless a grant sets fuel).",
            |s| s.fuel.load(Ordering::Relaxed),
        ),
        (
            "weft_plugin_memory_peak_bytes",
            "gauge",
            "The largest linear memory one call of the plugin asked for.",
            |s| s.memory_peak.load(Ordering::Relaxed),
        ),
    ];
    for (name, kind, help, read) in PLUGIN_FAMILIES {
        header(&mut out, name, kind, help);
        for (plugin, p) in &plugins {
            let _ = writeln!(
                out,
                "{name}{{plugin=\"{}\"}} {}",
                label(plugin),
                read(&p.stats)
            );
        }
    }
    header(
        &mut out,
        "weft_store_flush_seconds",
        "histogram",
        "One group commit: the batch write and the flush to disk.",
    );
    engine
        .store()
        .flush_latency()
        .render(&mut out, "weft_store_flush_seconds", "");
    let usage = engine.usage();
    for (name, help, value) in [
        (
            "weft_inflight_bytes",
            "Event bytes held in memory now: bodies being received and accepted, payloads in an attempt.",
            usage.inflight_bytes,
        ),
        (
            "weft_inflight_peak_bytes",
            "The most event bytes held in memory at once since start.",
            usage.inflight_peak_bytes,
        ),
        (
            "weft_inflight_limit_bytes",
            "server.max_inflight_bytes: past it, webhooks get 429 before their body is read.",
            usage.max_inflight_bytes,
        ),
        (
            "weft_store_disk_bytes",
            "The store's files on disk, every kind together (measured once a minute).",
            usage.store.disk_bytes,
        ),
    ] {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    header(
        &mut out,
        "weft_store_bytes",
        "gauge",
        "What the store holds by kind: payloads of queued events, of the run history and of dead letters, and plugin state (measured once a minute).",
    );
    for (kind, value) in [
        ("queued", usage.queued_bytes),
        ("history", usage.store.history_bytes),
        ("dead_letters", usage.store.dead_letter_bytes),
        ("kv", usage.store.kv_bytes),
    ] {
        let _ = writeln!(out, "weft_store_bytes{{kind=\"{kind}\"}} {value}");
    }
    header(
        &mut out,
        "weft_store_alarms",
        "gauge",
        "Integrity problems the store found when it opened (an audit log that is not intact); anything but 0 needs an operator: see the log or `weft check`.",
    );
    let _ = writeln!(out, "weft_store_alarms {}", engine.store().alarms().len());
    header(
        &mut out,
        "weft_build_info",
        "gauge",
        "Always 1; the labels say which build runs.",
    );
    let _ = writeln!(
        out,
        "weft_build_info{{version=\"{}\",revision=\"{}\",profile=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        label(env!("WEFT_GIT_REV")),
        env!("WEFT_BUILD_PROFILE")
    );
    process_metrics(&mut out);
    header(
        &mut out,
        "weft_capability_denials_total",
        "counter",
        "Plugin calls refused because they went outside the plugin's grant.",
    );
    for ((plugin, capability), n) in engine.sandbox().denial_counts() {
        let _ = writeln!(
            out,
            "weft_capability_denials_total{{plugin=\"{}\",capability=\"{capability}\"}} {n}",
            label(&plugin)
        );
    }
    header(
        &mut out,
        "weft_config_reloads_total",
        "counter",
        "Reloads of the configuration: ok (in force) or refused (nothing changed).",
    );
    let (ok, refused) = live.reload_counts();
    let _ = writeln!(out, "weft_config_reloads_total{{result=\"ok\"}} {ok}");
    let _ = writeln!(
        out,
        "weft_config_reloads_total{{result=\"refused\"}} {refused}"
    );
    header(
        &mut out,
        "weft_admin_refused_total",
        "counter",
        "Requests to the admin listener refused for their address (server.admin_allow_from), since the configuration in force.",
    );
    let _ = writeln!(
        out,
        "weft_admin_refused_total {}",
        live.current().api.gate.refused()
    );
    oauth(&mut out, engine);
    out
}

/// One OAuth metric family: name, type, help, and its value of a client.
type OAuthFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&crate::sandbox::oauth::CredentialStatus) -> f64,
);

/// OAuth clients: tokens obtained, rotations, failures, whether each has a
/// valid token and how long it has left. Only with `[oauth.…]` configured.
fn oauth(out: &mut String, engine: &Engine) {
    let clients = engine.sandbox().oauth().statuses();
    if clients.is_empty() {
        return;
    }
    let families: [OAuthFamily; 5] = [
        (
            "weft_oauth_token_refreshes_total",
            "counter",
            "Access tokens an OAuth client obtained, since the host started.",
            |c| c.refreshes as f64,
        ),
        (
            "weft_oauth_token_rotations_total",
            "counter",
            "Refresh tokens the server rotated in (each kept in the store), since the host started.",
            |c| c.rotations as f64,
        ),
        (
            "weft_oauth_token_failures_total",
            "counter",
            "Failed token requests of an OAuth client, since the host started.",
            |c| c.failures as f64,
        ),
        (
            "weft_oauth_token_valid",
            "gauge",
            "1 while an OAuth client holds a token that has not expired, 0 otherwise.",
            |c| {
                let now = crate::store::now_ms();
                f64::from(u8::from(
                    c.state == "valid" && c.valid_until_ms.is_none_or(|v| v > now),
                ))
            },
        ),
        (
            "weft_oauth_token_expires_in_seconds",
            "gauge",
            "Seconds until the current access token expires (0 without one, or when the server gave it no lifetime).",
            |c| {
                let now = crate::store::now_ms();
                c.valid_until_ms
                    .map_or(0.0, |v| v.saturating_sub(now) as f64 / 1000.0)
            },
        ),
    ];
    for (name, kind, help, value) in families {
        header(out, name, kind, help);
        for c in &clients {
            let _ = writeln!(
                out,
                "{name}{{credential=\"{}\"}} {}",
                label(&c.name),
                value(c)
            );
        }
    }
}

/// A label value, escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The process's own figures, under the names Prometheus clients use:
/// resident memory, CPU time, open files and start time (from `/proc`;
/// absent where there is none).
fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n).and_then(|v| v.parse::<u64>().ok());
    // Clock ticks a second: 100 on Linux, whatever the CPU.
    const TICKS: f64 = 100.0;
    let page = 4096u64;
    let boot_s = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let mut gauge = |name: &str, kind: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            header(out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
    };
    // After ')': state is field 0, utime 11, stime 12, starttime 19, rss 21 (pages).
    gauge(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time of the weft process.",
        field(11)
            .zip(field(12))
            .map(|(u, s)| (u + s) as f64 / TICKS),
    );
    gauge(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory of the weft process.",
        field(21).map(|p| (p * page) as f64),
    );
    gauge(
        "process_start_time_seconds",
        "gauge",
        "When the weft process started, in seconds since the Unix epoch.",
        field(19)
            .zip(boot_s)
            .map(|(t, boot)| boot as f64 + t as f64 / TICKS),
    );
    gauge(
        "process_open_fds",
        "gauge",
        "Open file descriptors of the weft process.",
        std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as f64),
    );
}
