//! The shipped Prometheus alert rules: valid, passing their own unit
//! tests under promtool, and naming only metrics a running weft exposes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use weft_host::host::RunningHost;
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, any_port, wait_until};

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "promtool cannot run ({e}); install Debian's prometheus package (`cargo xtask test` does, as root)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_rules_are_valid_and_pass_their_tests() {
    let checked = promtool(&["check", "rules", "weft-rules.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = promtool(&["test", "rules", "weft-rules.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_the_rules_use_is_exposed() {
    let rules = std::fs::read_to_string(rules_dir().join("weft-rules.yml")).unwrap();
    let mut used: Vec<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("weft_"))
        .map(|w| w.trim_end_matches("_bucket").to_string())
        .collect();
    used.sort();
    used.dedup();
    assert!(used.len() >= 10, "{used:?}");
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/leads"))
            .with("owner = \"growth\"")
            .with("slo = { success = 0.999, latency = { within_ms = 5000, objective = 0.99 }, freshness = \"10m\" }")
            .with("quality = { max_invalid_ratio = 0.2 }")
            .with("[[pipeline.synthetic]]\nname = \"probe\"\nschedule = { cron = \"* * * * * *\" }\npayload = { id = \"p\", email = \"p@example.com\" }")],
    )
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    assert!(
        wait_until(Duration::from_secs(30), || {
            engine.status("leads").unwrap().synthetic[0].ok > 0
        })
        .await
    );
    let text = weft_tests::admin_call(&host, hyper::Method::GET, "/metrics").await;
    let text = text.as_str().unwrap();
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| {
            !text.contains(&format!("\n{m}{{")) && !text.contains(&format!("\n{m}_bucket{{"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the rules use metrics weft does not expose: {missing:?}"
    );
    host.shutdown().await;
}
