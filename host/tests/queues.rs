//! Queues in and out, against real brokers started here (`nats-server`
//! with JetStream, a private RabbitMQ node): the queue sink publishes each
//! event once per idempotency key across retries, broker outages and a
//! SIGKILL of weft; the queue trigger acknowledges a message only once it
//! is stored, so killing weft while it consumes loses nothing and delivers
//! each message once per key; a plugin without the messaging grant is
//! refused at load, naming it, and one that publishes outside its grant
//! is denied and audited.

use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weft_tests::brokers::{Nats, NatsCluster, Rabbit};
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, WeftProcess, free_addr, install_plugins, lead,
    post_json, wait_until,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(120);

/// A config directory with the plugins installed and `body` after the
/// `[server]` and `[plugins]` tables.
fn write_config(dir: &Path, listen: SocketAddr, body: &str) -> PathBuf {
    install_plugins(&dir.join("plugins.d")).unwrap();
    let path = dir.join("weft.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{}\"\ndata_dir = \"./weft-data\"\n\n[plugins]\ndir = \"./plugins.d\"\n\n{body}",
            free_addr()
        ),
    )
    .unwrap();
    path
}

/// A pipeline `orders` whose sink publishes to `subject` on broker `bus`.
fn queue_sink_config(broker: &str, subject: &str, grant: &str) -> String {
    format!(
        r#"{broker}
[grants.queue-sink]
{grant}

[[pipeline]]
name = "orders"
idempotency_key = "/id"
sink = {{ plugin = "queue-sink", config = {{ broker = "bus", subject = "{subject}" }} }}
retry = {{ max_attempts = 50, initial_ms = 50, max_ms = 300 }}
"#
    )
}

/// The `orders` pipeline publishing to `orders.created` on the JetStream
/// broker at `url`, granted `orders.>`; its config's path.
fn jetstream_sink(dir: &Path, listen: SocketAddr, url: &str) -> PathBuf {
    let broker = format!(
        "[brokers.bus]\nkind = \"jetstream\"\nurl = \"{url}\"\nconfirm_timeout_ms = 2000\n"
    );
    write_config(
        dir,
        listen,
        &queue_sink_config(
            &broker,
            "orders.created",
            "messaging = [{ broker = \"bus\", publish = [\"orders.>\"] }]",
        ),
    )
}

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.expect("nats connects");
    async_nats::jetstream::new(client)
}

async fn add_stream(js: &async_nats::jetstream::Context, name: &str, subjects: &[&str]) {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        duplicate_window: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("stream created");
}

/// Every message of `stream`: (Nats-Msg-Id, body).
async fn stream_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, serde_json::Value)> {
    let mut s = js.get_stream(stream).await.unwrap();
    let count = s.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        let m = s.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        out.push((id, serde_json::from_slice(&m.payload).unwrap()));
    }
    out
}

/// How many messages stream `name` holds (0 while the cluster cannot
/// answer, e.g. while it elects a leader).
async fn stream_len(js: &async_nats::jetstream::Context, name: &str) -> u64 {
    let Ok(mut s) = js.get_stream(name).await else {
        return 0;
    };
    s.info().await.map_or(0, |i| i.state.messages)
}

