//! Plugin versions side by side (the real binary): files named
//! `json-map@1.0.0.wasm` beside `json-map.wasm`, steps naming the newest,
//! a major version or an exact one, `weft plugin list`, a broken newer
//! version that must not be skipped quietly, and a running host switching
//! versions on reload.

use std::time::Duration;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, WeftProcess, free_addr, lead, post_event,
    wait_until,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(60);

fn weft(setup: &HostSetup, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(WEFT)
        .args(args)
        .arg("--config")
        .arg(&setup.config_path)
        .current_dir(setup.dir.path())
        .output()
        .expect("weft runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn list(setup: &HostSetup) -> Vec<serde_json::Value> {
    let (ok, out, err) = weft(setup, &["plugin", "list", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn users_of<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    &rows
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} listed: {rows:?}"))["used_by"]
}

fn set_spec(setup: &HostSetup, from: &str, to: &str) {
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    assert!(text.contains(from));
    std::fs::write(&setup.config_path, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_side_by_side_are_listed_chosen_and_switched() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup =
        HostSetup::new(listen, &[PipelineSpec::leads("leads", &receiver.url("/x"))]).unwrap();
    let dir = setup.dir.path().join("plugins.d");
    for v in ["1.0.0", "2.0.0"] {
        std::fs::copy(
            dir.join("json-map.wasm"),
            dir.join(format!("json-map@{v}.wasm")),
        )
        .unwrap();
    }

    // `json-map`: the newest loaded version.
    let rows = list(&setup);
    let plain = rows.iter().find(|r| r["name"] == "json-map").unwrap();
    assert_eq!(
        plain["version"], "0.1.0",
        "the version its describe() gives"
    );
    assert_eq!(
        users_of(&rows, "json-map@2.0.0"),
        &serde_json::json!(["leads"])
    );
    assert_eq!(users_of(&rows, "json-map@1.0.0"), &serde_json::json!([]));
    let (_, table, _) = weft(&setup, &["plugin", "list"]);
    assert!(
        table.contains("json-map@2.0.0") && table.contains("2.0.0"),
        "{table}"
    );

    // `json-map@1`: the newest 1.x; `@3`: nothing fits, and it says what does.
    set_spec(&setup, "plugin = \"json-map\"", "plugin = \"json-map@1\"");
    assert_eq!(
        users_of(&list(&setup), "json-map@1.0.0"),
        &serde_json::json!(["leads"])
    );
    set_spec(&setup, "plugin = \"json-map@1\"", "plugin = \"json-map@3\"");
    let (ok, _, err) = weft(&setup, &["check"]);
    assert!(!ok);
    assert!(err.contains("no loaded version fits"), "{err}");
    assert!(err.contains("2.0.0 (json-map@2.0.0.wasm)"), "{err}");
    set_spec(&setup, "plugin = \"json-map@3\"", "plugin = \"json-map@x\"");
    let (ok, _, err) = weft(&setup, &["check"]);
    assert!(!ok && err.contains("is not a version"), "{err}");
    set_spec(&setup, "plugin = \"json-map@x\"", "plugin = \"json-map\"");

    // A file whose name is not a version is refused by name.
    std::fs::copy(dir.join("json-map.wasm"), dir.join("json-map@banana.wasm")).unwrap();
    let (ok, _, err) = weft(&setup, &["check"]);
    assert!(!ok, "a version of the plugin a step names failed to load");
    assert!(
        err.contains("json-map@banana.wasm") && err.contains("not a version"),
        "{err}"
    );
    std::fs::remove_file(dir.join("json-map@banana.wasm")).unwrap();

    // A grant may pin one version: the newest refused by its pin is an
    // error, not a quiet fall back to an older one.
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        format!(
            "{text}\n[grants.\"json-map@2.0.0\"]\nsha256 = \"{}\"\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let (ok, _, err) = weft(&setup, &["check"]);
    assert!(!ok);
    assert!(
        err.contains("json-map@2.0.0.wasm, one of its versions, failed to load"),
        "{err}"
    );
    std::fs::write(&setup.config_path, &text).unwrap();

    // A running host: history names the version that ran; a reload moves
    // the step to another version.
    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let send = |id: &'static str| async move {
        let (status, answer) = post_event(listen, "leads", &lead(id, 1)).await;
        assert_eq!(status, 202, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    };
    let id = send("v2").await;
    assert!(wait_until(WAIT, || receiver.effect_count() == 1).await);
    let (_, out, _) = weft(&setup, &["runs", "show", &id]);
    assert!(out.contains("step 1 (json-map@2.0.0)"), "{out}");
    assert_eq!(
        users_of(&list(&setup), "json-map@2.0.0"),
        &serde_json::json!(["leads"])
    );
    set_spec(
        &setup,
        "plugin = \"json-map\"",
        "plugin = \"json-map@1.0.0\"",
    );
    let (ok, out, err) = weft(&setup, &["reload"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("pipelines changed: leads"), "{out}");
    let rows = list(&setup);
    assert_eq!(
        users_of(&rows, "json-map@1.0.0"),
        &serde_json::json!(["leads"])
    );
    assert_eq!(users_of(&rows, "json-map@2.0.0"), &serde_json::json!([]));
    let id = send("v1").await;
    assert!(wait_until(WAIT, || receiver.effect_count() == 2).await);
    let (_, out, _) = weft(&setup, &["runs", "show", &id]);
    assert!(out.contains("step 1 (json-map@1.0.0)"), "{out}");
    host.sigterm();
}
