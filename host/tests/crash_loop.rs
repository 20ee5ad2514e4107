//! Crash loop: the real binary under concurrent webhooks, killed with SIGKILL
//! at random moments and restarted, round after round. Every event that got
//! a 2xx must reach the receiver, under the key it was accepted with.
//!
//! Ignored by default; `cargo xtask test` runs it with `WEFT_CRASH_ROUNDS`
//! rounds (default 20).

use rand::Rng;
use std::collections::HashSet;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_tests::{Behavior, HostSetup, Receiver, free_addr, lead, wait_until};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn start(config: &Path, listen: std::net::SocketAddr, round: usize) -> (Child, Duration) {
    weft_tests::spawn_weft(WEFT, config, listen, &format!("weft-{round}.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: run by `cargo xtask test`"]
async fn sigkill_crash_loop_loses_nothing() {
    let rounds: usize = std::env::var("WEFT_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::leads(listen, &receiver.url("/leads")).unwrap();
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let next_key = Arc::new(AtomicUsize::new(0));
    let url = format!("http://{listen}/hooks/leads");
    let mut restarts = Vec::new();
    for round in 0..rounds {
        let (mut child, took) = start(&setup.config_path, listen, round);
        restarts.push(took);
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (url, accepted, next_key) = (url.clone(), accepted.clone(), next_key.clone());
            senders.spawn(async move {
                let client = hyper_util::client::legacy::Client::builder(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .build_http::<http_body_util::Full<bytes::Bytes>>();
                loop {
                    let n = next_key.fetch_add(1, Ordering::Relaxed);
                    let key = format!("crash-{n}");
                    let req = hyper::Request::post(&url)
                        .header("content-type", "application/json")
                        .body(http_body_util::Full::new(bytes::Bytes::from(
                            lead(&key, n).to_string(),
                        )))
                        .unwrap();
                    match client.request(req).await {
                        Ok(resp) if resp.status().is_success() => {
                            accepted.lock().unwrap().insert(key);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
            });
        }
        let alive = rand::rng().random_range(150..700);
        tokio::time::sleep(Duration::from_millis(alive)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        senders.abort_all();
        while senders.join_next().await.is_some() {}
    }
    let (mut child, took) = start(&setup.config_path, listen, rounds);
    restarts.push(took);
    let accepted = accepted.lock().unwrap().clone();
    let all_in = wait_until(Duration::from_secs(120), || {
        let effects = receiver.effects();
        accepted.iter().all(|k| effects.contains_key(k))
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let effects = receiver.effects();
    let lost = accepted
        .iter()
        .filter(|k| !effects.contains_key(*k))
        .count();
    let redelivered: usize = effects.values().map(|n| n.saturating_sub(1)).sum();
    let redelivered_keys = effects.values().filter(|n| **n > 1).count();
    let unknown = effects.keys().filter(|k| !accepted.contains(*k)).count();
    let mean_restart = restarts.iter().sum::<Duration>() / restarts.len() as u32;
    println!(
        "crash loop: {rounds} SIGKILL rounds, {} accepted, lost {lost}, duplicated effects 0 (the receiver applies each key once), \
         redelivered {redelivered} times over {redelivered_keys} keys, {unknown} delivered whose 2xx the sender never saw, \
         mean restart-to-serving {mean_restart:?} (max {:?})",
        accepted.len(),
        restarts.iter().max().unwrap()
    );
    assert!(all_in && lost == 0, "{lost} accepted events were lost");
    assert!(
        accepted.len() > rounds,
        "the senders got events in every round"
    );
}
