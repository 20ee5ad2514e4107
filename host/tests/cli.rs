//! The real `weft` binary: start-up errors, the CLI against a running host
//! and offline, and a SIGKILL in the middle of a stream of webhooks.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, free_addr, lead, post_json, wait_until,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(120);

/// A `weft run` process, killed when dropped.
struct Weft;

impl Weft {
    fn start(config: &Path, listen: std::net::SocketAddr) -> weft_tests::WeftProcess {
        weft_tests::WeftProcess::start(WEFT, config, listen, "weft.log", &[])
    }
}

fn weft(args: &[&str], config: &Path) -> Output {
    Command::new(WEFT)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("weft runs")
}

/// Run `weft ARGS --config CONFIG`, expect it to fail, and return its stderr.
fn fails(args: &[&str], config: &Path) -> String {
    let out = weft(args, config);
    assert!(!out.status.success(), "weft {args:?} should fail");
    text(&out.stderr)
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key_and_the_missing_plugin() {
    let setup = HostSetup::new(
        free_addr(),
        &[PipelineSpec::leads("leads", "http://127.0.0.1:9/x")],
    )
    .unwrap();
    let good = std::fs::read_to_string(&setup.config_path).unwrap();

    std::fs::write(&setup.config_path, good.replacen("listen", "lisen", 1)).unwrap();
    let err = fails(&["check"], &setup.config_path);
    assert!(err.contains("weft.toml"), "{err}");
    assert!(err.contains("unknown field `lisen`"), "{err}");

    std::fs::write(&setup.config_path, &good).unwrap();
    std::fs::remove_file(setup.dir.path().join("plugins.d/filter.wasm")).unwrap();
    let err = fails(&["run"], &setup.config_path);
    assert!(
        err.contains("plugin \"filter\" not found: looked for"),
        "{err}"
    );
    assert!(err.contains("plugins.d/filter.wasm"), "{err}");

    std::fs::write(setup.dir.path().join("plugins.d/filter.wasm"), b"not wasm").unwrap();
    let err = fails(&["check"], &setup.config_path);
    assert!(
        err.contains("plugin \"filter\" failed to load")
            && err.contains("filter.wasm is not usable: not a valid WebAssembly component"),
        "{err}"
    );

    weft_tests::install_plugins(&setup.dir.path().join("plugins.d")).unwrap();
    std::fs::write(
        &setup.config_path,
        good.replace("lowercase = [\"/email\"]", "lowercase = [\"email\"]"),
    )
    .unwrap();
    let err = fails(&["check"], &setup.config_path);
    assert!(
        err.contains("step 1 (json-map): the plugin rejected its config")
            && err.contains("lowercase: \"email\" is not a JSON pointer"),
        "{err}"
    );

    // Files the TLS settings name are read by the check, as by the start.
    std::fs::write(
        &setup.config_path,
        format!("{good}\n[upstreams.\"https://erp.example.com\"]\nca = \"missing-ca.pem\"\n"),
    )
    .unwrap();
    let err = fails(&["check"], &setup.config_path);
    assert!(
        err.contains("ca") && err.contains("missing-ca.pem"),
        "{err}"
    );
    std::fs::write(
        &setup.config_path,
        good.replacen(
            "data_dir = \"./weft-data\"\n",
            "data_dir = \"./weft-data\"\ntls = { cert = \"no-cert.pem\", key = \"no-key.pem\" }\n",
            1,
        ),
    )
    .unwrap();
    let err = fails(&["check"], &setup.config_path);
    assert!(err.contains("no-cert.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_dlq_list_and_replay_through_the_cli() {
    let receiver = Receiver::start(Behavior::Always(400)).await;
    let listen = free_addr();
    let setup = HostSetup::leads(listen, &receiver.url("/leads")).unwrap();
    let host = Weft::start(&setup.config_path, listen);
    let file = setup.dir.path().join("lead.json");
    std::fs::write(&file, lead("C1", 1).to_string()).unwrap();
    let out = weft(
        &["send", "leads", file.to_str().unwrap()],
        &setup.config_path,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("202 "),
        "{}",
        text(&out.stdout)
    );

    let mut listed = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            let out = weft(&["dlq", "list", "--json"], &setup.config_path);
            listed = serde_json::from_slice(&out.stdout).unwrap_or_default();
            listed.as_array().is_some_and(|a| a.len() == 1)
        })
        .await
    );
    assert_eq!(listed[0]["key"], "C1");
    assert_eq!(listed[0]["error"], "HTTP 400");
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let table = text(&weft(&["dlq", "list"], &setup.config_path).stdout);
    assert!(
        table.contains(&id) && table.contains("fatal: HTTP 400"),
        "{table}"
    );

    receiver.set_behavior(Behavior::Accept);
    let out = weft(&["dlq", "replay", &id], &setup.config_path);
    assert!(
        text(&out.stdout).contains("requeued"),
        "{}",
        text(&out.stdout)
    );
    assert!(wait_until(WAIT, || receiver.effect_count() == 1).await);
    let out = weft(&["runs", "show", &id], &setup.config_path);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["state"], "delivered");
    assert_eq!(shown["history"].as_array().unwrap().len(), 2);

    // With the host stopped, the CLI reads the store directly.
    host.sigterm();
    let out = weft(&["dlq", "list"], &setup.config_path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("the dead-letter queue is empty"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_stream_loses_no_accepted_event() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::leads(listen, &receiver.url("/leads")).unwrap();
    let host = Weft::start(&setup.config_path, listen);
    let url = format!("http://{listen}/hooks/leads");
    let accepted = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..4 {
        let (url, accepted) = (url.clone(), accepted.clone());
        senders.spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<http_body_util::Full<bytes::Bytes>>();
            for i in 0..400 {
                let key = format!("K{s}-{i}");
                let body = lead(&key, i).to_string();
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                    .unwrap();
                match client.request(req).await {
                    Ok(resp) if resp.status().is_success() => {
                        accepted.lock().unwrap().insert(key);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
    }
    assert!(wait_until(WAIT, || accepted.lock().unwrap().len() >= 300).await);
    host.sigkill();
    senders.join_all().await;
    let accepted = accepted.lock().unwrap().clone();

    let host = Weft::start(&setup.config_path, listen);
    let all_there = wait_until(WAIT, || {
        let effects = receiver.effects();
        accepted.iter().all(|k| effects.contains_key(k))
    })
    .await;
    let effects = receiver.effects();
    let lost: Vec<_> = accepted
        .iter()
        .filter(|k| !effects.contains_key(*k))
        .collect();
    let redelivered = effects.values().filter(|n| **n > 1).count();
    println!(
        "accepted {} before SIGKILL; lost {}; redelivered {redelivered}",
        accepted.len(),
        lost.len()
    );
    assert!(all_there, "lost accepted events: {lost:?}");
    // The store opens cleanly after the kill and serves the API.
    let (status, _) = post_json(
        &format!("http://{listen}/hooks/leads"),
        lead("after", 1).to_string().as_bytes(),
        "application/json",
    )
    .await;
    assert_eq!(status, 202);
    host.sigterm();
}

#[test]
fn plugin_inspect_shows_the_world_and_the_requested_capabilities() {
    let out = Command::new(WEFT)
        .args([
            "plugin",
            "inspect",
            "--json",
            weft_tests::plugins::HTTP_SINK,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["world"], "weft:plugin/batch-sink@0.1.0");
    assert_eq!(report["name"], "http_sink", "the name is the file stem");
    assert_eq!(report["describes_itself_as"], "http-sink 0.1.0");
    assert_eq!(
        report["status"],
        "loads only with a grant for each capability it requests"
    );
    let needs: Vec<&str> = report["mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert!(
        needs
            .iter()
            .any(|s| s.starts_with("wasi:http/outgoing-handler")),
        "{needs:?}"
    );
    assert_eq!(report["sha256"].as_str().unwrap().len(), 64);
    let imports: Vec<&str> = report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["interface"].as_str().unwrap())
        .collect();
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler@"))
    );
    assert!(
        !imports
            .iter()
            .any(|i| i.starts_with("wasi:filesystem") || i.starts_with("wasi:sockets"))
    );
    assert_eq!(report["config_schema"]["required"][0], "url");

    let out = Command::new(WEFT)
        .args(["plugin", "inspect", "--json", weft_tests::plugins::JSON_MAP])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["world"], "weft:plugin/transform@0.1.0");
    let text_imports = report["imports"].to_string();
    assert!(
        !text_imports.contains("wasi:http/outgoing-handler"),
        "a transform asks for no HTTP"
    );

    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0").unwrap();
    let out = Command::new(WEFT)
        .args(["plugin", "inspect"])
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("core WebAssembly module, not a component"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn audit_log_verify_names_the_first_bad_record() {
    let setup = HostSetup::leads(free_addr(), "http://127.0.0.1:9/x").unwrap();
    {
        let store = weft_host::store::open(&setup.data_dir()).unwrap();
        for i in 0..4 {
            store
                .audit()
                .append(weft_host::store::AuditEntry {
                    kind: "admin",
                    actor: format!("user-{i}"),
                    pipeline: "leads".into(),
                    action: "pause".into(),
                    detail: "done".into(),
                })
                .unwrap();
        }
    }
    let out = weft(&["audit-log", "verify"], &setup.config_path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("4 records"),
        "{}",
        text(&out.stdout)
    );
    let shown = text(&weft(&["audit-log", "show"], &setup.config_path).stdout);
    assert_eq!(shown.lines().count(), 4, "{shown}");
    assert!(shown.contains("user-3"), "{shown}");
    {
        let store = weft_host::store::SledStore::open(&setup.data_dir()).unwrap();
        store.audit_tree().remove(1u64.to_be_bytes()).unwrap();
    }
    let err = fails(&["audit-log", "verify"], &setup.config_path);
    assert!(err.contains("broken at record 1"), "{err}");
}

/// `weft check` loads the secrets a verified webhook needs; plugin log fields
/// are fields of the JSON log line; a delivered event shows no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sees_webhook_secrets_plugin_fields_are_logged_and_delivered_events_show_no_error() {
    let listen = free_addr();
    let extra = "[grants.logger]\nhttp = [\"http://127.0.0.1:1\"]\nkv = { quota_kib = 64 }\n\n[[pipeline]]\nname = \"signed\"\ntrigger = { webhook = { verify = \"github\", secret = \"GH_HOOK\" } }\nsink = { plugin = \"logger\", config = { attack = \"log-fields\" } }\n\n\
                 [[pipeline]]\nname = \"logged\"\nsink = { plugin = \"logger\", config = { attack = \"log-fields\" } }\n";
    let setup = HostSetup::with_extra(listen, &[], extra).unwrap();
    std::fs::copy(
        weft_tests::plugins::HOSTILE,
        setup.dir.path().join("plugins.d/logger.wasm"),
    )
    .unwrap();

    let without = fails(&["check"], &setup.config_path);
    assert!(without.contains("WEFT_SECRET_GH_HOOK"), "{without}");
    let out = Command::new(WEFT)
        .args(["check", "--config"])
        .arg(&setup.config_path)
        .env("WEFT_SECRET_GH_HOOK", "a-webhook-secret-of-some-length")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("ok (2 pipelines"),
        "{}",
        text(&out.stdout)
    );

    let host = weft_tests::WeftProcess::start_with_env(
        WEFT,
        &setup.config_path,
        listen,
        "weft.log",
        &["--log-format", "json"],
        &[("WEFT_SECRET_GH_HOOK", "a-webhook-secret-of-some-length")],
    );
    let url = format!("http://{listen}/hooks/logged");
    let (status, answer) = post_json(&url, b"{\"id\": \"L1\"}", "application/json").await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().unwrap().to_string();
    let log_path = setup.dir.path().join("weft.log");
    let mut line = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            line = log
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["message"] == "shipping order")
                .unwrap_or_default();
            !line.is_null()
        })
        .await
    );
    assert_eq!(line["order_id"], "42", "{line}");
    assert_eq!(line["stage"], "ready to ship", "{line}");
    assert_eq!(line["plugin"], "logger", "the host's field stays: {line}");
    assert_eq!(line["plugin.plugin"], "spoofed", "{line}");
    assert!(
        line.get("fields").is_none() && line.get("plugin_fields").is_none(),
        "{line}"
    );

    let mut shown = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            let out = weft(&["runs", "show", &id], &setup.config_path);
            shown = serde_json::from_slice(&out.stdout).unwrap_or_default();
            shown["state"] == "delivered"
        })
        .await
    );
    assert_eq!(shown["receipt"], "logged", "{shown}");
    for key in ["error", "error_kind", "failed_step"] {
        assert!(
            shown.get(key).is_none(),
            "a delivered event shows {key}: {shown}"
        );
    }
    host.sigterm();
}

