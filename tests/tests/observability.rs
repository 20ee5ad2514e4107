//! Observability: /metrics parses as the Prometheus text format and moves as
//! a scripted run (accept, retry, filter, dead letter, replay, rejections)
//! says it must; the reconciliation identity holds; every admin endpoint
//! against every role; and the audit log records admin calls and catches
//! tampering.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_host::store::Store;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, metric, parse_metrics, post_json,
    send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(120);

async fn scrape(host: &RunningHost) -> Vec<weft_tests::Sample> {
    let client = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let reply = client
        .call(hyper::Method::GET, "/metrics", None, &[])
        .await
        .unwrap();
    let text = reply.body.as_str().unwrap_or_default().to_string();
    parse_metrics(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

/// Every `weft_*` family the shipped Grafana dashboard queries.
fn dashboard_families() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grafana/weft-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("weft_") {
                    names.push(token.trim_end_matches("_bucket").to_string());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Pipeline `p` (the lead pipeline, quick retries, no breaker) to a
/// receiver that refuses each key once with `status`.
async fn refusing_once(status: u16) -> (Receiver, HostSetup) {
    let receiver = Receiver::start(Behavior::FailFirst {
        failures: 1,
        status,
    })
    .await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("p", &receiver.url("/p"))
            .retry("max_attempts = 5, initial_ms = 10, max_ms = 50")
            .with("breaker = { enabled = false }")],
    )
    .unwrap();
    (receiver, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_follow_a_scripted_run_and_reconcile() {
    let (receiver, setup) = refusing_once(500).await;
    let host = RunningHost::start(setup.config()).await.unwrap();
    let before = scrape(&host).await;
    let client = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let text = client
        .call(hyper::Method::GET, "/metrics", None, &[])
        .await
        .unwrap()
        .body;
    let text = text.as_str().unwrap_or_default();
    let families = dashboard_families();
    assert!(families.len() >= 15, "{families:?}");
    for family in families {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the Grafana dashboard queries {family}, which /metrics does not have"
        );
    }
    assert_eq!(
        metric(&before, "weft_events_accepted_total", &[("pipeline", "p")]),
        Some(0.0)
    );
    assert_eq!(
        metric(&before, "weft_events_unaccounted", &[("pipeline", "p")]),
        Some(0.0)
    );

    // Two good leads (each refused once, then delivered), one without an
    // email (filtered), one with a bad date (dead-lettered).
    for (id, body) in [
        ("ok-1", lead("ok-1", 1)),
        ("ok-2", lead("ok-2", 2)),
        (
            "no-email",
            serde_json::json!({ "id": "no-email", "created": "01/02/2026" }),
        ),
        (
            "bad-date",
            serde_json::json!({ "id": "bad-date", "email": "x@y.example", "created": "2026-05-11" }),
        ),
    ] {
        let (status, _) = send_event(&host, "p", &body).await;
        assert_eq!(status, 202, "{id}");
    }
    // Two rejections, for two reasons.
    let url = format!("http://{}/hooks/p", host.addr);
    assert_eq!(
        post_json(&url, b"{not json", "application/json").await.0,
        400
    );
    assert_eq!(post_json(&url, b"{}", "text/plain").await.0, 415);

    let status = || host.engine().status("p").unwrap();
    assert!(
        wait_until(WAIT, || {
            let s = status();
            s.delivered == 2 && s.filtered == 1 && s.dead_lettered == 1 && s.queued == 0
        })
        .await,
        "{:?}",
        status()
    );
    let m = scrape(&host).await;
    let p = [("pipeline", "p")];
    let get = |name: &str| metric(&m, name, &p).unwrap_or_else(|| panic!("no {name}"));
    assert_eq!(get("weft_events_received_total"), 6.0);
    assert_eq!(get("weft_events_accepted_total"), 4.0);
    assert_eq!(get("weft_events_delivered_total"), 2.0);
    assert_eq!(get("weft_events_filtered_total"), 1.0);
    assert_eq!(get("weft_events_dead_lettered_total"), 1.0);
    assert_eq!(get("weft_attempts_retried_total"), 2.0);
    assert_eq!(
        get("weft_attempts_total"),
        6.0,
        "4 first attempts and 2 retries"
    );
    assert_eq!(get("weft_dlq_depth"), 1.0);
    assert_eq!(get("weft_queue_depth"), 0.0);
    assert_eq!(get("weft_events_unaccounted"), 0.0);
    assert_eq!(get("weft_event_latency_seconds_count"), 2.0);
    assert_eq!(
        metric(
            &m,
            "weft_events_rejected_total",
            &[("pipeline", "p"), ("reason", "invalid_json")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "weft_events_rejected_total",
            &[("pipeline", "p"), ("reason", "unsupported_media_type")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "weft_step_duration_seconds_count",
            &[("pipeline", "p"), ("step", "sink (http-sink)")]
        ),
        Some(4.0),
        "the sink ran for the two good leads, twice each"
    );
    assert_eq!(
        metric(&m, "weft_plugin_calls_total", &[("plugin", "http-sink")]),
        Some(7.0),
        "four deliveries and the three checks at start (schema, config, plan)"
    );
    assert_eq!(
        metric(
            &m,
            "weft_plugin_call_failures_total",
            &[("plugin", "http-sink")]
        ),
        Some(2.0)
    );
    assert!(
        metric(
            &m,
            "weft_plugin_memory_peak_bytes",
            &[("plugin", "json-map")]
        )
        .unwrap()
            > 0.0
    );
    assert!(metric(&m, "weft_store_flush_seconds_count", &[]).unwrap() >= 4.0);

    // Replay the dead letter: it fails again, and the books still balance.
    let client = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let reply = client
        .call(
            hyper::Method::POST,
            "/api/v1/dlq/replay",
            Some(br#"{"all": true}"#.to_vec()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(wait_until(WAIT, || status().dead_lettered == 2 && status().queued == 0).await);
    let m = scrape(&host).await;
    let get = |name: &str| metric(&m, name, &p).unwrap();
    assert_eq!(get("weft_events_replayed_total"), 1.0);
    assert_eq!(get("weft_events_dead_lettered_total"), 2.0);
    assert_eq!(get("weft_dlq_depth"), 1.0);
    assert_eq!(get("weft_events_unaccounted"), 0.0);
    let s = status();
    assert_eq!(
        s.accepted + s.recovered + s.replayed,
        s.delivered + s.dead_lettered + s.filtered + s.queued,
        "reconciliation: {s:?}"
    );
    host.shutdown().await;

    // After a restart with work left over, recovered events balance too.
    receiver.set_behavior(Behavior::Always(503));
    let host = RunningHost::start(setup.config()).await.unwrap();
    send_event(&host, "p", &lead("late", 9)).await;
    host.shutdown().await;
    let host = RunningHost::start(setup.config()).await.unwrap();
    let s = host.engine().status("p").unwrap();
    assert_eq!(s.recovered, 1, "{s:?}");
    assert_eq!(s.unaccounted, 0, "{s:?}");
    assert!(s.oldest_age_ms < 600_000, "{s:?}");
    host.shutdown().await;
}

const ROLES: [(&str, &str); 3] = [
    ("viewer", "VIEWER_TOKEN"),
    ("operator", "OPERATOR_TOKEN"),
    ("admin", "ADMIN_TOKEN"),
];

fn token_value(role: &str) -> String {
    format!("{role}-token-9d3f0a1b7c")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_endpoint_checks_the_role_of_every_token() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let mut extra = String::new();
    for (role, secret) in ROLES {
        extra.push_str(&format!(
            "[[admin.tokens]]\nname = \"{role}-bot\"\nrole = \"{role}\"\nsecret = \"{secret}\"\n"
        ));
    }
    let setup = HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("p", &receiver.url("/p"))],
        &extra,
    )
    .unwrap();
    // [[admin.tokens]] after [grants.http-sink] is a table of its own; the
    // values come from the secrets file.
    let values: Vec<(&str, String)> = ROLES
        .iter()
        .map(|(role, secret)| (*secret, token_value(role)))
        .collect();
    let pairs: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let setup = setup.with_secrets(&pairs).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let (_, accepted) = send_event(&host, "p", &lead("e-1", 1)).await;
    let id = accepted["id"].as_str().unwrap().to_string();

    let endpoints: Vec<(hyper::Method, String, Option<&str>, &str)> = vec![
        (
            hyper::Method::GET,
            "/api/v1/pipelines".into(),
            None,
            "viewer",
        ),
        (
            hyper::Method::GET,
            "/api/v1/pipelines/p".into(),
            None,
            "viewer",
        ),
        (hyper::Method::GET, "/api/v1/dlq".into(), None, "viewer"),
        (
            hyper::Method::GET,
            format!("/api/v1/events/{id}"),
            None,
            "viewer",
        ),
        (hyper::Method::GET, "/api/v1/plugins".into(), None, "viewer"),
        (
            hyper::Method::POST,
            "/api/v1/pipelines/p/pause".into(),
            None,
            "operator",
        ),
        (
            hyper::Method::POST,
            "/api/v1/pipelines/p/resume".into(),
            None,
            "operator",
        ),
        (
            hyper::Method::POST,
            "/api/v1/dlq/replay".into(),
            Some(r#"{"all": true, "pipeline": "p"}"#),
            "operator",
        ),
        (
            hyper::Method::POST,
            "/api/v1/dlq/purge".into(),
            Some(r#"{"all": true, "pipeline": "p"}"#),
            "admin",
        ),
        (
            hyper::Method::POST,
            "/api/v1/pipelines/gone/purge".into(),
            Some("{}"),
            "admin",
        ),
    ];
    let rank = |r: &str| {
        ["viewer", "operator", "admin"]
            .iter()
            .position(|x| *x == r)
            .unwrap()
    };
    let base = format!("http://{}", host.admin_addr);
    for (n, (method, path, body, needs)) in endpoints.iter().enumerate() {
        // No token and a wrong one by turns: past 20 failed logins a
        // minute the address is answered 429 (tested below).
        let bad = if n % 2 == 0 {
            None
        } else {
            Some("wrong-token-value".to_string())
        };
        let token = bad;
        let client = weft_host::client::HostClient::new(&base, token.clone());
        let reply = client
            .call(
                method.clone(),
                path,
                body.map(|b| b.as_bytes().to_vec()),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            reply.status, 401,
            "{method} {path} with {token:?}: {}",
            reply.body
        );
        for (role, _) in ROLES {
            let client = weft_host::client::HostClient::new(&base, Some(token_value(role)));
            let reply = client
                .call(
                    method.clone(),
                    path,
                    body.map(|b| b.as_bytes().to_vec()),
                    &[],
                )
                .await
                .unwrap();
            let expected = if rank(role) >= rank(needs) { 200 } else { 403 };
            assert_eq!(
                reply.status, expected,
                "{method} {path} as {role}: {}",
                reply.body
            );
            let text = reply.body.to_string();
            for (r, _) in ROLES {
                assert!(
                    !text.contains(&token_value(r)),
                    "a token leaked into an answer"
                );
            }
        }
    }
    // A reload needs the admin role (this host has no file to reload from:
    // past the role check it says so).
    for (role, _) in ROLES {
        let reply = weft_host::client::HostClient::new(&base, Some(token_value(role)))
            .call(
                hyper::Method::POST,
                "/api/v1/reload",
                Some(b"{}".to_vec()),
                &[],
            )
            .await
            .unwrap();
        let expected = if role == "admin" { 422 } else { 403 };
        assert_eq!(reply.status, expected, "reload as {role}: {}", reply.body);
    }
    let plugins = weft_host::client::HostClient::new(&base, Some(token_value("viewer")))
        .call(hyper::Method::GET, "/api/v1/plugins", None, &[])
        .await
        .unwrap();
    let sink = plugins.body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http-sink")
        .unwrap()
        .clone();
    assert_eq!(
        sink["grant"]["http"][0],
        weft_tests::origin_of(&receiver.url("/p"))
    );
    assert_eq!(sink["world"], "weft:plugin/sink@0.1.0");
    host.shutdown().await;

    // Every mutating call is in the audit log under the token's name,
    // refusals included, and the chain verifies.
    let store = weft_host::store::SledStore::open(&setup.data_dir()).unwrap();
    let records = store.audit().records(0).unwrap();
    let admin: Vec<(String, String)> = records
        .iter()
        .filter(|r| r.kind == "admin")
        .map(|r| (r.actor.clone(), r.action.clone()))
        .collect();
    for expected in [
        ("operator-bot", "pause"),
        ("admin-bot", "resume"),
        ("operator-bot", "dlq-replay"),
        ("admin-bot", "dlq-purge"),
        ("viewer-bot", "refused"),
        ("operator-bot", "refused"),
    ] {
        assert!(
            admin
                .iter()
                .any(|(a, b)| (a.as_str(), b.as_str()) == expected),
            "{expected:?} not in {admin:?}"
        );
    }
    assert_eq!(store.audit().verify(), Ok(records.len() as u64));
    // Change one record behind the log's back: verification names it.
    let tree = store.audit_tree();
    let (index, key, value) = tree
        .iter()
        .filter_map(Result::ok)
        .enumerate()
        .find(|(_, (_, v))| String::from_utf8_lossy(v).contains("operator-bot"))
        .map(|(i, (k, v))| (i as u64, k, v))
        .unwrap();
    let forged = String::from_utf8(value.to_vec())
        .unwrap()
        .replace("operator-bot", "nobody");
    tree.insert(key, forged.as_bytes()).unwrap();
    assert_eq!(store.audit().verify().unwrap_err().index, index);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_history_has_every_step_and_keeps_the_newest_events() {
    let (_receiver, setup) = refusing_once(503).await;
    let setup = setup.server_line("keep_history_events = 3").unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..6 {
        let (status, body) = send_event(&host, "p", &lead(&format!("h-{i}"), i)).await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().unwrap().to_string());
        // Distinct finish times, in order.
        assert!(
            wait_until(WAIT, || host.engine().status("p").unwrap().delivered
                == i as u64 + 1)
            .await
        );
    }
    let client = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let one = client
        .call(
            hyper::Method::GET,
            &format!("/api/v1/events/{}", ids[0]),
            None,
            &[],
        )
        .await
        .unwrap()
        .body;
    let history = one["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "a refusal, then the delivery: {one}");
    let steps: Vec<&str> = history[1]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["step 1 (json-map)", "step 2 (filter)", "sink (http-sink)"]
    );
    assert_eq!(history[0]["steps"][2]["outcome"], "transient", "{one}");
    for s in history[1]["steps"].as_array().unwrap() {
        assert_eq!(s["outcome"], "ok");
        assert!(s["memory_bytes"].as_u64().unwrap() > 0, "{s}");
        assert!(s["duration_ms"].as_f64().unwrap() > 0.0, "{s}");
    }
    let listed = client
        .call(
            hyper::Method::GET,
            "/api/v1/events?pipeline=p&state=delivered&limit=4",
            None,
            &[],
        )
        .await
        .unwrap()
        .body;
    let listed: Vec<&str> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let newest: Vec<&str> = ids.iter().rev().take(4).map(String::as_str).collect();
    assert_eq!(listed, newest, "newest first, limited");
    let bad = client
        .call(hyper::Method::GET, "/api/v1/events?state=lost", None, &[])
        .await
        .unwrap();
    assert_eq!(bad.status, 400);

    // Retention by count keeps the three newest finished events.
    host.engine().sweep_history().await;
    let kept: Vec<String> = host
        .engine()
        .store()
        .recent_events(|_| true, 100)
        .unwrap()
        .iter()
        .map(|r| r.id.to_string())
        .collect();
    let newest: Vec<String> = ids.iter().rev().take(3).cloned().collect();
    assert_eq!(kept, newest);
    host.shutdown().await;
}

/// A sender that hangs up after its event was written (a load generator
/// stopping, a client timing out) still leaves an accepted event: it is
/// counted where the write became durable, so the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_whose_sender_hung_up_are_counted_as_accepted() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::leads(any_port(), &receiver.url("/leads")).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    const N: usize = 20;
    // Keep the commit thread busy for a moment, so that every accept below
    // is still waiting for its flush when its caller goes away.
    let stall = weft_host::store::EventRecord::queued(
        weft_host::store::EventId::new(),
        "not-a-pipeline",
        "stall",
        b"{}".to_vec(),
    );
    let wait: weft_host::store::AfterCommit =
        Box::new(|| std::thread::sleep(Duration::from_millis(500)));
    drop(host.engine().store().accept(&stall, None, Some(wait)));
    for n in 0..N {
        let body = lead(&format!("gone-{n}"), n).to_string().into_bytes();
        let incoming = weft_host::engine::Incoming {
            body,
            content_type: "application/json".into(),
            ..Default::default()
        };
        // Polled once: the write is handed to the store, then the caller is
        // gone before the flush answers, as a request whose client hung up.
        let gone =
            tokio::time::timeout(Duration::ZERO, host.engine().accept("leads", incoming)).await;
        assert!(
            gone.is_err(),
            "the accept finished on its first poll: {gone:?}"
        );
    }
    assert!(
        wait_until(WAIT, || receiver.effect_count() == N
            && host.engine().status("leads").unwrap().queued == 0)
        .await,
        "delivered {} of {N}",
        receiver.effect_count()
    );
    let status = host.engine().status("leads").unwrap();
    assert_eq!(status.accepted, N as u64, "{status:?}");
    assert_eq!(status.delivered, N as u64, "{status:?}");
    assert_eq!(status.unaccounted, 0, "{status:?}");
    let samples = scrape(&host).await;
    assert_eq!(
        metric(
            &samples,
            "weft_events_unaccounted",
            &[("pipeline", "leads")]
        ),
        Some(0.0)
    );
    host.shutdown().await;
}

/// The admin plane: its own listener, closed to the webhook side, to other
/// sites and to guessing; and no way to open it to the network without a
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admin_api_is_apart_from_webhooks_and_refuses_cross_site_calls_and_guessing() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let admin_token = "admin-token-0123456789abcdef";
    let setup = HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("p", &receiver.url("/p"))],
        "[[admin.tokens]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"OPS_TOKEN\"\n",
    )
    .unwrap()
    .with_secrets(&[("OPS_TOKEN", admin_token)])
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    assert_ne!(host.addr, host.admin_addr);
    assert!(host.admin_addr.ip().is_loopback());
    let public = weft_host::client::HostClient::new(&format!("http://{}", host.addr), None);
    for path in ["/api/v1/pipelines", "/metrics"] {
        let reply = public
            .call(hyper::Method::GET, path, None, &[])
            .await
            .unwrap();
        assert_eq!(
            reply.status, 404,
            "{path} on the webhook listener: {}",
            reply.body
        );
    }
    let admin_url = format!("http://{}", host.admin_addr);
    let (status, _) = post_json(&format!("{admin_url}/hooks/p"), b"{}", "application/json").await;
    assert_eq!(status, 404, "no webhooks on the admin listener");
    let ops = weft_host::client::HostClient::new(&admin_url, Some(admin_token.into()));
    let health = ops
        .call(hyper::Method::GET, "/healthz", None, &[])
        .await
        .unwrap();
    assert_eq!(health.status, 200);

    // A page elsewhere: a form post (text/plain) and a fetch with an Origin.
    let pause = format!("{admin_url}/api/v1/pipelines/p/pause");
    let auth = ("authorization", format!("Bearer {admin_token}"));
    let (status, answer) =
        weft_tests::post_with_headers(&pause, b"", "text/plain", std::slice::from_ref(&auth)).await;
    assert_eq!(status, 415, "{answer}");
    let (status, answer) = weft_tests::post_with_headers(
        &pause,
        b"",
        "application/json",
        &[auth.clone(), ("origin", "http://evil.example".into())],
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = weft_tests::post_with_headers(
        &pause,
        b"",
        "application/json",
        &[auth.clone(), ("sec-fetch-site", "cross-site".into())],
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        !host.engine().status("p").unwrap().paused,
        "nothing was paused"
    );

    // Guessing: each failure is a 401 (the first ones audited), then 429.
    let guesser =
        weft_host::client::HostClient::new(&admin_url, Some("not-the-token-at-all".into()));
    let mut statuses = Vec::new();
    for _ in 0..25 {
        let r = guesser
            .call(hyper::Method::GET, "/api/v1/pipelines", None, &[])
            .await
            .unwrap();
        statuses.push(r.status);
    }
    assert!(statuses[..20].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    let records = host.engine().store().audit().records(0).unwrap();
    let refused = records
        .iter()
        .filter(|r| r.action == "refused-login")
        .count();
    assert!(
        (5..=6).contains(&refused),
        "{refused} failed logins audited: {records:#?}"
    );
    host.shutdown().await;

    // Off loopback without a token: the host will not start.
    let open = HostSetup::new(any_port(), &[PipelineSpec::leads("p", &receiver.url("/p"))])
        .unwrap()
        .server_line("admin_listen = \"0.0.0.0:0\"")
        .unwrap();
    let err = RunningHost::start(open.config())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not a loopback address") && err.contains("[[admin.tokens]]"),
        "{err}"
    );
    // A short token is refused too.
    let short = HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("p", &receiver.url("/p"))],
        "[[admin.tokens]]\nname = \"ops\"\nrole = \"admin\"\nsecret = \"OPS_TOKEN\"\n",
    )
    .unwrap()
    .with_secrets(&[("OPS_TOKEN", "short-token")])
    .unwrap();
    let err = RunningHost::start(short.config())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("at least 16"), "{err}");
}

