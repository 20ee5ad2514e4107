//! The connector author's kit through the real binary: `plugin new` for
//! each world, the generated crate's own tests, `plugin build` and `plugin
//! call` in the real sandbox (a sink with a host-attached credential
//! against a local receiver, a source against a local upstream), a config
//! that breaks the plugin's schema, and a trap's backtrace naming the
//! plugin's source line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use weft_tests::{Behavior, Receiver};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// One target directory for every generated crate of a run: their
/// dependencies build once.
fn target_dir() -> PathBuf {
    option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("author-kit")
}

fn run(cmd: &mut Command) -> Output {
    cmd.env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `weft plugin new NAME --world WORLD` in `root`, its tests, its build.
fn make(root: &Path, name: &str, world: &str) -> (PathBuf, PathBuf) {
    let dir = root.join(name);
    let out = run(Command::new(WEFT)
        .args(["plugin", "new", name, "--world", world, "--dir"])
        .arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let cargo = Path::new(&std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).to_path_buf();
    let out = run(Command::new(&cargo)
        .args(["test", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml")));
    assert!(
        out.status.success(),
        "the generated {world} crate's tests: {}",
        text(&out)
    );
    let out = run(Command::new(WEFT)
        .args(["plugin", "build", "--dir"])
        .arg(&dir)
        .env("CARGO", &cargo));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("weft:plugin/{world}@0.1.0")),
        "{}",
        text(&out)
    );
    let wasm = target_dir().join("weft").join(format!("{name}.wasm"));
    assert!(wasm.exists(), "{} after the build", wasm.display());
    (dir, wasm)
}

fn plugin_test(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(WEFT)
        .args(["plugin", "test"])
        .arg(dir)
        .args(args))
}

fn call(wasm: &Path, dir: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let out = run(Command::new(WEFT)
        .args(["plugin", "call"])
        .arg(wasm)
        .arg("--json")
        .args(args)
        .current_dir(dir));
    let value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (out, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_build_and_call_for_every_world() {
    let root = tempfile::tempdir().unwrap();

    // A transform, from nothing to a call through the sandbox.
    let (dir, wasm) = make(root.path(), "currency-convert", "transform");
    let (out, answer) = call(
        &wasm,
        &dir,
        &[
            "--config",
            "fixtures/config.json",
            "--event",
            "fixtures/event.json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        answer["ok"]["events"][0]["payload"]["amount_eur"], 18.39,
        "{answer}"
    );
    assert!(
        answer["cost"]["memory_bytes"].as_u64().unwrap() > 0,
        "{answer}"
    );
    assert!(answer["cost"]["fuel"].as_u64().unwrap() > 0, "{answer}");
    // Installed into a plugin directory under its weft name.
    let plugins = root.path().join("plugins.d");
    let out = run(Command::new(WEFT)
        .args(["plugin", "build", "--dir"])
        .arg(&dir)
        .arg("--install")
        .arg(&plugins));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(plugins.join("currency-convert.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap()
    );
    // Its cases pass through the sandbox.
    let out = plugin_test(&dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 cases passed"), "{}", text(&out));
    // A config that breaks the plugin's own schema names the key.
    let (out, _) = call(
        &wasm,
        &dir,
        &[
            "--config",
            r#"{"field": "/amount", "rate": -1}"#,
            "--event",
            "fixtures/event.json",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("config.rate"), "{}", text(&out));
    // A panic shows where, in the plugin's source.
    let lib = dir.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let boom = source.replacen(
        "        let mut doc = event.json()?;\n",
        "        let mut doc = event.json()?;\n        if doc.get(\"boom\").is_some() {\n            panic!(\"boom was asked for\");\n        }\n",
        1,
    );
    assert_ne!(boom, source);
    std::fs::write(&lib, boom).unwrap();
    let line = std::fs::read_to_string(&lib)
        .unwrap()
        .lines()
        .position(|l| l.contains("panic!(\"boom"))
        .unwrap()
        + 1;
    let out = run(Command::new(WEFT)
        .args(["plugin", "build", "--dir"])
        .arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(dir.join("boom.json"), r#"{"amount": 1, "boom": true}"#).unwrap();
    let (out, answer) = call(
        &wasm,
        &dir,
        &["--config", "fixtures/config.json", "--event", "boom.json"],
    );
    assert!(!out.status.success());
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("boom was asked for"), "{answer}");
    assert!(message.contains("wasm backtrace"), "{answer}");
    assert!(
        message.contains(&format!("lib.rs:{line}")),
        "line {line}: {answer}"
    );
    assert!(!text(&out).contains("RUST_BACKTRACE"), "{}", text(&out));

    // A sink: the host attaches the credential; the plugin never sees it.
    let receiver = Receiver::start(Behavior::Accept).await;
    let (dir, wasm) = make(root.path(), "chat-notify", "sink");
    let url = receiver.url("/chat");
    let config = format!(r#"{{"url": "{url}", "credential": "CHAT_TOKEN"}}"#);
    let origin = format!("http://{}", receiver.addr);
    let grant = format!(
        r#"http = ["{origin}"]
credentials = [{{ name = "CHAT_TOKEN", origins = ["{origin}"] }}]"#
    );
    let secret = "CHAT_TOKEN=chat-token-value-9";
    let (out, answer) = call(
        &wasm,
        &dir,
        &[
            "--config",
            &config,
            "--event",
            "fixtures/event.json",
            "--grant",
            &grant,
            "--secret",
            secret,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(answer["ok"]["receipt"], "HTTP 200", "{answer}");
    let got = &receiver.requests()[0];
    assert_eq!(
        got.header("authorization"),
        Some("Bearer chat-token-value-9")
    );
    assert_eq!(got.body["text"], "deploy finished");
    assert!(!text(&out).contains("chat-token-value-9"), "{}", text(&out));
    // Without a grant it is refused, as a host would refuse it; with one
    // for another origin, its URL is refused before anything is sent.
    let (out, _) = call(
        &wasm,
        &dir,
        &["--config", &config, "--event", "fixtures/event.json"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("grants.chat-notify.http is empty"),
        "{}",
        text(&out)
    );
    let elsewhere = r#"http = ["https://chat.example.com"]"#;
    let (out, _) = call(
        &wasm,
        &dir,
        &[
            "--config",
            &config,
            "--event",
            "fixtures/event.json",
            "--grant",
            elsewhere,
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("outside its grant"), "{}", text(&out));
    assert_eq!(receiver.requests().len(), 1);

    // Its shipped case replays offline from its cassette.
    let out = plugin_test(&dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok    posts (replayed"),
        "{}",
        text(&out)
    );
    // Recorded against a live upstream that echoes every header back: the
    // cassette names the credential, and holds no secret.
    let echo = Receiver::start(Behavior::EchoHeaders(200)).await;
    let echo_origin = format!("http://{}", echo.addr);
    std::fs::write(
        dir.join("fixtures/live.test.toml"),
        format!(
            r#"config = {{ url = "{}", credential = "CHAT_TOKEN" }}
event = {{ text = "recorded" }}
grant = {{ http = ["{echo_origin}"], credentials = [{{ name = "CHAT_TOKEN", origins = ["{echo_origin}"] }}] }}

[expect]
receipt = "HTTP 200"
"#,
            echo.url("/chat")
        ),
    )
    .unwrap();
    let out = plugin_test(&dir, &["--record", "--case", "live", "--secret", secret]);
    assert!(out.status.success(), "{}", text(&out));
    let cassette = std::fs::read_to_string(dir.join("fixtures/live.cassette.json")).unwrap();
    assert!(cassette.contains("CHAT_TOKEN as bearer"), "{cassette}");
    assert!(
        cassette.contains("authorization"),
        "the echo is kept: {cassette}"
    );
    assert!(!cassette.contains("chat-token-value-9"), "{cassette}");
    assert_eq!(echo.requests().len(), 1);
    // Replayed with the upstream gone: the same outcome, no request made.
    drop(echo);
    let out = plugin_test(&dir, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("ok    live (replayed"),
        "{}",
        text(&out)
    );
    // A request the cassette does not hold fails the case, saying which.
    let case = std::fs::read_to_string(dir.join("fixtures/live.test.toml")).unwrap();
    std::fs::write(
        dir.join("fixtures/live.test.toml"),
        case.replace("\"recorded\"", "\"changed\""),
    )
    .unwrap();
    let out = plugin_test(&dir, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not the request the cassette holds next"),
        "{}",
        text(&out)
    );

    // A source, polled once against a local upstream.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = upstream.local_addr().unwrap();
    let serve = std::thread::spawn(move || {
        let (mut conn, _) = upstream.accept().unwrap();
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap();
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        let body = r#"[{"id": 7, "updated_at": "2026-11-30T10:00:00Z"}, {"id": 8, "updated_at": "2026-11-30T11:00:00Z"}]"#;
        write!(
            conn,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        request
    });
    let (dir, wasm) = make(root.path(), "item-feed", "source");
    let config = format!(r#"{{"url": "http://{addr}/items"}}"#);
    let grant = format!(r#"http = ["http://{addr}"]"#);
    let (out, answer) = call(
        &wasm,
        &dir,
        &[
            "--config",
            &config,
            "--poll",
            "--cursor",
            "2026-11-29",
            "--grant",
            &grant,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        answer["ok"]["events"][1]["key"], "8:2026-11-30T11:00:00Z",
        "{answer}"
    );
    assert_eq!(
        answer["ok"]["next_cursor"], "2026-11-30T11:00:00Z",
        "{answer}"
    );
    // Its shipped case replays offline.
    let out = plugin_test(&dir, &["--replay"]);
    assert!(out.status.success(), "{}", text(&out));
    let request = serve.join().unwrap();
    assert!(
        request.starts_with("GET /items?since=2026-11-29 "),
        "{request}"
    );
}
