//! A hostile disk: the compiled-code cache changed behind weft's back. A
//! swapped, corrupted or symlinked entry is never run: the plugin is
//! compiled again from its checked `.wasm`, and `weft audit` and `weft
//! check` report what was found.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use weft_tests::{Behavior, HostSetup, Receiver, free_addr, lead, post_json, wait_until};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(120);

fn sha256_of(file: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(file).unwrap()))
}

/// The cache entry (code, MAC) of the plugin file `wasm`.
fn entry(compiled: &Path, wasm: &Path) -> (PathBuf, PathBuf) {
    let sha = sha256_of(wasm);
    let code = std::fs::read_dir(compiled)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&sha) && n.ends_with(".cwasm")
        })
        .unwrap_or_else(|| panic!("no cache entry for {}", wasm.display()));
    (code.clone(), code.with_extension("mac"))
}

fn weft(args: &[&str], config: &Path) -> std::process::Output {
    Command::new(WEFT)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Start, send one lead, check it arrived normalised, stop.
async fn run_once(setup: &HostSetup, listen: std::net::SocketAddr, receiver: &Receiver, id: &str) {
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let url = format!("http://{listen}/hooks/leads");
    let (status, answer) =
        post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json").await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        wait_until(WAIT, || !receiver.requests_for(id).is_empty()).await,
        "{id} was not delivered"
    );
    let body = &receiver.requests_for(id)[0].body;
    // json-map ran as json-map: the email is lower-cased, the name title-cased.
    assert_eq!(body["email"], "person.1@example.com", "{body}");
    assert_eq!(body["name"], "Person Number1", "{body}");
    host.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_compiled_cache_is_never_run_and_is_reported() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::leads(listen, &receiver.url("/leads")).unwrap();
    let plugins = setup.dir.path().join("plugins.d");
    let compiled = setup.data_dir().join("compiled");
    run_once(&setup, listen, &receiver, "first").await;

    // Swap: filter's entry (code and MAC) under json-map's name.
    let (map_code, map_mac) = entry(&compiled, &plugins.join("json-map.wasm"));
    let (filter_code, filter_mac) = entry(&compiled, &plugins.join("filter.wasm"));
    std::fs::copy(&filter_code, &map_code).unwrap();
    std::fs::copy(&filter_mac, &map_mac).unwrap();
    // Corrupt: one byte of http-sink's code.
    let (sink_code, _) = entry(&compiled, &plugins.join("http-sink.wasm"));
    let mut code = std::fs::read(&sink_code).unwrap();
    let mid = code.len() / 2;
    code[mid] ^= 0xff;
    std::fs::write(&sink_code, code).unwrap();
    // Symlink: filter's entry points at another file.
    std::fs::remove_file(&filter_code).unwrap();
    std::os::unix::fs::symlink(&map_code, &filter_code).unwrap();

    let audit = weft(&["audit"], &setup.config_path);
    assert!(!audit.status.success(), "weft audit reports the tampering");
    let out = String::from_utf8_lossy(&audit.stdout).into_owned()
        + &String::from_utf8_lossy(&audit.stderr);
    for plugin in ["json-map", "filter", "http-sink"] {
        assert!(out.contains(plugin), "{out}");
    }
    assert!(out.contains("failed authentication"), "{out}");
    assert!(out.contains("changed behind weft's back"), "{out}");
    let check = weft(&["check"], &setup.config_path);
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("changed behind weft's back"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The host starts, runs the real plugins, and says what it refused.
    run_once(&setup, listen, &receiver, "second").await;
    let log = std::fs::read_to_string(setup.dir.path().join("weft.log")).unwrap();
    assert_eq!(
        log.matches("failed authentication and was not run").count(),
        3,
        "{log}"
    );
    // The entries were written again, and verify.
    let audit = weft(&["audit"], &setup.config_path);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    assert!(
        !std::fs::symlink_metadata(&filter_code)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

fn append(store: &weft_host::store::SledStore, who: &str) {
    use weft_host::store::{AuditEntry, Store};
    store
        .audit()
        .append(AuditEntry {
            kind: "admin",
            actor: who.into(),
            pipeline: "leads".into(),
            action: "dlq-purge".into(),
            detail: format!("{who} purged the dead letters"),
        })
        .unwrap();
}

/// Someone puts back an older copy of the store to hide what the audit log
/// recorded since: `weft check` and `weft audit-log verify` fail, and a
/// host that starts on it logs the alarm and counts it in /metrics. Every
/// file of the store is its owner's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_rolled_back_behind_weft_is_an_alarm_everywhere() {
    use std::os::unix::fs::PermissionsExt;
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::leads(listen, &receiver.url("/leads")).unwrap();
    let data = setup.data_dir();
    let backup = setup.dir.path().join("backup");
    {
        let store = weft_host::store::SledStore::open(&data).unwrap();
        append(&store, "alice");
        append(&store, "bob");
    }
    weft_tests::copy_dir(&data, &backup);
    {
        let store = weft_host::store::SledStore::open(&data).unwrap();
        append(&store, "mallory");
    }
    let out = weft(&["check"], &setup.config_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Put the old copy of sled's files back; the files weft keeps beside
    // them stay.
    let beside = ["anchor", "audit.head", "audit.key", "cache.key", "compiled"];
    for e in std::fs::read_dir(&data).unwrap().map(Result::unwrap) {
        if !beside.contains(&e.file_name().to_str().unwrap()) {
            let path = e.path();
            if path.is_dir() {
                std::fs::remove_dir_all(path).unwrap();
            } else {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    for e in std::fs::read_dir(&backup).unwrap().map(Result::unwrap) {
        if !beside.contains(&e.file_name().to_str().unwrap()) {
            let to = data.join(e.file_name());
            if e.path().is_dir() {
                weft_tests::copy_dir(&e.path(), &to);
            } else {
                std::fs::copy(e.path(), to).unwrap();
            }
        }
    }
    for (args, expected) in [
        (&["check"][..], "rolled back"),
        (&["audit-log", "verify"][..], "rolled back"),
    ] {
        let out = weft(args, &setup.config_path);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let admin = setup.config().server.admin_addr();
    let client = weft_host::client::HostClient::new(&format!("http://{admin}"), None);
    let reply = client
        .call(hyper::Method::GET, "/metrics", None, &[])
        .await
        .unwrap();
    let text = reply.body.as_str().unwrap_or_default().to_string();
    let samples = weft_tests::parse_metrics(&text).unwrap();
    assert_eq!(
        weft_tests::metric(&samples, "weft_store_alarms", &[]),
        Some(1.0)
    );
    host.sigterm();
    let log = std::fs::read_to_string(setup.dir.path().join("weft.log")).unwrap();
    assert!(log.contains("is not intact"), "{log}");
    // Every file in the data directory is private, whatever the umask.
    let mut files = vec![data.clone()];
    while let Some(path) = files.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        if meta.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
}
