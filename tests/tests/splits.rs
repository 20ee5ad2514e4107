//! Splits: a step that returns several events makes each a durable child
//! event of its own. A failing child is retried or dead-lettered alone; the
//! children already delivered are never sent again; a split over a cap is
//! refused with the cap named and stores no child.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_host::store::{EventId, EventState};
use weft_tests::{Behavior, HostSetup, Receiver, any_port, send_event, wait_until};

const WAIT: Duration = Duration::from_secs(180);

/// A host with one pipeline `split`: the splitter, then http-sink to the
/// receiver. `grant` and `pipeline` are extra TOML lines for the splitter's
/// grant and the pipeline.
fn setup(receiver: &Receiver, grant: &str, pipeline: &str) -> HostSetup {
    let extra = format!(
        "[grants.splitter]\n{grant}\n\n[[pipeline]]\nname = \"split\"\nidempotency_key = \"/id\"\nsteps = [{{ plugin = \"splitter\" }}]\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{}\" }} }}\nretry = {{ max_attempts = 3, initial_ms = 20, max_ms = 50 }}\nbreaker = {{ enabled = false }}\n{pipeline}\n",
        receiver.url("/s")
    );
    // The lead pipeline's spec gives the http-sink grant its origin.
    let specs = [weft_tests::PipelineSpec::leads(
        "unused",
        &receiver.url("/u"),
    )];
    let setup = HostSetup::with_extra(any_port(), &specs, &extra).unwrap();
    std::fs::copy(
        weft_tests::plugins::SPLITTER,
        setup.dir.path().join("plugins.d/splitter.wasm"),
    )
    .unwrap();
    setup
}

