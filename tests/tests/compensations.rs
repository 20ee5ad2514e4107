//! Compensations: an event dead-lettered after its sink was called is
//! undone by the pipeline's `compensate` sink once per event key — queued
//! with the dead letter, retried like any event, recorded in both events'
//! history — and a replayed dead letter that fails again is not compensated
//! twice; one that never reached its sink is not compensated at all.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, admin_call, any_port, lead, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

fn header<'a>(view: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    view["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_whose_sink_was_called_is_compensated_once() {
    // `bad-` keys fail at the sink (500, as if half applied); the undo
    // endpoint at first fails too, so the compensation is retried.
    let receiver = Receiver::start(Behavior::FailKeyTimes {
        key: "compensate:bad-1".into(),
        times: 1,
        status: 503,
    })
    .await;
    let orders = Receiver::start(Behavior::FailKeys {
        prefix: "bad-".into(),
        status: 500,
    })
    .await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("orders", &orders.url("/orders"))
            .retry("max_attempts = 2, initial_ms = 10, max_ms = 20")
            .with(&format!(
                "compensate = {{ plugin = \"http-sink\", config = {{ url = \"{}\" }} }}",
                receiver.url("/undo")
            ))],
    )
    .unwrap();
    // The grant covers the undo endpoint too.
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    let text = text.replacen(
        "http = [",
        &format!(
            "http = [\"{}\", ",
            weft_tests::origin_of(&receiver.url("/"))
        ),
        1,
    );
    std::fs::write(&setup.config_path, text).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    let mut ids = Vec::new();
    for key in ["good-1", "bad-1"] {
        let (status, answer) = send_event(&host, "orders", &lead(key, 1)).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_string());
    }
    // A webhook cannot post to the compensation pipeline itself.
    let (status, _) = send_event(&host, "orders.compensate", &lead("x", 1)).await;
    assert_eq!(status, 404);
    let undone = |r: &Receiver| {
        r.delivered()
            .iter()
            .filter(|d| d.key == "compensate:bad-1")
            .count()
    };
    assert!(
        wait_until(WAIT, || undone(&receiver) == 1).await,
        "compensated"
    );
    assert_eq!(
        receiver.requests().len(),
        2,
        "the compensation was retried once after its own failure"
    );
    assert_eq!(engine.status("orders").unwrap().dead_letters, 1);
    let dead = admin_call(
        &host,
        hyper::Method::GET,
        &format!("/api/v1/events/{}", ids[1]),
    )
    .await;
    let comp_id = header(&dead, "x-weft-compensation")
        .unwrap_or_else(|| panic!("the dead letter names its compensation: {dead}"))
        .to_string();
    let comp = admin_call(
        &host,
        hyper::Method::GET,
        &format!("/api/v1/events/{comp_id}"),
    )
    .await;
    assert_eq!(comp["pipeline"], "orders.compensate", "{comp}");
    assert_eq!(comp["state"], "delivered", "{comp}");
    assert_eq!(header(&comp, "x-weft-compensates"), Some(ids[1].as_str()));
    assert!(
        header(&comp, "x-weft-failure").is_some_and(|f| f.contains("HTTP 500")),
        "{comp}"
    );
    assert_eq!(comp["attempts"], 2, "{comp}");
    assert_eq!(comp["parent"], ids[1].as_str(), "{comp}");
    // The delivered event has no compensation.
    let good = admin_call(
        &host,
        hyper::Method::GET,
        &format!("/api/v1/events/{}", ids[0]),
    )
    .await;
    assert!(header(&good, "x-weft-compensation").is_none());

    // Replayed and failing again: dead-lettered again, not compensated again.
    let client = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let replay = client
        .call(
            hyper::Method::POST,
            "/api/v1/dlq/replay",
            Some(
                serde_json::json!({ "ids": [ids[1]] })
                    .to_string()
                    .into_bytes(),
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(replay.status, 200, "{}", replay.body);
    let attempts = || {
        orders
            .requests()
            .iter()
            .filter(|d| d.key == "bad-1")
            .count()
    };
    assert!(wait_until(WAIT, || attempts() == 4).await, "{}", attempts());
    assert!(wait_until(WAIT, || engine.status("orders").unwrap().dead_letters == 1).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(undone(&receiver), 1, "one compensation per event key");

    // An event that fails before its sink is not compensated by itself;
    // by hand it is, once.
    let mut early = lead("early-1", 1);
    early["created"] = "not a date".into();
    let (status, answer) = send_event(&host, "orders", &early).await;
    assert_eq!(status, 202, "{answer}");
    let early_id = answer["id"].as_str().unwrap().to_string();
    assert!(wait_until(WAIT, || engine.status("orders").unwrap().dead_letters == 2).await);
    let view = admin_call(
        &host,
        hyper::Method::GET,
        &format!("/api/v1/events/{early_id}"),
    )
    .await;
    assert!(header(&view, "x-weft-compensation").is_none(), "{view}");
    let by_hand = || async {
        client
            .call(
                hyper::Method::POST,
                "/api/v1/dlq/compensate",
                Some(
                    serde_json::json!({ "ids": [early_id] })
                        .to_string()
                        .into_bytes(),
                ),
                &[],
            )
            .await
            .unwrap()
            .body
    };
    assert_eq!(
        by_hand().await["results"][0]["result"],
        "compensation-queued"
    );
    assert!(
        wait_until(WAIT, || receiver
            .delivered()
            .iter()
            .any(|d| d.key == "compensate:early-1"))
        .await
    );
    assert_eq!(
        by_hand().await["results"][0]["result"],
        "already-compensated"
    );
    let log = admin_call(&host, hyper::Method::GET, "/api/v1/audit-log").await;
    assert!(log.to_string().contains("dlq-compensate"), "{log}");
    host.shutdown().await;
}
