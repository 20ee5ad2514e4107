//! End to end, in process: the host library with the real plugins, a real
//! sled directory and a real HTTP receiver on 127.0.0.1.

use std::collections::HashSet;
use std::time::Duration;
use weft_host::config::Config;
use weft_host::host::RunningHost;
use weft_host::store::{EventId, EventState, StoreCounts};
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, post_json, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(120);

async fn start(setup: &HostSetup) -> RunningHost {
    RunningHost::start(setup.config())
        .await
        .expect("host starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_events_are_delivered_once_each_and_normalised() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::leads(any_port(), &receiver.url("/leads")).unwrap();
    let host = start(&setup).await;
    let url = format!("http://{}/hooks/leads", host.addr);
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..50 {
        let url = url.clone();
        senders.spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..20 {
                let n = s * 20 + i;
                let body = lead(&format!("L{n}"), n).to_string();
                statuses.push(post_json(&url, body.as_bytes(), "application/json").await.0);
            }
            statuses
        });
    }
    let statuses: Vec<u16> = senders.join_all().await.into_iter().flatten().collect();
    assert_eq!(statuses.len(), 1000);
    assert!(
        statuses.iter().all(|s| *s == 202),
        "every event is accepted"
    );
    assert!(
        wait_until(WAIT, || receiver.effect_count() == 1000).await,
        "all 1000 delivered; got {}",
        receiver.effect_count()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let effects = receiver.effects();
    assert!(
        effects.values().all(|n| *n == 1),
        "no key took effect twice"
    );
    assert_eq!(
        receiver.requests().len(),
        1000,
        "no redeliveries without failures"
    );
    for d in receiver.delivered() {
        let n: usize = d.key[1..].parse().unwrap();
        assert_eq!(d.path, "/leads");
        assert_eq!(d.body["email"], format!("person.{n}@example.com"));
        assert_eq!(d.body["name"], format!("Person Number{n}"));
        assert_eq!(d.body["created"], "2026-03-11");
        let cents = 1000 + n;
        assert_eq!(
            d.body["amount_cents"],
            format!("{}.{:02}", cents / 100, cents % 100)
        );
        assert!(!d.correlation_id.is_empty());
        let trace_id = d.correlation_id.replace('-', "");
        assert!(
            d.traceparent.starts_with(&format!("00-{trace_id}-")),
            "the correlation id travels as the trace id: {} / {}",
            d.traceparent,
            d.correlation_id
        );
    }
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_until_delivered() {
    let receiver = Receiver::start(Behavior::FailFirst {
        failures: 2,
        status: 503,
    })
    .await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))
            .with("breaker = { enabled = false }")],
    )
    .unwrap();
    let host = start(&setup).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, body) = send_event(&host, "leads", &lead(&format!("R{n}"), n)).await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().unwrap().parse::<EventId>().unwrap());
    }
    assert!(wait_until(WAIT, || receiver.effect_count() == 20).await);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 60, "two failures and one success per event");
    assert!(
        wait_until(WAIT, || {
            ids.iter().all(|id| {
                host.engine().store().event(id).unwrap().unwrap().state == EventState::Delivered
            })
        })
        .await
    );
    let record = host.engine().store().event(&ids[0]).unwrap().unwrap();
    assert_eq!(record.attempts.len(), 3, "the history keeps every attempt");
    assert_eq!(host.engine().store().counts().queued, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_are_dead_lettered_and_replay_delivers_them() {
    let receiver = Receiver::start(Behavior::Always(400)).await;
    let setup = HostSetup::new(
        any_port(),
        &[
            PipelineSpec::leads("leads", &receiver.url("/leads")),
            PipelineSpec::leads("flaky", &receiver.url("/flaky"))
                .retry("max_attempts = 3, initial_ms = 10, max_ms = 20"),
        ],
    )
    .unwrap();
    let host = start(&setup).await;
    let (status, body) = send_event(&host, "leads", &lead("D1", 1)).await;
    assert_eq!(status, 202);
    let id: EventId = body["id"].as_str().unwrap().parse().unwrap();
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || store.counts().dead_letters == 1).await,
        "dead-lettered at once"
    );
    assert_eq!(receiver.requests().len(), 1, "a 400 is not retried");
    let dead =
        weft_host::engine::dead_letter_views(&store, None, None, &Default::default()).unwrap();
    assert_eq!(dead[0].id, id.to_string());
    assert_eq!(dead[0].error_kind, "fatal");
    assert_eq!(dead[0].error, "HTTP 400");
    assert_eq!(dead[0].failed_step, "sink (http-sink)");

    // Exhausted retries also end in the DLQ, with every attempt recorded.
    receiver.set_behavior(Behavior::Always(500));
    let (_, body) = send_event(&host, "flaky", &lead("D2", 2)).await;
    let flaky: EventId = body["id"].as_str().unwrap().parse().unwrap();
    assert!(wait_until(WAIT, || store.counts().dead_letters == 2).await);
    let rec = store.event(&flaky).unwrap().unwrap();
    assert_eq!(rec.state, EventState::DeadLettered);
    assert_eq!(rec.attempts.len(), 3);

    // Fix the receiver and replay everything through the admin API.
    receiver.set_behavior(Behavior::Accept);
    let url = format!("http://{}/api/v1/dlq/replay", host.admin_addr);
    let (status, body) = post_json(&url, br#"{"all": true}"#, "application/json").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 2);
    assert!(wait_until(WAIT, || receiver.effect_count() == 2).await);
    assert!(wait_until(WAIT, || store.counts().dead_letters == 0).await);
    assert!(
        wait_until(WAIT, || store.event(&id).unwrap().unwrap().state
            == EventState::Delivered)
        .await,
        "the replayed event is recorded as delivered"
    );
    let rec = store.event(&id).unwrap().unwrap();
    assert_eq!(rec.replays_at_ms.len(), 1);
    let keys: HashSet<String> = receiver.delivered().into_iter().map(|d| d.key).collect();
    assert_eq!(
        keys,
        HashSet::from(["D1".to_string(), "D2".to_string()]),
        "replay keeps the key"
    );
    // Replaying something that is not dead-lettered changes nothing.
    let (_, body) = post_json(
        &url,
        format!(r#"{{"ids": ["{id}"]}}"#).as_bytes(),
        "application/json",
    )
    .await;
    assert_eq!(body["results"][0]["result"], "not-dead-lettered");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_requests_get_their_status_and_store_nothing() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))],
        "",
    )
    .unwrap();
    let mut config: Config = setup.config();
    config.server.max_body_bytes = 1024;
    let host = RunningHost::start(config).await.unwrap();
    let hook = format!("http://{}/hooks/leads", host.addr);
    let cases: Vec<(&str, String, Vec<u8>, &str, u16)> = vec![
        (
            "invalid JSON",
            hook.clone(),
            b"{\"id\": ".to_vec(),
            "application/json",
            400,
        ),
        (
            "unknown pipeline",
            format!("http://{}/hooks/nope", host.addr),
            b"{\"id\":\"x\"}".to_vec(),
            "application/json",
            404,
        ),
        (
            "body over the limit",
            hook.clone(),
            format!("{{\"id\":\"x\",\"pad\":\"{}\"}}", "a".repeat(2000)).into_bytes(),
            "application/json",
            413,
        ),
        (
            "wrong content type",
            hook.clone(),
            b"{\"id\":\"x\"}".to_vec(),
            "text/plain",
            415,
        ),
        (
            "no idempotency key",
            hook.clone(),
            b"{\"email\":\"x\"}".to_vec(),
            "application/json",
            422,
        ),
    ];
    for (what, url, body, ct, want) in cases {
        let (status, answer) = post_json(&url, &body, ct).await;
        assert_eq!(status, want, "{what}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what} explains itself"
        );
    }
    let store = host.engine().store().clone();
    let counts = store.counts();
    assert_eq!(counts, StoreCounts::default(), "nothing stored: {counts:?}");
    assert!(receiver.requests().is_empty());
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_events_are_recorded_and_not_delivered() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::leads(any_port(), &receiver.url("/leads")).unwrap();
    let host = start(&setup).await;
    let (status, body) = send_event(
        &host,
        "leads",
        &serde_json::json!({"id": "F1", "name": "no email"}),
    )
    .await;
    assert_eq!(status, 202);
    let id: EventId = body["id"].as_str().unwrap().parse().unwrap();
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || store.event(&id).unwrap().unwrap().state
            == EventState::Filtered)
        .await
    );
    assert!(receiver.requests().is_empty());
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_delivers_every_event_accepted_before_it() {
    let receiver = Receiver::start(Behavior::Always(503)).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))
            // Enough attempts that none runs out on a slow machine.
            .retry("max_attempts = 100000, initial_ms = 50, max_ms = 200")
            .with("breaker = { enabled = false }")],
    )
    .unwrap();
    let host = start(&setup).await;
    let mut accepted = Vec::new();
    for n in 0..200 {
        let (status, _) = send_event(&host, "leads", &lead(&format!("S{n}"), n)).await;
        assert_eq!(status, 202);
        accepted.push(format!("S{n}"));
    }
    assert!(
        wait_until(WAIT, || receiver.requests().len() >= 200).await,
        "attempts are under way"
    );
    assert_eq!(host.engine().store().counts().dead_letters, 0);
    host.shutdown().await;
    assert_eq!(receiver.effect_count(), 0);

    receiver.set_behavior(Behavior::Accept);
    let host = start(&setup).await;
    assert!(
        wait_until(WAIT, || receiver.effect_count() == 200).await,
        "got {}",
        receiver.effect_count()
    );
    let effects = receiver.effects();
    for key in &accepted {
        assert_eq!(effects.get(key), Some(&1), "{key} delivered once");
    }
    assert!(wait_until(WAIT, || host.engine().store().counts().queued == 0).await);
    host.shutdown().await;
}

/// http-sink with `compress = "gzip"`: bodies past the threshold arrive
/// gzipped with `Content-Encoding: gzip` and decode to the event; smaller
/// ones arrive as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_past_the_threshold_decode_at_the_receiver() {
    use std::io::Read;
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("zipped", &receiver.url("/z"))
            .sink_config("compress = \"gzip\", compress_min_bytes = 512")],
    )
    .unwrap();
    let host = start(&setup).await;
    let mut big = lead("big", 1);
    big["notes"] = "lorem ipsum ".repeat(400).into();
    for body in [&big, &lead("small", 2)] {
        assert_eq!(send_event(&host, "zipped", body).await.0, 202);
    }
    assert!(wait_until(WAIT, || receiver.effect_count() == 2).await);
    let big_req = &receiver.requests_for("big")[0];
    assert_eq!(big_req.header("content-encoding"), Some("gzip"));
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(big_req.raw_body.as_ref())
        .read_to_end(&mut json)
        .unwrap();
    let decoded: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(decoded["email"], "person.1@example.com");
    assert!(big_req.raw_body.len() * 4 < json.len(), "it was compressed");
    let small = &receiver.requests_for("small")[0];
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.body["email"], "person.2@example.com");
    host.shutdown().await;
}
