//! OAuth 2.0 clients held by the host, against a token endpoint and a
//! protected API written in the test kit: tokens fetched once and reused,
//! a 401 answered by one refresh and one resend, refreshed before expiry,
//! a failing token endpoint a transient error with backoff, a rotated
//! refresh token kept across a kill -9, and no token or secret in logs,
//! answers, dead letters or the data directory.

use std::path::Path;
use std::time::Duration;
use weft_host::host::RunningHost;
use weft_tests::oauth::AuthServer;
use weft_tests::{HostSetup, PipelineSpec, free_addr, lead, post_json, wait_until};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(60);
const CLIENT_SECRET: &str = "client-secret-9c41e2f7";

/// A host whose `leads` pipeline delivers to the protected API with the
/// OAuth credential `CRM`, configured by `oauth` (the `[oauth.CRM]` lines
/// besides token_url and client_id).
fn setup(
    auth: &AuthServer,
    listen: std::net::SocketAddr,
    oauth: &str,
    secrets: &[(&str, &str)],
) -> HostSetup {
    let grant = format!(
        "credentials = [\"CRM\"]\n\n[oauth.CRM]\ntoken_url = \"{}\"\nclient_id = \"weft\"\n{oauth}\n",
        auth.url("/token")
    );
    HostSetup::with_extra(
        listen,
        &[PipelineSpec::leads("leads", &auth.url("/api/leads"))
            .sink_config("auth = [{ credential = \"CRM\", scheme = \"bearer\" }]")
            .retry("max_attempts = 20, initial_ms = 200, max_ms = 1000")],
        &grant,
    )
    .unwrap()
    .with_secrets(secrets)
    .unwrap()
}

/// Every file under `dir` holding any of `needles`, with the needle.
fn holding(dir: &Path, needles: &[String]) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(holding(&path, needles));
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for n in needles {
            if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                out.push((path.clone(), n.clone()));
            }
        }
    }
    out
}

