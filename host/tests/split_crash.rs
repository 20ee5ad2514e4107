//! SIGKILL, again and again, while the children of a 5,000-way split are
//! being delivered, against the real binary: no child is lost, and no child
//! the receiver took is sent again beyond those in flight at each kill (an
//! attempt under way, or delivered with its outcome not yet durable, of
//! which a pipeline keeps a bounded number). The same with a batching sink: a kill in the middle
//! of a batch loses none of its events, and redelivery carries each one's
//! own idempotency key.

use std::time::Duration;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, WeftProcess, free_addr, post_json, wait_until,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(240);
const CHILDREN: usize = 5000;
const CONCURRENCY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_split_loses_no_child_and_resends_only_those_in_flight() {
    kill_9_during_delivery("", CONCURRENCY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_the_middle_of_batches_loses_nothing_and_keeps_each_key() {
    // With a batch of 50, up to 100 events are in flight (one batch fills
    // while the one before it is delivered).
    let receiver =
        kill_9_during_delivery(", batch = { max_events = 50, max_wait_ms = 200 }", 100).await;
    let batches = receiver.batches();
    assert!(
        batches.iter().any(|&n| n > 1),
        "events went in batches: {} batch requests",
        batches.len()
    );
}

/// Split one event into [`CHILDREN`] and kill the host three times while
/// they are delivered; `sink_extra` goes into the sink's table, and
/// `in_flight` is how many events can be under way at once.
async fn kill_9_during_delivery(sink_extra: &str, in_flight: usize) -> Receiver {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let extra = format!(
        "[grants.splitter]\nmax_events_out = {CHILDREN}\noutput_kib = 8192\n\n[[pipeline]]\nname = \"split\"\nidempotency_key = \"/id\"\nmax_split = {CHILDREN}\nconcurrency = {CONCURRENCY}\nsteps = [{{ plugin = \"splitter\" }}]\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{}\" }}{sink_extra} }}\nbreaker = {{ enabled = false }}\n",
        receiver.url("/s")
    );
    let specs = [PipelineSpec::leads("unused", &receiver.url("/u"))];
    let setup = HostSetup::with_extra(listen, &specs, &extra).unwrap();
    std::fs::copy(
        weft_tests::plugins::SPLITTER,
        setup.dir.path().join("plugins.d/splitter.wasm"),
    )
    .unwrap();

    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let body = serde_json::json!({ "id": "big", "n": CHILDREN }).to_string();
    let (status, answer) = post_json(
        &format!("http://{listen}/hooks/split"),
        body.as_bytes(),
        "application/json",
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    // Kill at three points of the delivery, restarting each time.
    let mut host = Some(host);
    let mut kills = 0;
    for at in [500, 1800, 3500] {
        assert!(
            wait_until(WAIT, || receiver.effect_count() >= at).await,
            "delivery went on to {at} (now {})",
            receiver.effect_count()
        );
        host.take().unwrap().sigkill();
        kills += 1;
        host = Some(WeftProcess::start(
            WEFT,
            &setup.config_path,
            listen,
            "weft.log",
            &[],
        ));
    }
    assert!(
        wait_until(WAIT, || receiver.effect_count() == CHILDREN).await,
        "every child delivered after {kills} kills: {} of {CHILDREN}",
        receiver.effect_count()
    );
    host.take().unwrap().sigterm();
    let effects = receiver.effects();
    for i in 1..=CHILDREN {
        assert!(effects.contains_key(&format!("big#{i}")), "child {i} lost");
    }
    let resent: usize = effects.values().map(|n| n - 1).sum();
    let most = effects.values().max().copied().unwrap_or(0);
    let requests = receiver.requests().len();
    // Under way, plus those delivered whose outcome is not yet durable
    // (as many again, and at least a group commit's worth).
    let in_flight = in_flight + in_flight.max(weft_host::store::MAX_GROUP);
    println!(
        "{CHILDREN} children, {kills} kills: {requests} requests, {resent} children sent again (bound: {} in flight), at most {most} times each",
        kills * in_flight
    );
    assert!(
        resent <= kills * in_flight,
        "{resent} children were sent again; at most {in_flight} can be in flight at each of {kills} kills"
    );
    assert!(
        most <= 1 + kills,
        "a child was sent {most} times: more than once per kill"
    );
    receiver
}
