//! Reload inside one process: an attempt in flight during the switch
//! finishes on the plugins it started with; a request that began on the old
//! configuration and reaches its write after the switch lands on the new
//! one; a host started without a file says it has nothing to reload.

use std::sync::Arc;
use std::time::Duration;
use weft_host::engine::{Accepted, Incoming};
use weft_host::host::RunningHost;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, send_event, wait_until,
};

const WAIT: Duration = Duration::from_secs(60);

async fn reloadable(setup: &HostSetup) -> RunningHost {
    let file = setup.config_path.clone();
    let source: weft_host::host::ConfigSource =
        Arc::new(move || weft_host::config::Config::load(&file).map_err(|e| e.to_string()));
    RunningHost::start_reloadable(setup.config(), source)
        .await
        .expect("host starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_in_flight_finishes_on_its_version_and_late_writes_reach_the_new_engine() {
    let receiver = Receiver::start(Behavior::Slow(Duration::from_millis(1500))).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/x"))],
    )
    .unwrap();
    let host = reloadable(&setup).await;
    let old = host.engine();
    let (status, answer) = send_event(&host, "leads", &lead("slow-1", 1)).await;
    assert_eq!(status, 202, "{answer}");
    assert!(wait_until(WAIT, || receiver.in_flight() == 1).await);

    // The mapping changes while the attempt waits on the sink.
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        text.replacen(r#"lowercase = ["/email"], "#, "", 1),
    )
    .unwrap();
    let summary = host.reload("test").await.expect("reload");
    assert_eq!(
        summary["pipelines"]["changed"],
        serde_json::json!(["leads"]),
        "{summary}"
    );
    assert_eq!(summary["attempts_unfinished"], 0, "{summary}");
    // The reload waited for it: delivered once, mapped by the old config.
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "the attempt finished before the switch");
    assert_eq!(delivered[0].body["email"], "person.1@example.com");
    assert!(old.successor().is_some());
    assert!(!host.engine().is(&old));

    // A request that picked the old engine before the switch and writes
    // after it: accepted by the new engine, delivered with the new mapping.
    let late = old
        .accept(
            "leads",
            Incoming {
                body: lead("late-1", 2).to_string().into_bytes(),
                content_type: "application/json".into(),
                ..Incoming::default()
            },
        )
        .await
        .expect("accepted");
    assert!(matches!(late, Accepted::New { .. }), "{late:?}");
    assert!(
        wait_until(WAIT, || receiver.delivered().iter().any(|d| d.body["id"]
            == "late-1"
            && d.body["email"] == "Person.2@Example.COM"))
        .await,
        "the late write is delivered by the new engine"
    );
    let status = host.engine().status("leads").unwrap();
    assert_eq!(
        status.accepted, 1,
        "counted by the engine in force: {status:?}"
    );
    assert_eq!(status.unaccounted, 0, "{status:?}");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_a_file_has_nothing_to_reload() {
    let (_receiver, _setup, host) = weft_tests::leads_host(Behavior::Accept).await;
    let why = host.reload("test").await.unwrap_err();
    assert!(why.contains("no file to reload"), "{why}");
    host.shutdown().await;
}

/// A reload keeps a pipeline's objective windows and its synthetic checks'
/// results when they are configured the same, and starts them afresh when
/// the objectives change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objectives_and_check_results_go_on_across_a_reload() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/x"))
            .with("slo = { success = 0.99 }")
            .with("[[pipeline.synthetic]]\nname = \"probe\"\nschedule = { cron = \"* * * * * *\" }\npayload = { id = \"p\", email = \"p@example.com\" }")],
    )
    .unwrap();
    let host = reloadable(&setup).await;
    for i in 0..4 {
        assert_eq!(
            send_event(&host, "leads", &lead(&format!("r-{i}"), i))
                .await
                .0,
            202
        );
    }
    let good = |host: &RunningHost| {
        host.engine()
            .status("leads")
            .and_then(|s| s.objectives)
            .and_then(|o| o.success)
            .map_or(0, |s| s.good)
    };
    assert!(wait_until(WAIT, || good(&host) == 4).await);
    assert!(
        wait_until(WAIT, || host.engine().status("leads").unwrap().synthetic[0]
            .ok
            >= 1)
        .await
    );
    // An unrelated change: the windows and the results carry over.
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        text.replace(
            "slo = { success = 0.99 }",
            "slo = { success = 0.99 }\nowner = \"growth\"",
        ),
    )
    .unwrap();
    assert!(host.reload("test").await.is_ok());
    let after = host.engine().status("leads").unwrap();
    assert_eq!(
        after.catalog.owner.as_deref(),
        Some("growth"),
        "the new config is in force"
    );
    assert_eq!(good(&host), 4, "the window goes on");
    assert!(after.synthetic[0].ok >= 1, "so do the check's results");
    // A new objective starts its windows afresh.
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        text.replace("slo = { success = 0.99 }", "slo = { success = 0.999 }"),
    )
    .unwrap();
    assert!(host.reload("test").await.is_ok());
    assert_eq!(good(&host), 0);
    host.shutdown().await;
}
