//! Routes: a pipeline with `sinks = [ … ]` makes one durable child event
//! per route its event takes. Each route has its own retries, breaker and
//! dead letters: one sink failing never sends the event to the others
//! again, and a replay reaches only the route that failed.

use std::time::Duration;
use weft_host::host::RunningHost;
use weft_host::store::{AttemptOutcome, EventId, EventState};
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, any_port, send_event, wait_until};

const WAIT: Duration = Duration::from_secs(120);

/// A host with pipeline `orders`: json-map, then routes `crm` (US orders
/// only), `warehouse` and `audit`, one receiver each.
fn setup(crm: &Receiver, warehouse: &Receiver, audit: &Receiver) -> HostSetup {
    let extra = format!(
        r#"[[pipeline]]
name = "orders"
idempotency_key = "/id"
owner = "team-orders"
steps = [{{ plugin = "json-map", config = {{ lowercase = ["/email"] }} }}]
retry = {{ max_attempts = 3, initial_ms = 10, max_ms = 20 }}
breaker = {{ enabled = false }}
sinks = [
  {{ name = "crm", plugin = "http-sink", config = {{ url = "{}" }}, when = {{ all = [{{ pointer = "/country", equals = "US" }}] }} }},
  {{ name = "warehouse", plugin = "http-sink", config = {{ url = "{}" }} }},
  {{ name = "audit", plugin = "http-sink", config = {{ url = "{}" }}, retry = {{ max_attempts = 2, initial_ms = 10, max_ms = 20 }} }},
]
"#,
        crm.url("/crm"),
        warehouse.url("/wh"),
        audit.url("/audit"),
    );
    // Pipelines that only give the http-sink grant each receiver's origin.
    let specs: Vec<PipelineSpec> = [crm, warehouse, audit]
        .iter()
        .enumerate()
        .map(|(i, r)| PipelineSpec::leads(&format!("grant{i}"), &r.url("/")))
        .collect();
    HostSetup::with_extra(any_port(), &specs, &extra).unwrap()
}

fn order(id: &str, country: &str) -> serde_json::Value {
    serde_json::json!({ "id": id, "country": country, "email": "ANN@EXAMPLE.COM" })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_failing_sink_retries_and_dead_letters_alone() {
    let crm = Receiver::start(Behavior::Accept).await;
    let warehouse = Receiver::start(Behavior::Accept).await;
    let audit = Receiver::start(Behavior::Always(503)).await;
    let setup = setup(&crm, &warehouse, &audit);
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    let store = engine.store().clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, answer) = send_event(&host, "orders", &order(&format!("us-{i}"), "US")).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].as_str().unwrap().parse::<EventId>().unwrap());
    }
    let (status, _) = send_event(&host, "orders", &order("de-1", "DE")).await;
    assert_eq!(status, 202);
    assert!(
        wait_until(WAIT, || store
            .dead_letters(Some("orders.audit"))
            .unwrap()
            .len()
            == 6)
        .await,
        "every audit child dead-letters"
    );
    assert!(
        wait_until(WAIT, || crm.effect_count() == 5
            && warehouse.effect_count() == 6)
        .await
    );
    for p in ["orders", "orders.crm", "orders.warehouse", "orders.audit"] {
        assert!(
            wait_until(WAIT, || engine.status(p).unwrap().queued == 0).await,
            "{p} drains"
        );
    }
    // Each sink that works got each event once, the step's output, with
    // the key the event came with.
    assert_eq!(crm.requests().len(), 5, "only US orders go to the crm");
    assert_eq!(
        warehouse.requests().len(),
        6,
        "the failing audit sink sends nothing again"
    );
    assert_eq!(
        audit.requests().len(),
        12,
        "audit's own retry: 2 attempts each"
    );
    let first = &crm.requests_for("us-0")[0];
    assert_eq!(first.body["email"], "ann@example.com");
    assert_eq!(warehouse.requests_for("de-1").len(), 1);
    assert!(crm.requests_for("de-1").is_empty());
    // Dead letters are the failing route's alone; the counts add up.
    assert!(store.dead_letters(Some("orders.crm")).unwrap().is_empty());
    assert!(
        store
            .dead_letters(Some("orders.warehouse"))
            .unwrap()
            .is_empty()
    );
    assert!(store.dead_letters(Some("orders")).unwrap().is_empty());
    let parent_status = engine.status("orders").unwrap();
    assert_eq!((parent_status.split, parent_status.dead_lettered), (6, 0));
    for p in ["orders", "orders.crm", "orders.warehouse", "orders.audit"] {
        assert_eq!(engine.status(p).unwrap().unaccounted, 0, "{p}");
    }
    assert_eq!(engine.status("orders.audit").unwrap().dead_lettered, 6);
    // The parent's history names the routes it took and links its children.
    let parent = store.event(&ids[0]).unwrap().unwrap();
    assert_eq!(parent.state, EventState::Split);
    assert_eq!(
        parent.attempts[0].outcome,
        AttemptOutcome::Split {
            step: "routes (crm, warehouse, audit)".into(),
            children: 3
        }
    );
    let audit_child = parent
        .lineage
        .children
        .iter()
        .map(|id| store.event(id).unwrap().unwrap())
        .find(|c| c.pipeline == "orders.audit")
        .unwrap();
    assert_eq!(audit_child.state, EventState::DeadLettered);
    assert_eq!(audit_child.key, "us-0");
    // Fixed, and replayed: only the audit sink hears of it again.
    audit.set_behavior(Behavior::Accept);
    let outcomes = weft_host::engine::replay(&store, Some(&engine), &[audit_child.id])
        .await
        .unwrap();
    assert_eq!(outcomes[0].result, "requeued");
    assert!(wait_until(WAIT, || audit.effect_count() == 1).await);
    assert!(wait_until(WAIT, || engine.status("orders.audit").unwrap().queued == 0).await);
    assert_eq!(crm.requests().len(), 5);
    assert_eq!(warehouse.requests().len(), 6);
    // A route's pipeline takes no events from outside.
    let (status, answer) = send_event(&host, "orders.crm", &order("x", "US")).await;
    assert_eq!(status, 404, "{answer}");
    host.shutdown().await;
}

