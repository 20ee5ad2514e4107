//! Canaries: a share of events on a candidate version of the sink, chosen
//! by a stable hash of the key; automatic rollback when the candidate fails
//! past the baseline, with every affected event delivered by the baseline;
//! promote and rollback by hand; the state kept across a restart.

use std::time::Duration;
use weft_host::engine::{CanaryState, in_share};
use weft_host::host::RunningHost;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, get_text, metric, origin_of,
    parse_metrics, post_json, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(120);
const SHARE: f64 = 0.1;

fn event(key: &str) -> serde_json::Value {
    serde_json::json!({ "id": key, "email": format!("{key}@example.com"), "name": "x" })
}

/// A lead pipeline whose sink has a canary: `http-sink@2.0.0` (a copy of
/// http-sink) delivering to `candidate` instead.
fn setup(base: &Receiver, candidate: &Receiver, extra: &str) -> HostSetup {
    let mut spec = PipelineSpec::leads("leads", &base.url("/x")).without_steps();
    spec.sink_table = format!(
        ", canary = {{ plugin = \"http-sink@2\", share = {SHARE}, config = {{ url = \"{}\" }}{extra} }}",
        candidate.url("/x")
    );
    let setup = HostSetup::new(any_port(), &[spec]).unwrap();
    let dir = setup.dir.path().join("plugins.d");
    std::fs::copy(dir.join("http-sink.wasm"), dir.join("http-sink@2.0.0.wasm")).unwrap();
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    let base_origin = format!("{:?}", origin_of(&base.url("/x")));
    let both = format!("{base_origin}, {:?}", origin_of(&candidate.url("/x")));
    std::fs::write(&setup.config_path, text.replacen(&base_origin, &both, 1)).unwrap();
    setup
}

