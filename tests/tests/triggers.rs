//! Triggers at the edge: signed webhooks (verified, replays without effect,
//! every refusal a 401 that stores nothing) and data contracts (422 with
//! every violation at the webhook; invalid-input for a step's output).

use hmac::Mac;
use std::time::Duration;
use weft_host::host::RunningHost;
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, wait_until};

const WAIT: Duration = Duration::from_secs(120);
const GH_SECRET: &str = "gh-webhook-secret-5e1f";
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn post(url: &str, body: &[u8], headers: &[(&str, String)]) -> (u16, serde_json::Value) {
    weft_tests::post_with_headers(url, body, "application/json", headers).await
}

/// Request headers of a test delivery.
type Headers = Vec<(&'static str, String)>;

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

fn setup_with(receiver: &Receiver, pipelines: &str, files: &[(&str, &str)]) -> HostSetup {
    let specs = [PipelineSpec::leads("plain", &receiver.url("/plain"))];
    let setup = HostSetup::with_extra(any_port(), &specs, pipelines).unwrap();
    for (name, text) in files {
        std::fs::write(setup.dir.path().join(name), text).unwrap();
    }
    setup
        .with_secrets(&[("GH_SECRET", GH_SECRET), ("SW_SECRET", SW_SECRET)])
        .unwrap()
}

fn stored(host: &RunningHost) -> usize {
    host.engine().store().counts().events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_webhooks_are_verified_and_replays_take_no_effect() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/signed");
    let pipelines = format!(
        "[[pipeline]]\nname = \"github\"\ntrigger = {{ webhook = {{ verify = \"github\", secret = \"GH_SECRET\" }} }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n\n\
         [[pipeline]]\nname = \"standard\"\ntrigger = {{ webhook = {{ verify = \"standard-webhooks\", secret = \"SW_SECRET\", tolerance_s = 60 }} }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n"
    );
    let setup = setup_with(&receiver, &pipelines, &[]);
    let host = RunningHost::start(setup.config()).await.unwrap();
    let base = format!("http://{}/hooks", host.addr);

    let body = br#"{"action":"opened","number":7}"#;
    let sig = format!("sha256={}", hmac_hex(GH_SECRET.as_bytes(), &[body]));
    let good = vec![
        ("x-hub-signature-256", sig.clone()),
        ("x-github-delivery", "delivery-0001".to_string()),
    ];
    let (status, answer) = post(&format!("{base}/github"), body, &good).await;
    assert_eq!(status, 202, "{answer}");
    let key = answer["key"].as_str().unwrap().to_string();
    assert!(
        key.starts_with("github:"),
        "the unsigned delivery id is not the dedup key: {key}"
    );
    let (status, answer) = post(&format!("{base}/github"), body, &good).await;
    assert_eq!(
        (status, answer["duplicate"].clone()),
        (200, true.into()),
        "a replay takes no effect"
    );
    // A captured delivery replayed under a new delivery id, or with a
    // client's Idempotency-Key, is still the same delivery.
    for extra in [
        ("x-github-delivery", "delivery-9999".to_string()),
        ("idempotency-key", "fresh-key".to_string()),
    ] {
        let replay = vec![good[0].clone(), extra];
        let (status, answer) = post(&format!("{base}/github"), body, &replay).await;
        assert_eq!(
            (status, answer["duplicate"].clone(), answer["key"].clone()),
            (200, true.into(), key.clone().into()),
            "a replay with {} takes no effect",
            replay[1].0
        );
    }
    let before = stored(&host);
    let mut tampered = body.to_vec();
    tampered[12] ^= 1;
    let refusals: Vec<(Vec<u8>, Headers, &str)> = vec![
        (tampered, good.clone(), "no signature matches"),
        (
            body.to_vec(),
            vec![("x-github-delivery", "d-2".into())],
            "x-hub-signature-256 header is missing",
        ),
        (
            body.to_vec(),
            vec![("x-hub-signature-256", "md5=abc".into())],
            "must start with sha256=",
        ),
        (
            body.to_vec(),
            vec![(
                "x-hub-signature-256",
                format!("sha256={}", hmac_hex(b"wrong-secret", &[body])),
            )],
            "no signature matches",
        ),
    ];
    for (body, headers, reason) in refusals {
        let (status, answer) = post(&format!("{base}/github"), &body, &headers).await;
        assert_eq!(status, 401, "{answer}");
        let text = answer["error"].as_str().unwrap();
        assert!(text.contains(reason), "{text}");
        assert!(
            !text.contains(&sig[7..]),
            "the expected signature leaked: {text}"
        );
    }
    assert_eq!(stored(&host), before, "refusals store nothing");

    // Standard Webhooks, signed now; then a delivery from outside the tolerance.
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(SW_SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let now = weft_host::store::now_ms() / 1000;
    let sign = |id: &str, ts: u64, body: &[u8]| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        m.update(format!("{id}.{ts}.").as_bytes());
        m.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
        )
    };
    let body = br#"{"type":"invoice.paid","id":"inv_1"}"#;
    let headers = |id: &str, ts: u64| {
        vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sign(id, ts, body)),
        ]
    };
    let (status, answer) = post(&format!("{base}/standard"), body, &headers("msg_1", now)).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = post(&format!("{base}/standard"), body, &headers("msg_1", now)).await;
    assert_eq!(status, 200, "replayed: {answer}");
    // Well outside the 60 s tolerance either way (the exact edge is unit-tested
    // against a fixed clock; here the clock moves while the test runs).
    for ts in [now - 90, now + 90] {
        let (status, answer) = post(&format!("{base}/standard"), body, &headers("msg_2", ts)).await;
        assert_eq!(status, 401, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("tolerance"),
            "{answer}"
        );
    }
    assert!(
        wait_until(WAIT, || receiver.effect_count() == 2).await,
        "two deliveries, once each"
    );
    let status = host.engine().status("github").unwrap();
    assert_eq!(status.rejected["signature"], 4);
    host.shutdown().await;
}

