//! A full disk under a running host: the data directory on a small tmpfs
//! (mounted and unmounted by the test; skipped, saying so, where mounting
//! is not allowed). While full, senders get 503 and the host is not ready;
//! once space is freed it is ready again by itself, without a restart, and
//! no event is lost or delivered twice — including one that reached its
//! sink while its outcome could not be written.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use weft_tests::{Behavior, HostSetup, Receiver, free_addr, get_text, lead, post_json, wait_until};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(120);

/// A tmpfs mounted for the test, unmounted when dropped.
struct Volume(PathBuf);

impl Volume {
    fn mount(dir: &Path, size: &str) -> Result<Volume, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Volume(dir.to_path_buf()))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Write a file until the volume is full; its size.
fn fill(file: &Path) -> u64 {
    let mut f = std::fs::File::create(file).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    while f.write_all(&chunk).is_ok() {
        written += chunk.len() as u64;
    }
    // What is left over is smaller than a chunk: take it too.
    let mut small = vec![0x5au8; 4096];
    while !small.is_empty() {
        match f.write_all(&small) {
            Ok(()) => written += small.len() as u64,
            Err(_) => small.truncate(small.len() / 2),
        }
    }
    let _ = f.sync_all();
    written
}

async fn send(listen: std::net::SocketAddr, id: &str) -> u16 {
    let url = format!("http://{listen}/hooks/leads");
    post_json(&url, lead(id, 1).to_string().as_bytes(), "application/json")
        .await
        .0
}

/// Successful deliveries of `id`.
fn delivered(receiver: &Receiver, id: &str) -> usize {
    receiver
        .requests_for(id)
        .iter()
        .filter(|d| d.status == 200)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_recovers_by_itself_and_loses_or_repeats_nothing() {
    let root = tempfile::tempdir().unwrap();
    let volume = match Volume::mount(&root.path().join("vol"), "48m") {
        Ok(v) => v,
        Err(why) => {
            eprintln!(
                "SKIPPED: a tmpfs cannot be mounted here ({why}); run as root to test a full disk"
            );
            return;
        }
    };
    let data = volume.0.join("data");
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::leads(listen, &receiver.url("/leads")).unwrap();
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        text.replace(
            "data_dir = \"./weft-data\"",
            &format!("data_dir = {:?}", data.display().to_string()),
        ),
    )
    .unwrap();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let ready = format!("http://{listen}/readyz");

    // Before: events flow.
    for i in 0..5 {
        assert_eq!(send(listen, &format!("ok-{i}")).await, 202);
    }
    assert!(
        wait_until(WAIT, || (0..5)
            .all(|i| delivered(&receiver, &format!("ok-{i}")) == 1))
        .await
    );

    // Two events are at their sink, which answers slowly, when the disk
    // fills up: their outcomes cannot be written when they succeed.
    receiver.set_behavior(Behavior::Slow(Duration::from_secs(3)));
    for i in 0..2 {
        assert_eq!(send(listen, &format!("slow-{i}")).await, 202);
    }
    assert!(wait_until(WAIT, || receiver.in_flight() == 2).await);
    let filler = volume.0.join("filler");
    fill(&filler);

    // Senders get 503 and the host says it is not ready.
    let mut accepted: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for i in 0..200 {
        let id = format!("full-{i}");
        match send(listen, &id).await {
            202 => accepted.push(id),
            503 => {
                refused.push(id);
                break;
            }
            other => panic!("{id}: unexpected status {other}"),
        }
    }
    assert!(!refused.is_empty(), "a full disk refused nothing");
    let (status, body) = get_text(&ready).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot write"), "{body}");

    // The slow deliveries succeed while nothing can be written.
    assert!(wait_until(WAIT, || receiver.in_flight() == 0).await);
    assert!((0..2).all(|i| delivered(&receiver, &format!("slow-{i}")) == 1));
    receiver.set_behavior(Behavior::Accept);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_text(&ready).await.0, 503, "still full, still not ready");
    // `weft pipeline status` says so, and exits non-zero.
    let out = Command::new(WEFT)
        .args(["pipeline", "status", "--config"])
        .arg(&setup.config_path)
        .env_remove("WEFT_TOKEN")
        .env_remove("WEFT_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the store cannot write"), "{stderr}");

    // Space comes back: ready again by itself, no request needed.
    std::fs::remove_file(&filler).unwrap();
    let freed = std::time::Instant::now();
    let mut ready_again = false;
    for _ in 0..600 {
        if get_text(&ready).await.0 == 200 {
            ready_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready_again, "the host did not become ready again by itself");
    eprintln!(
        "ready again {} ms after space was freed",
        freed.elapsed().as_millis()
    );

    // Senders retry what was refused; everything accepted arrives once.
    for id in &refused {
        assert_eq!(send(listen, id).await, 202, "{id} after recovery");
    }
    let all: Vec<String> = (0..5)
        .map(|i| format!("ok-{i}"))
        .chain((0..2).map(|i| format!("slow-{i}")))
        .chain(accepted.iter().cloned())
        .chain(refused.iter().cloned())
        .collect();
    assert!(
        wait_until(WAIT, || all.iter().all(|id| delivered(&receiver, id) >= 1)).await,
        "an accepted event was lost"
    );

    // A restart finds nothing left to do: no outcome was lost either.
    host.sigterm();
    let host = weft_tests::WeftProcess::start(WEFT, &setup.config_path, listen, "weft-2.log", &[]);
    let status_url = format!("http://{listen}/readyz");
    assert_eq!(get_text(&status_url).await.0, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in &all {
        assert_eq!(
            delivered(&receiver, id),
            1,
            "{id} was delivered {} times",
            delivered(&receiver, id)
        );
    }
    host.sigterm();
}
