//! Pipelines as products: the catalog in the API and the metrics, the
//! data-quality gate pausing a pipeline fed bad data (nothing lost, resume
//! audited), and synthetic checks that prove the path without touching
//! the business counters.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, admin_call, any_port, lead, metric, parse_metrics,
    send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_data_pauses_the_pipeline_with_a_reason_and_nothing_is_lost() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))
            .with("contract = \"lead.json\"")
            .with("owner = \"growth\"")
            .with("tier = \"1\"")
            .with("runbook = \"https://wiki.example.com/leads\"")
            .with("upstream = [\"web-forms\"]")
            .with("downstream = [\"crm\"]")
            .with("quality = { max_invalid_ratio = 0.2, min_events = 10 }")
            .with("slo = { success = 0.99, latency = { within_ms = 5000, objective = 0.99 }, freshness = \"5m\" }")],
    )
    .unwrap();
    std::fs::write(
        setup.dir.path().join("lead.json"),
        r#"{"type": "object", "required": ["id", "email"]}"#,
    )
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    // 7 good leads, then 3 without an email: 30% broke the contract.
    for i in 0..7 {
        assert_eq!(
            send_event(&host, "leads", &lead(&format!("good-{i}"), i))
                .await
                .0,
            202
        );
    }
    assert!(wait_until(WAIT, || receiver.effect_count() == 7).await);
    for i in 0..3 {
        let (status, _) = send_event(
            &host,
            "leads",
            &serde_json::json!({ "id": format!("bad-{i}") }),
        )
        .await;
        assert_eq!(status, 422, "refused by the contract");
    }
    assert!(
        wait_until(WAIT, || engine.status("leads").unwrap().paused).await,
        "the gate pauses the pipeline"
    );
    let status = admin_call(&host, hyper::Method::GET, "/api/v1/pipelines/leads").await;
    let reason = status["pause_reason"].as_str().unwrap();
    assert!(
        reason.contains("3 of the last 10 events (30%)") && reason.contains("max_invalid_ratio"),
        "{reason}"
    );
    assert_eq!(status["objectives"]["quality"]["window_events"], 10);
    assert!(status["objectives"]["quality"]["tripped"].is_string());
    assert_eq!(status["catalog"]["owner"], "growth");
    assert_eq!(status["objectives"]["success"]["good"], 7);
    // Paused: good events are still accepted and kept, not delivered.
    for i in 7..12 {
        assert_eq!(
            send_event(&host, "leads", &lead(&format!("good-{i}"), i))
                .await
                .0,
            202
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.effect_count(), 7, "nothing goes out while paused");
    assert_eq!(engine.status("leads").unwrap().queued, 5);
    // The operator resumes: the rest go out, each once.
    admin_call(&host, hyper::Method::POST, "/api/v1/pipelines/leads/resume").await;
    assert!(wait_until(WAIT, || receiver.effect_count() == 12).await);
    assert_eq!(receiver.requests().len(), 12);
    let after = engine.status("leads").unwrap();
    assert!(!after.paused && after.pause_reason.is_none());
    assert_eq!(after.unaccounted, 0);
    // The gate judges afresh after the resume: the bad minute is behind it.
    assert_eq!(after.objectives.unwrap().quality.unwrap().window_events, 0);
    // The audit log holds both: the gate's pause and the operator's resume.
    let audit = engine.store().audit().records(0).unwrap();
    let pause = audit
        .iter()
        .find(|r| r.kind == "quality" && r.action == "pause")
        .expect("the gate's pause is audited");
    assert_eq!(
        (pause.actor.as_str(), pause.pipeline.as_str()),
        ("weft", "leads")
    );
    assert!(pause.detail.contains("30%"), "{}", pause.detail);
    assert!(
        audit
            .iter()
            .any(|r| r.kind == "admin" && r.action == "resume")
    );
    // The catalog and the objectives are metrics too.
    let text = admin_call(&host, hyper::Method::GET, "/metrics").await;
    let samples = parse_metrics(text.as_str().unwrap()).unwrap();
    assert_eq!(
        metric(
            &samples,
            "weft_pipeline_info",
            &[
                ("pipeline", "leads"),
                ("owner", "growth"),
                ("tier", "1"),
                ("downstream", "crm")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &samples,
            "weft_slo_objective",
            &[("pipeline", "leads"), ("slo", "success")]
        ),
        Some(0.99)
    );
    assert_eq!(
        metric(
            &samples,
            "weft_slo_burn_rate",
            &[("pipeline", "leads"), ("slo", "success"), ("window", "1h")]
        ),
        Some(0.0),
        "every event delivered: no budget burnt"
    );
    assert_eq!(
        metric(
            &samples,
            "weft_slo_freshness_limit_seconds",
            &[("pipeline", "leads")]
        ),
        Some(300.0)
    );
    assert_eq!(
        metric(
            &samples,
            "weft_quality_gate_tripped",
            &[("pipeline", "leads")]
        ),
        Some(0.0)
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synthetic_checks_prove_the_path_and_leave_the_business_counters_alone() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))
            .with("[[pipeline.synthetic]]\nname = \"probe\"\nschedule = { cron = \"* * * * * *\" }\npayload = { id = \"fixed\", email = \"PROBE@EXAMPLE.COM\", name = \"probe\", created = \"01/02/2026\", amount_cents = 1 }")],
    )
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    assert_eq!(send_event(&host, "leads", &lead("real-1", 1)).await.0, 202);
    assert!(
        wait_until(WAIT, || {
            let s = engine.status("leads").unwrap();
            s.synthetic.first().is_some_and(|c| c.ok >= 3)
        })
        .await,
        "the check runs each second and gets through"
    );
    assert!(wait_until(WAIT, || receiver.requests_for("real-1").len() == 1).await);
    // Each run has its own key (the payload's /id is the same every time)
    // and its deliveries say they are synthetic.
    let probes: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|d| d.key.starts_with("synthetic:probe:"))
        .collect();
    assert!(probes.len() >= 3);
    assert!(
        probes
            .iter()
            .all(|d| d.header("x-weft-synthetic") == Some("probe"))
    );
    assert_eq!(
        probes[0].body["email"], "probe@example.com",
        "through the real steps"
    );
    let real = &receiver.requests_for("real-1")[0];
    assert_eq!(real.header("x-weft-synthetic"), None);
    // The business counters see the one real event only, and balance.
    let s = engine.status("leads").unwrap();
    assert_eq!((s.accepted, s.delivered, s.duplicates), (1, 1, 0));
    assert_eq!(s.unaccounted, 0);
    assert_eq!(s.queued, 0);
    let c = &s.synthetic[0];
    assert_eq!((c.check.as_str(), c.failed), ("probe", 0));
    assert!(c.sent >= c.ok && c.last_ok_ms > 0);
    // The history marks them.
    let store = engine.store();
    let id: weft_host::store::EventId = {
        let page = admin_call(
            &host,
            hyper::Method::GET,
            "/api/v1/events?pipeline=leads&limit=50",
        )
        .await;
        let synthetic = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["synthetic"] == "probe")
            .cloned()
            .unwrap_or_else(|| panic!("a synthetic run in the history: {page}"));
        synthetic["id"].as_str().unwrap().parse().unwrap()
    };
    let record = store.event(&id).unwrap().unwrap();
    assert_eq!(record.synthetic(), Some("probe"));
    // A failing path shows up in the check, not in the business counters.
    receiver.set_behavior(Behavior::Always(400));
    assert!(
        wait_until(WAIT, || engine.status("leads").unwrap().synthetic[0].failed
            >= 1)
        .await,
        "a run that dead-letters fails the check"
    );
    let s = engine.status("leads").unwrap();
    assert_eq!((s.accepted, s.delivered, s.dead_lettered), (1, 1, 0));
    assert!(
        s.synthetic[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("dead-lettered")
    );
    let text = admin_call(&host, hyper::Method::GET, "/metrics").await;
    let samples = parse_metrics(text.as_str().unwrap()).unwrap();
    assert!(
        metric(
            &samples,
            "weft_synthetic_runs_total",
            &[
                ("pipeline", "leads"),
                ("check", "probe"),
                ("result", "failed")
            ]
        )
        .unwrap()
            >= 1.0
    );
    assert_eq!(
        metric(
            &samples,
            "weft_events_accepted_total",
            &[("pipeline", "leads")]
        ),
        Some(1.0)
    );
    host.shutdown().await;
}