const LEAD_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["id", "email"],
  "properties": {
    "id": { "type": "string", "minLength": 1 },
    "email": { "type": "string", "format": "email" },
    "amount_cents": { "type": "integer", "minimum": 0 }
  }
}"#;

const MAPPED_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["amount_cents"],
  "properties": { "amount_cents": { "type": "integer" } }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contracts_refuse_bad_payloads_at_the_edge_and_bad_output_in_a_step() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/c");
    let json_map = r#"{ plugin = "json-map", config = { cents_to_decimal = ["/amount_cents"] }, contract = "mapped.json" }"#;
    let pipelines = format!(
        "[[pipeline]]\nname = \"checked\"\nidempotency_key = \"/id\"\ncontract = \"lead.json\"\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n\n\
         [[pipeline]]\nname = \"mapped\"\nidempotency_key = \"/id\"\nsteps = [{json_map}]\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n"
    );
    let setup = setup_with(
        &receiver,
        &pipelines,
        &[("lead.json", LEAD_SCHEMA), ("mapped.json", MAPPED_SCHEMA)],
    );
    let host = RunningHost::start(setup.config()).await.unwrap();
    let base = format!("http://{}/hooks", host.addr);
    let before = stored(&host);
    let bad = serde_json::json!({ "email": "not an email", "amount_cents": -3 });
    let (status, answer) = post(&format!("{base}/checked"), bad.to_string().as_bytes(), &[]).await;
    assert_eq!(status, 422, "{answer}");
    let pointers: Vec<&str> = answer["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/email")
            && pointers.contains(&"/amount_cents")
            && pointers.contains(&""),
        "{answer}"
    );
    assert!(
        answer["error"].as_str().unwrap().contains("lead.json"),
        "{answer}"
    );
    assert_eq!(stored(&host), before, "a refused payload is not stored");
    let (status, _) = post(
        &format!("{base}/checked"),
        lead("good-1", 1).to_string().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 202);

    // json-map turns amount_cents into a decimal string: the step's contract says integer.
    let (status, answer) = post(
        &format!("{base}/mapped"),
        lead("m-1", 1).to_string().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || !store
            .dead_letters(Some("mapped"))
            .unwrap()
            .is_empty())
        .await
    );
    let dead = &store.dead_letters(Some("mapped")).unwrap()[0];
    let (step, kind, message) = dead.last_error().unwrap();
    assert_eq!(step, "step 1 (json-map)");
    assert_eq!(kind.as_str(), "invalid-input");
    assert!(
        message.contains("mapped.json") && message.contains("/amount_cents"),
        "{message}"
    );
    assert!(wait_until(WAIT, || receiver.effect_count() == 1).await);
    assert_eq!(
        host.engine().status("checked").unwrap().rejected["contract"],
        1
    );
    drop(store);
    host.shutdown().await;

    // A contract that is not a schema stops the start, naming the file.
    std::fs::write(setup.dir.path().join("lead.json"), r#"{"type": 12}"#).unwrap();
    let err = RunningHost::start(setup.config())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("lead.json") && err.contains("not a valid JSON Schema"),
        "{err}"
    );
}

