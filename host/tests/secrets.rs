//! Credentials end to end, with the real binary: the host attaches bearer,
//! basic and HMAC credentials that never enter the plugin, and a secret
//! canary value appears in no log line (JSON or text), no API answer, no
//! dead letter and no file of the data directory, even when an upstream
//! echoes it back and a plugin granted the raw value tries to leak it; and
//! a pipeline's redacted payload fields stay out of logs, answers and dead
//! letters even when a plugin echoes the payload.

use hmac::Mac;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use weft_tests::{Behavior, Receiver, WeftProcess, free_addr, lead, post_json, wait_until};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(120);
const CANARY: &str = "canary-5f0c2b9a7e41d3";
const SIGNING_KEY: &str = "signing-key-83c1e0aa";
const PRIVATE_EMAIL: &str = "ada.private@example.com";
const PRIVATE_CARD: &str = "4111111111111111";

fn files_containing(dir: &Path, needle: &[u8], out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_containing(&path, needle, out);
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            out.push(path.display().to_string());
        }
    }
}

async fn send(listen: std::net::SocketAddr, pipeline: &str, id: &str) {
    let url = format!("http://{listen}/hooks/{pipeline}");
    let (status, body) =
        post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json").await;
    assert_eq!(status, 202, "{pipeline}: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_attached_by_the_host_and_masked_everywhere() {
    let ok = Receiver::start(Behavior::Accept).await;
    let leaky = Receiver::start(Behavior::EchoHeaders(422)).await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    weft_tests::install_plugins(&plugins).unwrap();
    std::fs::copy(weft_tests::plugins::HOSTILE, plugins.join("leaker.wasm")).unwrap();
    let secrets = dir.path().join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("CRM_TOKEN = \"{CANARY}\"\nSIGNING_KEY = \"{SIGNING_KEY}\"\n"),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let listen = free_addr();
    let admin = free_addr();
    let sink = |name: &str, url: String, auth: &str| {
        format!(
            "[[pipeline]]\nname = \"{name}\"\nidempotency_key = \"/id\"\nsink = {{ plugin = \"http-sink\", config = {{ url = \"{url}\", auth = [{auth}] }} }}\nretry = {{ max_attempts = 1 }}\n\n"
        )
    };
    let mut config = format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"./data\"\nsecrets_file = \"secrets.toml\"\n\n[plugins]\ndir = \"./plugins.d\"\n\n\
         [grants.http-sink]\nhttp = [\"http://{ok}\", \"http://{leaky}\"]\ncredentials = [{{ name = \"CRM_TOKEN\", origins = [\"http://{ok}\", \"http://{leaky}\"] }}, {{ name = \"SIGNING_KEY\", origins = [\"http://{ok}\"] }}]\n\n\
         [grants.leaker]\nhttp = [\"http://{ok}\"]\nreveal = [\"CRM_TOKEN\"]\nkv = {{ quota_kib = 16 }}\n\n",
        ok = ok.addr,
        leaky = leaky.addr,
    );
    config.push_str(&sink(
        "signed",
        ok.url("/signed"),
        r#"{ credential = "CRM_TOKEN" }, { credential = "SIGNING_KEY", scheme = "hmac-sha256", header = "x-signature" }"#,
    ));
    config.push_str(&sink(
        "basic",
        ok.url("/basic"),
        r#"{ credential = "CRM_TOKEN", scheme = "basic", user = "svc" }"#,
    ));
    config.push_str(&sink(
        "leaky",
        leaky.url("/x"),
        r#"{ credential = "CRM_TOKEN" }"#,
    ));
    config.push_str(
        "[[pipeline]]\nname = \"leak\"\nsink = { plugin = \"leaker\", config = { attack = \"leak\", credential = \"CRM_TOKEN\" } }\nretry = { max_attempts = 1 }\n\n",
    );
    config.push_str(
        "[[pipeline]]\nname = \"echo\"\nredact = [\"/email\", \"/card/number\"]\nsink = { plugin = \"leaker\", config = { attack = \"echo\" } }\nretry = { max_attempts = 1 }\n",
    );
    assert!(!config.contains(CANARY), "the secret is not in weft.toml");
    let config_path = dir.path().join("weft.toml");
    std::fs::write(&config_path, &config).unwrap();

    let mut dead_letters = 0;
    for (round, format) in ["json", "text"].into_iter().enumerate() {
        let log = format!("weft-{format}.log");
        let host = WeftProcess::start(WEFT, &config_path, listen, &log, &["--log-format", format]);
        for p in ["signed", "basic", "leaky", "leak"] {
            send(listen, p, &format!("{p}-{round}")).await;
        }
        let private = serde_json::json!({
            "id": format!("echo-{round}"),
            "email": PRIVATE_EMAIL,
            "card": { "number": PRIVATE_CARD },
        });
        let (status, _) = post_json(
            &format!("http://{listen}/hooks/echo"),
            private.to_string().as_bytes(),
            "application/json",
        )
        .await;
        assert_eq!(status, 202);
        dead_letters += 3;
        let client = weft_host::client::HostClient::new(&format!("http://{admin}"), None);
        let mut answers = String::new();
        assert!(
            wait_until(WAIT, || ok.delivered().len() == 2 * (round + 1)).await,
            "signed and basic delivered"
        );
        for _ in 0..600 {
            let dlq = client
                .call(hyper::Method::GET, "/api/v1/dlq", None, &[])
                .await
                .unwrap();
            if dlq.body["dead_letters"].as_array().map(Vec::len) == Some(dead_letters) {
                answers = dlq.body.to_string();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!answers.is_empty(), "both failures dead-lettered");
        assert!(
            answers.contains("[redacted]"),
            "the echoed token and the leak are masked: {answers}"
        );
        let event = client
            .call(
                hyper::Method::GET,
                &format!("/api/v1/events/{}", answers_id(&answers)),
                None,
                &[],
            )
            .await
            .unwrap();
        answers.push_str(&event.body.to_string());
        assert!(
            !answers.contains(CANARY),
            "an API answer holds the secret: {answers}"
        );
        for private in [PRIVATE_EMAIL, PRIVATE_CARD] {
            assert!(
                !answers.contains(private),
                "an API answer holds a redacted field: {answers}"
            );
        }
        assert!(answers.contains("cannot deliver"), "{answers}");
        host.sigterm();
    }

    // What the receivers saw: the host attached each credential.
    let signed = ok
        .delivered()
        .into_iter()
        .find(|d| d.path == "/signed")
        .unwrap();
    assert_eq!(
        signed.header("authorization"),
        Some(format!("Bearer {CANARY}").as_str())
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SIGNING_KEY.as_bytes()).unwrap();
    mac.update(&signed.raw_body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signed.header("x-signature"), Some(expected.as_str()));
    let basic = ok
        .delivered()
        .into_iter()
        .find(|d| d.path == "/basic")
        .unwrap();
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("svc:{CANARY}"));
    assert_eq!(
        basic.header("authorization"),
        Some(format!("Basic {encoded}").as_str())
    );
    assert!(
        ok.requests()
            .iter()
            .all(|d| d.header("weft-credential").is_none()),
        "the placeholder never leaves the host"
    );

    // No log line, dead letter or stored byte holds the secret.
    for format in ["json", "text"] {
        let log = std::fs::read_to_string(dir.path().join(format!("weft-{format}.log"))).unwrap();
        assert!(
            log.contains("[redacted]"),
            "the leak attempt is logged, masked ({format})"
        );
        for secret in [
            CANARY,
            encoded.as_str(),
            SIGNING_KEY,
            PRIVATE_EMAIL,
            PRIVATE_CARD,
        ] {
            assert!(!log.contains(secret), "the {format} log holds {secret}");
        }
        assert!(
            log.contains("payload: "),
            "the plugin's echo is logged, masked ({format})"
        );
    }
    let dlq = Command::new(WEFT)
        .args(["dlq", "list", "--json", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(dlq.status.success());
    let dlq = String::from_utf8_lossy(&dlq.stdout);
    assert!(dlq.contains("leaking [redacted] in an error"), "{dlq}");
    assert!(!dlq.contains(CANARY));
    assert!(
        !dlq.contains(PRIVATE_EMAIL) && !dlq.contains(PRIVATE_CARD),
        "{dlq}"
    );
    let mut found = Vec::new();
    for secret in [CANARY, encoded.as_str(), SIGNING_KEY] {
        files_containing(&dir.path().join("data"), secret.as_bytes(), &mut found);
    }
    assert!(found.is_empty(), "secret bytes stored in {found:?}");
}

/// The id of the first dead letter in a `/api/v1/dlq` answer.
fn answers_id(answers: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(answers).unwrap();
    v["dead_letters"][0]["id"].as_str().unwrap().to_string()
}

/// A credential goes only to the origins it is tied to and only in the
/// headers it may go in: a plugin that points it elsewhere is refused, the
/// refusal is audited, and the other origin never sees the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_goes_only_to_its_origins_and_headers() {
    use weft_tests::{HostSetup, PipelineSpec, any_port, send_event};
    let ok = Receiver::start(Behavior::Accept).await;
    let other = Receiver::start(Behavior::Accept).await;
    let auth = |how: &str| format!("auth = [{{ credential = \"TIED_TOKEN\"{how} }}]");
    let setup = HostSetup::with_extra(
        any_port(),
        &[
            PipelineSpec::leads("right", &ok.url("/right"))
                .sink_config(&auth(""))
                .retry("max_attempts = 1"),
            PipelineSpec::leads("wrong", &other.url("/wrong"))
                .sink_config(&auth(""))
                .retry("max_attempts = 1"),
            PipelineSpec::leads("cookie", &ok.url("/cookie"))
                .sink_config(&auth(", scheme = \"header\", header = \"cookie\""))
                .retry("max_attempts = 1"),
        ],
        &format!(
            "credentials = [{{ name = \"TIED_TOKEN\", origins = [\"http://{}\"] }}]\n",
            ok.addr
        ),
    )
    .unwrap()
    .with_secrets(&[("TIED_TOKEN", CANARY)])
    .unwrap();
    let host = weft_host::host::RunningHost::start(setup.config())
        .await
        .unwrap();
    for p in ["right", "wrong", "cookie"] {
        assert_eq!(send_event(&host, p, &lead(p, 1)).await.0, 202);
    }
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || {
            ok.delivered().len() == 1 && store.dead_letters(None).unwrap().len() == 2
        })
        .await
    );
    let right = &ok.delivered()[0];
    assert_eq!(
        right.header("authorization"),
        Some(format!("Bearer {CANARY}").as_str())
    );
    assert!(other.requests().is_empty(), "the other origin saw nothing");
    assert!(
        ok.requests().iter().all(|r| r.header("cookie").is_none()),
        "no credential in a cookie"
    );
    let why = |pipeline: &str| -> String {
        let dead = store.dead_letters(Some(pipeline)).unwrap();
        format!("{:?}", dead[0].attempts.last().unwrap().outcome)
    };
    assert!(
        why("wrong").contains("may not be sent to"),
        "{}",
        why("wrong")
    );
    assert!(
        why("cookie").contains("may not be placed in header"),
        "{}",
        why("cookie")
    );
    let audited: Vec<String> = store
        .audit()
        .records(0)
        .unwrap()
        .into_iter()
        .filter(|r| r.action == "credential")
        .map(|r| r.detail)
        .collect();
    assert_eq!(audited.len(), 2, "{audited:?}");
    host.shutdown().await;
}