/// Wait (at most a minute) until stream `name` holds `want` messages;
/// returns how many it holds.
async fn wait_for_stream(js: &async_nats::jetstream::Context, name: &str, want: u64) -> u64 {
    let mut seen = 0;
    for _ in 0..600 {
        seen = stream_len(js, name).await;
        if seen >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Wait until the log at `path` says `text`.
async fn log_says(path: &Path, text: &str) -> bool {
    wait_until(WAIT, || {
        std::fs::read_to_string(path).is_ok_and(|l| l.contains(text))
    })
    .await
}

async fn post(listen: SocketAddr, pipeline: &str, body: &serde_json::Value) -> u16 {
    post_json(
        &format!("http://{listen}/hooks/{pipeline}"),
        body.to_string().as_bytes(),
        "application/json",
    )
    .await
    .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_without_the_messaging_grant_is_refused_naming_it_and_one_outside_it_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let broker = "[brokers.bus]\nkind = \"jetstream\"\nurl = \"nats://127.0.0.1:1\"\n";
    let listen = free_addr();
    // No messaging grant at all: the plugin imports the interface, so it
    // does not load, and the message says which grant to add.
    let path = write_config(
        dir.path(),
        listen,
        &queue_sink_config(broker, "orders.created", "memory_mib = 32"),
    );
    let out = std::process::Command::new(WEFT)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("grants.queue-sink.messaging is empty")
            && err.contains("weft:plugin/messaging"),
        "{err}"
    );
    // A grant naming a broker that is not configured is a config error.
    let path = write_config(
        dir.path(),
        listen,
        &queue_sink_config(
            broker,
            "orders.created",
            "messaging = [{ broker = \"elsewhere\", publish = [\"orders.>\"] }]",
        ),
    );
    let config = weft_host::config::Config::load(&path).unwrap_err();
    assert!(
        config
            .message
            .contains("broker \"elsewhere\", which is not configured"),
        "{config}"
    );
    // Granted `audit.>` only: publishing to orders.created is denied before
    // any connection is made, dead-lettered as fatal, and audited.
    let path = write_config(
        dir.path(),
        listen,
        &queue_sink_config(
            broker,
            "orders.created",
            "messaging = [{ broker = \"bus\", publish = [\"audit.>\"] }]",
        ),
    );
    let config = weft_host::config::Config::load(&path).unwrap();
    let host = weft_host::host::RunningHost::start(config).await.unwrap();
    let url = format!("http://{}/hooks/orders", host.addr);
    let (status, _) = post_json(&url, br#"{"id":"o-1"}"#, "application/json").await;
    assert_eq!(status, 202);
    let engine = host.engine();
    assert!(
        wait_until(WAIT, || engine
            .store()
            .dead_letters(Some("orders"))
            .is_ok_and(|d| d.len() == 1))
        .await,
        "the denied publish is dead-lettered"
    );
    let dl = format!(
        "{:?}",
        engine.store().dead_letters(Some("orders")).unwrap()[0].attempts
    );
    assert!(
        dl.contains("not in the plugin's grant") && dl.contains("audit.>"),
        "{dl}"
    );
    let audit = engine.store().audit().records(0).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "messaging" && a.detail.contains("orders.created")),
        "the denial is in the audit log: {audit:?}"
    );
    host.shutdown().await;
    // What a plugin publishes is capped like what it returns (output_kib).
    let path = write_config(
        dir.path(),
        listen,
        &queue_sink_config(
            broker,
            "orders.created",
            "messaging = [{ broker = \"bus\", publish = [\"orders.>\"] }]\noutput_kib = 1",
        ),
    );
    let _ = std::fs::remove_dir_all(dir.path().join("weft-data"));
    let config = weft_host::config::Config::load(&path).unwrap();
    let host = weft_host::host::RunningHost::start(config).await.unwrap();
    let url = format!("http://{}/hooks/orders", host.addr);
    let body = serde_json::json!({"id": "o-2", "notes": "y".repeat(4096)}).to_string();
    let (status, _) = post_json(&url, body.as_bytes(), "application/json").await;
    assert_eq!(status, 202);
    let engine = host.engine();
    assert!(
        wait_until(WAIT, || engine
            .store()
            .dead_letters(Some("orders"))
            .is_ok_and(|d| d.len() == 1))
        .await
    );
    let dl = format!(
        "{:?}",
        engine.store().dead_letters(Some("orders")).unwrap()[0].attempts
    );
    assert!(dl.contains("passes the plugin's output_kib"), "{dl}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_jetstream_sink_publishes_once_per_key_across_outages_and_a_sigkill() {
    let nats = Nats::start();
    let js = jetstream(&nats.url()).await;
    add_stream(&js, "ORDERS", &["orders.>"]).await;
    drop(js);
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let path = jetstream_sink(dir.path(), listen, &nats.url());
    let weft = WeftProcess::start(WEFT, &path, listen, "weft.log", &[]);
    // 200 events, each sent twice (the second is turned away at intake).
    let total = 200;
    for i in 0..total {
        assert_eq!(
            post(listen, "orders", &lead(&format!("o-{i}"), i)).await,
            202
        );
        if i == 120 {
            // Killed with deliveries in flight: some are published and not
            // yet recorded, so they are published again after the restart.
            weft.sigkill();
            break;
        }
    }
    let weft = WeftProcess::start(WEFT, &path, listen, "weft2.log", &[]);
    // The broker goes away while the rest arrive: their publishes are not
    // confirmed, so they are retried until it is back.
    let mut nats = nats;
    nats.kill();
    for i in 0..total {
        let status = post(listen, "orders", &lead(&format!("o-{i}"), i)).await;
        assert!(status == 202 || status == 200, "{status}");
    }
    let log = dir.path().join("weft2.log");
    assert!(
        log_says(&log, "broker unavailable").await,
        "publishes fail while the broker is down"
    );
    nats.revive();
    let js = jetstream(&nats.url()).await;
    let seen = wait_for_stream(&js, "ORDERS", total as u64).await;
    // Let any retry still under way land (it must be refused as a duplicate).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = stream_messages(&js, "ORDERS").await;
    let ids: HashSet<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(seen, total as u64, "every event reached the stream");
    assert_eq!(
        messages.len(),
        total,
        "each key is in the stream once (JetStream refused the repeats)"
    );
    assert_eq!(ids.len(), total);
    for (id, body) in &messages {
        assert_eq!(
            body["id"].as_str(),
            Some(id.as_str()),
            "the message id is the key"
        );
    }
    drop(weft);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_jetstream_trigger_stores_before_it_acks_so_a_sigkill_loses_nothing() {
    let nats = Nats::start();
    let js = jetstream(&nats.url()).await;
    add_stream(&js, "LEADS", &["leads.>"]).await;
    let total = 400;
    for i in 0..total {
        let mut headers = async_nats::HeaderMap::new();
        // Most carry a message id; the rest are keyed by their place in the stream.
        if i % 4 != 0 {
            headers.insert("Nats-Msg-Id", format!("m-{i}").as_str());
        }
        js.publish_with_headers(
            "leads.new",
            headers,
            lead(&format!("m-{i}"), i).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // One message that is not JSON and one larger than the host takes:
    // dropped with a warning, never blocking the ones behind them.
    js.publish("leads.new", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut big = lead("big", 0);
    big["notes"] = "x".repeat(64 * 1024).into();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "big");
    js.publish_with_headers("leads.new", headers, big.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    for i in total..total + 10 {
        js.publish(
            "leads.new",
            lead(&format!("late-{i}"), i).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::with_extra(
        listen,
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))
            .with("trigger = { queue = { broker = \"bus\", stream = \"LEADS\", prefetch = 16 } }")],
        &format!(
            "[brokers.bus]\nkind = \"jetstream\"\nurl = \"{}\"\n",
            nats.url()
        ),
    )
    .unwrap()
    .server_line("max_body_bytes = 16384")
    .unwrap();
    let weft = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    assert!(
        wait_until(WAIT, || receiver.effect_count() >= 60).await,
        "consuming started"
    );
    weft.sigkill();
    let _weft = WeftProcess::start(WEFT, &setup.config_path, listen, "weft2.log", &[]);
    assert!(
        wait_until(WAIT, || receiver.effect_count() == total + 10).await,
        "every message is delivered after the kill: {} of {}",
        receiver.effect_count(),
        total + 10
    );
    let keys: HashSet<String> = receiver.effects().into_keys().collect();
    assert!(!keys.contains("big"), "the oversized message is not taken");
    for i in (0..total).filter(|i| i % 4 != 0) {
        assert!(
            keys.contains(&format!("m-{i}")),
            "m-{i} delivered under its message id"
        );
    }
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("LEADS:")).count(),
        total / 4 + 10,
        "messages without an id are keyed by stream and sequence"
    );
    // Everything is acknowledged: nothing is left for the consumer.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("LEADS")
        .await
        .unwrap()
        .get_consumer("weft-leads")
        .await
        .unwrap();
    let mut settled = false;
    for _ in 0..100 {
        let info = consumer.info().await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled,
        "every message was acknowledged (the bad one terminated)"
    );
}

/// A channel on a fresh connection to `rabbit`.
async fn amqp_channel(rabbit: &Rabbit) -> (lapin::Connection, lapin::Channel) {
    let conn = lapin::Connection::connect(&rabbit.url(), lapin::ConnectionProperties::default())
        .await
        .expect("amqp connects");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

async fn declare(ch: &lapin::Channel, queue: &str) {
    ch.queue_declare(
        queue.into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn amqp_in_and_out_confirmed_once_per_key_and_nothing_lost_to_a_sigkill() {
    let rabbit = Rabbit::start();
    let (_conn, ch) = amqp_channel(&rabbit).await;
    declare(&ch, "orders-out").await;
    declare(&ch, "leads-in").await;
    ch.confirm_select(Default::default()).await.unwrap();
    let total = 300;
    for i in 0..total {
        let mut props = lapin::BasicProperties::default().with_delivery_mode(2);
        // A third without a message id: keyed by a digest of the body.
        if i % 3 != 0 {
            props = props.with_message_id(format!("a-{i}").as_str().into());
        }
        ch.basic_publish(
            "".into(),
            "leads-in".into(),
            Default::default(),
            lead(&format!("a-{i}"), i).to_string().as_bytes(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::with_extra(
        listen,
        &[PipelineSpec::leads("leads", &receiver.url("/leads")).with(
            "trigger = { queue = { broker = \"rabbit\", queue = \"leads-in\", prefetch = 20 } }",
        )],
        &format!(
            r#"[brokers.rabbit]
kind = "amqp"
url = "{}"

[grants.queue-sink]
messaging = [{{ broker = "rabbit", publish = ["orders-out", "nowhere"] }}]

[[pipeline]]
name = "orders"
idempotency_key = "/id"
sink = {{ plugin = "queue-sink", config = {{ broker = "rabbit", subject = "orders-out" }} }}
retry = {{ max_attempts = 50, initial_ms = 50, max_ms = 300 }}

[[pipeline]]
name = "lost"
idempotency_key = "/id"
sink = {{ plugin = "queue-sink", config = {{ broker = "rabbit", subject = "nowhere" }} }}
retry = {{ max_attempts = 3, initial_ms = 10, max_ms = 20 }}
"#,
            rabbit.url()
        ),
    )
    .unwrap();
    let weft = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    assert!(
        wait_until(WAIT, || receiver.effect_count() >= 50).await,
        "consuming started"
    );
    weft.sigkill();
    let _weft = WeftProcess::start(WEFT, &setup.config_path, listen, "weft2.log", &[]);
    assert!(
        wait_until(WAIT, || receiver.effect_count() == total).await,
        "every message is delivered after the kill: {} of {total}",
        receiver.effect_count()
    );
    let keys: HashSet<String> = receiver.effects().into_keys().collect();
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("sha256:")).count(),
        total / 3
    );
    // Out: 100 events, each posted twice, published once each and confirmed.
    for round in 0..2 {
        for i in 0..100 {
            let status = post(listen, "orders", &lead(&format!("o-{i}"), i)).await;
            assert_eq!(status, if round == 0 { 202 } else { 200 });
        }
    }
    let mut consumer = ch
        .basic_consume(
            "orders-out".into(),
            "test".into(),
            Default::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids: HashMap<String, usize> = HashMap::new();
    while ids.len() < 100 {
        let d = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("the published events arrive")
            .unwrap()
            .unwrap();
        let id = d.properties.message_id().clone().unwrap().to_string();
        let body: serde_json::Value = serde_json::from_slice(&d.data).unwrap();
        assert_eq!(
            body["id"].as_str(),
            Some(id.as_str()),
            "message-id is the key"
        );
        *ids.entry(id).or_default() += 1;
        d.ack(Default::default()).await.unwrap();
    }
    assert!(ids.values().all(|n| *n == 1), "{ids:?}");
    // The broker dies: publishes are not confirmed and are retried on a
    // new connection once it is back; each lands once.
    drop(consumer);
    let mut rabbit = rabbit;
    rabbit.kill();
    for i in 100..120 {
        assert_eq!(
            post(listen, "orders", &lead(&format!("o-{i}"), i)).await,
            202
        );
    }
    let log = setup.dir.path().join("weft2.log");
    assert!(
        log_says(&log, "broker unavailable").await,
        "publishes fail while the broker is down"
    );
    rabbit.revive();
    let (_conn, ch) = amqp_channel(&rabbit).await;
    let mut consumer = ch
        .basic_consume(
            "orders-out".into(),
            "test-2".into(),
            Default::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    // A SIGKILLed RabbitMQ may deliver again messages whose acks it had
    // not written down; those are the test consumer's, not weft's, so
    // only the new keys are counted (and read on a while for repeats).
    let mut later: HashMap<String, usize> = HashMap::new();
    loop {
        let wait = if later.len() < 20 {
            WAIT
        } else {
            Duration::from_secs(2)
        };
        let Ok(next) = tokio::time::timeout(wait, consumer.next()).await else {
            assert!(
                later.len() >= 20,
                "the held events arrive once the broker is back"
            );
            break;
        };
        let d = next.unwrap().unwrap();
        let id = d.properties.message_id().clone().unwrap().to_string();
        d.ack(Default::default()).await.unwrap();
        if !ids.contains_key(&id) {
            *later.entry(id).or_default() += 1;
        }
    }
    assert_eq!(later.len(), 20, "{later:?}");
    assert!(later.values().all(|n| *n == 1), "{later:?}");
    // A routing key no queue takes is refused by the broker (the publish
    // is mandatory), so the event is dead-lettered rather than lost.
    assert_eq!(post(listen, "lost", &lead("l-1", 1)).await, 202);
    let admin = setup.config().server.admin_listen.unwrap();
    let client = weft_host::client::HostClient::new(&format!("http://{admin}"), None);
    let mut dead = String::new();
    for _ in 0..600 {
        dead = client
            .call(hyper::Method::GET, "/api/v1/dlq?pipeline=lost", None, &[])
            .await
            .map(|r| r.body.to_string())
            .unwrap_or_default();
        if dead.contains("no queue is bound") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(dead.contains("no queue is bound"), "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_trigger_takes_only_what_the_pipeline_has_room_for_and_core_nats_relays() {
    let nats = Nats::start();
    let js = jetstream(&nats.url()).await;
    add_stream(&js, "BULK", &["bulk.>"]).await;
    let total = 100;
    for i in 0..total {
        js.publish(
            format!("bulk.{i}"),
            lead(&format!("b-{i}"), i).to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // The sink fails at first, so what the trigger takes stays queued.
    let receiver = Receiver::start(Behavior::Always(503)).await;
    // Each message keeps the subject it came on, for steps to test.
    let mut relayed = PipelineSpec::leads("relayed", &receiver.url("/relayed"))
        .with("trigger = { queue = { broker = \"core\", subject = \"relay.>\" } }");
    relayed.steps.push(
        r#"{ plugin = "filter", config = { all = [{ header = "x-weft-queue-subject", equals = "relay.leads" }] } }"#
            .into(),
    );
    let setup = HostSetup::with_extra(
        weft_tests::any_port(),
        &[
            PipelineSpec::leads("bulk", &receiver.url("/bulk"))
                .retry("max_attempts = 1000, initial_ms = 1000, max_ms = 1000")
                .with("max_queue = 20")
                .with("breaker = { enabled = false }")
                .with(
                    "trigger = { queue = { broker = \"js\", stream = \"BULK\", prefetch = 64 } }",
                ),
            relayed,
        ],
        &format!(
            r#"[brokers.js]
kind = "jetstream"
url = "{url}"

[brokers.core]
kind = "nats"
url = "{url}"

[grants.queue-sink]
messaging = [{{ broker = "core", publish = ["relay.*"] }}]

[[pipeline]]
name = "relay"
idempotency_key = "/id"
sink = {{ plugin = "queue-sink", config = {{ broker = "core", subject = "relay.leads" }} }}
"#,
            url = nats.url()
        ),
    )
    .unwrap();
    // The pipeline's queue fills to max_queue and the trigger takes no
    // more; the stream keeps the rest.
    let host = weft_host::host::RunningHost::start(setup.config())
        .await
        .unwrap();
    let engine = host.engine();
    assert!(
        wait_until(WAIT, || engine
            .status("bulk")
            .is_some_and(|s| s.queued == 20))
        .await,
        "the pipeline's queue fills to max_queue"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        engine.status("bulk").unwrap().queued,
        20,
        "no more is taken"
    );
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("BULK")
        .await
        .unwrap()
        .get_consumer("weft-bulk")
        .await
        .unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!(
        info.num_pending,
        (total - 20) as u64,
        "the broker holds what the pipeline has no room for"
    );
    assert_eq!(receiver.effect_count(), 0);
    receiver.set_behavior(Behavior::Accept);
    assert!(
        wait_until(WAIT, || receiver.effect_count() == total).await,
        "after resuming, everything is delivered: {}",
        receiver.effect_count()
    );
    // Core NATS: a webhook event published by the queue sink reaches the
    // pipeline subscribed to its subject, keyed by the original key.
    for i in 0..20 {
        let url = format!("http://{}/hooks/relay", host.addr);
        let body = lead(&format!("r-{i}"), i).to_string();
        assert_eq!(
            post_json(&url, body.as_bytes(), "application/json").await.0,
            202
        );
    }
    assert!(
        wait_until(WAIT, || (0..20)
            .all(|i| receiver.effects().contains_key(&format!("r-{i}"))))
        .await,
        "relayed through core NATS with their keys"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_passwords_come_from_the_secrets_and_never_reach_the_logs() {
    let password = "nats-password-4b1d9e";
    let nats = Nats::start_with(&["--user", "weft", "--pass", password]);
    let client = async_nats::ConnectOptions::with_user_and_password("weft".into(), password.into())
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    add_stream(&js, "ORDERS", &["orders.>"]).await;
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let broker = format!(
        "[brokers.bus]\nkind = \"jetstream\"\nurl = \"{}\"\nuser = \"weft\"\ncredential = \"NATS_PASSWORD\"\nconfirm_timeout_ms = 2000\n",
        nats.url()
    );
    let grant = "messaging = [{ broker = \"bus\", publish = [\"orders.>\"] }]";
    let path = write_config(
        dir.path(),
        listen,
        &queue_sink_config(&broker, "orders.created", grant),
    );
    // A password in the URL is refused, naming the fix.
    let with_password = write_config(
        &dir.path().join("bad"),
        listen,
        &queue_sink_config(
            &format!(
                "[brokers.bus]\nkind = \"jetstream\"\nurl = \"nats://weft:{password}@127.0.0.1:{}\"\n",
                nats.port
            ),
            "orders.created",
            grant,
        ),
    );
    let err = weft_host::config::Config::load(&with_password).unwrap_err();
    assert!(err.message.contains("credential = \"NAME\""), "{err}");
    assert!(!err.message.contains(password), "{err}");
    // The wrong password: publishes fail and are retried, and the log
    // never shows the value.
    let weft = WeftProcess::start_with_env(
        WEFT,
        &path,
        listen,
        "wrong.log",
        &[],
        &[("WEFT_SECRET_NATS_PASSWORD", "not-the-password-at-all")],
    );
    assert_eq!(post(listen, "orders", &lead("o-1", 1)).await, 202);
    let log = dir.path().join("wrong.log");
    assert!(
        log_says(&log, "broker unavailable").await,
        "the refused connection is reported"
    );
    weft.sigterm();
    let weft = WeftProcess::start_with_env(
        WEFT,
        &path,
        listen,
        "right.log",
        &[],
        &[("WEFT_SECRET_NATS_PASSWORD", password)],
    );
    let delivered = wait_for_stream(&js, "ORDERS", 1).await;
    assert_eq!(
        delivered, 1,
        "with the right password the held event is published"
    );
    weft.sigterm();
    for name in ["wrong.log", "right.log"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert!(
            !text.contains("not-the-password") && !text.contains(password),
            "{name}: {text}"
        );
    }
}

/// By hand (`WEFT_CLUSTER_TEST=1`): under a loaded CI run the cluster's
/// re-election after the kill outlasted the wait once, so it does not run
/// in CI until that wait is understood.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicated_stream_keeps_every_confirmed_publish_when_a_node_is_killed() {
    if std::env::var_os("WEFT_CLUSTER_TEST").is_none() {
        eprintln!("skipped: set WEFT_CLUSTER_TEST=1 to run the three-node cluster test");
        return;
    }
    let mut cluster = NatsCluster::start(3);
    // The cluster elects its JetStream leader after the nodes meet.
    let client = async_nats::connect(format!("nats://127.0.0.1:{}", cluster.ports[0]))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let mut made = false;
    for _ in 0..200 {
        let config = async_nats::jetstream::stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            num_replicas: 3,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        };
        if js.create_stream(config).await.is_ok() {
            made = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        made,
        "the R3 stream is created once the cluster has a leader"
    );
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    // weft knows the cluster by two of its seeds.
    let seeds = format!(
        "nats://127.0.0.1:{}, nats://127.0.0.1:{}",
        cluster.ports[1], cluster.ports[2]
    );
    let path = jetstream_sink(dir.path(), listen, &seeds);
    let _weft = WeftProcess::start(WEFT, &path, listen, "weft.log", &[]);
    let total = 300;
    for i in 0..total {
        assert_eq!(
            post(listen, "orders", &lead(&format!("o-{i}"), i)).await,
            202
        );
        if i == 100 {
            // A node dies mid-load: the stream keeps its quorum (2 of 3).
            cluster.kill(1);
        }
    }
    assert_eq!(
        wait_for_stream(&js, "ORDERS", total as u64).await,
        total as u64,
        "every event is in the replicated stream"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = stream_messages(&js, "ORDERS").await;
    let ids: HashSet<&str> = messages.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(messages.len(), total, "once each");
    assert_eq!(ids.len(), total);
    let mut stream = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);
}
