//! Outbound HTTPS from plugins to a server whose certificate a test CA
//! signed: trusted once `[upstreams]` names the CA, with connections
//! reused across deliveries (handshakes counted at the server); refused
//! without it, naming the missing trust; and a server that requires a
//! client certificate gets the one `[upstreams]` gives (mTLS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use weft_host::host::RunningHost;
use weft_tests::certs::{Ca, ca, leaf};
use weft_tests::{HostSetup, PipelineSpec, any_port, lead, send_event, wait_until};

const WAIT: Duration = Duration::from_secs(60);

/// An HTTPS server on loopback answering 200 to everything: its address,
/// and its counts of handshakes and of requests.
async fn https_server(
    server_ca: &Ca,
    clients: Option<&Ca>,
) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let cert = leaf(server_ca, &["localhost"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        Some(c) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(c.cert.clone()).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(cert.chain, cert.key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (handshakes, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, r) = (handshakes.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, h, r) = (acceptor.clone(), h.clone(), r.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |_req| {
                    r.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"{}")),
                        ))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, handshakes, requests)
}

/// A host whose `leads` pipeline delivers to `url` once (no retries), with
/// `upstream` lines for its origin.
fn host_setup(url: &str, upstream: &str) -> HostSetup {
    let origin = weft_tests::origin_of(url);
    HostSetup::with_extra(
        any_port(),
        &[PipelineSpec::leads("leads", url)
            .retry("max_attempts = 1")
            .with("concurrency = 1")],
        &format!("[upstreams.\"{origin}\"]\n{upstream}\n"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_ca_is_trusted_when_named_and_connections_are_reused() {
    let server_ca = ca("company CA");
    let (addr, handshakes, requests) = https_server(&server_ca, None).await;
    let url = format!("https://localhost:{}/in", addr.port());
    // Without the CA: refused, and the message names the missing trust.
    let setup = host_setup(&url, "");
    let host = RunningHost::start(setup.config()).await.unwrap();
    assert_eq!(
        send_event(&host, "leads", &lead("untrusted", 1)).await.0,
        202
    );
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || store.dead_letters(Some("leads")).unwrap().len()
            == 1)
        .await
    );
    let dead = store.dead_letters(Some("leads")).unwrap().remove(0);
    let error = format!("{:?}", dead.attempts.last().unwrap().outcome);
    assert!(
        error.contains(&format!("https://localhost:{}", addr.port())) && error.contains("ca = "),
        "{error}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0);
    host.shutdown().await;
    // With it: delivered, one after another over one connection.
    let setup = host_setup(&url, "ca = \"ca.pem\"");
    std::fs::write(setup.dir.path().join("ca.pem"), &server_ca.pem).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let before = handshakes.load(Ordering::SeqCst);
    for i in 0..5 {
        assert_eq!(
            send_event(&host, "leads", &lead(&format!("ok-{i}"), i))
                .await
                .0,
            202
        );
        assert!(wait_until(WAIT, || requests.load(Ordering::SeqCst) == i + 1).await);
    }
    let made = handshakes.load(Ordering::SeqCst) - before;
    assert_eq!(made, 1, "five deliveries, one handshake");
    assert!(
        wait_until(WAIT, || host.engine().status("leads").unwrap().delivered
            == 5)
        .await
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_wants_a_client_certificate_gets_the_configured_one() {
    let (server_ca, clients_ca) = (ca("server CA"), ca("partner's clients CA"));
    let (addr, _, requests) = https_server(&server_ca, Some(&clients_ca)).await;
    let url = format!("https://localhost:{}/in", addr.port());
    let client = leaf(&clients_ca, &["weft.example"]);
    let setup = host_setup(
        &url,
        "ca = \"ca.pem\"\nclient_cert = { cert = \"client.pem\", key = \"CLIENT_KEY\" }",
    )
    .with_secrets(&[("CLIENT_KEY", &client.key_pem)])
    .unwrap();
    std::fs::write(setup.dir.path().join("ca.pem"), &server_ca.pem).unwrap();
    std::fs::write(setup.dir.path().join("client.pem"), &client.cert_pem).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    assert_eq!(send_event(&host, "leads", &lead("m-1", 1)).await.0, 202);
    assert!(wait_until(WAIT, || requests.load(Ordering::SeqCst) == 1).await);
    assert!(
        wait_until(WAIT, || host.engine().status("leads").unwrap().delivered
            == 1)
        .await
    );
    host.shutdown().await;
    // The same server, no client certificate configured: refused.
    let setup = host_setup(&url, "ca = \"ca.pem\"");
    std::fs::write(setup.dir.path().join("ca.pem"), &server_ca.pem).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    assert_eq!(send_event(&host, "leads", &lead("m-2", 2)).await.0, 202);
    let store = host.engine().store().clone();
    assert!(
        wait_until(WAIT, || store.dead_letters(Some("leads")).unwrap().len()
            == 1)
        .await
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1);
    host.shutdown().await;
}

#[test]
fn a_client_key_that_is_not_a_key_stops_the_start_naming_it() {
    let server_ca = ca("x");
    let client = leaf(&server_ca, &["c"]);
    let setup = host_setup(
        "https://localhost:1/in",
        "client_cert = { cert = \"client.pem\", key = \"CLIENT_KEY\" }",
    )
    .with_secrets(&[("CLIENT_KEY", "not a pem key at all, long enough")])
    .unwrap();
    std::fs::write(setup.dir.path().join("client.pem"), &client.cert_pem).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(RunningHost::start(setup.config()))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("client_cert.key") && err.contains("CLIENT_KEY"),
        "{err}"
    );
}
