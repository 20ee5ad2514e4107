//! Batches at the sink: events that reach a batching sink together go in
//! one call (for http-sink, one request), and each keeps its own outcome,
//! history and retries. One refused event never fails its neighbours; a
//! sink that only takes single events still works with `batch` set.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_host::store::{AttemptOutcome, EventId, EventRecord, EventState};
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, any_port, send_event, wait_until};

const WAIT: Duration = Duration::from_secs(120);

fn lead(id: &str) -> serde_json::Value {
    serde_json::json!({ "id": id, "email": format!("{id}@example.com"), "name": "x" })
}

/// Accept `bodies` while the pipeline is paused, then resume it, so that
/// they reach the sink together; returns their event ids.
async fn send_paused(
    host: &RunningHost,
    pipeline: &str,
    bodies: &[serde_json::Value],
) -> Vec<EventId> {
    host.engine().pause(pipeline).await.unwrap();
    let mut ids = Vec::new();
    for body in bodies {
        let (status, answer) = send_event(host, pipeline, body).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().parse().unwrap());
    }
    host.engine().resume(pipeline).await.unwrap();
    ids
}

fn record(host: &RunningHost, id: &EventId) -> EventRecord {
    host.engine().store().event(id).unwrap().unwrap()
}

/// Every event of the pipeline finished, and the outcome of each of `ids`
/// written (an event leaves the queue count a moment before its outcome
/// is durable).
async fn settled(host: &RunningHost, pipeline: &str, ids: &[EventId]) {
    assert!(
        wait_until(WAIT, || host.engine().status(pipeline).unwrap().queued == 0
            && ids
                .iter()
                .all(|id| record(host, id).state != EventState::Queued))
        .await,
        "every event finished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_that_reach_the_sink_together_go_in_one_request_each_with_its_own_history() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec = PipelineSpec::leads("batched", &receiver.url("/b"))
        .sink_batch("max_events = 10, max_wait_ms = 10000");
    let setup = HostSetup::new(any_port(), &[spec]).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let bodies: Vec<_> = (0..25).map(|i| lead(&format!("lead-{i}"))).collect();
    let ids = send_paused(&host, "batched", &bodies).await;
    settled(&host, "batched", &ids).await;
    let batches = receiver.batches();
    // An event that reached the sink alone (a busy machine can split them
    // so) goes as a single request.
    let singles = receiver.requests().iter().filter(|d| d.batch == 1).count();
    assert_eq!(batches.iter().sum::<usize>() + singles, 25, "{batches:?}");
    assert!(batches.iter().all(|&n| n <= 10), "{batches:?}");
    // Most went together, in batches closed at max_events (the closing
    // rules themselves are unit-tested in the engine, free of timing).
    assert!(
        batches.iter().filter(|&&n| n == 10).count() >= 1 && singles <= 5,
        "a batch closed at max_events: {batches:?}, {singles} alone"
    );
    for (key, n) in receiver.effects() {
        assert_eq!(n, 1, "{key} took effect {n} times");
    }
    assert_eq!(receiver.effect_count(), 25);
    // The steps ran per event: each item arrived normalised.
    let item = &receiver.requests_for("lead-3")[0];
    assert_eq!(item.body["email"], "lead-3@example.com");
    assert_eq!(item.header("content-type"), Some("application/json"));
    for id in &ids {
        let r = record(&host, id);
        assert_eq!(r.state, EventState::Delivered);
        assert_eq!(r.attempts.len(), 1);
        let AttemptOutcome::Delivered { receipt } = &r.attempts[0].outcome else {
            panic!("{:?}", r.attempts[0].outcome)
        };
        assert!(receipt.starts_with("HTTP 200"), "{receipt}");
    }
    let in_batches = ids
        .iter()
        .filter(|id| {
            matches!(&record(&host, id).attempts[0].outcome,
                AttemptOutcome::Delivered { receipt } if receipt.contains("batch of"))
        })
        .count();
    assert_eq!(
        in_batches + singles,
        25,
        "each receipt says whether it went in a batch"
    );
    let status = host.engine().status("batched").unwrap();
    // A batch of one goes as a single request.
    let calls = status.batches as usize;
    assert!(
        (batches.len()..=batches.len() + singles).contains(&calls),
        "{calls} sink calls, {batches:?}, {singles} alone"
    );
    assert_eq!(status.unaccounted, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_event_is_retried_or_dead_lettered_alone() {
    // lead-3 fails once with 503 (retried), bad-1 is refused with 422
    // (dead-lettered); their neighbours in the same batch are delivered once.
    let receiver = Receiver::start(Behavior::FailKeyTimes {
        key: "lead-3".into(),
        times: 1,
        status: 503,
    })
    .await;
    let spec = PipelineSpec::leads("batched", &receiver.url("/b"))
        .without_steps()
        .sink_batch("max_events = 50")
        .with("breaker = { enabled = false }");
    let setup = HostSetup::new(any_port(), &[spec]).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let bodies: Vec<_> = (0..8).map(|i| lead(&format!("lead-{i}"))).collect();
    let ids = send_paused(&host, "batched", &bodies).await;
    settled(&host, "batched", &ids).await;
    assert_eq!(receiver.effect_count(), 8);
    for (key, n) in receiver.effects() {
        assert_eq!(n, 1, "{key} took effect {n} times");
    }
    assert_eq!(receiver.requests_for("lead-3").len(), 2);
    for (i, id) in ids.iter().enumerate() {
        let r = record(&host, id);
        assert_eq!(r.state, EventState::Delivered);
        let expected = if i == 3 { 2 } else { 1 };
        assert_eq!(r.attempts.len(), expected, "lead-{i}: {:?}", r.attempts);
    }
    let failed = &record(&host, &ids[3]).attempts[0].outcome;
    let AttemptOutcome::Failed { message, .. } = failed else {
        panic!("{failed:?}")
    };
    assert!(
        message.contains("of a batch of") && message.contains("503"),
        "{message}"
    );

    receiver.set_behavior(Behavior::FailKeys {
        prefix: "bad-".into(),
        status: 422,
    });
    let bodies = [lead("ok-1"), lead("bad-1"), lead("ok-2")];
    let ids = send_paused(&host, "batched", &bodies).await;
    settled(&host, "batched", &ids).await;
    assert_eq!(record(&host, &ids[0]).state, EventState::Delivered);
    assert_eq!(record(&host, &ids[2]).state, EventState::Delivered);
    let bad = record(&host, &ids[1]);
    assert_eq!(bad.state, EventState::DeadLettered);
    assert_eq!(bad.attempts.len(), 1, "a 422 is not retried");
    assert_eq!(receiver.requests_for("ok-1").len(), 1);
    assert_eq!(receiver.requests_for("ok-2").len(), 1);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_closes_before_passing_max_bytes() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let mut body = lead("sized");
    body["notes"] = "n".repeat(2000).into();
    let size = body.to_string().len();
    let spec = PipelineSpec::leads("sized", &receiver.url("/b"))
        .without_steps()
        .sink_batch(&format!(
            "max_events = 100, max_bytes = {}, max_wait_ms = 10000",
            size * 2 + size / 2
        ));
    let setup = HostSetup::new(any_port(), &[spec]).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let bodies: Vec<_> = (0..9)
        .map(|i| {
            let mut b = body.clone();
            b["id"] = format!("s-{i}").into();
            b
        })
        .collect();
    let ids = send_paused(&host, "sized", &bodies).await;
    settled(&host, "sized", &ids).await;
    let batches = receiver.batches();
    let singles = receiver.requests().iter().filter(|d| d.batch == 1).count();
    assert_eq!(batches.iter().sum::<usize>() + singles, 9, "{batches:?}");
    assert!(
        batches.iter().all(|&n| n <= 2),
        "two fit in max_bytes, three do not: {batches:?}"
    );
    assert!(batches.contains(&2), "{batches:?}");
    assert_eq!(receiver.effect_count(), 9);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_bodies_can_be_ndjson_and_gzipped() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec = PipelineSpec::leads("packed", &receiver.url("/b"))
        .without_steps()
        .sink_config("batch_format = \"ndjson\", compress = \"gzip\", compress_min_bytes = 64")
        .sink_batch("max_events = 20");
    let setup = HostSetup::new(any_port(), &[spec]).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let bodies: Vec<_> = (0..12).map(|i| lead(&format!("p-{i}"))).collect();
    let ids = send_paused(&host, "packed", &bodies).await;
    settled(&host, "packed", &ids).await;
    // The receiver took every item only because it could gunzip and split it.
    assert_eq!(receiver.effect_count(), 12);
    let batched: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|d| d.batch > 1)
        .collect();
    assert!(!batched.is_empty(), "some events went together");
    for d in &batched {
        assert_eq!(d.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(d.header("content-encoding"), Some("gzip"));
    }
    assert_eq!(
        receiver.requests_for("p-7")[0].body["email"],
        "p-7@example.com"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_event_sink_with_batch_set_still_delivers_and_a_poison_event_fails_alone() {
    // The hostile test plugin exports only the single-event `deliverer`, as
    // plugins built before batches do. Here it posts each event, and
    // panics on a payload holding "poison".
    let receiver = Receiver::start(Behavior::Accept).await;
    let specs = [PipelineSpec::leads("unused", &receiver.url("/u"))];
    let extra = format!(
        "[grants.plain]\nhttp = [\"{origin}\"]\nkv = {{ quota_kib = 64 }}\n\n[[pipeline]]\nname = \"plain\"\nidempotency_key = \"/id\"\nsink = {{ plugin = \"plain\", config = {{ attack = \"panic-on-poison\", url = \"{url}\" }}, batch = {{ max_events = 50 }} }}\nretry = {{ max_attempts = 2, initial_ms = 10, max_ms = 20 }}\nbreaker = {{ enabled = false }}\n",
        origin = weft_tests::origin_of(&receiver.url("/")),
        url = receiver.url("/plain"),
    );
    let setup = HostSetup::with_extra(any_port(), &specs, &extra).unwrap();
    std::fs::copy(
        weft_tests::plugins::HOSTILE,
        setup.dir.path().join("plugins.d/plain.wasm"),
    )
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let mut bodies: Vec<_> = (0..6).map(|i| lead(&format!("plain-{i}"))).collect();
    bodies[4]["note"] = "poison".into();
    let ids = send_paused(&host, "plain", &bodies).await;
    settled(&host, "plain", &ids).await;
    assert!(
        receiver.batches().is_empty(),
        "a single-event sink sends single requests"
    );
    for (i, id) in ids.iter().enumerate() {
        let r = record(&host, id);
        if i == 4 {
            assert_eq!(r.state, EventState::DeadLettered);
            let AttemptOutcome::Failed { message, .. } = &r.attempts[0].outcome else {
                panic!("{:?}", r.attempts[0].outcome)
            };
            assert!(message.contains("crashed"), "{message}");
        } else {
            assert_eq!(r.state, EventState::Delivered, "plain-{i}");
            assert_eq!(r.attempts.len(), 1, "plain-{i} needed no retry");
            assert!(!receiver.requests_for(&format!("plain-{i}")).is_empty());
        }
    }
    assert!(receiver.requests_for("plain-4").is_empty());
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_settings_are_checked() {
    let receiver = Receiver::start(Behavior::Accept).await;
    for (table, expected) in [
        ("max_events = 0", "max_events must be between 1 and 1000"),
        ("max_events = 5000", "max_events must be between 1 and 1000"),
        ("max_bytes = 0", "max_bytes must be at least 1"),
        ("max_wait_ms = 600000", "max_wait_ms must be at most 60000"),
        ("max_event = 5", "unknown field `max_event`"),
    ] {
        let spec = PipelineSpec::leads("checked", &receiver.url("/c")).sink_batch(table);
        let setup = HostSetup::new(any_port(), &[spec]).unwrap();
        let err = weft_host::config::Config::load(&setup.config_path)
            .err()
            .unwrap_or_else(|| panic!("{table} was accepted"))
            .to_string();
        assert!(err.contains(expected), "{table}: {err}");
    }
    let spec = PipelineSpec::leads("checked", &receiver.url("/c"));
    let setup = HostSetup::new(any_port(), &[spec]).unwrap();
    let text = std::fs::read_to_string(&setup.config_path).unwrap().replace(
        "{ plugin = \"filter\", config = { require = [\"/email\"] } }",
        "{ plugin = \"filter\", config = { require = [\"/email\"] }, batch = { max_events = 5 } }",
    );
    std::fs::write(&setup.config_path, text).unwrap();
    let Err(err) = weft_host::config::Config::load(&setup.config_path) else {
        panic!("a batch on a step is refused")
    };
    let err = err.to_string();
    assert!(err.contains("batching is a sink setting"), "{err}");
}