/// A token exported in the server's environment (as a shell that also runs
/// the CLI would) grants nothing on the server: only `[[admin.tokens]]`
/// count, with their roles. The CLI reads its own from `WEFT_TOKEN`, and an
/// old config naming `server.admin_token_env` is refused with the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_in_the_servers_environment_grants_nothing() {
    let receiver = weft_tests::Receiver::start(weft_tests::Behavior::Accept).await;
    let listen = weft_tests::free_addr();
    let viewer = "viewer-token-0123456789abcdef";
    let stray = "stray-token-0123456789abcdef";
    let setup = weft_tests::HostSetup::with_extra(
        listen,
        &[weft_tests::PipelineSpec::leads(
            "leads",
            &receiver.url("/l"),
        )],
        "[[admin.tokens]]\nname = \"dash\"\nrole = \"viewer\"\nsecret = \"DASH\"\n",
    )
    .unwrap();
    let env = [
        ("WEFT_SECRET_DASH", viewer),
        ("WEFT_ADMIN_TOKEN", viewer),
        ("WEFT_TOKEN", stray),
    ];
    let host = weft_tests::WeftProcess::start_with_env(
        WEFT,
        &setup.config_path,
        listen,
        "weft.log",
        &[],
        &env,
    );
    let admin = setup.config().server.admin_addr();
    let purge = format!("http://{admin}/api/v1/dlq/purge");
    let call = |token: &'static str| {
        let purge = purge.clone();
        async move {
            weft_tests::post_with_headers(
                &purge,
                br#"{"all": true}"#,
                "application/json",
                &[("authorization", format!("Bearer {token}"))],
            )
            .await
            .0
        }
    };
    assert_eq!(call(viewer).await, 403, "the viewer stays a viewer");
    assert_eq!(call(stray).await, 401, "a variable is no server token");
    // The CLI takes WEFT_TOKEN; the old name still works for it, with a warning.
    let status = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(WEFT);
        cmd.args(["pipeline", "status", "--config"])
            .arg(&setup.config_path)
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_ADMIN_TOKEN");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = status(&[("WEFT_TOKEN", viewer)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = status(&[("WEFT_ADMIN_TOKEN", viewer)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("WEFT_ADMIN_TOKEN is deprecated"));
    let out = status(&[("WEFT_TOKEN", stray)]);
    assert!(!out.status.success(), "a wrong token is refused");
    host.sigterm();
    // An old config that names the variable is refused, saying why.
    let text_of = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        text_of.replacen(
            "data_dir = \"./weft-data\"\n",
            "data_dir = \"./weft-data\"\nadmin_token_env = \"WEFT_ADMIN_TOKEN\"\n",
            1,
        ),
    )
    .unwrap();
    let out = Command::new(WEFT)
        .args(["check", "--config"])
        .arg(&setup.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("admin_token_env")
            && text(&out.stderr).contains("[[admin.tokens]]"),
        "{}",
        text(&out.stderr)
    );
}

