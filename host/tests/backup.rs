//! Backup and restore with the real binary: a backup of a running host
//! under load, restored on a fresh data directory, holds every event that
//! was acknowledged before it began, its dead letters and queue, and an
//! audit chain that verifies; a changed backup is refused, and so is a
//! restore under a running host.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_host::store::{EventId, EventState};
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, WeftProcess, free_addr, lead, post_json,
    wait_until,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(120);

fn weft(args: &[&str], config: &Path) -> Output {
    Command::new(WEFT)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_ADMIN_TOKEN")
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

/// Send `id`, returning the event id of a 202.
async fn send(listen: std::net::SocketAddr, id: &str) -> Option<EventId> {
    let url = format!("http://{listen}/hooks/leads");
    let (status, body) =
        post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json").await;
    (status == 202)
        .then(|| body["id"].as_str().and_then(|s| s.parse().ok()))
        .flatten()
}

fn host_setup(receiver: &Receiver) -> (HostSetup, std::net::SocketAddr) {
    let listen = free_addr();
    let setup = HostSetup::new(
        listen,
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))
            .retry("max_attempts = 100000, initial_ms = 60000, max_ms = 60000")],
    )
    .unwrap();
    (setup, listen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_whole_on_a_fresh_directory() {
    let receiver = Receiver::start(Behavior::FailKeys {
        prefix: "wait-".into(),
        status: 503,
    })
    .await;
    let (setup, listen) = host_setup(&receiver);
    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);

    // Delivered, waiting in the queue (their sink fails, the next try is a
    // minute away), dead-lettered (replayed into the queue, then purged).
    let mut acked: Vec<(String, EventId)> = Vec::new();
    for i in 0..10 {
        let id = format!("ok-{i}");
        acked.push((id.clone(), send(listen, &id).await.expect("202")));
    }
    for i in 0..3 {
        let id = format!("wait-{i}");
        acked.push((id.clone(), send(listen, &id).await.expect("202")));
    }
    assert!(
        wait_until(WAIT, || (0..10)
            .all(|i| !receiver.requests_for(&format!("ok-{i}")).is_empty())
            && (0..3).all(|i| !receiver
                .requests_for(&format!("wait-{i}"))
                .is_empty()))
        .await
    );
    // Admin calls land in the audit chain.
    assert!(
        weft(&["pipeline", "pause", "leads"], &setup.config_path)
            .status
            .success()
    );
    assert!(
        weft(&["pipeline", "resume", "leads"], &setup.config_path)
            .status
            .success()
    );

    // Under load: a sender keeps going while the backup is taken.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let during: Arc<Mutex<Vec<(String, EventId)>>> = Arc::default();
    let load = {
        let (stop, during) = (stop.clone(), during.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = format!("load-{i}");
                if let Some(e) = send(listen, &id).await {
                    during.lock().unwrap().push((id, e));
                }
                i += 1;
            }
        })
    };
    assert!(wait_until(WAIT, || during.lock().unwrap().len() >= 20).await);
    let before: Vec<(String, EventId)> = during.lock().unwrap().clone();
    let backup = setup.dir.path().join("backup");
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking({
        let (backup, config) = (backup.clone(), setup.config_path.clone());
        move || weft(&["backup", backup.to_str().unwrap()], &config)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    eprintln!(
        "weft backup under load took {} ms: {}",
        started.elapsed().as_millis(),
        text(&out).trim()
    );
    assert!(
        text(&out).contains("verified against its manifest"),
        "{}",
        text(&out)
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.await.unwrap();
    assert!(
        during.lock().unwrap().len() > before.len(),
        "the load ran on"
    );
    // Nothing of it stays staged on the host.
    let staging = setup.data_dir().join(weft_host::store::BACKUP_STAGING);
    assert_eq!(
        std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0),
        0
    );
    host.sigterm();

    // A backup changed by one byte is refused, and nothing is changed.
    let fresh_receiver = Receiver::start(Behavior::Accept).await;
    let (fresh, fresh_listen) = host_setup(&fresh_receiver);
    let bad = setup.dir.path().join("bad-backup");
    weft_tests::copy_dir(&backup, &bad);
    let dump = bad.join("store.dump");
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&dump, bytes).unwrap();
    let out = weft(&["restore", bad.to_str().unwrap()], &fresh.config_path);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not match the manifest"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("nothing was changed"), "{}", text(&out));
    assert!(!fresh.data_dir().exists());

    // The backup, restored on a fresh directory.
    let out = weft(&["restore", backup.to_str().unwrap()], &fresh.config_path);
    assert!(out.status.success(), "{}", text(&out));
    let verify = weft(&["audit-log", "verify"], &fresh.config_path);
    assert!(verify.status.success(), "{}", text(&verify));
    {
        let store = weft_host::store::open(&fresh.data_dir()).unwrap();
        for (key, id) in acked.iter().chain(&before) {
            let record = store
                .event(id)
                .unwrap()
                .unwrap_or_else(|| panic!("{key} was acknowledged before the backup, and is gone"));
            assert_eq!(&record.key, key);
        }
        let queued: Vec<EventId> = store.queue().unwrap().iter().map(|q| q.id).collect();
        for (key, id) in acked.iter().filter(|(k, _)| k.starts_with("wait-")) {
            assert!(queued.contains(id), "{key} is still queued");
        }
        let delivered = store.event(&acked[0].1).unwrap().unwrap();
        assert_eq!(delivered.state, EventState::Delivered);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).unwrap()).unwrap();
        let counts = store.counts();
        assert_eq!(manifest["counts"]["events"], counts.events as u64);
        assert_eq!(manifest["counts"]["queued"], counts.queued as u64);
        let records = store.audit().verify().unwrap();
        assert_eq!(manifest["counts"]["audit_records"], records);
        assert!(records >= 2, "the pause and resume are in the chain");
        store.close();
    }

    // The restored host runs: its queue is attempted (the sink now takes
    // everything) and its history is there.
    let restored = WeftProcess::start(WEFT, &fresh.config_path, fresh_listen, "weft.log", &[]);
    // Restoring under a running host is refused.
    let out = weft(&["restore", backup.to_str().unwrap()], &fresh.config_path);
    assert!(!out.status.success());
    assert!(text(&out).contains("stop it first"), "{}", text(&out));
    restored.sigterm();
    // Again, stopped, over the data that is there: it is moved aside.
    let out = weft(&["restore", backup.to_str().unwrap()], &fresh.config_path);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("before-restore"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_host_is_backed_up_from_its_store() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let (setup, listen) = host_setup(&receiver);
    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let id = send(listen, "one").await.unwrap();
    assert!(wait_until(WAIT, || !receiver.requests_for("one").is_empty()).await);
    host.sigterm();
    let backup = setup.dir.path().join("offline-backup");
    let out = weft(&["backup", backup.to_str().unwrap()], &setup.config_path);
    assert!(out.status.success(), "{}", text(&out));
    // Not into a directory that holds something.
    let out = weft(&["backup", backup.to_str().unwrap()], &setup.config_path);
    assert!(!out.status.success());
    assert!(text(&out).contains("not empty"), "{}", text(&out));
    let (fresh, _) = host_setup(&receiver);
    let out = weft(&["restore", backup.to_str().unwrap()], &fresh.config_path);
    assert!(out.status.success(), "{}", text(&out));
    let store = weft_host::store::open(&fresh.data_dir()).unwrap();
    assert_eq!(store.event(&id).unwrap().unwrap().key, "one");
    store.close();
}
