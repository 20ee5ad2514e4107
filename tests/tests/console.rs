//! The console in headless Chromium: sign in with a token, watch a
//! pipeline's counters move while events are sent, open an event and its
//! plugin calls, replay a dead letter and see it delivered; a viewer is
//! offered no replay, purge or pause and is refused by the API anyway;
//! without tokens (loopback) it opens as admin; never on the webhook
//! listener. Screenshots of each page go to target/console-screenshots.

use std::path::PathBuf;
use std::time::Duration;
use weft_host::host::RunningHost;
use weft_tests::browser::Browser;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(30);

fn shots() -> PathBuf {
    std::env::var_os("WEFT_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
        })
}

/// A token per role (nothing in it looks like a role's name: answers are
/// masked where they echo any part of a secret).
fn token(role: &str) -> String {
    let n = ["viewer", "operator", "admin"]
        .iter()
        .position(|r| *r == role)
        .unwrap();
    format!("k7Qz{n}x5c1e9f2a8b")
}

async fn host_with_tokens(receiver: &Receiver) -> (HostSetup, RunningHost) {
    // The sink's grant attaches a credential (the console lists it).
    let mut extra = String::from("credentials = [\"CRM_TOKEN\"]\n\n");
    for role in ["viewer", "operator", "admin"] {
        extra.push_str(&format!(
            "[[admin.tokens]]\nname = \"{role}-bot\"\nrole = \"{role}\"\nsecret = \"{}_TOKEN\"\n",
            role.to_uppercase()
        ));
    }
    let setup = HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/x"))
            .with("owner = \"growth\"")
            .with("slo = { success = 0.99, freshness = \"10m\" }")
            .with("quality = { max_invalid_ratio = 0.5 }")],
        &extra,
    )
    .unwrap();
    let mut values: Vec<(String, String)> = ["viewer", "operator", "admin"]
        .iter()
        .map(|r| (format!("{}_TOKEN", r.to_uppercase()), token(r)))
        .collect();
    values.push(("CRM_TOKEN".into(), "crm-value-31d7a9".into()));
    values.push(("STORE_KEY".into(), weft_host::store::seal::generate_key()));
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let setup = setup
        .with_secrets(&pairs)
        .unwrap()
        .server_line("encryption = { key = \"STORE_KEY\" }")
        .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    (setup, host)
}

