//! Several weft hosts on one NATS JetStream cluster (`[store] backend =
//! "jetstream"`), against a real three-node `nats-server` cluster started
//! here: events accepted by any host are delivered with their keys; the
//! queued and in-flight events of a host killed with SIGKILL are taken over
//! by another; a poll or a schedule runs on one host at a time and moves
//! when its holder dies; and an installation moves from sled to JetStream
//! and back with its queue and dead letters.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;
use weft_tests::brokers::NatsCluster;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, WeftProcess, free_addr, lead, wait_until,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(120);
const AUDIT_KEY: &str = "5f1c0b7a9e2d4c6b8a0f1e3d5c7b9a1f2e4d6c8b0a1f3e5d7c9b1a3f5e7d9c0b";

/// The `[store]` table for the cluster at `urls`, with `replicas` copies.
fn store_table(urls: &str, replicas: usize, prefix: &str) -> String {
    format!(
        "[store]\nbackend = \"jetstream\"\nurl = \"{urls}\"\nreplicas = {replicas}\nprefix = \"{prefix}\"\naudit_key = \"AUDIT_KEY\"\n"
    )
}

/// A host of the `leads` pipeline on the cluster at `urls`.
fn cluster_host(listen: SocketAddr, pipelines: &[PipelineSpec], store: &str) -> HostSetup {
    HostSetup::with_extra(listen, pipelines, store)
        .and_then(|h| h.with_secrets(&[("AUDIT_KEY", AUDIT_KEY)]))
        // An event and its record fit in one message of the servers'
        // default max_payload (1 MiB).
        .and_then(|h| h.server_line("max_body_bytes = 983040"))
        .expect("host setup")
}

/// Two hosts' listen addresses and setups on one store.
fn two_hosts(pipelines: &[PipelineSpec], store: &str) -> [(SocketAddr, HostSetup); 2] {
    [(); 2].map(|()| {
        let listen = free_addr();
        (listen, cluster_host(listen, pipelines, store))
    })
}

fn log_of(setup: &HostSetup, name: &str) -> String {
    std::fs::read_to_string(setup.dir.path().join(name)).unwrap_or_default()
}

async fn post(listen: SocketAddr, pipeline: &str, body: &serde_json::Value) -> u16 {
    weft_tests::post_event(listen, pipeline, body).await.0
}