/// A request: to which listener, method, path, body, headers.
type Call<'a> = (
    &'a weft_host::client::HostClient,
    hyper::Method,
    String,
    Option<Vec<u8>>,
    Vec<(&'static str, String)>,
);

/// Masking must not become an oracle: an attacker who sends a guess at a
/// secret (whole, cut, encoded) in a path, a query, a header or a body
/// never gets an answer that says "[redacted]", on either listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_tells_a_caller_whether_a_guess_is_a_secret() {
    use base64::Engine as _;
    use weft_tests::{HostSetup, PipelineSpec, any_port};
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::with_extra(
        any_port(),
        &[
            PipelineSpec::leads("plain", &receiver.url("/p")),
            PipelineSpec::leads("checked", &receiver.url("/c")).with("contract = \"c.json\""),
            PipelineSpec::leads("signed", &receiver.url("/s")).with(
                "trigger = { webhook = { verify = \"hmac-sha256\", secret = \"ORACLE_HOOK\" } }",
            ),
        ],
        "credentials = [\"ORACLE_TOKEN\"]\n",
    )
    .unwrap()
    .with_secrets(&[("ORACLE_TOKEN", CANARY), ("ORACLE_HOOK", SIGNING_KEY)])
    .unwrap();
    std::fs::write(
        setup.dir.path().join("c.json"),
        r#"{ "type": "object", "properties": { "amount": { "type": "integer" } } }"#,
    )
    .unwrap();
    let host = weft_host::host::RunningHost::start(setup.config())
        .await
        .unwrap();
    let public = weft_host::client::HostClient::new(&format!("http://{}", host.addr), None);
    let admin = weft_host::client::HostClient::new(&format!("http://{}", host.admin_addr), None);
    let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
    let mut answers = Vec::new();
    for guess in [CANARY, &CANARY[..10], b64.as_str(), SIGNING_KEY] {
        let enc = weft_host::percent::encode(guess);
        let body = |v: serde_json::Value| Some(v.to_string().into_bytes());
        let calls: Vec<Call> = vec![
            (
                &public,
                hyper::Method::POST,
                format!("/hooks/{enc}"),
                body(serde_json::json!({})),
                vec![],
            ),
            (
                &public,
                hyper::Method::GET,
                format!("/{enc}?q={enc}"),
                None,
                vec![],
            ),
            (
                &public,
                hyper::Method::GET,
                format!("/api/v1/{enc}"),
                None,
                vec![],
            ),
            (
                &public,
                hyper::Method::POST,
                "/hooks/plain".into(),
                body(serde_json::json!({ "id": guess, "email": guess })),
                vec![("x-correlation-id", guess.to_string())],
            ),
            (
                &public,
                hyper::Method::POST,
                "/hooks/checked".into(),
                body(serde_json::json!({ "id": "c", "amount": guess })),
                vec![],
            ),
            (
                &public,
                hyper::Method::POST,
                "/hooks/signed".into(),
                body(serde_json::json!({ "id": guess })),
                vec![("x-signature", format!("sha256={guess}"))],
            ),
            (
                &admin,
                hyper::Method::GET,
                format!("/api/v1/pipelines/{enc}"),
                None,
                vec![],
            ),
            (
                &admin,
                hyper::Method::GET,
                format!("/api/v1/events/{enc}"),
                None,
                vec![],
            ),
            (
                &admin,
                hyper::Method::GET,
                format!("/api/v1/events?state={enc}"),
                None,
                vec![],
            ),
            (
                &admin,
                hyper::Method::GET,
                format!("/api/v1/events?since={enc}"),
                None,
                vec![],
            ),
            (&admin, hyper::Method::GET, format!("/{enc}"), None, vec![]),
            (
                &admin,
                hyper::Method::GET,
                "/api/v1/pipelines".into(),
                None,
                vec![("authorization", format!("Bearer {guess}"))],
            ),
        ];
        for (client, method, path, body, headers) in calls {
            let reply = client
                .call(method.clone(), &path, body, &headers)
                .await
                .unwrap();
            let text = reply.body.to_string();
            assert!(
                !text.contains("[redacted]") && !text.contains("redacted"),
                "{method} {path} answered a guess with a mask: {text}"
            );
            answers.push((path, reply.status));
        }
    }
    // The requests were answered (not all refused for some other reason):
    // the plain webhook took the guesses as keys.
    assert!(
        answers
            .iter()
            .filter(|(p, s)| p == "/hooks/plain" && (*s == 202 || *s == 200))
            .count()
            >= 3,
        "{answers:?}"
    );
    host.shutdown().await;
}
