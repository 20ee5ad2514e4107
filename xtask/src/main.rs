//! Project tasks, run as `cargo xtask <task>`:
//!
//! - `quickstart`: build everything, run the example pipeline against a local
//!   receiver, send sample leads, and show what arrived and what was dead-lettered.
//! - `test`: every test of the workspace (what CI runs).
//! - `bench`: the benchmark, printing figures and ratios.
//! - `vendor-wit`: refresh `wit/deps` from the pinned wasmtime-wasi-http crate.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    let rest: Vec<String> = std::env::args().skip(2).collect();
    match task.as_str() {
        "quickstart" => quickstart(),
        "test" => test(&rest),
        "test-jetstream" => test_jetstream(&rest),
        "bench" => bench(&rest),
        "vendor-wit" => vendor_wit(),
        _ => {
            eprintln!(
                "usage: cargo xtask <task>\n\n\
                 tasks:\n  \
                 quickstart   run the example pipeline end to end and show the results\n  \
                 test         run every test (what CI runs)\n  \
                 test-jetstream  run the reliability suites again with every host on a JetStream store\n  \
                 bench        run the benchmark and print figures and ratios\n  \
                 vendor-wit   refresh wit/deps from the pinned wasmtime-wasi-http"
            );
            if task.is_empty() {
                Ok(())
            } else {
                bail!("unknown task {task:?}")
            }
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Install the wasm32-wasip2 target if it is missing.
fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (is the Rust toolchain installed with rustup?)")?;
    if !String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2") {
        println!("==> installing the wasm32-wasip2 target");
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    Ok(())
}

/// Debian packages the tests use, by a file each installs: headless
/// Chromium and its WebDriver for the console's browser tests, promtool
/// (Debian's `prometheus`) for the shipped alert rules, and the two
/// message brokers the queue triggers and sinks are tested against.
const TEST_PACKAGES: [(&str, &str); 5] = [
    ("/usr/bin/chromium", "chromium"),
    ("/usr/bin/chromedriver", "chromium-driver"),
    ("/usr/bin/promtool", "prometheus"),
    ("/usr/sbin/nats-server", "nats-server"),
    ("/usr/lib/rabbitmq/bin/rabbitmq-server", "rabbitmq-server"),
];

/// Install the test packages that are missing, when apt may be used (as
/// root, or through `sudo` without a password). Otherwise the tests that
/// need them say what to install.
fn ensure_test_packages() -> Result<()> {
    let have = |p: &str| std::path::Path::new(p).exists();
    let mut missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(file, _)| !have(file))
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("/usr/bin/apt-get") {
        println!(
            "==> no apt-get here: install {} for the console's, the alert rules' and the brokers' tests",
            missing.join(", ")
        );
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = !root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !root && !sudo {
        println!(
            "==> cannot install {} (not root, no sudo): the tests that need them will say so",
            missing.join(", ")
        );
        return Ok(());
    }
    println!("==> installing {} for the tests", missing.join(", "));
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut c)
    };
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    apt(&install)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn test(extra: &[String]) -> Result<()> {
    ensure_wasm_target()?;
    if let Err(e) = ensure_test_packages() {
        println!(
            "==> test packages could not be installed ({e:#}): the tests that need them will say so"
        );
    }
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // The weft binary must exist for the tests that run it as a process.
    run(cargo().args(["build", "--package", "weft-host", "--bin", "weft"]))?;
    if nextest {
        run(cargo()
            .args([
                "nextest",
                "run",
                "--workspace",
                "--no-fail-fast",
                "--run-ignored",
                "all",
            ])
            .args(extra))?;
        // nextest does not run doc tests.
        run(cargo().args(["test", "--workspace", "--doc"]))
    } else {
        run(cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(extra)
            .args(["--", "--include-ignored"]))
    }
}

/// The suites that run again on a JetStream store.
const JETSTREAM_SUITES: &[&str] = &[
    "reliability",
    "pipeline",
    "triggers",
    "splits",
    "compensations",
];

