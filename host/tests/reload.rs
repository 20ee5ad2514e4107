//! Reloading a running host (the real binary): under load, a changed
//! mapping, a pipeline added and one removed lose and fail nothing; a bad
//! reload changes nothing and says why; SIGHUP reloads too.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, WeftProcess, free_addr, get_text, lead, metric,
    parse_metrics, post_event, wait_until,
};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");
const WAIT: Duration = Duration::from_secs(60);

fn weft(setup: &HostSetup, args: &[&str]) -> std::process::Output {
    std::process::Command::new(WEFT)
        .args(args)
        .arg("--config")
        .arg(&setup.config_path)
        .current_dir(setup.dir.path())
        .output()
        .expect("weft runs")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn edit(setup: &HostSetup, from: &str, to: &str) {
    let was = std::fs::read_to_string(&setup.config_path).unwrap();
    assert!(was.contains(from), "{from:?} in {was}");
    std::fs::write(&setup.config_path, was.replacen(from, to, 1)).unwrap();
}

async fn reload_count(admin: std::net::SocketAddr, result: &str) -> f64 {
    let (_, body) = get_text(&format!("http://{admin}/metrics")).await;
    let samples = parse_metrics(&body).expect("metrics parse");
    metric(&samples, "weft_config_reloads_total", &[("result", result)]).unwrap_or(-1.0)
}

fn admin_of(setup: &HostSetup) -> std::net::SocketAddr {
    setup.config().server.admin_addr()
}

/// The lead pipeline's mapping lowercases the email; the reload drops that.
const LOWERCASE: &str = r#"lowercase = ["/email"], "#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_reload_changes_adds_and_removes_pipelines_losing_and_failing_nothing() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup = HostSetup::new(
        listen,
        &[
            PipelineSpec::leads("leads", &receiver.url("/leads")),
            PipelineSpec::leads("old", &receiver.url("/old")),
        ],
    )
    .unwrap();
    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let admin = admin_of(&setup);

    // The pipeline about to be removed holds queued events (paused).
    let out = weft(&setup, &["pipeline", "pause", "old"]);
    assert!(out.status.success(), "{}", text(&out));
    for i in 0..3 {
        let (status, answer) = post_event(listen, "old", &lead(&format!("old-{i}"), i)).await;
        assert_eq!(status, 202, "{answer}");
    }

    // Steady load on `leads` from four senders, through the reloads.
    const SENDERS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let reloaded = Arc::new(AtomicBool::new(false));
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let (stop, sent, reloaded) = (stop.clone(), sent.clone(), reloaded.clone());
        senders.spawn(async move {
            let (mut ids, mut after) = (Vec::new(), Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("s{s}-{i}");
                let started_after_switch = reloaded.load(Ordering::SeqCst);
                let (status, answer) = post_event(listen, "leads", &lead(&id, i)).await;
                assert_eq!(status, 202, "{id} refused during a reload: {answer}");
                sent.fetch_add(1, Ordering::Relaxed);
                if started_after_switch {
                    after.push(id.clone());
                }
                ids.push(id);
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ids, after)
        });
    }
    assert!(wait_until(WAIT, || sent.load(Ordering::Relaxed) > 100).await);

    // Change the mapping, add `fresh`, remove `old`.
    edit(&setup, LOWERCASE, "");
    let text_now = std::fs::read_to_string(&setup.config_path).unwrap();
    let old_start = text_now.find("[[pipeline]]\nname = \"old\"").unwrap();
    let old_end = text_now[old_start + 1..]
        .find("[[pipeline]]")
        .map_or(text_now.len(), |e| old_start + 1 + e);
    let old_table = text_now[old_start..old_end].to_string();
    let fresh_table = old_table
        .replace("name = \"old\"", "name = \"fresh\"")
        .replace("/old", "/fresh");
    std::fs::write(
        &setup.config_path,
        text_now.replacen(&old_table, &fresh_table, 1),
    )
    .unwrap();
    let out = weft(&setup, &["reload"]);
    reloaded.store(true, Ordering::SeqCst);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("pipelines added: fresh"), "{said}");
    assert!(said.contains("pipelines changed: leads"), "{said}");
    assert!(said.contains("pipelines removed: old"), "{said}");
    assert!(
        said.contains("3 queued events of old (no longer configured) stay in the store"),
        "{said}"
    );
    assert!(wait_until(WAIT, || sent.load(Ordering::Relaxed) > 250).await);

    // A second reload under load (the file as it is) changes nothing.
    let out = weft(&setup, &["reload", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["pipelines"]["changed"],
        serde_json::json!([]),
        "{summary}"
    );
    assert!(wait_until(WAIT, || sent.load(Ordering::Relaxed) > 350).await);
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut after) = (Vec::new(), Vec::new());
    while let Some(r) = senders.join_next().await {
        let (ids, late) = r.unwrap();
        all.extend(ids);
        after.extend(late);
    }

    // Every accepted event delivered exactly once; none failed.
    assert!(
        wait_until(WAIT, || receiver.effect_count() >= all.len()).await,
        "delivered {} of {}",
        receiver.effect_count(),
        all.len()
    );
    let effects = receiver.effects();
    let missing: Vec<&String> = all.iter().filter(|id| !effects.contains_key(*id)).collect();
    assert!(missing.is_empty(), "not delivered: {missing:?}");
    let delivered = receiver.delivered();
    for d in &delivered {
        let body: serde_json::Value = serde_json::from_slice(&d.raw_body).unwrap();
        let Some(id) = body["id"].as_str() else {
            continue;
        };
        if after.iter().any(|a| a == id) {
            // Accepted after the switch: the new mapping.
            assert!(
                body["email"].as_str().unwrap().contains("Example.COM"),
                "{id} was accepted after the reload and mapped by the old config: {body}"
            );
        }
    }
    assert!(!after.is_empty(), "some events were sent after the reload");
    let (_, body) = get_text(&format!("http://{admin}/api/v1/pipelines/leads")).await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["dead_lettered"], 0, "{status}");
    assert_eq!(
        status["retried"], 0,
        "no attempt failed because of the switch: {status}"
    );
    let redeliveries: Vec<_> = receiver
        .effects()
        .into_iter()
        .filter(|(k, n)| *n > 1 && all.contains(k))
        .collect();
    assert!(redeliveries.is_empty(), "delivered twice: {redeliveries:?}");

    // The new pipeline takes events; the removed one is gone from the routes.
    let (status, _) = post_event(listen, "fresh", &lead("fresh-1", 1)).await;
    assert_eq!(status, 202);
    assert!(wait_until(WAIT, || receiver.effects().contains_key("fresh-1")).await);
    let (status, _) = post_event(listen, "old", &lead("old-x", 1)).await;
    assert_eq!(status, 404);

    // `old` comes back: its three queued events were kept, and flow once
    // it is resumed.
    std::fs::write(
        &setup.config_path,
        format!(
            "{}\n{old_table}",
            std::fs::read_to_string(&setup.config_path).unwrap()
        ),
    )
    .unwrap();
    let out = weft(&setup, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pipelines added: old"),
        "{}",
        text(&out)
    );
    let out = weft(&setup, &["pipeline", "resume", "old"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        wait_until(WAIT, || (0..3)
            .all(|i| receiver.effects().contains_key(&format!("old-{i}"))))
        .await,
        "the removed pipeline's queued events are delivered when it comes back"
    );

    // Removed again with two events queued, and purged: they are gone for
    // good, and nothing of them is delivered when it comes back.
    let out = weft(&setup, &["pipeline", "pause", "old"]);
    assert!(out.status.success(), "{}", text(&out));
    for i in 0..2 {
        let (status, _) = post_event(listen, "old", &lead(&format!("purged-{i}"), i)).await;
        assert_eq!(status, 202);
    }
    let with_old = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(&setup.config_path, with_old.replacen(&old_table, "", 1)).unwrap();
    let out = weft(&setup, &["reload"]);
    assert!(
        text(&out).contains("2 queued events of old"),
        "{}",
        text(&out)
    );
    let out = weft(&setup, &["pipeline", "purge", "leads"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is configured"), "{}", text(&out));
    let out = weft(&setup, &["pipeline", "purge", "old"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("2 queued events deleted"),
        "{}",
        text(&out)
    );
    std::fs::write(&setup.config_path, &with_old).unwrap();
    let out = weft(&setup, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("queued events of old"),
        "{}",
        text(&out)
    );
    let out = weft(&setup, &["pipeline", "resume", "old"]);
    assert!(out.status.success(), "{}", text(&out));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!receiver.effects().keys().any(|k| k.starts_with("purged-")));

    // Counted, and in the audit log.
    assert_eq!(reload_count(admin, "ok").await, 5.0);
    assert_eq!(reload_count(admin, "refused").await, 0.0);
    let out = weft(&setup, &["audit-log", "show", "--json"]);
    let log = text(&out);
    assert_eq!(log.matches("\"reload\"").count(), 5, "{log}");
    assert!(log.contains("purge-queued"), "{log}");
    let unique: HashSet<&String> = all.iter().collect();
    eprintln!(
        "{} events from {SENDERS} senders through 2 reloads under load: all delivered once, 0 refused, 0 failed; {} accepted after the switch, all with the new mapping",
        unique.len(),
        after.len()
    );
    host.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_changes_nothing_and_says_why_and_sighup_reloads() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let listen = free_addr();
    let setup =
        HostSetup::new(listen, &[PipelineSpec::leads("leads", &receiver.url("/x"))]).unwrap();
    let host = WeftProcess::start(WEFT, &setup.config_path, listen, "weft.log", &[]);
    let admin = admin_of(&setup);
    let good = std::fs::read_to_string(&setup.config_path).unwrap();
    let send = |id: &'static str| async move {
        let (status, answer) = post_event(listen, "leads", &lead(id, 1)).await;
        assert_eq!(status, 202, "{answer}");
    };
    let lowercased = |id: &str| {
        receiver.delivered().iter().any(|d| {
            let b: serde_json::Value = serde_json::from_slice(&d.raw_body).unwrap();
            b["id"] == id && b["email"] == "person.1@example.com"
        })
    };

    let broken_plugin = setup.dir.path().join("plugins.d/broken.wasm");
    type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let bad: Vec<Breakage> = vec![
        (
            "a plugin that does not compile",
            Box::new(|| {
                std::fs::write(&broken_plugin, b"\0asm\x01\0\0\0garbage").unwrap();
                edit(&setup, LOWERCASE, "");
                std::fs::write(
                    &setup.config_path,
                    std::fs::read_to_string(&setup.config_path)
                        .unwrap()
                        .replacen(
                            "{ plugin = \"filter\"",
                            "{ plugin = \"broken\" }, { plugin = \"filter\"",
                            1,
                        ),
                )
                .unwrap();
            }),
            "broken",
        ),
        (
            "a config the plugin rejects",
            Box::new(|| edit(&setup, LOWERCASE, r#"lowercase = 5, "#)),
            "steps[0].config",
        ),
        (
            "a secret that is not there",
            Box::new(|| {
                edit(
                    &setup,
                    "idempotency_key = \"/id\"",
                    "idempotency_key = \"/id\"\ntrigger = { webhook = { verify = \"hmac-sha256\", secret = \"NOT_THERE\" } }",
                )
            }),
            "NOT_THERE",
        ),
        (
            "a file that is not TOML",
            Box::new(|| std::fs::write(&setup.config_path, "[server\nlisten = ").unwrap()),
            "weft.toml",
        ),
        (
            "a new listen address",
            Box::new(|| {
                edit(
                    &setup,
                    &format!("listen = \"{listen}\""),
                    "listen = \"127.0.0.1:1\"",
                )
            }),
            "takes a restart",
        ),
    ];
    for (n, (what, break_it, named)) in bad.iter().enumerate() {
        break_it();
        let out = weft(&setup, &["reload", "--url", &format!("http://{admin}")]);
        let said = text(&out);
        assert!(!out.status.success(), "{what}: {said}");
        assert!(said.contains("nothing was changed"), "{what}: {said}");
        assert!(said.contains(named), "{what} is named: {said}");
        // What runs is untouched: the old mapping still lowercases.
        std::fs::write(&setup.config_path, &good).unwrap();
        let _ = std::fs::remove_file(&broken_plugin);
        let id: &'static str = Box::leak(format!("bad-{n}").into_boxed_str());
        send(id).await;
        assert!(
            wait_until(WAIT, || lowercased(id)).await,
            "after {what}, the running config is unchanged"
        );
    }
    // Without --url the command reads the broken file for the address.
    std::fs::write(&setup.config_path, "[server\nlisten = ").unwrap();
    let out = weft(&setup, &["reload"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing was changed"), "{}", text(&out));
    std::fs::write(&setup.config_path, &good).unwrap();
    assert_eq!(reload_count(admin, "refused").await, bad.len() as f64);
    assert_eq!(reload_count(admin, "ok").await, 0.0);

    // SIGHUP reloads the fixed file.
    edit(&setup, LOWERCASE, "");
    host.signal("HUP");
    assert!(
        wait_until(WAIT, || {
            std::fs::read_to_string(setup.dir.path().join("weft.log"))
                .is_ok_and(|l| l.contains("configuration reloaded"))
        })
        .await
    );
    send("after-hup").await;
    assert!(
        wait_until(WAIT, || receiver.delivered().iter().any(|d| {
            let b: serde_json::Value = serde_json::from_slice(&d.raw_body).unwrap();
            b["id"] == "after-hup" && b["email"] == "Person.1@Example.COM"
        }))
        .await,
        "the reloaded mapping applies"
    );
    let out = weft(&setup, &["audit-log", "show", "--json"]);
    let log = text(&out);
    assert!(log.contains("\"signal\""), "{log}");
    assert_eq!(log.matches("refused: ").count(), bad.len(), "{log}");
    host.sigterm();
}