/// `weft send` waits out a busy host: on 429 it sends the same body again
/// after the `Retry-After` the host gave, until it is accepted; with
/// `--no-retry` it reports the 429 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_send_waits_and_retries_on_429() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::new(
        listen,
        &[PipelineSpec::leads("leads", &receiver.url("/l")).with("max_queue = 1")],
    )
    .unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let weft = |args: &[&str]| {
        let mut cmd = Command::new(WEFT);
        cmd.args(args).arg("--config").arg(&setup.config_path);
        cmd
    };
    assert!(
        weft(&["pipeline", "pause", "leads"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let file = |name: &str, id: &str| {
        let path = setup.dir.path().join(name);
        std::fs::write(&path, lead(id, 1).to_string()).unwrap();
        path
    };
    let (first, second) = (file("first.json", "q-1"), file("second.json", "q-2"));
    let sent = weft(&["send", "leads"]).arg(&first).output().unwrap();
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    // The queue is full while the pipeline is paused.
    let out = weft(&["send", "leads", "--no-retry"])
        .arg(&second)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).starts_with("429"),
        "{}",
        text(&out.stdout)
    );
    // Without --no-retry it waits; resuming makes room, and it gets through.
    let waiting = weft(&["send", "leads"])
        .arg(&second)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        weft(&["pipeline", "resume", "leads"])
            .output()
            .unwrap()
            .status
            .success()
    );
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sending again"),
        "{}",
        text(&out.stderr)
    );
    assert!(wait_until(WAIT, || receiver.effect_count() == 2).await);
    host.sigterm();
}