/// Run [`JETSTREAM_SUITES`] with every host on a JetStream store on a
/// `nats-server` started here (with room for a whole event in a message).
fn test_jetstream(extra: &[String]) -> Result<()> {
    ensure_wasm_target()?;
    ensure_test_packages()?;
    run(cargo().args(["build", "--package", "weft-host", "--bin", "weft"]))?;
    let dir = target_dir().join("test-jetstream");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{ store_dir: {:?} }}\n",
            dir.join("js")
        ),
    )?;
    let server = Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("nats.log"))?)
        .spawn()
        .context("starting nats-server")?;
    let _server = Guard(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!(
                "nats-server did not listen on {port}; see {}",
                dir.join("nats.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut cmd = cargo();
    // The workspace's feature set, so the build `cargo xtask test` made is reused.
    cmd.args(["nextest", "run", "--no-fail-fast", "--workspace"]);
    for suite in JETSTREAM_SUITES {
        cmd.args(["--test", suite]);
    }
    cmd.args(extra)
        .env("WEFT_TEST_JETSTREAM", format!("nats://127.0.0.1:{port}"))
        .env(
            "WEFT_SECRET_WEFT_TEST_AUDIT",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
        );
    run(&mut cmd)
}

fn bench(extra: &[String]) -> Result<()> {
    ensure_wasm_target()?;
    // The queues section runs against the brokers the tests use.
    if let Err(e) = ensure_test_packages() {
        println!(
            "==> test packages could not be installed ({e:#}): the queues section will say so"
        );
    }
    // The footprint section runs the release binary as operators do.
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "weft-host",
        "--bin",
        "weft",
    ]))?;
    run(cargo()
        .args([
            "bench",
            "--package",
            "weft-tests",
            "--bench",
            "pipeline",
            "--",
        ])
        .args(extra))
}

fn vendor_wit() -> Result<()> {
    let out = cargo()
        .args(["metadata", "--format-version", "1"])
        .output()
        .context("running cargo metadata")?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "wasmtime-wasi-http")
        .and_then(|p| p["manifest_path"].as_str())
        .context("wasmtime-wasi-http is not in the dependency graph")?;
    let src = Path::new(manifest)
        .parent()
        .context("crate dir")?
        .join("wit/deps");
    let dst = root().join("wit/deps");
    std::fs::create_dir_all(&dst)?;
    for entry in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wit") {
            let to = dst.join(path.file_name().context("file name")?);
            std::fs::copy(&path, &to)?;
            println!("{} -> {}", path.display(), to.display());
        }
    }
    Ok(())
}

/// A child process that is stopped when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn quickstart() -> Result<()> {
    ensure_wasm_target()?;
    println!("==> building the weft host (the first build takes a few minutes)");
    run(cargo().args(["build", "--package", "weft-host", "--bin", "weft"]))?;
    let weft = target_dir().join("debug/weft");
    let dir = target_dir().join("quickstart");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(root().join("examples/weft.toml"), dir.join("weft.toml"))?;
    weft_tests::install_plugins(&dir.join("plugins.d"))?;
    println!("==> plugins (built for wasm32-wasip2):");
    for (name, path) in weft_tests::plugins::ALL {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        println!("    {name:<10} {:>7} KiB  {path}", size / 1024);
    }

    let runtime = tokio::runtime::Runtime::new()?;
    let receiver = runtime.block_on(weft_tests::Receiver::start_on(
        "127.0.0.1:9090".parse()?,
        weft_tests::Behavior::Accept,
    ));
    println!("==> receiver listening on http://127.0.0.1:9090");

    println!(
        "==> starting: weft run --config {}",
        dir.join("weft.toml").display()
    );
    let log = std::fs::File::create(dir.join("weft.log"))?;
    let child = Command::new(&weft)
        .args(["run", "--config"])
        .arg(dir.join("weft.toml"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", weft.display()))?;
    let _host = Guard(child);
    let start = Instant::now();
    while std::net::TcpStream::connect("127.0.0.1:8080").is_err() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "weft did not start listening on 127.0.0.1:8080; see {}",
                dir.join("weft.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "==> weft is serving on http://127.0.0.1:8080 (log: {})",
        dir.join("weft.log").display()
    );

    let leads = root().join("examples/leads.ndjson");
    println!("==> weft send leads examples/leads.ndjson --ndjson");
    let _ = Command::new(&weft)
        .args(["send", "leads", "--ndjson", "--config"])
        .arg(dir.join("weft.toml"))
        .arg(&leads)
        .status();

    let start = Instant::now();
    while receiver.effect_count() < 3 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "\n==> the receiver got {} lead(s):",
        receiver.delivered().len()
    );
    for d in receiver.delivered() {
        println!("    Idempotency-Key: {}  body: {}", d.key, d.body);
    }
    println!("\n==> weft dlq list");
    let _ = Command::new(&weft)
        .args(["dlq", "list", "--config"])
        .arg(dir.join("weft.toml"))
        .status();
    println!(
        "\nThe duplicate of lead-1001 was answered 200 and not stored again; lead-1004 has no\n\
         email and was filtered out; lead-1005's date does not match %m/%d/%Y, so json-map\n\
         refused it as invalid input and it went to the dead-letter queue.\n\n\
         To run it yourself:  cd {} && {} run",
        dir.display(),
        weft.display()
    );
    if receiver.effect_count() != 3 {
        bail!(
            "expected 3 leads at the receiver, got {}",
            receiver.effect_count()
        );
    }
    Ok(())
}