async fn sign_in(b: &Browser, ui: &str, role: &str) {
    b.go(ui).await.unwrap();
    b.type_into("#token", &token(role)).await.unwrap();
    b.click("#sign-in-button").await.unwrap();
    b.wait_text("#who", WAIT, |t| t.contains(&format!("({role})")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_and_fixes_what_is_stuck_and_a_viewer_only_sees() {
    // `bad-` keys are refused by the receiver (400): dead-lettered at once.
    let receiver = Receiver::start(Behavior::FailKeys {
        prefix: "bad-".into(),
        status: 400,
    })
    .await;
    let (_setup, host) = host_with_tokens(&receiver).await;
    let ui = format!("http://{}/ui", host.admin_addr);
    let b = Browser::start().await.expect("a headless browser");
    let dir = shots();

    // A wrong token is refused; the right one signs in.
    b.go(&ui).await.unwrap();
    b.type_into("#token", "not-a-token-at-all").await.unwrap();
    b.click("#sign-in-button").await.unwrap();
    b.wait_text("#sign-in-error", WAIT, |t| t.contains("not accepted"))
        .await
        .unwrap();
    sign_in(&b, &ui, "operator").await;

    // Pipelines: the counters move while events are sent, without a reload.
    let before: u64 = b
        .wait_text("#pipeline-leads .accepted", WAIT, |t| !t.is_empty())
        .await
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..5 {
        let (status, _) = send_event(&host, "leads", &lead(&format!("ok-{i}"), i)).await;
        assert_eq!(status, 202);
    }
    b.wait_text("#pipeline-leads .delivered", WAIT, |t| {
        t.parse::<u64>().is_ok_and(|n| n >= before + 5)
    })
    .await
    .unwrap();
    assert!(
        b.has("#pipeline-leads button.pause").await,
        "an operator may pause"
    );
    // The pipeline as a product: its owner, its objectives and its gate.
    assert_eq!(b.text("#pipeline-leads .owner").await.unwrap(), "growth");
    let objectives = b.text("#objectives").await.unwrap();
    assert!(
        objectives.contains("success") && objectives.contains("99.0%"),
        "{objectives}"
    );
    assert!(objectives.contains("leads freshness: ok"), "{objectives}");
    assert!(
        objectives.contains("leads quality: 0.0% invalid"),
        "{objectives}"
    );
    b.screenshot(&dir.join("pipelines.png")).await.unwrap();

    // Events: the list, then one event with its plugin calls.
    b.click("#nav-events").await.unwrap();
    b.find("#events .event-link", WAIT).await.unwrap();
    b.screenshot(&dir.join("events.png")).await.unwrap();
    b.click("#events .event-link").await.unwrap();
    b.find("#event", WAIT).await.unwrap();
    if b.find(".call", WAIT).await.is_err() {
        b.screenshot(&dir.join("event-failed.png")).await.unwrap();
        panic!(
            "no plugin calls on the event's page: {:?}",
            b.text("#page").await
        );
    }
    assert!(b.count(".call").await >= 3, "json-map, filter and the sink");
    let calls = b.text(".calls").await.unwrap();
    assert!(
        calls.contains("json-map") && calls.contains("http-sink"),
        "{calls}"
    );
    b.screenshot(&dir.join("event.png")).await.unwrap();
    // A payload built to run script in the page is shown as text.
    let hostile = serde_json::json!({
        "id": "xss-1",
        "email": "x@example.com",
        "name": "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>",
    });
    let (status, answer) = send_event(&host, "leads", &hostile).await;
    assert_eq!(status, 202);
    b.go(&format!("{ui}#/event/{}", answer["id"].as_str().unwrap()))
        .await
        .unwrap();
    let shown = b
        .wait_text("#payload", WAIT, |t| t.contains("xss-1"))
        .await
        .unwrap();
    assert!(shown.contains("<img src=x onerror="), "{shown}");
    assert_eq!(
        b.run("return window.pwned === undefined").await.unwrap(),
        serde_json::json!(true),
        "nothing of the payload ran"
    );

    // Dead letters: one refused, replayed from the page once the receiver
    // takes it, and delivered.
    let (status, _) = send_event(&host, "leads", &lead("bad-1", 1)).await;
    assert_eq!(status, 202);
    assert!(
        wait_until(WAIT, || host.engine().status("leads").unwrap().dead_letters
            == 1)
        .await
    );
    receiver.set_behavior(Behavior::Accept);
    b.click("#nav-dlq").await.unwrap();
    b.find("#dead-letters .pick", WAIT).await.unwrap();
    assert!(b.has("#replay").await, "an operator may replay");
    assert!(!b.has("#purge").await, "only an admin may purge");
    b.screenshot(&dir.join("dead-letters.png")).await.unwrap();
    b.click("#dead-letters .pick").await.unwrap();
    b.click("#replay").await.unwrap();
    b.accept_dialog().await.unwrap();
    assert!(
        wait_until(WAIT, || receiver.effects().contains_key("bad-1")).await,
        "the replayed dead letter is delivered"
    );

    // Plugins and grants; the audit log, with the replay in it.
    b.click("#nav-plugins").await.unwrap();
    b.find(".plugin .grant", WAIT).await.unwrap();
    let plugins = b.text("#page").await.unwrap();
    assert!(
        plugins.contains("http-sink") && plugins.contains("sha256"),
        "{plugins}"
    );
    let credentials = b.text("#credentials").await.unwrap();
    assert!(
        credentials.contains("CRM_TOKEN") && credentials.contains("loaded"),
        "{credentials}"
    );
    assert!(
        !plugins.contains("crm-value-31d7a9"),
        "a secret on the page"
    );
    let encryption = b.text("#encryption").await.unwrap();
    assert!(encryption.contains("Encrypted at rest"), "{encryption}");
    b.screenshot(&dir.join("plugins.png")).await.unwrap();
    b.click("#nav-audit").await.unwrap();
    b.wait_text("#chain", WAIT, |t| t.contains("verifies"))
        .await
        .unwrap();
    let log = b.text("#audit").await.unwrap();
    assert!(
        log.contains("operator-bot") && log.contains("dlq-replay"),
        "{log}"
    );
    // Opening the console is not a failed login; the one wrong token is.
    assert_eq!(log.matches("refused-login").count(), 1, "{log}");
    b.screenshot(&dir.join("audit-log.png")).await.unwrap();

    // A viewer: no buttons that change anything, and the API says no anyway.
    b.click("#sign-out").await.unwrap();
    b.find("#token", WAIT).await.unwrap();
    sign_in(&b, &ui, "viewer").await;
    b.find("#pipeline-leads", WAIT).await.unwrap();
    assert_eq!(
        b.count("#pipelines button").await,
        0,
        "no pause for a viewer"
    );
    let (status, _) = send_event(&host, "leads", &lead("bad-2", 2)).await;
    assert_eq!(status, 202);
    receiver.set_behavior(Behavior::FailKeys {
        prefix: "bad-".into(),
        status: 400,
    });
    b.click("#nav-dlq").await.unwrap();
    b.find("#dead-letters", WAIT).await.unwrap();
    assert!(!b.has("#replay").await && !b.has("#purge").await);
    let client = weft_host::client::HostClient::new(
        &format!("http://{}", host.admin_addr),
        Some(token("viewer")),
    );
    let reply = client
        .call(
            hyper::Method::POST,
            "/api/v1/dlq/replay",
            Some(br#"{"all": true}"#.to_vec()),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 403, "{}", reply.body);

    // Never on the webhook listener.
    let (status, _) = weft_tests::get_text(&format!("http://{}/ui", host.addr)).await;
    assert_eq!(status, 404);
    eprintln!("screenshots in {}", dir.display());
    drop(b);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_loopback_console_opens_as_admin() {
    let (_receiver, _setup, host) = weft_tests::leads_host(Behavior::Accept).await;
    let b = Browser::start().await.expect("a headless browser");
    b.go(&format!("http://{}/ui", host.admin_addr))
        .await
        .unwrap();
    b.wait_text("#who", WAIT, |t| t.contains("anonymous (admin)"))
        .await
        .unwrap();
    b.find("#pipeline-leads", WAIT).await.unwrap();
    assert!(b.has("#pipeline-leads button.pause").await);
    drop(b);
    host.shutdown().await;
}
