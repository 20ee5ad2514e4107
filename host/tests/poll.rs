//! A source against a paged API whose records change while they are being
//! polled, with the real binary killed (SIGKILL) between polls and commits:
//! every record's latest version is delivered, and no key is accepted twice.

use std::collections::HashSet;
use std::time::Duration;
use weft_tests::paged_api::PagedApi;
use weft_tests::{Behavior, Receiver, WeftProcess, free_addr, wait_until};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polled_records_arrive_once_each_across_kill_9() {
    let api = PagedApi::start(40).await;
    let receiver = Receiver::start(Behavior::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    weft_tests::install_plugins(&plugins).unwrap();
    std::fs::copy(
        weft_tests::plugins::HTTP_POLL,
        plugins.join("http-poll.wasm"),
    )
    .unwrap();
    let listen = free_addr();
    let admin = free_addr();
    let config = dir.path().join("weft.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"./data\"\n\n[plugins]\ndir = \"./plugins.d\"\n\n\
             [grants.http-poll]\nhttp = [\"http://{}\"]\n\n[grants.http-sink]\nhttp = [\"http://{}\"]\n\n\
             [[pipeline]]\nname = \"contacts\"\n\
             trigger = {{ poll = {{ plugin = \"http-poll\", config = {{ url = \"{}\" }}, every_ms = 50 }} }}\n\
             sink = {{ plugin = \"http-sink\", config = {{ url = \"{}\" }} }}\n",
            api.addr,
            receiver.addr,
            api.url(),
            receiver.url("/contacts")
        ),
    )
    .unwrap();

    // Records change all the time while weft polls, is killed, and restarts.
    let changing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let api = std::sync::Arc::new(api);
    let (flag, writer) = (changing.clone(), api.clone());
    let mutator = tokio::spawn(async move {
        while flag.load(std::sync::atomic::Ordering::Relaxed) {
            writer.touch(2);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    let rounds = 4;
    for round in 0..rounds {
        let host = WeftProcess::start(WEFT, &config, listen, &format!("weft-{round}.log"), &[]);
        let up = rand::random_range(300..900);
        tokio::time::sleep(Duration::from_millis(up)).await;
        host.sigkill();
    }
    changing.store(false, std::sync::atomic::Ordering::Relaxed);
    mutator.await.unwrap();

    // A last run with the records still: everything current arrives.
    let host = WeftProcess::start(WEFT, &config, listen, "weft-final.log", &[]);
    let wanted: HashSet<String> = api.keys().into_iter().collect();
    let arrived = wait_until(Duration::from_secs(120), || {
        let got: HashSet<String> = receiver.effects().into_keys().collect();
        wanted.is_subset(&got)
    })
    .await;
    host.sigterm();
    let got: HashSet<String> = receiver.effects().into_keys().collect();
    let missing: Vec<&String> = wanted.difference(&got).collect();
    assert!(arrived, "latest versions never delivered: {missing:?}");

    // No key was accepted twice, whatever the kills interrupted.
    let store = weft_host::store::open(&dir.path().join("data")).unwrap();
    let records = store.recent_events(|_| true, 1_000_000).unwrap();
    let mut keys = HashSet::new();
    for r in &records {
        assert!(keys.insert(r.key.clone()), "key {} accepted twice", r.key);
    }
    let redelivered = receiver.effects().values().filter(|n| **n > 1).count();
    eprintln!(
        "{rounds} kills; {} polls served; {} versions accepted once each; {} current records all delivered; {redelivered} redelivered to the sink after a kill",
        api.requests(),
        records.len(),
        wanted.len()
    );
}