fn canary_state(host: &RunningHost) -> weft_host::engine::CanaryView {
    host.engine().status("leads").unwrap().canaries[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_rolled_back_and_the_baseline_delivers_its_events() {
    let base = Receiver::start(Behavior::Accept).await;
    // The candidate fails every `a-` key: about half its events.
    let cand = Receiver::start(Behavior::FailKeys {
        prefix: "a-".into(),
        status: 500,
    })
    .await;
    let setup = setup(&base, &cand, "");
    let host = RunningHost::start(setup.config()).await.unwrap();
    let keys: Vec<String> = (0..300)
        .map(|i| format!("{}-{i}", if i % 2 == 0 { "a" } else { "b" }))
        .collect();
    for k in &keys {
        let (status, answer) = send_event(&host, "leads", &event(k)).await;
        assert_eq!(status, 202, "{answer}");
    }
    assert!(
        wait_until(WAIT, || keys.iter().all(
            |k| base.effects().contains_key(k) || cand.effects().contains_key(k)
        ))
        .await,
        "every event delivered"
    );
    let c = canary_state(&host);
    assert_eq!(c.state, CanaryState::RolledBack, "{c:?}");
    assert!(c.reason.contains("failed"), "{c:?}");
    // Rolled back within its window: the candidate made no more calls than
    // a window and the attempts in flight when it tripped.
    assert!(c.versions[1].calls <= 20 + 8, "{c:?}");
    // Only keys in the share ever reached the candidate.
    for d in cand.requests() {
        assert!(in_share(&d.key, SHARE), "{} is outside the share", d.key);
    }
    // Every event the candidate failed was delivered by the baseline, once.
    let failed_on_candidate: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("a-") && !cand.requests_for(k).is_empty())
        .collect();
    assert!(!failed_on_candidate.is_empty());
    for k in &failed_on_candidate {
        assert_eq!(
            base.effects().get(*k),
            Some(&1),
            "{k} delivered once by the baseline"
        );
    }
    let status = host.engine().status("leads").unwrap();
    assert_eq!(status.dead_lettered, 0, "{status:?}");
    assert_eq!(status.unaccounted, 0, "{status:?}");

    // The audit log and the metrics show it.
    let audit = host.engine().store().audit().records(0).unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.action == "canary-rollback" && r.actor == "weft" && r.pipeline == "leads"),
        "{audit:?}"
    );
    let (_, text) = get_text(&format!("http://{}/metrics", host.admin_addr)).await;
    let samples = parse_metrics(&text).unwrap();
    let labels = [("pipeline", "leads"), ("step", "sink")];
    assert_eq!(
        metric(&samples, "weft_canary_rollbacks_total", &labels),
        Some(1.0)
    );
    assert!(
        metric(
            &samples,
            "weft_canary_failures_total",
            &[("version", "candidate"), ("kind", "transient")]
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
    assert!(
        text.contains(
            "weft_canary_state{pipeline=\"leads\",step=\"sink\",candidate=\"http-sink@2.0.0\"} 1"
        ),
        "{text}"
    );
    eprintln!(
        "canary at {SHARE}: rolled back after {} candidate calls ({}); {} events it failed delivered by the baseline; 0 dead letters",
        c.versions[1].calls,
        c.reason,
        failed_on_candidate.len()
    );

    // A restart keeps it rolled back.
    host.shutdown().await;
    let host = RunningHost::start(setup.config()).await.unwrap();
    let c = canary_state(&host);
    assert_eq!(c.state, CanaryState::RolledBack, "{c:?}");
    let before = cand.requests().len();
    for i in 0..40 {
        let (status, _) = send_event(&host, "leads", &event(&format!("after-{i}"))).await;
        assert_eq!(status, 202);
    }
    assert!(
        wait_until(WAIT, || (0..40)
            .all(|i| base.effects().contains_key(&format!("after-{i}"))))
        .await
    );
    assert_eq!(
        cand.requests().len(),
        before,
        "nothing reaches a rolled-back candidate"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stays_on_its_version_across_retries_and_promote_and_rollback_by_hand() {
    let base = Receiver::start(Behavior::Accept).await;
    // Every key fails once on the candidate, then goes through.
    let cand = Receiver::start(Behavior::FailFirst {
        failures: 1,
        status: 503,
    })
    .await;
    let setup = setup(&base, &cand, ", margin = 1.0");
    let host = RunningHost::start(setup.config()).await.unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("k-{i}")).collect();
    for k in &keys {
        let (status, _) = send_event(&host, "leads", &event(k)).await;
        assert_eq!(status, 202);
    }
    assert!(
        wait_until(WAIT, || keys.iter().all(
            |k| base.effects().contains_key(k) || cand.effects().contains_key(k)
        ))
        .await
    );
    let mut on_candidate = 0;
    for k in &keys {
        if in_share(k, SHARE) {
            on_candidate += 1;
            assert_eq!(
                cand.requests_for(k).len(),
                2,
                "{k}: failed once, retried on the candidate"
            );
            assert!(
                base.requests_for(k).is_empty(),
                "{k} never reached the baseline"
            );
        } else {
            assert_eq!(base.requests_for(k).len(), 1, "{k}");
            assert!(cand.requests_for(k).is_empty(), "{k}");
        }
    }
    assert!(on_candidate > 5, "{on_candidate} of 200 at {SHARE}");
    assert_eq!(canary_state(&host).state, CanaryState::Running);

    // Promote by hand: every new event on the candidate.
    let api = format!("http://{}/api/v1/pipelines/leads/canary", host.admin_addr);
    let (status, answer) = post_json(&format!("{api}/promote"), b"{}", "application/json").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "promoted");
    let (status, _) = send_event(&host, "leads", &event("promoted-1")).await;
    assert_eq!(status, 202);
    assert!(wait_until(WAIT, || cand.effects().contains_key("promoted-1")).await);
    // Roll back by hand: every new event on the baseline.
    let (status, answer) = post_json(&format!("{api}/rollback"), b"{}", "application/json").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["state"], "rolled-back");
    let in_share_key = (0..)
        .map(|i| format!("late-{i}"))
        .find(|k| in_share(k, SHARE))
        .unwrap();
    let (status, _) = send_event(&host, "leads", &event(&in_share_key)).await;
    assert_eq!(status, 202);
    assert!(wait_until(WAIT, || base.effects().contains_key(&in_share_key)).await);
    assert!(cand.requests_for(&in_share_key).is_empty());
    let (status, answer) = post_json(
        &format!(
            "http://{}/api/v1/pipelines/leads/canary/promote?step=1",
            host.admin_addr
        ),
        b"{}",
        "application/json",
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no canary at step 1"),
        "{answer}"
    );
    let audit = host.engine().store().audit().records(0).unwrap();
    let actions: Vec<&str> = audit.iter().map(|r| r.action.as_str()).collect();
    assert!(
        actions.contains(&"canary-promote") && actions.contains(&"canary-rollback"),
        "{actions:?}"
    );
    host.shutdown().await;
}
