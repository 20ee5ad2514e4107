//! Erasure of a data subject: their events in the run history and the
//! dead-letter queue lose their payload (a large one's file included) and
//! the value wherever the host wrote it down; other subjects' events are
//! untouched; queued ones are counted, not erased; the audit log records
//! the erasure without the value; the request reaches a pipeline's sink.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_host::store::{EventId, EventState};
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

async fn erase(host: &RunningHost, body: serde_json::Value) -> (u16, serde_json::Value) {
    let reply = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None)
        .call(
            hyper::Method::POST,
            "/api/v1/erase",
            Some(body.to_string().into_bytes()),
            &[],
        )
        .await
        .unwrap();
    (reply.status, reply.body)
}

fn files_named(dir: &std::path::Path, name: &str) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            n += files_named(&path, name);
        } else if path
            .file_name()
            .is_some_and(|f| f.to_string_lossy().contains(name))
        {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subject_is_erased_from_history_and_dead_letters_and_downstream_is_told() {
    // `bad-` keys are refused (400, echoed with the body): dead letters.
    let receiver = Receiver::start(Behavior::FailKeys {
        prefix: "bad-".into(),
        status: 400,
    })
    .await;
    let erasures = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        any_port(),
        &[
            PipelineSpec::leads("leads", &receiver.url("/l"))
                .with("subjects = { email = \"/email\" }"),
            PipelineSpec::leads("erasures", &erasures.url("/e"))
                .without_steps()
                .with("subjects = { email = \"/value\" }"),
        ],
    )
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    let store = engine.store().clone();
    let with_email = |id: &str, email: &str| {
        let mut l = lead(id, 1);
        l["email"] = email.into();
        l
    };
    let mut ann = Vec::new();
    for (id, email) in [
        ("good-1", "Ann@Example.com"),
        ("good-2", "ann@example.com"),
        ("bad-1", "ann@example.com"),
    ] {
        let (status, answer) = send_event(&host, "leads", &with_email(id, email)).await;
        assert_eq!(status, 202, "{answer}");
        ann.push(answer["id"].as_str().unwrap().parse::<EventId>().unwrap());
    }
    // A large one: its payload is a file of its own.
    let mut big = with_email("good-big", "ann@example.com");
    big["notes"] = "x".repeat(100 * 1024).into();
    let (_, answer) = send_event(&host, "leads", &big).await;
    let big_id: EventId = answer["id"].as_str().unwrap().parse().unwrap();
    ann.push(big_id);
    let (_, answer) = send_event(&host, "leads", &with_email("good-3", "bob@example.com")).await;
    let bob: EventId = answer["id"].as_str().unwrap().parse().unwrap();
    assert!(wait_until(WAIT, || engine.status("leads").unwrap().queued == 0).await);
    assert_eq!(store.dead_letters(Some("leads")).unwrap().len(), 1);
    assert_eq!(files_named(&setup.data_dir(), &big_id.to_string()), 1);
    // One more of Ann's waits in a paused pipeline: counted, not erased.
    engine.pause("leads").await.unwrap();
    assert_eq!(
        send_event(&host, "leads", &with_email("good-4", "ann@example.com"))
            .await
            .0,
        202
    );

    let (status, answer) = erase(
        &host,
        serde_json::json!({"subject": "email", "value": "ANN@example.com", "emit": "erasures"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["history"], 3, "{answer}");
    assert_eq!(answer["dead_letters"], 1);
    assert_eq!(answer["queued_left"], 1);
    for id in &ann {
        let r = store.event(id).unwrap().unwrap();
        let text = format!("{r:?}").to_lowercase();
        assert!(
            !text.contains("ann@example.com"),
            "{id} still names the subject: {text}"
        );
        let payload: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(payload["erased"], true);
    }
    let dead = store.event(&ann[2]).unwrap().unwrap();
    assert_eq!(
        dead.state,
        EventState::DeadLettered,
        "still a dead letter, now empty"
    );
    assert_eq!(
        files_named(&setup.data_dir(), &big_id.to_string()),
        0,
        "the payload file is gone"
    );
    let untouched = store.event(&bob).unwrap().unwrap();
    assert!(String::from_utf8_lossy(&untouched.payload).contains("bob@example.com"));
    // The API shows the erased events as erased.
    let view = weft_tests::admin_call(
        &host,
        hyper::Method::GET,
        &format!("/api/v1/events/{}", ann[0]),
    )
    .await;
    assert!(
        !view.to_string().to_lowercase().contains("ann@example.com"),
        "{view}"
    );
    // The audit log says what was done, not to whom.
    let audit = store.audit().records(0).unwrap();
    let record = audit
        .iter()
        .find(|r| r.action == "erase")
        .expect("the erasure is audited");
    assert!(
        record
            .detail
            .contains("3 events in the history and 1 dead letters"),
        "{}",
        record.detail
    );
    assert!(
        !record.detail.to_lowercase().contains("ann@"),
        "{}",
        record.detail
    );
    // Downstream hears of it.
    assert!(wait_until(WAIT, || erasures.effect_count() == 1).await);
    let sent = &erasures.requests()[0];
    assert_eq!(sent.body["type"], "erasure-request");
    assert_eq!(sent.body["subject"], "email");
    assert_eq!(sent.body["value"], "ANN@example.com");
    // A subject no pipeline names is refused, saying how to name it.
    let (status, answer) =
        erase(&host, serde_json::json!({"subject": "phone", "value": "1"})).await;
    assert_eq!(status, 422);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("subjects = { phone"),
        "{answer}"
    );
    host.shutdown().await;
}