async fn credentials(host: &RunningHost) -> serde_json::Value {
    weft_tests::admin_call(host, hyper::Method::GET, "/api/v1/credentials").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_credentials_tokens_are_reused_refreshed_and_never_shown() {
    let auth = AuthServer::start("weft", CLIENT_SECRET, 3600).await;
    let setup = setup(
        &auth,
        weft_tests::any_port(),
        "grant = \"client_credentials\"\nclient_secret = \"CRM_CLIENT_SECRET\"\nscopes = [\"leads.write\", \"leads.read\"]\naudience = \"https://api.example.com\"",
        &[("CRM_CLIENT_SECRET", CLIENT_SECRET)],
    );
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    let send = |id: String| {
        let host = &host;
        async move {
            let (status, answer) = weft_tests::send_event(host, "leads", &lead(&id, 1)).await;
            assert_eq!(status, 202, "{answer}");
        }
    };
    for i in 0..5 {
        send(format!("a-{i}")).await;
    }
    assert!(
        wait_until(WAIT, || auth.api_ok() == 5).await,
        "{}",
        auth.api_ok()
    );
    let asked = auth.token_requests();
    assert_eq!(asked.len(), 1, "one token for five deliveries: {asked:?}");
    assert!(asked[0].client_ok);
    assert_eq!(asked[0].form["grant_type"], "client_credentials");
    assert_eq!(asked[0].form["scope"], "leads.write leads.read");
    assert_eq!(asked[0].form["audience"], "https://api.example.com");
    let status = credentials(&host).await;
    let crm = &status["credentials"][0];
    assert_eq!(crm["name"], "CRM", "{status}");
    assert_eq!(crm["state"], "valid", "{status}");
    assert_eq!(crm["used_by"], serde_json::json!(["http-sink"]));
    assert!(crm["valid_until_ms"].as_u64().unwrap() > weft_host::store::now_ms());
    let metrics = |host: &RunningHost| {
        let addr = host.admin_addr;
        async move {
            weft_tests::get_text(&format!("http://{addr}/metrics"))
                .await
                .1
        }
    };
    let text = metrics(&host).await;
    for line in [
        "weft_oauth_token_refreshes_total{credential=\"CRM\"} 1",
        "weft_oauth_token_valid{credential=\"CRM\"} 1",
        "weft_oauth_token_failures_total{credential=\"CRM\"} 0",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }

    // The API revokes the token: one 401, one refresh, one resend; the
    // plugin sees only the success.
    auth.revoke_access();
    send("b-1".into()).await;
    assert!(wait_until(WAIT, || auth.api_ok() == 6).await);
    assert_eq!(auth.token_requests().len(), 2);
    let refused = |auth: &AuthServer| {
        auth.with(|s| s.api_requests.iter().filter(|(_, st)| *st == 401).count())
    };
    assert_eq!(refused(&auth), 1);
    assert_eq!(engine.status("leads").unwrap().dead_letters, 0);

    // Short-lived tokens are refreshed before they expire, not after a 401
    // (a 401 drops a token at most once a second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    auth.with(|s| s.expires_in = 2);
    auth.revoke_access();
    send("c-1".into()).await;
    assert!(wait_until(WAIT, || auth.api_ok() == 7).await);
    assert_eq!(refused(&auth), 2);
    let before = auth.token_requests().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send("c-2".into()).await;
    assert!(wait_until(WAIT, || auth.api_ok() == 8).await);
    assert_eq!(
        auth.token_requests().len(),
        before + 1,
        "refreshed ahead of expiry"
    );
    assert_eq!(
        refused(&auth),
        2,
        "no request went out with an expired token"
    );

    // The token endpoint fails: the event waits (transient, with backoff)
    // and is delivered once it works again.
    auth.with(|s| {
        s.failing = Some(503);
        s.expires_in = 3600;
    });
    auth.revoke_access();
    send("d-1".into()).await;
    assert!(
        wait_until(WAIT, || auth.token_requests().len() >= before + 3).await,
        "the token endpoint is tried again"
    );
    let status = credentials(&host).await;
    let crm = &status["credentials"][0];
    assert_eq!(crm["state"], "failing", "{status}");
    let error = crm["last_error"].as_str().unwrap();
    assert!(
        error.contains("503") && error.contains("temporarily_unavailable"),
        "{error}"
    );
    let text = metrics(&host).await;
    assert!(
        text.contains("weft_oauth_token_valid{credential=\"CRM\"} 0")
            && !text.contains("weft_oauth_token_failures_total{credential=\"CRM\"} 0"),
        "{text}"
    );
    let tries = auth.token_requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        auth.token_requests().len() <= tries + 1,
        "the failing endpoint is not hammered"
    );
    auth.with(|s| s.failing = None);
    assert!(
        wait_until(WAIT, || auth.api_ok() == 9).await,
        "delivered once tokens come again"
    );
    assert_eq!(engine.status("leads").unwrap().dead_letters, 0);
    let status = credentials(&host).await;
    assert_eq!(status["credentials"][0]["state"], "valid");
    assert!(status["credentials"][0]["last_error"].is_null());

    // An API that refuses every token cannot make the host hammer the
    // token endpoint: a 401 drops a token at most once a second.
    auth.with(|s| s.refuse_all = true);
    let (tokens_before, started) = (auth.token_requests().len(), std::time::Instant::now());
    for i in 0..20 {
        send(format!("e-{i}")).await;
    }
    assert!(
        wait_until(WAIT, || engine.status("leads").unwrap().dead_letters == 20).await,
        "a token the API refuses is its answer (HTTP 401, permanent)"
    );
    let asked = auth.token_requests().len() - tokens_before;
    assert!(
        asked as u64 <= started.elapsed().as_secs() + 2,
        "{asked} token requests in {:?}",
        started.elapsed()
    );
    auth.with(|s| s.refuse_all = false);

    // No token and no secret in any answer or on disk.
    let mut secrets = auth.with(|s| s.issued.clone());
    secrets.push(CLIENT_SECRET.to_string());
    let events = weft_tests::admin_call(&host, hyper::Method::GET, "/api/v1/events").await;
    for answer in [credentials(&host).await, events] {
        for s in &secrets {
            assert!(!answer.to_string().contains(s.as_str()), "{s} in {answer}");
        }
    }
    host.shutdown().await;
    let found = holding(&setup.data_dir(), &secrets);
    assert!(found.is_empty(), "on disk: {found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_refresh_token_survives_a_kill_9() {
    let auth = AuthServer::start("weft", CLIENT_SECRET, 3600).await;
    auth.with(|s| s.rotate = true);
    let first = auth.grant_refresh_token();
    let listen = free_addr();
    let setup = setup(
        &auth,
        listen,
        "grant = \"refresh_token\"\nclient_secret = \"CRM_CLIENT_SECRET\"\nrefresh_token = \"CRM_REFRESH_TOKEN\"\nclient_auth = \"body\"",
        &[
            ("CRM_CLIENT_SECRET", CLIENT_SECRET),
            ("CRM_REFRESH_TOKEN", &first),
        ],
    );
    let url = format!("http://{listen}/hooks/leads");
    let post = |id: &'static str| {
        let url = url.clone();
        async move {
            let (status, _) =
                post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json").await;
            assert_eq!(status, 202);
        }
    };
    let weft = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "run1.log", &[]);
    post("r-1").await;
    assert!(wait_until(WAIT, || auth.api_ok() == 1).await);
    let asked = auth.token_requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].form["refresh_token"], first);
    let status = std::process::Command::new(WEFT)
        .args(["credentials", "status", "--json", "--config"])
        .arg(&setup.config_path)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    let list: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(list[0]["rotations"], 1, "{shown}");
    assert_eq!(list[0]["state"], "valid", "{shown}");
    weft.sigkill();

    // The server refuses the first refresh token now: the next start must
    // use the one it rotated in.
    let weft = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "run2.log", &[]);
    post("r-2").await;
    assert!(wait_until(WAIT, || auth.api_ok() == 2).await);
    let asked = auth.token_requests();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_ne!(asked[1].form["refresh_token"], first);
    assert!(asked[1].client_ok, "the secret went in the form body");
    weft.sigterm();

    let mut secrets = auth.with(|s| s.issued.clone());
    secrets.push(CLIENT_SECRET.to_string());
    let found = holding(setup.dir.path(), &secrets)
        .into_iter()
        // The operator's own files hold the first token and the secret.
        .filter(|(p, _)| !p.ends_with("secrets.toml"))
        .collect::<Vec<_>>();
    assert!(found.is_empty(), "tokens or the secret in {found:?}");
    assert!(!shown.contains(&first));
}