/// Completions and the man page come from the CLI definition itself, so
/// they name every command.
#[test]
fn completions_and_the_man_page_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(WEFT)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let script = text(&out.stdout);
        for command in ["run", "dlq", "audit-log", "pipeline"] {
            assert!(
                script.contains(command),
                "{shell} completions lack {command}"
            );
        }
    }
    let out = Command::new(WEFT).arg("man").output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(page.contains(".TH weft 1"), "{page}");
    assert!(page.contains("durable webhook pipelines"), "{page}");
    assert!(page.contains("audit\\-log"), "{page}");
    let out = Command::new(WEFT).arg("--version").output().unwrap();
    assert!(text(&out.stdout).contains("(git "), "{}", text(&out.stdout));
}

/// With no host running, `weft pipeline status` reads the store: paused,
/// what is queued and since when, and the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_status_works_offline_from_the_store() {
    let receiver = Receiver::start(Behavior::FailKeys {
        prefix: "dead-".into(),
        status: 422,
    })
    .await;
    let listen = free_addr();
    let setup =
        HostSetup::new(listen, &[PipelineSpec::leads("leads", &receiver.url("/l"))]).unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let url = format!("http://{listen}/hooks/leads");
    for id in ["dead-1", "dead-2"] {
        let (status, _) =
            post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json").await;
        assert_eq!(status, 202);
    }
    let weft = |args: &[&str]| {
        Command::new(WEFT)
            .args(args)
            .arg("--config")
            .arg(&setup.config_path)
            .output()
            .unwrap()
    };
    let dead = || {
        serde_json::from_slice::<serde_json::Value>(&weft(&["dlq", "list", "--json"]).stdout)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    assert!(wait_until(WAIT, || dead() == 2).await, "{}", dead());
    assert!(weft(&["pipeline", "pause", "leads"]).status.success());
    let (status, _) = post_json(
        &url,
        lead("waiting-1", 1).to_string().as_bytes(),
        "application/json",
    )
    .await;
    assert_eq!(status, 202);
    host.sigterm();
    let out = weft(&["pipeline", "status", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let leads = &list[0];
    assert_eq!(leads["name"], "leads");
    assert_eq!(leads["paused"], true);
    assert_eq!(leads["queued"], 1);
    assert_eq!(leads["dead_letters"], 2);
    // Lifetime counters were saved at shutdown.
    assert_eq!(leads["lifetime"]["accepted"], 3, "{leads}");
    assert_eq!(leads["lifetime"]["dead_lettered"], 2, "{leads}");
    let out = weft(&["pipeline", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no host is running"),
        "{}",
        text(&out.stdout)
    );

    // Restarted: the counters since start begin again, the lifetime ones
    // go on, and a replay empties the queue that DLQ shows.
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft-2.log", &[]);
    assert!(weft(&["pipeline", "resume", "leads"]).status.success());
    receiver.set_behavior(Behavior::Accept);
    let replay = weft(&["dlq", "replay", "--all"]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let status = || {
        let out = weft(&["pipeline", "status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()[0].clone()
    };
    assert!(
        wait_until(WAIT, || {
            let s = status();
            s["queued"] == 0 && s["dead_letters"] == 0
        })
        .await,
        "{}",
        status()
    );
    let s = status();
    assert_eq!(s["accepted"], 0, "nothing new since this start: {s}");
    assert_eq!(s["replayed"], 2, "{s}");
    assert_eq!(s["lifetime"]["accepted"], 3, "{s}");
    assert_eq!(s["lifetime"]["replayed"], 2, "{s}");
    assert_eq!(s["lifetime"]["delivered"], 3, "{s}");
    host.sigterm();
}

/// The audit log of a running host is read through its API (its store is
/// locked while it runs), and verified there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_of_a_running_host_is_shown_and_verified() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup =
        HostSetup::new(listen, &[PipelineSpec::leads("leads", &receiver.url("/l"))]).unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let weft = |args: &[&str]| {
        Command::new(WEFT)
            .args(args)
            .arg("--config")
            .arg(&setup.config_path)
            .output()
            .unwrap()
    };
    assert!(weft(&["pipeline", "pause", "leads"]).status.success());
    let out = weft(&["audit-log", "show", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "pause" && r["pipeline"] == "leads"),
        "{records:?}"
    );
    let out = weft(&["audit-log", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("hash chain verified"),
        "{}",
        text(&out.stdout)
    );
    host.sigterm();
    // Stopped: the same, from the store.
    let out = weft(&["audit-log", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_sink_url_outside_its_grant_is_caught_before_anything_runs() {
    let listen = free_addr();
    // The grant names the receiver's /hooks/ path only; the sink posts to /leads.
    let setup = HostSetup::leads(listen, "http://127.0.0.1:9/leads").unwrap();
    let config = std::fs::read_to_string(&setup.config_path).unwrap();
    let narrowed = config.replace(
        "http = [\"http://127.0.0.1:9\"]",
        "http = [\"http://127.0.0.1:9/hooks/\"]",
    );
    assert_ne!(config, narrowed, "the grant line was found");
    std::fs::write(&setup.config_path, &narrowed).unwrap();

    let err = fails(&["check"], &setup.config_path);
    assert!(err.contains("pipeline \"leads\", sink"), "{err}");
    assert!(
        err.contains("will call http://127.0.0.1:9/leads, outside its grant"),
        "{err}"
    );
    assert!(err.contains("http://127.0.0.1:9/hooks/"), "{err}");

    let out = weft(&["audit"], &setup.config_path);
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("mismatch    url-outside-grant"), "{stdout}");
    assert!(
        text(&out.stderr)
            .contains("configured URLs outside the grant of http-sink (pipeline leads)"),
        "{}",
        text(&out.stderr)
    );

    // The host refuses to start rather than deny every delivery.
    let mut child = Command::new(WEFT)
        .args(["run", "--config"])
        .arg(&setup.config_path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WAIT {
            child.kill().unwrap();
            panic!("weft run started with a sink URL outside its grant");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());

    // The URL inside the grant: all is well.
    std::fs::write(&setup.config_path, &config).unwrap();
    let out = weft(&["check"], &setup.config_path);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_config_that_breaks_the_plugins_schema_names_the_weft_toml_key() {
    let listen = free_addr();
    let setup = HostSetup::leads(listen, "http://127.0.0.1:9/leads").unwrap();
    let config = std::fs::read_to_string(&setup.config_path).unwrap();
    let broken = config.replacen("lowercase = [\"/email\"]", "lowercase = [42]", 1);
    assert_ne!(config, broken);
    std::fs::write(&setup.config_path, broken).unwrap();
    let err = fails(&["check"], &setup.config_path);
    assert!(
        err.contains("pipeline \"leads\", step 1 (json-map): the config breaks the plugin's own schema: steps[0].config.lowercase[0]: 42 is not of type \"string\""),
        "{err}"
    );
}

/// `weft run --watch`: a plugin file written again starts the host again,
/// and it goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_watch_reloads_when_a_plugin_changes() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::leads(listen, &receiver.url("/leads")).unwrap();
    let host =
        weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &["--watch"]);
    let url = format!("http://{listen}/hooks/leads");
    let send = |id: &'static str| {
        let url = url.clone();
        async move {
            post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json")
                .await
                .0
        }
    };
    assert_eq!(send("before").await, 202);
    assert!(wait_until(WAIT, || !receiver.requests_for("before").is_empty()).await);
    let plugin = setup.dir.path().join("plugins.d/json-map.wasm");
    let bytes = std::fs::read(&plugin).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&plugin, &bytes).unwrap();
    let log = setup.dir.path().join("weft.log");
    assert!(
        wait_until(WAIT, || std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("configuration reloaded"))
        .await
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("json-map.wasm"), "{logged}");
    assert!(logged.contains("by=\"watch\""), "{logged}");
    let ready = format!("http://{listen}/readyz");
    assert!(
        wait_until(WAIT, || std::net::TcpStream::connect(listen).is_ok()).await,
        "listening again"
    );
    let mut status = 0;
    for _ in 0..100 {
        status = weft_tests::get_text(&ready).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200);
    assert_eq!(send("after").await, 202);
    assert!(wait_until(WAIT, || !receiver.requests_for("after").is_empty()).await);
    host.sigterm();
}

/// A build named the cargo way (`_`) beside a config that says `-` gets a
/// hint at the real fix, not only at the grant.
#[test]
fn a_plugin_file_named_with_underscores_is_pointed_at() {
    let setup = HostSetup::leads(free_addr(), "http://127.0.0.1:9/leads").unwrap();
    let plugins = setup.dir.path().join("plugins.d");
    std::fs::copy(
        plugins.join("http-sink.wasm"),
        plugins.join("http_sink.wasm"),
    )
    .unwrap();
    let out = weft(&["check"], &setup.config_path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("this file is http_sink.wasm while the config says http-sink: rename it to http-sink.wasm"),
        "{err}"
    );
}

/// `weft pipeline list` shows each pipeline's owner, systems, runbook and
/// routes, with no host running and through a running one; `weft pipeline
/// status` adds its objectives and quality gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_list_and_status_show_owners_objectives_and_gates() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::new(
        listen,
        &[PipelineSpec::leads("leads", &receiver.url("/l"))
            .with("owner = \"growth\"")
            .with("tier = \"1\"")
            .with("upstream = [\"web-forms\"]")
            .with("downstream = [\"crm\", \"sheet\"]")
            .with("runbook = \"https://wiki.example.com/leads\"")
            .with("slo = { success = 0.999, freshness = \"15m\" }")
            .with("quality = { max_invalid_ratio = 0.2 }")],
    )
    .unwrap();
    let weft = |args: &[&str]| {
        let out = Command::new(WEFT)
            .args(args)
            .arg("--config")
            .arg(&setup.config_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let offline = weft(&["pipeline", "list"]);
    let row = offline
        .lines()
        .find(|l| l.starts_with("leads "))
        .unwrap_or_else(|| panic!("{offline}"));
    for part in ["growth", "1", "web-forms", "crm,sheet"] {
        assert!(row.contains(part), "{row}");
    }
    assert!(
        offline.contains("runbook https://wiki.example.com/leads"),
        "{offline}"
    );
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let json: serde_json::Value =
        serde_json::from_str(&weft(&["pipeline", "list", "--json"])).unwrap();
    assert_eq!(json[0]["catalog"]["owner"], "growth");
    let status = weft(&["pipeline", "status", "leads"]);
    assert!(
        status.contains("leads slo success 99.900%: budget left 100.0% (0 of 0 good)"),
        "{status}"
    );
    assert!(status.contains("leads slo freshness 900s: ok"), "{status}");
    assert!(
        status.contains("leads quality: 0.0% invalid of 0 events (max 20.0%, action pause)"),
        "{status}"
    );
    host.sigterm();
}

/// The real binary with HTTPS on both listeners: `weft send` and the admin
/// commands reach it over TLS, trusting the CA at the end of the
/// certificate file the config names; plain HTTP gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_https_to_both_listeners() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::new(listen, &[PipelineSpec::leads("leads", &receiver.url("/l"))])
        .unwrap()
        .server_line("tls = { cert = \"server.pem\", key = \"server.key\" }")
        .unwrap()
        .server_line("admin_tls = { cert = \"server.pem\", key = \"server.key\" }")
        .unwrap();
    let server_ca = weft_tests::certs::ca("host CA");
    let server = weft_tests::certs::leaf(&server_ca, &["localhost", "127.0.0.1"]);
    let dir = setup.dir.path();
    std::fs::write(
        dir.join("server.pem"),
        format!("{}{}", server.cert_pem, server_ca.pem),
    )
    .unwrap();
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let lead_file = dir.join("lead.json");
    std::fs::write(&lead_file, lead("tls-1", 1).to_string()).unwrap();
    let weft = |args: &[&str]| {
        Command::new(WEFT)
            .args(args)
            .arg("--config")
            .arg(&setup.config_path)
            .output()
            .unwrap()
    };
    let sent = weft(&["send", "leads", lead_file.to_str().unwrap()]);
    assert!(sent.status.success(), "{}", text(&sent.stderr));
    assert!(wait_until(Duration::from_secs(30), || receiver.effect_count() == 1).await);
    let status = weft(&["pipeline", "status", "leads"]);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        text(&status.stdout).contains("leads"),
        "{}",
        text(&status.stdout)
    );
    // Plain HTTP to the admin listener is not answered.
    let admin = setup.config().server.admin_addr();
    let (code, _) = weft_tests::get_text(&format!("http://{admin}/healthz")).await;
    assert_ne!(code, 200);
    host.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_keys_are_made_rotated_and_checked_from_the_cli() {
    let keygen = || {
        let out = Command::new(WEFT)
            .args(["store", "keygen"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let key = text(&out.stdout).trim().to_string();
        assert!(
            key.len() == 64 && key.chars().all(|c| c.is_ascii_hexdigit()),
            "{key}"
        );
        key
    };
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup =
        HostSetup::new(listen, &[PipelineSpec::leads("leads", &receiver.url("/l"))]).unwrap();
    let (k1, k2) = (keygen(), keygen());
    assert_ne!(k1, k2);
    let setup = setup
        .with_secrets(&[("STORE_KEY", &k1)])
        .unwrap()
        .server_line("encryption = { key = \"STORE_KEY\" }")
        .unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let url = format!("http://{listen}/hooks/leads");
    for id in ["a-1", "a-2"] {
        let (status, _) =
            post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json").await;
        assert_eq!(status, 202);
    }
    assert!(wait_until(WAIT, || receiver.delivered().len() == 2).await);
    let status = weft(&["store", "status"], &setup.config_path);
    assert!(text(&status.stdout).contains("encrypted: new values are sealed under key"));
    host.sigterm();

    // Rotate offline: the new key with the old one as previous.
    let rewrite = |secrets: &str, line: &str| {
        std::fs::write(setup.dir.path().join("secrets.toml"), secrets).unwrap();
        let text = std::fs::read_to_string(&setup.config_path).unwrap();
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("encryption") {
                    line.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&setup.config_path, text.join("\n")).unwrap();
    };
    rewrite(
        &format!("STORE_KEY = \"{k2}\"\nOLD_KEY = \"{k1}\"\n"),
        "encryption = { key = \"STORE_KEY\", previous = [\"OLD_KEY\"] }",
    );
    let status = text(&weft(&["store", "status"], &setup.config_path).stdout);
    assert!(status.contains("run `weft store reencrypt`"), "{status}");
    let out = weft(&["store", "reencrypt"], &setup.config_path);
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    assert!(said.contains("2 records, 2 payloads"), "{said}");
    assert!(said.contains("earlier keys can be dropped"), "{said}");
    // Without the old key now; the wrong key fails `weft check`.
    rewrite(
        &format!("STORE_KEY = \"{k2}\"\n"),
        "encryption = { key = \"STORE_KEY\" }",
    );
    let out = weft(&["check"], &setup.config_path);
    assert!(out.status.success(), "{}", text(&out.stderr));
    rewrite(
        &format!("STORE_KEY = \"{k1}\"\n"),
        "encryption = { key = \"STORE_KEY\" }",
    );
    let err = fails(&["check"], &setup.config_path);
    assert!(err.contains("not among the configured keys"), "{err}");
    assert!(!err.contains(&k1), "the key is in the message: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_shows_a_client_certificate_to_an_mtls_admin_listener() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::new(listen, &[PipelineSpec::leads("leads", &receiver.url("/l"))])
        .unwrap()
        .server_line(
            "admin_tls = { cert = \"server.pem\", key = \"server.key\", client_ca = \"clients.pem\" }",
        )
        .unwrap();
    let server_ca = weft_tests::certs::ca("host CA");
    let server = weft_tests::certs::leaf(&server_ca, &["localhost", "127.0.0.1"]);
    let clients = weft_tests::certs::ca("operators CA");
    let operator = weft_tests::certs::leaf(&clients, &["ops.example.com"]);
    let stranger = weft_tests::certs::leaf(&weft_tests::certs::ca("other CA"), &["x.example.com"]);
    let dir = setup.dir.path();
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    write(
        "server.pem",
        format!("{}{}", server.cert_pem, server_ca.pem),
    );
    write("server.key", server.key_pem.clone());
    write("clients.pem", clients.pem.clone());
    write("op.pem", operator.cert_pem.clone());
    write("op.key", operator.key_pem.clone());
    write("stranger.pem", stranger.cert_pem.clone());
    write("stranger.key", stranger.key_pem.clone());
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let status = |cert: Option<(&str, &str)>| {
        let mut cmd = Command::new(WEFT);
        cmd.args(["pipeline", "status", "leads", "--config"])
            .arg(&setup.config_path);
        if let Some((c, k)) = cert {
            cmd.arg("--client-cert")
                .arg(dir.join(c))
                .arg("--client-key")
                .arg(dir.join(k));
        }
        cmd.output().unwrap()
    };
    let shown = status(Some(("op.pem", "op.key")));
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    assert!(text(&shown.stdout).contains("leads"));
    for refused in [status(None), status(Some(("stranger.pem", "stranger.key")))] {
        assert!(
            !refused.status.success(),
            "the admin listener took a client without an operator certificate"
        );
        let said = text(&refused.stderr);
        assert!(said.contains("certificate"), "{said}");
    }
    // A key that is not the certificate's is named before anything is sent.
    let mismatched = status(Some(("op.pem", "stranger.key")));
    assert!(!mismatched.status.success());
    assert!(
        text(&mismatched.stderr).contains("do not make a pair"),
        "{}",
        text(&mismatched.stderr)
    );
    host.sigterm();
}