fn parent(id: &str, n: u64) -> serde_json::Value {
    serde_json::json!({ "id": id, "n": n })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_that_fails_is_retried_alone_and_no_sibling_is_sent_twice() {
    let receiver = Receiver::start(Behavior::FailKeyTimes {
        key: "big#500".into(),
        times: 1,
        status: 503,
    })
    .await;
    let setup = setup(&receiver, "", "");
    let host = RunningHost::start(setup.config()).await.unwrap();
    let (status, answer) = send_event(&host, "split", &parent("big", 1000)).await;
    assert_eq!(status, 202, "{answer}");
    let parent_id: EventId = answer["id"].as_str().unwrap().parse().unwrap();
    assert!(
        wait_until(WAIT, || receiver.effect_count() == 1000).await,
        "every child delivered: {}",
        receiver.effect_count()
    );
    assert!(wait_until(WAIT, || host.engine().status("split").unwrap().queued == 0).await);
    let requests = receiver.requests();
    assert_eq!(
        requests.len(),
        1001,
        "each child once, plus the one retry of child 500"
    );
    for (key, n) in receiver.effects() {
        assert_eq!(n, 1, "{key} took effect {n} times");
    }
    assert_eq!(receiver.requests_for("big#500").len(), 2);
    // The parent is finished as a split, with its children in order.
    let store = host.engine().store().clone();
    let parent = store.event(&parent_id).unwrap().unwrap();
    assert_eq!(parent.state, EventState::Split);
    assert_eq!(parent.attempts.len(), 1);
    assert_eq!(parent.lineage.children.len(), 1000);
    let child_500 = store.event(&parent.lineage.children[499]).unwrap().unwrap();
    assert_eq!(child_500.key, "big#500");
    assert_eq!(child_500.lineage.parent, Some(parent_id));
    assert_eq!(child_500.attempts.len(), 2, "its own retry, nothing else's");
    assert_eq!(child_500.state, EventState::Delivered);
    assert_eq!(
        child_500.correlation_id, parent.correlation_id,
        "children share the parent's correlation id"
    );
    // The API shows the link both ways and the split in the history.
    let client = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let view = client
        .call(
            hyper::Method::GET,
            &format!("/api/v1/events/{parent_id}"),
            None,
            &[],
        )
        .await
        .unwrap()
        .body;
    assert_eq!(view["state"], "split");
    assert_eq!(view["children"].as_array().unwrap().len(), 1000);
    assert_eq!(view["history"][0]["outcome"], "split");
    assert!(
        view["history"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("split into 1000 events by step 1 (splitter)"),
        "{view}"
    );
    let child = client
        .call(
            hyper::Method::GET,
            &format!("/api/v1/events/{}", child_500.id),
            None,
            &[],
        )
        .await
        .unwrap()
        .body;
    assert_eq!(child["parent"], parent_id.to_string());
    // The books balance with splits: 1 accepted + 1000 children = 1 split + 1000 delivered.
    let status = host.engine().status("split").unwrap();
    assert_eq!(
        (
            status.accepted,
            status.split,
            status.children,
            status.delivered
        ),
        (1, 1, 1000, 1000)
    );
    assert_eq!(status.unaccounted, 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_split_over_a_cap_is_refused_naming_it_and_stores_no_child() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = setup(&receiver, "max_events_out = 10", "max_split = 5");
    let host = RunningHost::start(setup.config()).await.unwrap();
    for (id, n, cap) in [
        ("over-grant", 11, "max_events_out = 10"),
        ("over-pipeline", 6, "max_split = 5"),
    ] {
        let (status, answer) = send_event(&host, "split", &parent(id, n)).await;
        assert_eq!(status, 202, "{answer}");
        let parent_id: EventId = answer["id"].as_str().unwrap().parse().unwrap();
        let store = host.engine().store().clone();
        assert!(
            wait_until(WAIT, || store
                .event(&parent_id)
                .unwrap()
                .is_some_and(|r| r.state == EventState::DeadLettered))
            .await,
            "{id} is dead-lettered"
        );
        let record = store.event(&parent_id).unwrap().unwrap();
        let error = record.last_error().unwrap();
        assert_eq!(error.1.as_str(), "invalid-input");
        assert!(error.2.contains(cap), "{}", error.2);
        assert_eq!(record.attempts.len(), 1, "not retried");
        assert!(record.lineage.children.is_empty());
    }
    // A split within both caps goes through.
    assert_eq!(send_event(&host, "split", &parent("fits", 5)).await.0, 202);
    assert!(wait_until(WAIT, || receiver.effect_count() == 5).await);
    // The children's last writes may still be landing as the count reads.
    let store = host.engine().store().clone();
    wait_until(WAIT, || store.counts().events == 2 + 1 + 5).await;
    assert_eq!(
        store.counts().events,
        2 + 1 + 5,
        "the refused parents, the split parent and its five children: no child of a refused split"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_child_that_fails_for_good_is_dead_lettered_and_replayed_alone() {
    let receiver = Receiver::start(Behavior::FailKeyTimes {
        key: "few#3".into(),
        times: 3,
        status: 400,
    })
    .await;
    let setup = setup(&receiver, "", "");
    let host = RunningHost::start(setup.config()).await.unwrap();
    assert_eq!(send_event(&host, "split", &parent("few", 5)).await.0, 202);
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || store.dead_letters(Some("split")).unwrap().len()
            == 1
            && receiver.effect_count() == 4)
        .await
    );
    let dead = store.dead_letters(Some("split")).unwrap().remove(0);
    assert_eq!(dead.key, "few#3");
    assert_eq!(dead.attempts.len(), 1, "a 400 is not retried");
    let before = receiver.requests().len();
    // The receiver takes it now; set before the replay, whose attempt may
    // reach the receiver before this test runs its next line.
    receiver.set_behavior(Behavior::Accept);
    let outcomes = weft_host::engine::replay(&store, Some(&host.engine()), &[dead.id])
        .await
        .unwrap();
    assert_eq!(outcomes[0].result, "requeued");
    assert!(wait_until(WAIT, || receiver.effect_count() == 5).await);
    assert!(wait_until(WAIT, || host.engine().status("split").unwrap().queued == 0).await);
    let after = receiver.requests();
    assert_eq!(
        after.len(),
        before + 1,
        "only the replayed child is sent again"
    );
    assert_eq!(after.last().unwrap().key, "few#3");
    let replayed = store.event(&dead.id).unwrap().unwrap();
    assert_eq!(replayed.state, EventState::Delivered);
    assert_eq!(
        replayed.attempts.last().unwrap().steps[0].step,
        "sink (http-sink)",
        "a replayed child starts after the split: the splitter does not run again"
    );
    assert_eq!(host.engine().status("split").unwrap().unaccounted, 0);
    host.shutdown().await;
}
