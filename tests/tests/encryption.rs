//! Encryption at rest, tried on a real host: a canary in payloads (one
//! large enough for a file of its own, one dead-lettered) reaches the sink
//! and the API in the clear and never the data directory's files; a wrong
//! key and a missing key refuse to start and change nothing; a rotated
//! key keeps old records readable and `reencrypt` moves them over.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_host::store::EventId;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, admin_call, any_port, lead, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);
const CANARY: &str = "canary-5be1d0a4";

fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_holding(&path, needle));
        } else if std::fs::read(&path).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)) {
            out.push(path);
        }
    }
    out
}

fn setup(receiver: &Receiver, secrets: &[(&str, &str)], encryption: &str) -> HostSetup {
    HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/l"))],
    )
    .unwrap()
    .with_secrets(secrets)
    .unwrap()
    .server_line(encryption)
    .unwrap()
}

/// Point the same data directory at other keys: the secrets file and the
/// `encryption` line are rewritten.
fn rekey(setup: &HostSetup, secrets: &[(&str, &str)], encryption: &str) {
    let lines: String = secrets
        .iter()
        .map(|(n, v)| format!("{n} = {v:?}\n"))
        .collect();
    std::fs::write(setup.dir.path().join("secrets.toml"), lines).unwrap();
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("encryption"))
        .collect();
    let text = kept
        .join("\n")
        .replacen("[server]\n", &format!("[server]\n{encryption}\n"), 1);
    std::fs::write(&setup.config_path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payloads_are_sealed_on_disk_and_keys_rotate() {
    let k1 = weft_host::store::seal::generate_key();
    let k2 = weft_host::store::seal::generate_key();
    let receiver = Receiver::start(Behavior::FailKeys {
        prefix: "bad-".into(),
        status: 400,
    })
    .await;
    let setup = setup(
        &receiver,
        &[("STORE_KEY", &k1)],
        "encryption = { key = \"STORE_KEY\" }",
    );
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    let mut ids = Vec::new();
    // The first one's idempotency key holds the canary too.
    let keyed = format!("good-{CANARY}");
    for (key, pad) in [(keyed.as_str(), 0), ("good-big", 100 * 1024), ("bad-1", 0)] {
        let mut l = lead(key, 1);
        l["secret_note"] = format!("{CANARY}{}", "x".repeat(pad)).into();
        let (status, answer) = send_event(&host, "leads", &l).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().parse::<EventId>().unwrap());
    }
    assert!(wait_until(WAIT, || engine.status("leads").unwrap().queued == 0).await);
    // In the clear where it is meant to be: at the sink and in the API.
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 2);
    assert!(
        delivered
            .iter()
            .all(|d| d.body.to_string().contains(CANARY))
    );
    let view = admin_call(
        &host,
        hyper::Method::GET,
        &format!("/api/v1/events/{}", ids[2]),
    )
    .await;
    assert!(view.to_string().contains(CANARY), "{view}");
    let status = admin_call(&host, hyper::Method::GET, "/api/v1/store/encryption").await;
    assert_eq!(
        status["keys_in_use"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    host.shutdown().await;
    let held = files_holding(&setup.data_dir(), CANARY.as_bytes());
    assert!(held.is_empty(), "the canary is on disk in {held:?}");

    // The wrong key, no key and a malformed key: refused, naming what to do.
    let one_key = "encryption = { key = \"STORE_KEY\" }";
    for (secrets, line, wanted) in [
        (
            &[("STORE_KEY", k2.as_str())][..],
            one_key,
            "not among the configured keys",
        ),
        (
            &[("OTHER", "unused-value")][..],
            "",
            "server.encryption is not set",
        ),
        (
            &[("STORE_KEY", "too-short-for-a-key")][..],
            one_key,
            "weft store keygen",
        ),
    ] {
        rekey(&setup, secrets, line);
        let err = RunningHost::start(setup.config())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(wanted), "{err}");
        assert!(
            !err.contains(&k2) && !err.contains(&k1),
            "a key in a message: {err}"
        );
        if wanted.contains("configured keys") {
            assert!(err.contains("Nothing was changed"), "{err}");
        }
    }

    // Rotated: the old records read under the previous key; a pass moves
    // them to the new one, and then the old key is not needed.
    rekey(
        &setup,
        &[("STORE_KEY", &k2), ("OLD_STORE_KEY", &k1)],
        "encryption = { key = \"STORE_KEY\", previous = [\"OLD_STORE_KEY\"] }",
    );
    let host = RunningHost::start(setup.config()).await.unwrap();
    let dlq = admin_call(&host, hyper::Method::GET, "/api/v1/dlq").await;
    assert!(dlq.to_string().contains(CANARY), "{dlq}");
    let status = admin_call(&host, hyper::Method::GET, "/api/v1/store/encryption").await;
    assert_eq!(
        status["keys_in_use"].as_array().unwrap().len(),
        2,
        "{status}"
    );
    let done = admin_call(&host, hyper::Method::POST, "/api/v1/store/reencrypt").await;
    assert_eq!(done["records"], 3, "{done}");
    assert_eq!(done["payloads"], 3, "{done}");
    assert_eq!(
        done["encryption"]["keys_in_use"],
        serde_json::json!([done["encryption"]["current_key"]]),
        "{done}"
    );
    let log = admin_call(&host, hyper::Method::GET, "/api/v1/audit-log").await;
    assert!(log.to_string().contains("reencrypt"), "{log}");
    host.shutdown().await;
    rekey(
        &setup,
        &[("STORE_KEY", &k2)],
        "encryption = { key = \"STORE_KEY\" }",
    );
    let host = RunningHost::start(setup.config()).await.unwrap();
    let store = host.engine().store().clone();
    for id in &ids {
        let r = store.event(id).unwrap().unwrap();
        assert!(String::from_utf8_lossy(&r.payload).contains(CANARY));
    }
    host.shutdown().await;
    let held = files_holding(&setup.data_dir(), CANARY.as_bytes());
    assert!(held.is_empty(), "the canary is on disk in {held:?}");
}
