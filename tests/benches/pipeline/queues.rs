//! Queues in and out against real brokers: the lead pipeline fed by a
//! JetStream stream and by an AMQP queue (messages published beforehand,
//! timed from the host's start to the last delivery), and the same events
//! sent as webhooks to a pipeline whose sink publishes to JetStream and to
//! AMQP (timed until the broker holds them all), against the lead pipeline
//! fed by webhooks and delivering over HTTP, in the same run.

use super::{load, print_load};
use std::time::{Duration, Instant};
use weft_host::host::RunningHost;
use weft_tests::brokers::{Nats, Rabbit};
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, lead};

const PIPELINE: &str = "concurrency = 64\nbreaker = { enabled = false }";

async fn wait_for(start: Instant, want: usize, mut have: impl AsyncFnMut() -> usize) -> f64 {
    while have().await < want && start.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    have().await as f64 / start.elapsed().as_secs_f64()
}

/// The lead pipeline fed by a queue trigger on `broker` (TOML) with
/// `trigger`: timed from when `feed` starts publishing the messages (the
/// host already running, as webhooks are timed) to the last delivery.
async fn consume(
    name: &str,
    broker: &str,
    trigger: &str,
    events: usize,
    feed: impl AsyncFnOnce(),
) -> f64 {
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads"))
        .with(PIPELINE)
        .with(&format!(
            "trigger = {{ queue = {{ {trigger}, prefetch = 256 }} }}"
        ));
    let setup = HostSetup::with_extra("127.0.0.1:0".parse().expect("addr"), &[spec], broker)
        .expect("setup");
    let host = RunningHost::start(setup.config()).await.expect("host");
    let start = Instant::now();
    feed().await;
    let rate = wait_for(start, events, async || receiver.requests().len()).await;
    println!(
        "{name:<48} {rate:>8.0} ev/s delivered  ({} of {events})",
        receiver.requests().len()
    );
    host.shutdown().await;
    rate
}

/// Webhooks to a pipeline whose queue-sink publishes to `subject` on
/// broker `bus` (TOML in `broker`); `count` says how many the broker holds.
async fn publish(
    name: &str,
    broker: &str,
    subject: &str,
    events: usize,
    senders: usize,
    prefix: &str,
    count: impl AsyncFnMut() -> usize,
) -> f64 {
    let dir = tempfile::tempdir().expect("dir");
    weft_tests::install_plugins(&dir.path().join("plugins.d")).expect("plugins");
    // The lead pipeline's own steps, so only the sink differs from the baseline.
    let steps = PipelineSpec::leads("out", "").steps.join(", ");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"./weft-data\"\n\n[plugins]\ndir = \"./plugins.d\"\n\n{broker}\n[grants.queue-sink]\nmessaging = [{{ broker = \"bus\", publish = [\"{subject}\"] }}]\n\n[[pipeline]]\nname = \"out\"\nidempotency_key = \"/id\"\n{PIPELINE}\nsteps = [{steps}]\nsink = {{ plugin = \"queue-sink\", config = {{ broker = \"bus\", subject = \"{subject}\" }} }}\n"
    );
    let path = dir.path().join("weft.toml");
    std::fs::write(&path, config).expect("config");
    let host = RunningHost::start(weft_host::config::Config::load(&path).expect("config"))
        .await
        .expect("host");
    let start = Instant::now();
    let sent = load(
        &format!("http://{}/hooks/out", host.addr),
        events,
        senders,
        prefix,
    )
    .await;
    let rate = wait_for(start, sent.ok, count).await;
    print_load(name, &sent, rate);
    host.shutdown().await;
    rate
}