fn delivered_keys(receiver: &Receiver) -> HashSet<String> {
    receiver.delivered().iter().map(|d| d.key.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_split_across_two_hosts_are_delivered_and_a_killed_host_s_work_is_taken_over() {
    let cluster = NatsCluster::start(3);
    // Two failures per key, half a second apart: when a host dies, most of
    // what it accepted is still waiting for its next attempt.
    let receiver = Receiver::start(Behavior::FailFirst {
        failures: 2,
        status: 503,
    })
    .await;
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads"))
        .retry("max_attempts = 20, initial_ms = 500, max_ms = 1000")
        .with("breaker = { enabled = false }");
    let store = store_table(&cluster.urls(), 3, "two");
    let [(la, a), (lb, b)] = two_hosts(std::slice::from_ref(&spec), &store);
    let host_a = WeftProcess::start(WEFT, &a.config_path, la, "weft.log", &[]);
    let mut host_b = Some(WeftProcess::start(
        WEFT,
        &b.config_path,
        lb,
        "weft.log",
        &[],
    ));
    let mut accepted = HashSet::new();
    for n in 0..240 {
        let id = format!("lead-{n}");
        let to = if n % 2 == 0 { la } else { lb };
        let status = post(to, "leads", &lead(&id, n)).await;
        assert_eq!(status, 202, "{id} on {to}");
        accepted.insert(id);
    }
    // A repeat on the other host is a duplicate: the key is the cluster's.
    assert_eq!(post(lb, "leads", &lead("lead-0", 0)).await, 200);
    // Host A dies with its events queued or in flight.
    host_a.sigkill();
    let killed = std::time::Instant::now();
    let took_over = wait_until(WAIT, || {
        log_of(&b, "weft.log").contains("took over the queued events of a host that stopped")
    })
    .await;
    println!(
        "host B took host A's work over {:?} after the kill",
        killed.elapsed()
    );
    let got = wait_until(WAIT, || delivered_keys(&receiver).is_superset(&accepted)).await;
    let missing: Vec<_> = accepted
        .difference(&delivered_keys(&receiver))
        .cloned()
        .collect();
    assert!(
        got,
        "every accepted event is delivered; missing {} of 240: {:?}\nhost B's log:\n{}",
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        log_of(&b, "weft.log")
    );
    assert!(took_over, "host B says it took host A's work over");
    // Host A comes back (a new process), and is killed again mid-load:
    // still nothing acknowledged is lost.
    let host_a = WeftProcess::start(WEFT, &a.config_path, la, "weft2.log", &[]);
    let mut second = HashSet::new();
    for n in 240..360 {
        if n == 300 {
            // This time B goes, mid-load, and A takes its work.
            host_b.take().expect("host B").sigkill();
        }
        let id = format!("lead-{n}");
        let to = if n < 300 && n % 2 == 1 { lb } else { la };
        assert_eq!(post(to, "leads", &lead(&id, n)).await, 202, "{id}");
        second.insert(id);
    }
    let got = wait_until(WAIT, || delivered_keys(&receiver).is_superset(&second)).await;
    assert!(
        got,
        "after the second kill, missing: {:?}\nhost A's log:\n{}",
        second
            .difference(&delivered_keys(&receiver))
            .take(10)
            .collect::<Vec<_>>(),
        log_of(&a, "weft2.log")
    );
    host_a.sigterm();
}

/// The keys `receiver` got, each with the events (correlation ids, which
/// are event ids here) it came as.
fn events_by_key(receiver: &Receiver) -> HashMap<String, HashSet<String>> {
    let mut by_key: HashMap<String, HashSet<String>> = HashMap::new();
    for d in receiver.delivered() {
        by_key.entry(d.key).or_default().insert(d.correlation_id);
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_that_retries_on_another_host_after_a_kill_gets_one_event_per_key() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const SENDERS: usize = 32;
    const EACH: usize = 30;
    let cluster = NatsCluster::start(3);
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec =
        PipelineSpec::leads("leads", &receiver.url("/leads")).with("breaker = { enabled = false }");
    let store = store_table(&cluster.urls(), 3, "halfway");
    let [(la, a), (lb, b)] = two_hosts(std::slice::from_ref(&spec), &store);
    let host_a = WeftProcess::start(WEFT, &a.config_path, la, "weft.log", &[]);
    let _host_b = WeftProcess::start(WEFT, &b.config_path, lb, "weft.log", &[]);
    // Senders keep many requests in flight on A; when A stops answering,
    // each resends what it had not seen acknowledged to B, as a client
    // behind a load balancer would.
    let a_gone = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (a_gone, answered) = (a_gone.clone(), answered.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..EACH {
                let n = s * EACH + i;
                let body = lead(&format!("lead-{n}"), n).to_string();
                loop {
                    let to = if a_gone.load(Ordering::SeqCst) {
                        lb
                    } else {
                        la
                    };
                    let url = format!("http://{to}/hooks/leads");
                    match weft_tests::try_post_with_headers(
                        &url,
                        body.as_bytes(),
                        "application/json",
                        &[],
                    )
                    .await
                    {
                        Ok((200 | 202, _)) => break,
                        Ok((status, answer)) => {
                            assert_eq!(status, 503, "lead-{n} on {to}: {answer}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_) => a_gone.store(true, Ordering::SeqCst),
                    }
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    assert!(
        wait_until(WAIT, || answered.load(Ordering::SeqCst)
            >= SENDERS * EACH / 3)
        .await
    );
    host_a.sigkill();
    for s in senders {
        s.await.expect("sender");
    }
    let all: HashSet<String> = (0..SENDERS * EACH).map(|n| format!("lead-{n}")).collect();
    assert!(
        wait_until(WAIT, || events_by_key(&receiver)
            .keys()
            .cloned()
            .collect::<HashSet<_>>()
            == all)
        .await,
        "every key is delivered"
    );
    // What A left is taken over once A's liveness entry expires (and its
    // copies delivered by then, or never).
    let _ = wait_until(Duration::from_secs(30), || {
        log_of(&b, "weft.log").contains("took over the queued events of a host that stopped")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "copies A stored but never acknowledged, removed by B: {}",
        log_of(&b, "weft.log")
            .matches("stopped before acknowledging")
            .count()
    );
    let twice: Vec<_> = events_by_key(&receiver)
        .into_iter()
        .filter(|(_, events)| events.len() > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "a key became two events: {twice:?}\nhost B's log:\n{}",
        log_of(&b, "weft.log")
    );
}

/// The pipeline `ticks`: a schedule firing every second into `sink_url`.
fn ticks(sink_url: &str) -> PipelineSpec {
    PipelineSpec::leads("ticks", sink_url)
        .without_steps()
        .with("trigger = { schedule = { cron = \"* * * * * *\" } }")
}

fn tick_times(receiver: &Receiver) -> Vec<u64> {
    let mut times: Vec<u64> = receiver
        .delivered()
        .iter()
        .filter_map(|d| d.key.rsplit(':').next()?.parse().ok())
        .collect();
    times.sort_unstable();
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_fires_on_one_host_at_a_time_and_moves_when_its_holder_dies() {
    const HOLDS: &str = "this host holds the lease: it runs the schedule";
    let cluster = NatsCluster::start(3);
    let receiver = Receiver::start(Behavior::Accept).await;
    let store = store_table(&cluster.urls(), 3, "lease");
    let [(la, a), (lb, b)] = two_hosts(&[ticks(&receiver.url("/ticks"))], &store);
    let host_a = WeftProcess::start(WEFT, &a.config_path, la, "weft.log", &[]);
    assert!(
        wait_until(WAIT, || log_of(&a, "weft.log").contains(HOLDS)).await,
        "the first host takes the lease"
    );
    let host_b = WeftProcess::start(WEFT, &b.config_path, lb, "weft.log", &[]);
    assert!(wait_until(WAIT, || tick_times(&receiver).len() >= 8).await);
    // Both hosts run; only the holder fires.
    assert!(
        !log_of(&b, "weft.log").contains(HOLDS),
        "the second host waits while the first holds the lease"
    );
    let dupes = |setup: &HostSetup| {
        log_of(setup, "weft.log")
            .lines()
            .filter(|l| l.contains("duplicate"))
            .count()
    };
    assert_eq!(dupes(&a) + dupes(&b), 0, "no tick was fired twice");
    let killed_at = weft_host::store::now_ms();
    host_a.sigkill();
    assert!(
        wait_until(WAIT, || log_of(&b, "weft.log").contains(HOLDS)).await,
        "the lease moves to the surviving host"
    );
    assert!(
        wait_until(WAIT, || tick_times(&receiver)
            .iter()
            .filter(|t| **t > killed_at)
            .count()
            >= 3)
        .await,
        "ticks go on from the surviving host"
    );
    // Every tick fired once: a time may reach the receiver twice only as the
    // same event (its correlation id is the event's id), redelivered because
    // the killed host was delivering it; a second event for a time would be
    // a tick fired twice.
    let mut fired: HashMap<String, HashSet<String>> = HashMap::new();
    let mut repeated = Vec::new();
    for d in receiver.delivered() {
        let events = fired.entry(d.key.clone()).or_default();
        if !events.insert(d.correlation_id.clone()) || events.len() > 1 {
            repeated.push(d.key.clone());
        }
    }
    let times = tick_times(&receiver);
    for (key, events) in &fired {
        assert_eq!(events.len(), 1, "tick {key} fired as {events:?}: {times:?}");
    }
    assert!(
        repeated.len() <= 1,
        "only the tick in flight at the kill may be delivered again: {repeated:?}"
    );
    host_b.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_one_nats_node_killed_mid_load_nothing_acknowledged_is_lost() {
    let mut cluster = NatsCluster::start(3);
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec =
        PipelineSpec::leads("leads", &receiver.url("/leads")).with("breaker = { enabled = false }");
    let store = store_table(&cluster.urls(), 3, "quorum");
    let listen = free_addr();
    let setup = cluster_host(listen, &[spec], &store);
    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let mut acknowledged = HashSet::new();
    let mut refused = 0;
    let mut longest = Duration::ZERO;
    for n in 0..300 {
        if n == 100 {
            cluster.kill(0);
        }
        let id = format!("q-{n}");
        // A client that honours Retry-After, for up to a minute.
        let first_try = std::time::Instant::now();
        for _ in 0..240 {
            match post(listen, "leads", &lead(&id, n)).await {
                202 => {
                    acknowledged.insert(id.clone());
                    break;
                }
                // While the cluster elects new leaders, intake says so.
                503 => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                other => panic!("{id}: answered {other}"),
            }
        }
        longest = longest.max(first_try.elapsed());
    }
    println!(
        "{refused} answers were 503 while the cluster re-elected; the longest wait for a 202 was {longest:?}"
    );
    assert_eq!(
        acknowledged.len(),
        300,
        "intake comes back with two of three servers: {} acknowledged, {refused} refused\n{}",
        acknowledged.len(),
        log_of(&setup, "weft.log")
    );
    let got = wait_until(WAIT, || {
        delivered_keys(&receiver).is_superset(&acknowledged)
    })
    .await;
    assert!(
        got,
        "every acknowledged event is delivered; missing {:?}\n{}",
        acknowledged
            .difference(&delivered_keys(&receiver))
            .take(10)
            .collect::<Vec<_>>(),
        log_of(&setup, "weft.log")
    );
    host.sigterm();
}

/// Run `weft store migrate --from FROM` with `config`; its output.
fn migrate(config: &std::path::Path, from: &str) -> String {
    let out = std::process::Command::new(WEFT)
        .args(["store", "migrate", "--from", from, "--config"])
        .arg(config)
        .output()
        .expect("weft runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "migrate --from {from}: {text}");
    text
}

/// What a store holds, to compare two: queue entries, dead letters
/// (id, payload), finished ids, the cursor and the plugin state.
fn contents(
    store: &dyn weft_host::store::Store,
) -> (
    Vec<String>,
    Vec<String>,
    usize,
    Option<String>,
    Vec<weft_host::store::KvEntry>,
) {
    let queue = store
        .queue()
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {}", e.id, e.due_ms, e.attempt))
        .collect();
    let dead = store
        .dead_letters(None)
        .unwrap()
        .iter()
        .map(|r| format!("{} {}", r.id, String::from_utf8_lossy(&r.payload)))
        .collect();
    let finished = store
        .recent_events(|r| r.state == weft_host::store::EventState::Delivered, 1000)
        .unwrap()
        .len();
    let mut kv = store.kv_export().unwrap();
    kv.sort();
    (queue, dead, finished, store.cursor("leads"), kv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_installation_moves_from_sled_to_jetstream_and_back_with_its_queue_and_dead_letters() {
    use weft_host::store::{AfterAttempt, EventRecord, EventState, QueueEntry, Store};
    let nats = weft_tests::brokers::Nats::start();
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads"));
    let setup = cluster_host(listen, &[spec], &store_table(&nats.url(), 1, "moved"));
    // A sled store with 30 queued events, 10 dead letters, 5 delivered
    // ones, a cursor and plugin state.
    {
        let sled = weft_host::store::SledStore::open(&setup.data_dir()).unwrap();
        for n in 0..45 {
            let record = EventRecord::queued(
                weft_host::store::EventId::new(),
                "leads",
                &format!("m-{n}"),
                lead(&format!("m-{n}"), n).to_string().into_bytes(),
            );
            sled.accept(&record, None, None).await.unwrap();
            let entry = QueueEntry {
                due_ms: record.received_at_ms,
                id: record.id,
                attempt: 1,
            };
            let (state, next) = match n {
                30..40 => (
                    EventState::DeadLettered,
                    AfterAttempt::DeadLettered { at_ms: 5 },
                ),
                40.. => (EventState::Delivered, AfterAttempt::Finished { at_ms: 6 }),
                _ => continue,
            };
            let done = EventRecord { state, ..record };
            sled.record_attempt(&done, entry, next, None).await.unwrap();
        }
        sled.accept_polled("leads", Vec::new(), Some("cursor-7"))
            .await
            .unwrap();
        sled.kv_swap(b"leads\0http-sink\0", "token", None, Some(b"t-1"), 1 << 20)
            .unwrap();
        sled.flush().await.unwrap();
        sled.close();
    }
    let before = contents(&weft_host::store::SledStore::open(&setup.data_dir()).unwrap());
    assert_eq!((before.0.len(), before.1.len(), before.2), (30, 10, 5));
    let out = migrate(&setup.config_path, "sled");
    assert!(
        out.contains("30 queued events, 10 dead letters, 5 finished events"),
        "{out}"
    );
    // Back into an empty sled store: the same queue, dead letters, history,
    // cursor and plugin state.
    let moved = setup.dir.path().join("weft-data");
    std::fs::rename(&moved, setup.dir.path().join("old-data")).unwrap();
    let out = migrate(&setup.config_path, "jetstream");
    assert!(
        out.contains("30 queued events, 10 dead letters, 5 finished events"),
        "{out}"
    );
    let after = contents(&weft_host::store::SledStore::open(&setup.data_dir()).unwrap());
    assert_eq!(before, after, "sled → JetStream → sled keeps everything");
    // The migration refuses to write over a store.
    let out = std::process::Command::new(WEFT)
        .args(["store", "migrate", "--from", "jetstream", "--config"])
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds files"));
    // A host on the JetStream store takes the migrated queue over and
    // delivers it.
    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let want: HashSet<String> = (0..30).map(|n| format!("m-{n}")).collect();
    assert!(
        wait_until(WAIT, || delivered_keys(&receiver).is_superset(&want)).await,
        "the migrated queue is delivered: {:?}\n{}",
        want.difference(&delivered_keys(&receiver))
            .take(5)
            .collect::<Vec<_>>(),
        log_of(&setup, "weft.log")
    );
    host.sigterm();
}

/// Call host `setup`'s admin API; the answer's body.
async fn admin(
    setup: &HostSetup,
    method: hyper::Method,
    path: &str,
    body: Option<&str>,
) -> serde_json::Value {
    let addr = setup.config().server.admin_listen.expect("admin address");
    weft_host::client::HostClient::new(&format!("http://{addr}"), None)
        .call(method, path, body.map(|b| b.as_bytes().to_vec()), &[])
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .body
}

/// One NATS server, a receiver that refuses keys starting `bad-` for
/// good, and the `leads` pipeline delivering to it.
async fn one_server_and_bad_leads() -> (weft_tests::brokers::Nats, Receiver, PipelineSpec) {
    let nats = weft_tests::brokers::Nats::start();
    let receiver = Receiver::start(Behavior::FailKeys {
        prefix: "bad-".into(),
        status: 400,
    })
    .await;
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads"));
    (nats, receiver, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_host_s_admin_api_answers_for_the_cluster_dead_letters_pauses_and_the_audit_log() {
    let (nats, receiver, spec) = one_server_and_bad_leads().await;
    let store = store_table(&nats.url(), 1, "admin");
    let [(la, a), (lb, b)] = two_hosts(std::slice::from_ref(&spec), &store);
    let _host_a = WeftProcess::start(WEFT, &a.config_path, la, "weft.log", &[]);
    let _host_b = WeftProcess::start(WEFT, &b.config_path, lb, "weft.log", &[]);
    // Dead-lettered on A, seen from B.
    assert_eq!(post(la, "leads", &lead("bad-1", 1)).await, 202);
    let mut seen = false;
    for _ in 0..600 {
        let dlq = admin(&b, hyper::Method::GET, "/api/v1/dlq?pipeline=leads", None).await;
        if dlq.to_string().contains("bad-1") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen, "host B lists host A's dead letter");
    // Paused through B: A holds what it accepts.
    admin(
        &b,
        hyper::Method::POST,
        "/api/v1/pipelines/leads/pause",
        None,
    )
    .await;
    assert!(
        wait_until(WAIT, || log_of(&a, "weft.log").contains("pipeline paused")).await,
        "host A follows the pause"
    );
    assert_eq!(post(la, "leads", &lead("held-1", 2)).await, 202);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !delivered_keys(&receiver).contains("held-1"),
        "nothing is delivered while paused"
    );
    admin(
        &b,
        hyper::Method::POST,
        "/api/v1/pipelines/leads/resume",
        None,
    )
    .await;
    assert!(
        wait_until(WAIT, || delivered_keys(&receiver).contains("held-1")).await,
        "resumed through B, A delivers what it held"
    );
    // Replayed through B once the receiver takes it: delivered.
    receiver.set_behavior(Behavior::Accept);
    admin(
        &b,
        hyper::Method::POST,
        "/api/v1/dlq/replay",
        Some(r#"{"all": true, "pipeline": "leads"}"#),
    )
    .await;
    assert!(
        wait_until(WAIT, || delivered_keys(&receiver).contains("bad-1")).await,
        "the dead letter replayed through B is delivered"
    );
    // One audit chain for the cluster: B's calls, read and verified on A.
    let audit = admin(&a, hyper::Method::GET, "/api/v1/audit-log", None)
        .await
        .to_string();
    for action in ["pause", "resume", "dlq-replay"] {
        assert!(audit.contains(action), "{action} in the audit log: {audit}");
    }
    let verified = admin(&a, hyper::Method::GET, "/api/v1/audit-log/verify", None).await;
    assert!(verified.to_string().contains("true"), "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_of_the_whole_store_ends_and_sees_everything_acknowledged_while_writes_never_pause()
{
    let nats = weft_tests::brokers::Nats::start();
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads"));
    let store = store_table(&nats.url(), 1, "reads");
    let listen = free_addr();
    let setup = cluster_host(listen, std::slice::from_ref(&spec), &store);
    let _host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    // A writer that never pauses: every acknowledged key is recorded.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = tokio::spawn({
        let acked = acked.clone();
        async move {
            for n in 0.. {
                let key = format!("w-{n}");
                if post(listen, "leads", &lead(&key, n)).await == 202 {
                    acked.lock().unwrap().push(key);
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });
    // Another process's view of the same store, reading it whole again
    // and again while the writes go on.
    let reader = weft_host::store::open_for(&setup.config()).expect("open the store");
    for round in 0..15 {
        let before: Vec<String> = acked.lock().unwrap().clone();
        // On a thread of its own, so a read that never ends fails the test
        // instead of holding it.
        let (tx, rx) = std::sync::mpsc::channel();
        let store = reader.clone();
        std::thread::spawn(move || {
            let _ = tx.send(store.recent_events(|_| true, usize::MAX));
        });
        let read = tokio::task::block_in_place(|| rx.recv_timeout(WAIT))
            .unwrap_or_else(|_| panic!("read {round} never ended while writes went on"))
            .expect("the read succeeds");
        let seen: HashSet<&str> = read.iter().map(|r| r.key.as_str()).collect();
        let missing: Vec<&String> = before
            .iter()
            .filter(|k| !seen.contains(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "read {round} misses acknowledged events {missing:?} (of {})",
            before.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.abort();
    assert!(acked.lock().unwrap().len() > 15, "the writer kept writing");
    reader.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ordered_pipeline_keeps_each_key_s_order_across_hosts_and_when_its_holder_dies() {
    let cluster = NatsCluster::start(3);
    // Every event fails once: each key's order must hold through retries.
    let receiver = Receiver::start(Behavior::FailFirst {
        failures: 1,
        status: 503,
    })
    .await;
    let spec = PipelineSpec::leads("ordered", &receiver.url("/o"))
        .retry("max_attempts = 50, initial_ms = 20, max_ms = 200")
        .with("order_by = \"/customer\"\nconcurrency = 8\nbreaker = { enabled = false }");
    let store = store_table(&cluster.urls(), 3, "ordered");
    let [(la, a), (lb, b)] = two_hosts(std::slice::from_ref(&spec), &store);
    let host_a = WeftProcess::start(WEFT, &a.config_path, la, "weft.log", &[]);
    let host_b = WeftProcess::start(WEFT, &b.config_path, lb, "weft.log", &[]);
    let holds = "this host holds the lease: it runs the ordered pipeline";
    assert!(
        wait_until(WAIT, || log_of(&a, "weft.log").contains(holds)
            || log_of(&b, "weft.log").contains(holds))
        .await,
        "one host takes the ordered pipeline"
    );
    let a_holds = log_of(&a, "weft.log").contains(holds);
    let (holder, survivor, survivor_setup) = if a_holds {
        (host_a, host_b, &b)
    } else {
        (host_b, host_a, &a)
    };
    // Four customers, each sending in turn to one host and the other, the
    // next event only once the last was acknowledged: that is the order
    // each key's receiver must see, whichever host accepted what.
    const PER_KEY: usize = 16;
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for c in 0..4 {
        let sent = sent.clone();
        senders.spawn(async move {
            for seq in 0..PER_KEY {
                let mut body = lead(&format!("c{c}-{seq}"), seq);
                body["customer"] = format!("c{c}").into();
                body["seq"] = seq.into();
                // The host that dies refuses from then on: the sender
                // turns to the other, as a load balancer would.
                let mut to = if seq % 2 == 0 { la } else { lb };
                let mut tries = 0;
                let url = |to: SocketAddr| format!("http://{to}/hooks/ordered");
                while weft_tests::try_post_with_headers(
                    &url(to),
                    body.to_string().as_bytes(),
                    "application/json",
                    &[],
                )
                .await
                // 200: a host that died had it, answer lost.
                .map_or(true, |(status, _)| status != 202 && status != 200)
                {
                    tries += 1;
                    assert!(tries < 200, "c{c}-{seq} never acknowledged");
                    to = if to == la { lb } else { la };
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    // Halfway, the holder dies with events queued, in flight and waiting
    // for their retries.
    assert!(
        wait_until(WAIT, || sent.load(std::sync::atomic::Ordering::SeqCst)
            >= 2 * PER_KEY)
        .await
    );
    holder.sigkill();
    let killed = std::time::Instant::now();
    senders.join_all().await;
    let all = 4 * PER_KEY;
    let got = wait_until(WAIT, || delivered_keys(&receiver).len() == all).await;
    println!(
        "every event delivered {:?} after the holder was killed",
        killed.elapsed()
    );
    assert!(
        got,
        "delivered {} of {all}\nsurvivor's log:\n{}",
        delivered_keys(&receiver).len(),
        log_of(survivor_setup, "weft.log")
    );
    assert!(log_of(survivor_setup, "weft.log").contains(holds));
    // Per key, in the order sent. Delivery is at-least-once: the event
    // the holder was sending when it died comes again, and a host killed
    // between storing an event and taking its key leaves a copy the
    // sender never saw acknowledged; each carries its key, which the
    // receiver drops as a repeat. What a receiver acts on (each key's
    // first delivery) is in order.
    let mut seen: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut firsts = HashSet::new();
    let mut repeats = 0;
    for d in receiver.delivered() {
        if !firsts.insert(d.key.clone()) {
            repeats += 1;
            continue;
        }
        seen.entry(d.body["customer"].as_str().unwrap().to_string())
            .or_default()
            .push(d.body["seq"].as_u64().unwrap());
    }
    println!("{repeats} repeated deliveries of {all} events");
    for (customer, seqs) in &seen {
        assert_eq!(
            seqs,
            &(0..PER_KEY as u64).collect::<Vec<u64>>(),
            "{customer} delivered in the order it was sent"
        );
    }
    survivor.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_one_host_finds_failing_is_left_alone_by_every_host() {
    let nats = weft_tests::brokers::Nats::start();
    let receiver = Receiver::start(Behavior::FailKeys {
        prefix: "".into(),
        status: 503,
    })
    .await;
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads"))
        .retry("max_attempts = 100, initial_ms = 50, max_ms = 100")
        .with(
            "breaker = { min_calls = 3, failure_ratio = 0.5, window_ms = 60000, open_ms = 60000 }",
        );
    let store = store_table(&nats.url(), 1, "breaker");
    let [(la, a), (lb, b)] = two_hosts(std::slice::from_ref(&spec), &store);
    let _host_a = WeftProcess::start(WEFT, &a.config_path, la, "weft.log", &[]);
    let _host_b = WeftProcess::start(WEFT, &b.config_path, lb, "weft.log", &[]);
    // Host A finds the sink failing and opens its breaker.
    for n in 0..3 {
        assert_eq!(post(la, "leads", &lead(&format!("a-{n}"), n)).await, 202);
    }
    assert!(
        wait_until(WAIT, || log_of(&a, "weft.log")
            .contains("circuit breaker of the sink opened"))
        .await
    );
    // Host B follows within its next look at the store, before ever
    // calling the sink itself.
    assert!(
        wait_until(WAIT, || log_of(&b, "weft.log")
            .contains("another host found the sink failing"))
        .await,
        "host B's log:\n{}",
        log_of(&b, "weft.log")
    );
    for n in 0..5 {
        assert_eq!(post(lb, "leads", &lead(&format!("b-{n}"), n)).await, 202);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in 0..5 {
        assert!(
            receiver.requests_for(&format!("b-{n}")).is_empty(),
            "b-{n} waits while the breaker is open on every host"
        );
    }
}

/// The ids of the dead letters host `setup` lists, by key.
async fn dead_letter_ids(setup: &HostSetup) -> HashMap<String, Vec<String>> {
    let dlq = admin(
        setup,
        hyper::Method::GET,
        "/api/v1/dlq?pipeline=leads",
        None,
    )
    .await;
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for d in dlq["dead_letters"].as_array().cloned().unwrap_or_default() {
        by_key
            .entry(d["key"].as_str().unwrap_or_default().to_string())
            .or_default()
            .push(d["id"].as_str().unwrap_or_default().to_string());
    }
    by_key
}

async fn bucket_keys(bucket: &async_nats::jetstream::kv::Store) -> HashSet<String> {
    use futures_util::TryStreamExt;
    match bucket.keys().await {
        Ok(keys) => keys.try_collect().await.expect("keys"),
        Err(_) => HashSet::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_live_in_a_bucket_of_their_own_and_a_move_a_crash_cut_short_is_settled() {
    let (nats, receiver, spec) = one_server_and_bad_leads().await;
    let listen = free_addr();
    let setup = cluster_host(listen, &[spec], &store_table(&nats.url(), 1, "graves"));
    let _host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    for n in 1..=3 {
        assert_eq!(
            post(listen, "leads", &lead(&format!("bad-{n}"), n)).await,
            202
        );
    }
    let mut listed = HashMap::new();
    for _ in 0..600 {
        listed = dead_letter_ids(&setup).await;
        if listed.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed.len(), 3, "three dead letters: {listed:?}");
    let id = |key: &str| listed[key][0].clone();
    // Each is in the dead-letter bucket, and no longer among the events.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let dead = js
        .get_key_value("graves-dead")
        .await
        .expect("the dead bucket");
    let events = js.get_key_value("graves-events").await.expect("the events");
    let buried = bucket_keys(&dead).await;
    for key in ["bad-1", "bad-2", "bad-3"] {
        assert!(
            buried.contains(&id(key)),
            "{key} in graves-dead: {buried:?}"
        );
        assert!(
            events.get(id(key)).await.expect("read").is_none(),
            "{key} left the events bucket"
        );
    }
    // What a crash leaves between the steps of a move, made behind
    // weft's back: bad-1 dead-lettered among the events but not moved;
    // bad-2 in both buckets.
    let one = dead.get(id("bad-1")).await.expect("read").expect("bad-1");
    events.put(id("bad-1"), one.clone()).await.expect("put");
    dead.purge(id("bad-1")).await.expect("purge");
    let two = dead.get(id("bad-2")).await.expect("read").expect("bad-2");
    events.put(id("bad-2"), two).await.expect("put");
    let listed = dead_letter_ids(&setup).await;
    for key in ["bad-1", "bad-2", "bad-3"] {
        assert_eq!(listed[key], vec![id(key)], "{key} listed once: {listed:?}");
    }
    // Replayed once the receiver takes them: each delivered once, and
    // neither bucket keeps a dead copy.
    receiver.set_behavior(Behavior::Accept);
    admin(
        &setup,
        hyper::Method::POST,
        "/api/v1/dlq/replay",
        Some(&format!(
            r#"{{"ids": ["{}", "{}"]}}"#,
            id("bad-1"),
            id("bad-2")
        )),
    )
    .await;
    assert!(
        wait_until(WAIT, || {
            let got = delivered_keys(&receiver);
            got.contains("bad-1") && got.contains("bad-2")
        })
        .await,
        "both replayed and delivered"
    );
    assert_eq!(
        bucket_keys(&dead).await,
        HashSet::from([id("bad-3")]),
        "only bad-3 is still a dead letter"
    );
    // The old dead copy of a replayed event, put back among the dead
    // letters, is not listed as one: the event's copy among the events is
    // the newer.
    dead.put(id("bad-1"), one).await.expect("put");
    let listed = dead_letter_ids(&setup).await;
    assert_eq!(
        listed.keys().collect::<HashSet<_>>(),
        HashSet::from([&"bad-3".to_string()]),
        "{listed:?}"
    );
    // Purged: gone from the bucket.
    admin(
        &setup,
        hyper::Method::POST,
        "/api/v1/dlq/purge",
        Some(&format!(r#"{{"ids": ["{}"]}}"#, id("bad-3"))),
    )
    .await;
    assert!(
        !bucket_keys(&dead).await.contains(&id("bad-3")),
        "a purged dead letter leaves the bucket"
    );
    assert!(dead_letter_ids(&setup).await.is_empty());
}