/// What a dashboard and a load balancer read besides the pipelines: which
/// build runs, the process's own figures, and health by `HEAD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_process_figures_are_in_the_metrics_and_health_answers_head() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup =
        HostSetup::new(any_port(), &[PipelineSpec::leads("p", &receiver.url("/p"))]).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let admin = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    for path in ["/metrics", "/healthz", "/readyz"] {
        let reply = admin
            .call(hyper::Method::HEAD, path, None, &[])
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "HEAD {path}");
    }
    let text = admin
        .call(hyper::Method::GET, "/metrics", None, &[])
        .await
        .unwrap()
        .body;
    let text = text
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.to_string());
    let samples = weft_tests::parse_metrics(&text).expect("the exposition parses");
    let value = |name: &str| weft_tests::metric(&samples, name, &[]);
    assert!(
        value("process_resident_memory_bytes").is_some_and(|v| v > 1e6),
        "{text}"
    );
    assert!(value("process_open_fds").is_some_and(|v| v > 3.0));
    assert!(value("process_cpu_seconds_total").is_some_and(|v| v > 0.0));
    let started = value("process_start_time_seconds").unwrap();
    let now = weft_host::store::now_ms() as f64 / 1000.0;
    assert!(
        (now - 600.0..=now + 1.0).contains(&started),
        "{started} vs {now}"
    );
    assert!(
        text.contains(&format!(
            "weft_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    host.shutdown().await;
}