/// The lead pipeline fed by webhooks, delivering over HTTP: the baseline.
async fn webhooks(events: usize, senders: usize) -> f64 {
    let receiver = Receiver::start(Behavior::Accept).await;
    let spec = PipelineSpec::leads("leads", &receiver.url("/leads")).with(PIPELINE);
    let setup = HostSetup::new("127.0.0.1:0".parse().expect("addr"), &[spec]).expect("setup");
    let host = RunningHost::start(setup.config()).await.expect("host");
    let start = Instant::now();
    let sent = load(
        &format!("http://{}/hooks/leads", host.addr),
        events,
        senders,
        "W",
    )
    .await;
    let rate = wait_for(start, sent.ok, async || receiver.requests().len()).await;
    print_load("webhooks in, HTTP out (baseline)", &sent, rate);
    host.shutdown().await;
    rate
}

pub async fn queues(events: usize, senders: usize) {
    println!(
        "== queues: {events} events in from and out to JetStream (nats-server) and AMQP (RabbitMQ), against webhooks in and HTTP out =="
    );
    let base = webhooks(events, senders).await;
    let nats = Nats::start();
    let client = async_nats::connect(nats.url()).await.expect("nats");
    let js = async_nats::jetstream::new(client);
    for (stream, subject) in [("IN", "in.>"), ("OUT", "out.>")] {
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    }
    let bus = format!(
        "[brokers.bus]\nkind = \"jetstream\"\nurl = \"{}\"\n",
        nats.url()
    );
    let js_in = consume(
        "JetStream in, HTTP out",
        &bus,
        "broker = \"bus\", stream = \"IN\"",
        events,
        async || {
            // Acks awaited a thousand at a time: the client lets only so many wait.
            let mut acks = Vec::with_capacity(1000);
            for n in 0..events {
                let mut h = async_nats::HeaderMap::new();
                h.insert("Nats-Msg-Id", format!("J{n}").as_str());
                acks.push(
                    js.publish_with_headers(
                        "in.leads",
                        h,
                        lead(&format!("J{n}"), n).to_string().into(),
                    )
                    .await
                    .expect("publish"),
                );
                if acks.len() == 1000 || n + 1 == events {
                    for a in acks.drain(..) {
                        a.await.expect("ack");
                    }
                }
            }
        },
    )
    .await;
    let js_out = publish(
        "webhooks in, JetStream out",
        &bus,
        "out.leads",
        events,
        senders,
        "JO",
        async || {
            js.get_stream("OUT")
                .await
                .expect("stream")
                .info()
                .await
                .expect("info")
                .state
                .messages as usize
        },
    )
    .await;
    drop(nats);
    let rabbit = Rabbit::start();
    let conn = lapin::Connection::connect(&rabbit.url(), lapin::ConnectionProperties::default())
        .await
        .expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    for q in ["in", "out"] {
        ch.queue_declare(
            q.into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("queue");
    }
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let rabbit_toml = format!(
        "[brokers.bus]\nkind = \"amqp\"\nurl = \"{}\"\n",
        rabbit.url()
    );
    let amqp_in = consume(
        "AMQP in, HTTP out",
        &rabbit_toml,
        "broker = \"bus\", queue = \"in\"",
        events,
        async || {
            let mut confirms = Vec::with_capacity(events);
            for n in 0..events {
                confirms.push(
                    ch.basic_publish(
                        "".into(),
                        "in".into(),
                        Default::default(),
                        lead(&format!("A{n}"), n).to_string().as_bytes(),
                        lapin::BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_message_id(format!("A{n}").as_str().into()),
                    )
                    .await
                    .expect("publish"),
                );
            }
            for c in confirms {
                c.await.expect("confirm");
            }
        },
    )
    .await;
    let amqp_out = publish(
        "webhooks in, AMQP out",
        &rabbit_toml,
        "out",
        events,
        senders,
        "AO",
        async || {
            ch.queue_declare(
                "out".into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .map_or(0, |q| q.message_count() as usize)
        },
    )
    .await;
    println!(
        "JetStream in: {:.0}% of webhooks in; JetStream out: {:.0}%; AMQP in: {:.0}%; AMQP out: {:.0}% (baseline {base:.0} ev/s)",
        100.0 * js_in / base,
        100.0 * js_out / base,
        100.0 * amqp_in / base,
        100.0 * amqp_out / base
    );
}
