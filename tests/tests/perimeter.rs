//! Address allowlists at the perimeter, tried from other loopback
//! addresses (127.0.0.2 and 127.0.0.3 reach 127.0.0.1 on Linux with no
//! setup): a pipeline's `allow_from`, the admin listener's
//! `admin_allow_from`, and `X-Forwarded-For` believed only from
//! `trusted_proxies`. Refusals are 403, counted, and audited once a minute
//! per source.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_host::host::RunningHost;
use weft_tests::{
    Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, metric, parse_metrics,
};

/// One request from `source` (a local address) to `addr`: status and body.
async fn from(
    source: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: weft\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_listed_addresses_reach_a_pipeline_and_the_admin_listener() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let setup = HostSetup::new(
        any_port(),
        &[
            PipelineSpec::leads("partner", &receiver.url("/p"))
                .with("allow_from = [\"127.0.0.1/32\", \"2001:db8::/32\"]"),
            PipelineSpec::leads("open", &receiver.url("/o")),
        ],
    )
    .unwrap()
    .server_line("admin_allow_from = [\"127.0.0.1\"]")
    .unwrap()
    .server_line("trusted_proxies = [\"127.0.0.2/32\"]")
    .unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let body = |id: &str| lead(id, 1).to_string();
    let hook = |p: &str| format!("/hooks/{p}");
    // Listed: accepted. Not listed: 403, nothing stored.
    assert_eq!(
        from(
            "127.0.0.1",
            host.addr,
            "POST",
            &hook("partner"),
            &[],
            &body("a")
        )
        .await
        .0,
        202
    );
    for i in 0..5 {
        let (status, text) = from(
            "127.0.0.3",
            host.addr,
            "POST",
            &hook("partner"),
            &[],
            &body(&format!("x{i}")),
        )
        .await;
        assert_eq!(status, 403, "{text}");
        assert!(
            text.contains("127.0.0.3") && text.contains("allow_from"),
            "{text}"
        );
    }
    // A pipeline without a list takes anyone.
    assert_eq!(
        from(
            "127.0.0.3",
            host.addr,
            "POST",
            &hook("open"),
            &[],
            &body("b")
        )
        .await
        .0,
        202
    );
    // X-Forwarded-For counts from the trusted proxy only.
    let forwarded = [("x-forwarded-for", "127.0.0.1")];
    assert_eq!(
        from(
            "127.0.0.2",
            host.addr,
            "POST",
            &hook("partner"),
            &forwarded,
            &body("c")
        )
        .await
        .0,
        202,
        "the trusted proxy speaks for a listed client"
    );
    assert_eq!(
        from(
            "127.0.0.3",
            host.addr,
            "POST",
            &hook("partner"),
            &forwarded,
            &body("d")
        )
        .await
        .0,
        403,
        "anyone else's header is ignored"
    );
    assert_eq!(
        from(
            "127.0.0.2",
            host.addr,
            "POST",
            &hook("partner"),
            &[],
            &body("e")
        )
        .await
        .0,
        403,
        "the proxy itself is not listed"
    );
    let engine = host.engine();
    let status = engine.status("partner").unwrap();
    assert_eq!(status.rejected["address_not_allowed"], 7);
    assert_eq!(status.accepted, 2);
    // The admin listener: listed loopback only.
    let (status, text) = from("127.0.0.3", host.admin_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("admin_allow_from"), "{text}");
    assert_eq!(
        from(
            "127.0.0.3",
            host.admin_addr,
            "GET",
            "/api/v1/pipelines",
            &[],
            ""
        )
        .await
        .0,
        403
    );
    let (status, text) = from("127.0.0.1", host.admin_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    let metrics = parse_metrics(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(metric(&metrics, "weft_admin_refused_total", &[]), Some(2.0));
    assert_eq!(
        metric(
            &metrics,
            "weft_events_rejected_total",
            &[("pipeline", "partner"), ("reason", "address_not_allowed")]
        ),
        Some(7.0)
    );
    // Audited once a minute per source and place, not once per request.
    let audit = engine.store().audit().records(0).unwrap();
    let refused: Vec<_> = audit.iter().filter(|r| r.kind == "address").collect();
    let at = |actor: &str, place: &str| {
        refused
            .iter()
            .filter(|r| r.actor == actor && r.action == format!("refused at {place}"))
            .count()
    };
    assert_eq!(at("127.0.0.3", "partner"), 1, "{refused:?}");
    assert_eq!(at("127.0.0.2", "partner"), 1);
    assert_eq!(at("127.0.0.3", "admin"), 1);
    assert_eq!(refused.len(), 3);
    host.shutdown().await;
}

#[test]
fn bad_allowlists_are_refused_with_the_key_named() {
    let base = "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
    let err = |server: &str, pipeline: &str| {
        weft_host::config::Config::parse(&format!(
            "{base}{server}\n[plugins]\ndir = \"p\"\n[[pipeline]]\nname = \"o\"\nsink = {{ plugin = \"s\" }}\n{pipeline}"
        ))
        .unwrap_err()
    };
    let e = err("admin_allow_from = [\"10.0.0.0/40\"]", "");
    assert!(
        e.contains("admin_allow_from") && e.contains("\"10.0.0.0/40\""),
        "{e}"
    );
    let e = err("", "allow_from = []");
    assert!(e.contains("allow_from") && e.contains("empty"), "{e}");
    let e = err("trusted_proxies = [\"proxy.internal\"]", "");
    assert!(e.contains("trusted_proxies") && e.contains("CIDR"), "{e}");
}

/// An admin token rotated with `previous_secret`: both work during the
/// overlap (the old one audited as such); after the old one is removed and
/// the config reloaded, it is refused. Secret values are read again on
/// reload, so a changed value takes effect the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_tokens_rotate_with_an_overlap_and_without_a_restart() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let (old, new) = ("old-token-0123456789abcdef", "new-token-0123456789abcdef");
    let setup = HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("leads", &receiver.url("/l"))],
        "[[admin.tokens]]\nname = \"ops\"\nrole = \"operator\"\nsecret = \"OPS_TOKEN\"\nprevious_secret = \"OPS_TOKEN_OLD\"\n",
    )
    .unwrap()
    .with_secrets(&[("OPS_TOKEN", new), ("OPS_TOKEN_OLD", old)])
    .unwrap();
    let file = setup.config_path.clone();
    let source: weft_host::host::ConfigSource = std::sync::Arc::new(move || {
        weft_host::config::Config::load(&file).map_err(|e| e.to_string())
    });
    let host = RunningHost::start_reloadable(setup.config(), source)
        .await
        .unwrap();
    let pause = |token: &'static str| {
        let url = format!("http://{}/api/v1/pipelines/leads/pause", host.admin_addr);
        async move {
            weft_tests::post_with_headers(
                &url,
                b"{}",
                "application/json",
                &[("authorization", format!("Bearer {token}"))],
            )
            .await
            .0
        }
    };
    assert_eq!(pause(new).await, 200);
    assert_eq!(
        pause(old).await,
        200,
        "the old token still works in the overlap"
    );
    assert_eq!(pause("not-the-token-0123456789").await, 401);
    let audit = host.engine().store().audit().records(0).unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.actor == "ops" && r.action == "pause")
    );
    assert!(
        audit
            .iter()
            .any(|r| r.actor == "ops (previous token)" && r.action == "pause"),
        "who still uses the old token shows"
    );
    // The rotation ends: the old token goes from the config.
    let text = std::fs::read_to_string(&setup.config_path).unwrap();
    std::fs::write(
        &setup.config_path,
        text.replace("previous_secret = \"OPS_TOKEN_OLD\"\n", ""),
    )
    .unwrap();
    assert!(host.reload("test").await.is_ok());
    assert_eq!(pause(old).await, 401, "refused once rotated out");
    assert_eq!(pause(new).await, 200);
    host.shutdown().await;
}
