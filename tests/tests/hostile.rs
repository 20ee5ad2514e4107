//! The hostile-plugin suite: copies of a plugin that attacks the host, each
//! under its own name and grant, run next to a canary pipeline. Every attack
//! must fail its own call with the right reason, leave the host serving,
//! cost the canary nothing, and (for capability denials) land in the audit
//! log and the denial metric.

use std::time::{Duration, Instant};
use weft_host::host::RunningHost;
use weft_host::sandbox::CallContext;
use weft_host::sandbox::bindings::WitEvent;
use weft_host::store::{AttemptOutcome, EventRecord};
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(120);
const GRANTED_SECRET: &str = "granted-token-4b1d9e7c";

struct Attack {
    name: &'static str,
    config: String,
    /// Extra grant lines.
    grant: String,
    /// Text the dead-lettered error must hold.
    reason: &'static str,
    /// The capability the audit log must record, for denials.
    denial: Option<&'static str>,
}

fn attack(
    name: &'static str,
    config: String,
    reason: &'static str,
    denial: Option<&'static str>,
) -> Attack {
    Attack {
        name,
        config,
        grant: String::new(),
        reason,
        denial,
    }
}

/// The machine's host name, when it resolves to loopback (it does on the CI
/// machines, through /etc/hosts): a name that is not `localhost` but points
/// inside the machine, for the connect-time check.
async fn loopback_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_string();
    if name.is_empty() || name == "localhost" {
        return None;
    }
    let addrs: Vec<_> = tokio::net::lookup_host((name.as_str(), 80))
        .await
        .ok()?
        .collect();
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())).then_some(name)
}

/// A flat JSON object of strings as a TOML inline table.
fn toml_inline(v: &serde_json::Value) -> String {
    let fields: Vec<String> = v
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!("{{ {} }}", fields.join(", "))
}