/// The schedule's durable last fire time (the host must be stopped), from
/// the store its config names.
fn last_fire(setup: &HostSetup) -> u64 {
    let store = weft_host::store::open_for(&setup.config()).unwrap();
    store
        .schedule_last("ticks")
        .expect("a last fire time is recorded")
}

fn ticks(receiver: &Receiver) -> Vec<(u64, bool)> {
    receiver
        .delivered()
        .iter()
        .map(|d| {
            (
                d.body["scheduled_at_ms"].as_u64().unwrap(),
                d.body["missed"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_fire_on_time_and_restarts_neither_double_fire_nor_lose_a_tick() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/ticks");
    let pipelines = format!(
        "[[pipeline]]\nname = \"ticks\"\ntrigger = {{ schedule = {{ cron = \"* * * * * *\", on_missed = \"once\" }} }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n"
    );
    let setup = setup_with(&receiver, &pipelines, &[]);
    let host = RunningHost::start(setup.config()).await.unwrap();
    assert!(wait_until(WAIT, || receiver.delivered().len() >= 2).await);
    host.shutdown().await;
    let first = ticks(&receiver);
    assert!(
        first.iter().all(|(at, missed)| at % 1000 == 0 && !missed),
        "on the second, none missed: {first:?}"
    );
    let down_since = last_fire(&setup);
    assert_eq!(
        down_since,
        first.iter().map(|(at, _)| *at).max().unwrap(),
        "the durable last fire is the last tick delivered"
    );

    // Down for 2.5 s under `once`: one catch-up tick for the latest missed second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let host = RunningHost::start(setup.config()).await.unwrap();
    // Taken once the host is up: the catch-up tick is no later than this.
    let restarted = weft_host::store::now_ms();
    let seen = first.len();
    assert!(wait_until(WAIT, || receiver.delivered().len() >= seen + 2).await);
    host.shutdown().await;
    let all = ticks(&receiver);
    let missed: Vec<u64> = all.iter().filter(|(_, m)| *m).map(|(at, _)| *at).collect();
    assert_eq!(missed.len(), 1, "exactly one catch-up tick: {all:?}");
    assert!(
        missed[0] >= down_since + 2000 && missed[0] <= restarted,
        "the latest missed tick: {missed:?}, down since {down_since}, back at {restarted}"
    );
    let mut times: Vec<u64> = all.iter().map(|(at, _)| *at).collect();
    times.sort_unstable();
    let n = times.len();
    times.dedup();
    assert_eq!(times.len(), n, "no tick fired twice: {all:?}");

    // The same downtime under `skip`: nothing from the gap.
    std::fs::write(
        &setup.config_path,
        std::fs::read_to_string(&setup.config_path)
            .unwrap()
            .replace("on_missed = \"once\"", "on_missed = \"skip\""),
    )
    .unwrap();
    let down_since = last_fire(&setup);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let restarted = weft_host::store::now_ms();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let seen = receiver.delivered().len();
    assert!(wait_until(WAIT, || receiver.delivered().len() >= seen + 2).await);
    host.shutdown().await;
    let later: Vec<(u64, bool)> = ticks(&receiver)[seen..].to_vec();
    assert!(
        later.iter().all(|(at, missed)| !missed && *at > restarted),
        "skip: no tick from the gap after {down_since}: {later:?} (back at {restarted})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_with_a_schedule_polls_on_its_ticks() {
    let api = weft_tests::paged_api::PagedApi::start(7).await;
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/contacts");
    // A second pipeline polls a port where nothing listens: its failures
    // are counted by kind.
    let pipelines = format!(
        "[grants.http-poll]\nhttp = [\"http://{}\", \"http://127.0.0.1:1\"]\n\n[[pipeline]]\nname = \"contacts\"\ntrigger = {{ schedule = {{ cron = \"* * * * * *\", on_missed = \"once\" }}, poll = {{ plugin = \"http-poll\", config = {{ url = \"{}\" }} }} }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n\n[[pipeline]]\nname = \"broken\"\ntrigger = {{ poll = {{ plugin = \"http-poll\", config = {{ url = \"http://127.0.0.1:1/x\" }}, every_ms = 100, max_backoff_ms = 200 }} }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n",
        api.addr,
        api.url()
    );
    let setup = setup_with(&receiver, &pipelines, &[]);
    std::fs::copy(
        weft_tests::plugins::HTTP_POLL,
        setup.dir.path().join("plugins.d/http-poll.wasm"),
    )
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    assert!(wait_until(WAIT, || receiver.effect_count() == 7).await);
    let first = api.requests();
    api.touch(1);
    // every_ms is left at its default of a minute: only the ticks poll again.
    assert!(
        wait_until(WAIT, || api.requests() >= first + 2
            && receiver.effect_count() == 8)
        .await,
        "polled {} times",
        api.requests()
    );
    // The polls show in the status and the metrics, with the source's calls.
    let s = host.engine().status("contacts").unwrap();
    assert!(s.polls >= 2, "{s:?}");
    assert_eq!(s.polled_new, 8, "{s:?}");
    assert!(s.polled_items >= 8, "{s:?}");
    assert!(s.cursor_age_ms < 60_000, "the cursor moved: {s:?}");
    assert!(s.poll_failures.is_empty(), "{s:?}");
    assert!(
        wait_until(WAIT, || !host
            .engine()
            .status("broken")
            .unwrap()
            .poll_failures
            .is_empty())
        .await
    );
    let broken = host.engine().status("broken").unwrap();
    assert_eq!(broken.polls, 0);
    assert!(broken.poll_failures.contains_key("transient"), "{broken:?}");
    let (_, text) = weft_tests::get_text(&format!("http://{}/metrics", host.admin_addr)).await;
    assert!(
        text.contains("weft_poll_failures_total{pipeline=\"broken\",kind=\"transient\"}"),
        "{text}"
    );
    assert!(
        text.contains("weft_poll_new_items_total{pipeline=\"contacts\"} 8"),
        "{text}"
    );
    assert!(
        text.contains("weft_plugin_calls_total{plugin=\"http-poll\"}"),
        "the source's calls are counted"
    );
    host.shutdown().await;
}

/// The receipt of a delivered event, once it has one.
fn receipt_of(host: &RunningHost, pipeline: &str) -> Option<String> {
    let events = host
        .engine()
        .store()
        .recent_events(|r| r.pipeline == pipeline, 1)
        .unwrap();
    events
        .first()?
        .attempts
        .iter()
        .find_map(|a| match &a.outcome {
            weft_host::store::AttemptOutcome::Delivered { receipt } => Some(receipt.clone()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugins_see_which_trigger_brought_an_event() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = |name: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\nsink = {{ plugin = \"echo\", config = {{ attack = \"echo-source\" }} }}\n"
        )
    };
    let pipelines = format!(
        "[grants.echo]\nhttp = [\"http://127.0.0.1:1\"]\nkv = {{ quota_kib = 64 }}\n\n{}trigger = {{ schedule = {{ cron = \"* * * * * *\" }} }}\n\n{}",
        sink("ticks"),
        sink("hooked")
    );
    let setup = setup_with(&receiver, &pipelines, &[]);
    std::fs::copy(
        weft_tests::plugins::HOSTILE,
        setup.dir.path().join("plugins.d/echo.wasm"),
    )
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let url = format!("http://{}/hooks/hooked", host.addr);
    assert_eq!(post(&url, b"{\"id\": 1}", &[]).await.0, 202);
    assert!(
        wait_until(WAIT, || receipt_of(&host, "ticks").is_some()
            && receipt_of(&host, "hooked").is_some())
        .await
    );
    assert_eq!(receipt_of(&host, "ticks").unwrap(), "source=schedule:ticks");
    assert_eq!(
        receipt_of(&host, "hooked").unwrap(),
        "source=webhook:hooked"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sink_contract_keeps_what_breaks_it_from_the_sink() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/s");
    let pipelines = format!(
        "[[pipeline]]\nname = \"guarded\"\nidempotency_key = \"/id\"\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }}, contract = \"lead.json\" }}\nretry = {{ max_attempts = 3, initial_ms = 10, max_ms = 20 }}\n"
    );
    let setup = setup_with(&receiver, &pipelines, &[("lead.json", LEAD_SCHEMA)]);
    let host = RunningHost::start(setup.config()).await.unwrap();
    let url = format!("http://{}/hooks/guarded", host.addr);
    let bad = serde_json::json!({ "id": "bad-1", "email": "not an email", "amount_cents": -3 });
    assert_eq!(post(&url, bad.to_string().as_bytes(), &[]).await.0, 202);
    assert_eq!(
        post(&url, lead("good-1", 1).to_string().as_bytes(), &[])
            .await
            .0,
        202
    );
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || !store
            .dead_letters(Some("guarded"))
            .unwrap()
            .is_empty()
            && receiver.effect_count() == 1)
        .await
    );
    let dead = &store.dead_letters(Some("guarded")).unwrap()[0];
    assert_eq!(dead.key, "bad-1");
    assert_eq!(
        dead.attempts.len(),
        1,
        "a contract violation is not retried"
    );
    let (step, kind, message) = dead.last_error().unwrap();
    assert_eq!(step, "sink (http-sink)");
    assert_eq!(kind.as_str(), "invalid-input");
    assert!(
        message.contains("lead.json") && message.contains("/email"),
        "{message}"
    );
    assert_eq!(
        receiver.requests_for("bad-1").len(),
        0,
        "the sink never saw it"
    );
    drop(store);
    host.shutdown().await;
}

/// For every preset: a signed delivery is taken once; the same delivery
/// again, under a new delivery id, a client's Idempotency-Key, or with its
/// signature's hex in upper case, takes no second effect; a stale
/// timestamp (for presets that sign one) is refused. Slack's form-encoded
/// bodies are verified and stored as JSON; an unsigned one is refused for
/// its signature, not its type.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_matrix_every_preset_takes_a_delivery_once() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/m");
    let mut pipelines = String::new();
    for preset in ["github", "stripe", "slack", "hmac-sha256"] {
        pipelines.push_str(&format!(
            "[[pipeline]]\nname = \"{preset}\"\ntrigger = {{ webhook = {{ verify = \"{preset}\", secret = \"GH_SECRET\" }} }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n\n"
        ));
    }
    let setup = setup_with(&receiver, &pipelines, &[]);
    let host = RunningHost::start(setup.config()).await.unwrap();
    let base = format!("http://{}/hooks", host.addr);
    let key = GH_SECRET.as_bytes();
    let now = weft_host::store::now_ms() / 1000;
    let body: &[u8] = br#"{"event":"ping","n":1}"#;
    // (preset, headers signed at `ts`, with the hex upper-cased when `upper`)
    let signed = |preset: &str, ts: u64, upper: bool| -> Headers {
        let case = |h: String| if upper { h.to_uppercase() } else { h };
        let ts_s = ts.to_string();
        match preset {
            "github" => vec![
                (
                    "x-hub-signature-256",
                    format!("sha256={}", case(hmac_hex(key, &[body]))),
                ),
                ("x-github-delivery", format!("d-{ts}")),
            ],
            "stripe" => vec![(
                "stripe-signature",
                format!(
                    "t={ts},v1={}",
                    case(hmac_hex(key, &[ts_s.as_bytes(), b".", body]))
                ),
            )],
            "slack" => vec![
                ("x-slack-request-timestamp", ts_s.clone()),
                (
                    "x-slack-signature",
                    format!(
                        "v0={}",
                        case(hmac_hex(key, &[b"v0:", ts_s.as_bytes(), b":", body]))
                    ),
                ),
            ],
            _ => vec![(
                "x-signature",
                format!("sha256={}", case(hmac_hex(key, &[body]))),
            )],
        }
    };
    for preset in ["github", "stripe", "slack", "hmac-sha256"] {
        let url = format!("{base}/{preset}");
        let (status, answer) = post(&url, body, &signed(preset, now, false)).await;
        assert_eq!(status, 202, "{preset}: {answer}");
        if preset == "stripe" {
            // The signing time is kept as metadata; the signatures are not.
            let id: weft_host::store::EventId = answer["id"].as_str().unwrap().parse().unwrap();
            let record = host.engine().store().event(&id).unwrap().unwrap();
            assert_eq!(
                record.headers,
                vec![("stripe-signature-timestamp".to_string(), now.to_string())]
            );
        }
        let stored_once = stored(&host);
        let mut replays = vec![signed(preset, now, false), signed(preset, now, true)];
        let mut new_id = signed(preset, now, false);
        new_id.push(("x-github-delivery", "another-id".into()));
        new_id.push(("webhook-id", "another-id".into()));
        new_id.push(("idempotency-key", "another-key".into()));
        replays.push(new_id);
        for headers in replays {
            let (status, answer) = post(&url, body, &headers).await;
            assert_eq!(
                (status, answer["duplicate"].clone()),
                (200, true.into()),
                "{preset}: a replay takes no effect ({headers:?}): {answer}"
            );
        }
        if matches!(preset, "stripe" | "slack") {
            for stale in [now - 3600, now + 3600] {
                let (status, answer) = post(&url, body, &signed(preset, stale, false)).await;
                assert_eq!(
                    status, 401,
                    "{preset}: a stale timestamp is refused: {answer}"
                );
            }
        }
        assert_eq!(
            stored(&host),
            stored_once,
            "{preset}: replays store nothing"
        );
    }

    // Slack's form-encoded slash command, verified over its raw bytes.
    let form = b"command=%2Fdeploy&text=api+now&user_id=U1";
    let ts = now.to_string();
    let sig = format!("v0={}", hmac_hex(key, &[b"v0:", ts.as_bytes(), b":", form]));
    let form_post = |headers: Headers, content_type: &'static str| {
        let url = format!("{base}/slack");
        async move { weft_tests::post_with_headers(&url, form, content_type, &headers).await }
    };
    let slack_headers = vec![
        ("x-slack-request-timestamp", ts.clone()),
        ("x-slack-signature", sig.clone()),
    ];
    let (status, answer) =
        form_post(slack_headers.clone(), "application/x-www-form-urlencoded").await;
    assert_eq!(status, 202, "{answer}");
    let id: weft_host::store::EventId = answer["id"].as_str().unwrap().parse().unwrap();
    let record = host.engine().store().event(&id).unwrap().unwrap();
    let payload: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
    assert_eq!(payload["command"], "/deploy");
    assert_eq!(payload["text"], "api now");
    let (status, _) = form_post(
        vec![("x-slack-request-timestamp", ts.clone())],
        "application/x-www-form-urlencoded",
    )
    .await;
    assert_eq!(status, 401, "an unsigned form is refused for its signature");
    let (status, _) = form_post(slack_headers, "text/plain").await;
    assert_eq!(
        status, 415,
        "a signed body of another type is still refused"
    );
    // The github preset takes forms too, but only GitHub's: the JSON in a
    // payload field, which Slack's slash command has not.
    let (status, answer) = weft_tests::post_with_headers(
        &format!("{base}/github"),
        form,
        "application/x-www-form-urlencoded",
        &[(
            "x-hub-signature-256",
            format!("sha256={}", hmac_hex(key, &[form])),
        )],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("payload field"),
        "{answer}"
    );
    // Presets without forms refuse them, after the signature.
    let (status, _) = weft_tests::post_with_headers(
        &format!("{base}/hmac-sha256"),
        form,
        "application/x-www-form-urlencoded",
        &[("x-signature", format!("sha256={}", hmac_hex(key, &[form])))],
    )
    .await;
    assert_eq!(status, 415, "hmac-sha256 takes no forms");
    host.shutdown().await;
}

/// GitHub's default content type: a form with the JSON in its `payload`
/// field, signed over the raw form. It is verified on those bytes, the
/// payload becomes the event, and the delivery's kind (`X-GitHub-Event`)
/// stays with it as metadata that plugins and the history see.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_form_encoded_github_delivery_is_verified_and_keeps_its_event_type() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/gh");
    // Routed by kind: issues and pushes go on, anything else (a ping) stops.
    let pipelines = format!(
        "[[pipeline]]\nname = \"github\"\ntrigger = {{ webhook = {{ verify = \"github\", secret = \"GH_SECRET\" }} }}\nsteps = [{{ plugin = \"filter\", config = {{ all = [{{ header = \"X-GitHub-Event\", in = [\"issues\", \"push\"] }}] }} }}]\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n"
    );
    let setup = setup_with(&receiver, &pipelines, &[]);
    let host = RunningHost::start(setup.config()).await.unwrap();
    let url = format!("http://{}/hooks/github", host.addr);
    // As GitHub documents a form-encoded "issues" delivery (shortened).
    let json = r#"{"action":"opened","issue":{"number":1347,"title":"Found a bug","user":{"login":"octocat"}},"repository":{"full_name":"octocat/Hello-World"}}"#;
    let body = format!("payload={}", weft_host::percent::encode(json));
    let sig = format!(
        "sha256={}",
        hmac_hex(GH_SECRET.as_bytes(), &[body.as_bytes()])
    );
    let headers = vec![
        ("x-hub-signature-256", sig),
        (
            "x-github-delivery",
            "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
        ),
        ("x-github-event", "issues".to_string()),
        ("x-github-hook-id", "292430182".to_string()),
    ];
    let (status, answer) = weft_tests::post_with_headers(
        &url,
        body.as_bytes(),
        "application/x-www-form-urlencoded",
        &headers,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert!(wait_until(WAIT, || receiver.effect_count() == 1).await);
    let delivered = &receiver.delivered()[0];
    assert_eq!(
        delivered.body["issue"]["number"], 1347,
        "the payload field is the event"
    );
    let id: weft_host::store::EventId = answer["id"].as_str().unwrap().parse().unwrap();
    let record = host.engine().store().event(&id).unwrap().unwrap();
    assert!(
        record
            .headers
            .contains(&("x-github-event".to_string(), "issues".to_string())),
        "{:?}",
        record.headers
    );
    let view = weft_host::engine::EventView::from(&record);
    assert!(
        view.headers
            .iter()
            .any(|(k, v)| k == "x-github-hook-id" && v == "292430182")
    );
    // A ping (GitHub's first delivery to a new hook) is filtered by its kind.
    let ping = format!(
        "payload={}",
        weft_host::percent::encode(r#"{"zen":"Keep it logically awesome.","hook_id":292430182}"#)
    );
    let ping_headers = vec![
        (
            "x-hub-signature-256",
            format!(
                "sha256={}",
                hmac_hex(GH_SECRET.as_bytes(), &[ping.as_bytes()])
            ),
        ),
        ("x-github-delivery", "ping-1".to_string()),
        ("x-github-event", "ping".to_string()),
    ];
    let (status, answer) = weft_tests::post_with_headers(
        &url,
        ping.as_bytes(),
        "application/x-www-form-urlencoded",
        &ping_headers,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let ping_id: weft_host::store::EventId = answer["id"].as_str().unwrap().parse().unwrap();
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || store
            .event(&ping_id)
            .unwrap()
            .is_some_and(|r| r.state == weft_host::store::EventState::Filtered))
        .await
    );
    assert_eq!(receiver.effect_count(), 1, "the ping went nowhere");
    // Tampered with after signing: refused, nothing stored.
    let forged = body.replace("Found", "Fixed");
    let (status, _) = weft_tests::post_with_headers(
        &url,
        forged.as_bytes(),
        "application/x-www-form-urlencoded",
        &headers,
    )
    .await;
    assert_eq!(status, 401);
    // A form without a payload field says what is missing.
    let bare = "action=opened";
    let sig = format!(
        "sha256={}",
        hmac_hex(GH_SECRET.as_bytes(), &[bare.as_bytes()])
    );
    let (status, answer) = weft_tests::post_with_headers(
        &url,
        bare.as_bytes(),
        "application/x-www-form-urlencoded",
        &[
            ("x-hub-signature-256", sig),
            ("x-github-delivery", "d-2".into()),
        ],
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("payload field"),
        "{answer}"
    );
    host.shutdown().await;
}

/// Versions side by side: v1 and v2 payloads are each held against their
/// own schema, the version named by a header (or a payload field); an
/// unknown or missing version is a 422 naming the accepted ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_contracts_accept_v1_and_v2_side_by_side() {
    const V1: &str =
        r#"{"type": "object", "required": ["email"], "properties": {"email": {"type": "string"}}}"#;
    const V2: &str = r#"{"type": "object", "required": ["contact"], "properties": {"contact": {"type": "object", "required": ["email"]}}}"#;
    let receiver = Receiver::start(Behavior::Accept).await;
    let sink = receiver.url("/v");
    let pipelines = format!(
        "[[pipeline]]\nname = \"by-header\"\ncontract = {{ versions = {{ \"1\" = \"v1.json\", \"2\" = \"v2.json\" }}, header = \"Schema-Version\", default = \"1\" }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n\n\
         [[pipeline]]\nname = \"by-field\"\ncontract = {{ versions = {{ \"1\" = \"v1.json\", \"2\" = \"v2.json\" }}, pointer = \"/schema_version\" }}\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{sink}\" }} }}\n"
    );
    let setup = setup_with(&receiver, &pipelines, &[("v1.json", V1), ("v2.json", V2)]);
    let host = RunningHost::start(setup.config()).await.unwrap();
    let base = format!("http://{}/hooks", host.addr);
    let v1 = serde_json::json!({ "email": "a@example.com" });
    let v2 = serde_json::json!({ "contact": { "email": "b@example.com" } });
    let send = |path: &str, body: &serde_json::Value, version: Option<&str>| {
        let url = format!("{base}/{path}");
        let body = body.to_string();
        let headers: Vec<(&str, String)> = version
            .map(|v| vec![("schema-version", v.to_string())])
            .unwrap_or_default();
        async move { post(&url, body.as_bytes(), &headers).await }
    };
    // By header: each version against its schema; none means the default.
    assert_eq!(send("by-header", &v1, Some("1")).await.0, 202);
    assert_eq!(send("by-header", &v2, Some("2")).await.0, 202);
    assert_eq!(
        send("by-header", &v1, None).await.0,
        202,
        "the default is 1"
    );
    let (status, answer) = send("by-header", &v1, Some("2")).await;
    assert_eq!(status, 422, "a v1 body is not a v2 payload: {answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("v2.json"),
        "{answer}"
    );
    let (status, answer) = send("by-header", &v1, Some("3")).await;
    assert_eq!(status, 422);
    assert_eq!(
        answer["error"],
        "schema version \"3\" (from the schema-version header) is not accepted here; accepted versions: 1, 2"
    );
    // By payload field, no default: a payload naming none is refused.
    let mut v2_field = v2.clone();
    v2_field["schema_version"] = 2.into();
    assert_eq!(send("by-field", &v2_field, None).await.0, 202);
    let (status, answer) = send("by-field", &v1, None).await;
    assert_eq!(status, 422);
    assert!(
        answer["error"].as_str().unwrap().contains("names no schema version (the payload's /schema_version is missing); accepted versions: 1, 2"),
        "{answer}"
    );
    assert!(wait_until(WAIT, || receiver.effect_count() == 4).await);
    // The version a payload was accepted under is kept with it.
    let store = host.engine().store().clone();
    let recent = store.recent_events(|_| true, 10).unwrap();
    assert!(
        recent
            .iter()
            .filter(|r| r.pipeline == "by-header")
            .any(|r| r.headers.contains(&("contract-version".into(), "2".into())))
    );
    host.shutdown().await;
}