#[test]
fn bad_route_tables_are_refused_with_the_key_named() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[plugins]\ndir = \"p\"\n[[pipeline]]\nname = \"o\"\n";
    let err = |rest: &str| weft_host::config::Config::parse(&format!("{base}{rest}")).unwrap_err();
    assert!(err("").contains("no sink"));
    assert!(
        err("sink = { plugin = \"a\" }\nsinks = [{ name = \"b\", plugin = \"a\" }]")
            .contains("both set")
    );
    assert!(
        err("sinks = [{ name = \"b\", plugin = \"a\" }, { name = \"b\", plugin = \"c\" }]")
            .contains(".sinks[1]: another route already has the name \"b\"")
    );
    assert!(err("sinks = [{ name = \"b.c\", plugin = \"a\" }]").contains("route name"));
    let when = err(
        "sinks = [{ name = \"b\", plugin = \"a\", when = { all = [{ pointer = \"x\", equals = 1 }] } }]",
    );
    assert!(
        when.contains("sinks[0].when.all[0]") && when.contains("not a JSON pointer"),
        "{when}"
    );
    let ok = weft_host::config::Config::parse(&format!(
        "{base}retry = {{ max_attempts = 7 }}\nsinks = [{{ name = \"b\", plugin = \"a\" }}, {{ name = \"c\", plugin = \"a\", retry = {{ max_attempts = 2 }} }}]"
    ))
    .unwrap();
    let names: Vec<&str> = ok.pipelines.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["o", "o.b", "o.c"]);
    assert_eq!(
        ok.pipelines[1].retry.max_attempts, 7,
        "taken from the pipeline"
    );
    assert_eq!(ok.pipelines[2].retry.max_attempts, 2, "the route's own");
    assert!(ok.pipelines[1].steps.is_empty());
}

#[test]
fn the_readme_examples_of_products_and_routes_parse() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("### Pipelines as products").unwrap();
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    let blocks: Vec<&str> = section
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert_eq!(blocks.len(), 2, "{section}");
    let head = "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n[plugins]\ndir = \"p\"\n";
    for block in blocks {
        if let Err(e) = weft_host::config::Config::parse(&format!("{head}{block}")) {
            panic!("{e}\n{block}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn synthetic_runs_can_be_routed_away_from_the_production_sink() {
    let production = Receiver::start(Behavior::Accept).await;
    let check = Receiver::start(Behavior::Accept).await;
    let extra = format!(
        r#"[[pipeline]]
name = "orders"
idempotency_key = "/id"
sinks = [
  {{ name = "prod", plugin = "http-sink", config = {{ url = "{}" }}, when = {{ none = [{{ header = "x-weft-synthetic", exists = true }}] }} }},
  {{ name = "check", plugin = "http-sink", config = {{ url = "{}" }}, when = {{ all = [{{ header = "x-weft-synthetic", equals = "probe" }}] }} }},
]

[[pipeline.synthetic]]
name = "probe"
schedule = {{ cron = "* * * * * *" }}
payload = {{ id = "probe", country = "US" }}
"#,
        production.url("/p"),
        check.url("/c"),
    );
    let specs: Vec<PipelineSpec> = [&production, &check]
        .iter()
        .enumerate()
        .map(|(i, r)| PipelineSpec::leads(&format!("grant{i}"), &r.url("/")))
        .collect();
    let setup = HostSetup::with_extra(any_port(), &specs, &extra).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let engine = host.engine();
    assert_eq!(
        send_event(&host, "orders", &order("real", "US")).await.0,
        202
    );
    assert!(
        wait_until(WAIT, || {
            engine.status("orders").unwrap().synthetic[0].ok >= 2 && production.effect_count() == 1
        })
        .await,
        "the checks' results count in the pipeline that sent them"
    );
    assert!(check.requests().len() >= 2);
    assert!(
        check
            .requests()
            .iter()
            .all(|d| d.header("x-weft-synthetic") == Some("probe"))
    );
    let prod = production.requests();
    assert_eq!(prod.len(), 1, "only the real order reaches production");
    assert_eq!(prod[0].key, "real");
    // Business counters: one real event, split to one route; the routes'
    // synthetic children count apart.
    let parent = engine.status("orders").unwrap();
    assert_eq!(
        (parent.accepted, parent.split, parent.unaccounted),
        (1, 1, 0)
    );
    let checks = engine.status("orders.check").unwrap();
    assert_eq!(
        (checks.children, checks.delivered, checks.unaccounted),
        (0, 0, 0)
    );
    assert_eq!(engine.status("orders.prod").unwrap().delivered, 1);
    host.shutdown().await;
}