fn last_failure(rec: &EventRecord) -> String {
    rec.attempts
        .iter()
        .rev()
        .find_map(|a| match &a.outcome {
            AttemptOutcome::Failed { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_plugins_are_contained_and_the_canary_loses_nothing() {
    let canary = Receiver::start(Behavior::Accept).await;
    let forbidden = Receiver::start(Behavior::Accept).await;
    let granted = Receiver::start(Behavior::Redirect(forbidden.url("/stolen"))).await;
    let big = Receiver::start(Behavior::Body(1 << 20)).await;
    let gport = granted.addr.port();
    let fport = forbidden.addr.port();
    let json = |v: serde_json::Value| v.to_string();
    let cfg = |attack: &str| json(serde_json::json!({ "attack": attack }));
    let http = |url: String| json(serde_json::json!({ "attack": "http", "url": url }));
    let mut attacks = vec![
        attack("loop", cfg("loop"), "ran past its 400 ms time limit", None),
        attack(
            "memory",
            cfg("memory"),
            "more than its memory cap of 16 MiB",
            None,
        ),
        attack(
            "recursion",
            cfg("recursion"),
            "stack overflow from deep recursion",
            None,
        ),
        attack(
            "http-name",
            http(format!("http://localhost:{fport}/x")),
            "outside the plugin's http grant",
            Some("http"),
        ),
        attack(
            "http-ip",
            http(format!("http://127.0.0.1:{fport}/x")),
            "outside the plugin's http grant",
            Some("http"),
        ),
        attack(
            "http-redirect",
            http(granted.url("/start")),
            "outside the plugin's http grant",
            Some("http"),
        ),
        attack(
            "http-metadata",
            http("http://169.254.169.254/latest/meta-data/".into()),
            "169.254.169.254",
            Some("http"),
        ),
        attack(
            "credential",
            json(
                serde_json::json!({ "attack": "credential", "url": granted.url("/c"), "credential": "SOMEONE_ELSES" }),
            ),
            "credential \\\"SOMEONE_ELSES\\\" is not in the plugin's grant",
            Some("credential"),
        ),
        attack(
            "reveal",
            json(serde_json::json!({ "attack": "reveal", "credential": "GRANTED_TOKEN" })),
            "not in the plugin's reveal grant",
            Some("reveal"),
        ),
        attack(
            "kv-other",
            cfg("kv-other"),
            "outside the plugin's own namespace",
            Some("kv"),
        ),
        attack(
            "output",
            cfg("output"),
            "over its output cap of 4096 KiB",
            None,
        ),
        attack(
            "log-flood",
            cfg("log-flood"),
            "more than its log cap of 64 KiB",
            None,
        ),
        attack(
            "stdout-flood",
            cfg("stdout-flood"),
            "log cap of 64 KiB to stdout",
            None,
        ),
        attack(
            "panic",
            cfg("panic"),
            "hostile plugin panics on purpose",
            None,
        ),
    ];
    let mut fuel = attack(
        "fuel",
        cfg("loop"),
        "used up its fuel budget of 5000000",
        None,
    );
    fuel.grant = "fuel = 5000000\ntimeout_ms = 20000\n".into();
    attacks.push(fuel);
    let mut huge = attack(
        "big-response",
        http(big.url("/big")),
        "response body size exceeds limit: 65536 bytes",
        None,
    );
    huge.grant = format!("http = [\"{}\"]\nresponse_kib = 64\n", big.url(""));
    attacks.push(huge);
    let connect_name = loopback_name().await;
    if let Some(name) = &connect_name {
        let mut a = attack(
            "connect",
            http(format!("http://{name}:{fport}/x")),
            "resolves only to addresses plugins may not reach",
            Some("connect"),
        );
        a.grant = format!("http = [\"http://{name}:{fport}\"]\n");
        attacks.push(a);
        let mut a = attack(
            "connect-tls",
            http(format!("https://{name}:{fport}/x")),
            "resolves only to addresses plugins may not reach",
            Some("connect"),
        );
        a.grant = format!("http = [\"https://{name}:{fport}\"]\n");
        attacks.push(a);
    } else {
        eprintln!(
            "note: the host name does not resolve to loopback here; the connect-time case is covered by the unit tests of sandbox::net only"
        );
    }

    let mut extra = String::new();
    for a in &attacks {
        // Defaults for every copy; an attack's own lines replace a default key.
        let defaults = [
            ("http", format!("[\"http://127.0.0.1:{gport}\"]")),
            ("credentials", "[\"GRANTED_TOKEN\"]".to_string()),
            ("kv", "{ quota_kib = 64 }".to_string()),
            ("memory_mib", "16".to_string()),
            ("timeout_ms", "400".to_string()),
        ];
        extra.push_str(&format!("[grants.hostile-{}]\n{}", a.name, a.grant));
        for (key, value) in defaults {
            if !a.grant.contains(&format!("{key} =")) {
                extra.push_str(&format!("{key} = {value}\n"));
            }
        }
        extra.push('\n');
    }
    for a in &attacks {
        extra.push_str(&format!(
            "[[pipeline]]\nname = \"{name}\"\nsink = {{ plugin = \"hostile-{name}\", config = {config} }}\nretry = {{ max_attempts = 1 }}\nbreaker = {{ enabled = false }}\n\n",
            name = a.name,
            config = toml_inline(&serde_json::from_str(&a.config).unwrap()),
        ));
    }
    let setup = HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("canary", &canary.url("/canary"))],
        &extra,
    )
    .unwrap();
    for a in &attacks {
        std::fs::copy(
            weft_tests::plugins::HOSTILE,
            setup
                .dir
                .path()
                .join(format!("plugins.d/hostile-{}.wasm", a.name)),
        )
        .unwrap();
    }
    let setup = setup
        .with_secrets(&[("GRANTED_TOKEN", GRANTED_SECRET)])
        .unwrap();

    let host = RunningHost::start(setup.config())
        .await
        .expect("host starts");

    // The canary keeps sending while the attacks run.
    let canary_url = format!("http://{}/hooks/canary", host.addr);
    let sender = tokio::spawn(async move {
        for i in 0..150 {
            let body = lead(&format!("canary-{i}"), i).to_string();
            let (status, _) =
                weft_tests::post_json(&canary_url, body.as_bytes(), "application/json").await;
            assert_eq!(status, 202, "canary event {i} refused");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    for a in &attacks {
        let (status, _) = send_event(
            &host,
            a.name,
            &serde_json::json!({ "id": format!("attack-{}", a.name) }),
        )
        .await;
        assert_eq!(status, 202, "{}", a.name);
    }
    sender.await.unwrap();

    let store = host.engine().store().clone();
    for a in &attacks {
        let done = wait_until(WAIT, || {
            !store.dead_letters(Some(a.name)).unwrap().is_empty()
        })
        .await;
        assert!(done, "attack {} was not dead-lettered", a.name);
        let rec = &store.dead_letters(Some(a.name)).unwrap()[0];
        let message = last_failure(rec);
        let expected = a.reason.replace("\\\"", "\"");
        assert!(
            message.contains(&expected),
            "attack {}: expected {expected:?} in {message:?}",
            a.name
        );
        assert!(!message.contains(GRANTED_SECRET));
        eprintln!("{:<14} contained: {message}", a.name);
    }
    assert!(
        wait_until(WAIT, || canary.effect_count() == 150).await,
        "the canary lost events: {} of 150 delivered",
        canary.effect_count()
    );
    assert!(canary.effects().values().all(|n| *n == 1));
    assert!(
        forbidden.requests().is_empty(),
        "a request escaped: {:?}",
        forbidden.requests()
    );
    assert_eq!(
        granted.requests().len(),
        1,
        "only the redirect's first hop reaches the granted origin"
    );

    // Every denial is in the hash-chained audit log and in /metrics.
    let audit = store.audit().records(0).unwrap();
    for a in attacks.iter().filter(|a| a.denial.is_some()) {
        let plugin = format!("hostile-{}", a.name);
        assert!(
            audit.iter().any(|r| r.kind == "denial"
                && r.actor == plugin
                && Some(r.action.as_str()) == a.denial),
            "no {:?} denial of {plugin} in the audit log: {audit:#?}",
            a.denial
        );
    }
    // Broken limits are audited as well; a panic is the plugin's own failure.
    for a in attacks
        .iter()
        .filter(|a| a.denial.is_none() && a.name != "panic")
    {
        let plugin = format!("hostile-{}", a.name);
        assert!(
            audit.iter().any(|r| r.kind == "limit" && r.actor == plugin),
            "no broken limit of {plugin} in the audit log"
        );
    }
    assert!(audit.iter().all(|r| !r.detail.contains(GRANTED_SECRET)));
    assert_eq!(store.audit().verify(), Ok(audit.len() as u64));
    let client = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let metrics = client
        .call(hyper::Method::GET, "/metrics", None, &[])
        .await
        .unwrap()
        .body;
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains(
            "weft_capability_denials_total{plugin=\"hostile-http-ip\",capability=\"http\"} 1"
        ),
        "{metrics}"
    );

    // Containment figures, measured directly on the sandbox.
    let sandbox = host.engine().sandbox().clone();
    let event = WitEvent {
        id: "direct".into(),
        key: "direct".into(),
        source: "test".into(),
        content_type: "application/json".into(),
        headers: vec![],
        payload: b"{}".to_vec(),
        attempt: 1,
        correlation_id: "direct".into(),
        received_at_ms: 0,
    };
    let ctx = |p: &str| CallContext {
        pipeline: p.into(),
        plugin: format!("hostile-{p}").into(),
        event_id: "direct".into(),
        correlation_id: "direct".into(),
        ..Default::default()
    };
    let started = Instant::now();
    let err = sandbox
        .deliver(
            &host.plugins()["hostile-loop"],
            &cfg("loop"),
            ctx("loop"),
            &event,
        )
        .await
        .0
        .unwrap_err();
    let loop_ms = started.elapsed().as_millis();
    assert!(err.message.contains("time limit"), "{err:?}");
    assert!(loop_ms >= 400, "stopped before its limit: {loop_ms} ms");
    let before = rss_kib();
    let err = sandbox
        .deliver(
            &host.plugins()["hostile-memory"],
            &cfg("memory"),
            ctx("memory"),
            &event,
        )
        .await
        .0
        .unwrap_err();
    let after = rss_kib();
    assert!(err.message.contains("memory cap"), "{err:?}");
    eprintln!(
        "infinite loop stopped after {loop_ms} ms (limit 400 ms); memory bomb capped at 16 MiB, process RSS {before} KiB -> {after} KiB after the call"
    );
    host.shutdown().await;
}

/// A refused request that carries a body is a denial: the plugin and the
/// event's history say so, and it is not retried as a network fault. Both
/// refusals are tried: the grant check before the request leaves, and the
/// address check at connect time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_with_a_body_is_a_denial_and_is_not_retried() {
    let forbidden = Receiver::start(Behavior::Accept).await;
    let fport = forbidden.addr.port();
    let mut cases = vec![(
        "post-grant",
        format!("http://127.0.0.1:{fport}/x"),
        "http = [\"http://127.0.0.1:1\"]".to_string(),
        "outside the plugin's http grant",
    )];
    if let Some(name) = loopback_name().await {
        cases.push((
            "post-connect",
            format!("http://{name}:{fport}/x"),
            format!("http = [\"http://{name}:{fport}\"]"),
            "resolves only to addresses plugins may not reach",
        ));
    }
    let mut extra = String::new();
    for (name, url, grant, _) in &cases {
        extra.push_str(&format!(
            "[grants.hostile-{name}]\n{grant}\nkv = {{ quota_kib = 64 }}\n\n[[pipeline]]\nname = \"{name}\"\nsink = {{ plugin = \"hostile-{name}\", config = {{ attack = \"http-post\", url = \"{url}\" }} }}\nretry = {{ max_attempts = 4, initial_ms = 10, max_ms = 20 }}\nbreaker = {{ enabled = false }}\n\n"
        ));
    }
    let setup = HostSetup::with_extra(any_port(), &[], &extra).unwrap();
    for (name, ..) in &cases {
        std::fs::copy(
            weft_tests::plugins::HOSTILE,
            setup
                .dir
                .path()
                .join(format!("plugins.d/hostile-{name}.wasm")),
        )
        .unwrap();
    }
    let host = RunningHost::start(setup.config()).await.unwrap();
    let store = host.engine().store().clone();
    for (name, _, _, reason) in &cases {
        let (status, _) = send_event(&host, name, &serde_json::json!({ "id": name })).await;
        assert_eq!(status, 202);
        assert!(
            wait_until(WAIT, || !store.dead_letters(Some(name)).unwrap().is_empty()).await,
            "{name} was not dead-lettered"
        );
        let rec = &store.dead_letters(Some(name)).unwrap()[0];
        assert_eq!(
            rec.attempts.len(),
            1,
            "{name}: a denial was retried: {rec:#?}"
        );
        let AttemptOutcome::Failed { kind, message, .. } = &rec.attempts[0].outcome else {
            panic!("{name}: {rec:#?}");
        };
        assert_eq!(
            *kind,
            weft_host::store::ErrorKind::Fatal,
            "{name}: {message}"
        );
        assert!(message.contains("denied"), "{name}: {message}");
        assert!(message.contains(reason), "{name}: {message}");
        assert!(!message.contains("StreamError"), "{name}: {message}");
    }
    assert!(forbidden.requests().is_empty());
    host.shutdown().await;
}
