//! HTTPS on the public listener with certificates made here: a CA, the
//! server's certificate, a client certificate, and a stranger's. Clients
//! without a certificate are refused at the handshake (required) or by the
//! pipelines that ask for one (optional); the client's identity reaches
//! the event; new certificate files are used without a restart.

use rustls::pki_types::CertificateDer;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_host::host::RunningHost;
use weft_tests::certs::{Leaf, ca, leaf};
use weft_tests::{Behavior, HostSetup, PipelineSpec, Receiver, any_port, lead, wait_until};

fn write_server(dir: &Path, server: &Leaf) {
    std::fs::write(dir.join("server.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &server.key_pem).unwrap();
}

/// POST `body` to `path` over TLS, trusting `root`, showing `client` if
/// given: the status, or why the connection failed.
async fn https(
    addr: SocketAddr,
    root: &CertificateDer<'static>,
    client: Option<&Leaf>,
    path: &str,
    body: &str,
) -> Result<u16, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))
}

fn setup(receiver: &Receiver, client_auth: &str) -> HostSetup {
    let setup = HostSetup::new(
        any_port(),
        &[
            PipelineSpec::leads("open", &receiver.url("/o")),
            PipelineSpec::leads("partner", &receiver.url("/p")).with("require_client_cert = true"),
        ],
    )
    .unwrap();
    setup
        .server_line(&format!(
            "tls = {{ cert = \"server.pem\", key = \"server.key\", client_ca = \"clients.pem\", client_auth = \"{client_auth}\" }}"
        ))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_with_optional_client_certificates_and_a_certificate_change() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let (server_ca, clients_ca, stranger_ca) = (ca("server CA"), ca("clients CA"), ca("stranger"));
    let setup = setup(&receiver, "optional");
    let dir = setup.dir.path();
    write_server(dir, &leaf(&server_ca, &["localhost", "127.0.0.1"]));
    std::fs::write(dir.join("clients.pem"), &clients_ca.pem).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let partner = leaf(&clients_ca, &["partner.example"]);
    let stranger = leaf(&stranger_ca, &["stranger.example"]);
    let body = |id: &str| lead(id, 1).to_string();
    let root = &server_ca.cert;
    // No client certificate: fine for `open`, refused by `partner`.
    assert_eq!(
        https(host.addr, root, None, "/hooks/open", &body("a")).await,
        Ok(202)
    );
    assert_eq!(
        https(host.addr, root, None, "/hooks/partner", &body("b")).await,
        Ok(403)
    );
    // With one from the clients' CA: taken, and its identity is the event's.
    assert_eq!(
        https(
            host.addr,
            root,
            Some(&partner),
            "/hooks/partner",
            &body("c")
        )
        .await,
        Ok(202)
    );
    // A certificate from another CA does not get through the handshake.
    let refused = https(host.addr, root, Some(&stranger), "/hooks/open", &body("d")).await;
    assert!(refused.is_err(), "{refused:?}");
    // Plain HTTP to the HTTPS port gets no answer.
    let mut plain = tokio::net::TcpStream::connect(host.addr).await.unwrap();
    let req = format!(
        "POST /hooks/open HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body("e").len(),
        body("e")
    );
    plain.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let engine = host.engine();
    assert!(wait_until(Duration::from_secs(30), || receiver.effect_count() == 2).await);
    let status = engine.status("partner").unwrap();
    assert_eq!(status.rejected["client_certificate"], 1);
    let delivered = receiver.requests_for("c");
    assert_eq!(delivered.len(), 1);
    let events = engine
        .store()
        .recent_events(|r| r.pipeline == "partner", 10)
        .unwrap();
    let record = events.iter().find(|r| r.key == "c").unwrap();
    use sha2::Digest;
    let want = hex::encode(sha2::Sha256::digest(partner.chain[0].as_ref()));
    assert!(
        record
            .headers
            .contains(&("x-weft-client-cert-sha256".to_string(), want)),
        "{:?}",
        record.headers
    );
    // New certificate files (another CA): used by new connections, no restart.
    let next_ca = ca("next server CA");
    write_server(dir, &leaf(&next_ca, &["localhost"]));
    let mut moved = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if https(host.addr, &next_ca.cert, None, "/hooks/open", &body("f")).await == Ok(202) {
            moved = true;
            break;
        }
    }
    assert!(moved, "the new certificate is served");
    assert!(
        https(host.addr, root, None, "/hooks/open", &body("g"))
            .await
            .is_err(),
        "the old one is gone"
    );
    // A broken new pair leaves the working one in force.
    std::fs::write(dir.join("server.key"), "not a key").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        https(host.addr, &next_ca.cert, None, "/hooks/open", &body("h")).await,
        Ok(202)
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn required_client_certificates_refuse_at_the_handshake() {
    let receiver = Receiver::start(Behavior::Accept).await;
    let (server_ca, clients_ca) = (ca("server CA"), ca("clients CA"));
    let setup = setup(&receiver, "required");
    let dir = setup.dir.path();
    write_server(dir, &leaf(&server_ca, &["localhost"]));
    std::fs::write(dir.join("clients.pem"), &clients_ca.pem).unwrap();
    let host = RunningHost::start(setup.config()).await.unwrap();
    let body = lead("a", 1).to_string();
    let without = https(host.addr, &server_ca.cert, None, "/hooks/open", &body).await;
    assert!(without.is_err(), "{without:?}");
    let client = leaf(&clients_ca, &["c.example"]);
    assert_eq!(
        https(
            host.addr,
            &server_ca.cert,
            Some(&client),
            "/hooks/open",
            &body
        )
        .await,
        Ok(202)
    );
    assert_eq!(host.engine().status("open").unwrap().accepted, 1);
    host.shutdown().await;
}

#[test]
fn tls_files_that_do_not_load_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |extra: &str| {
        weft_host::config::Config::parse(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\ntls = {{ cert = \"{0}/c.pem\", key = \"{0}/k.pem\"{extra} }}\n[plugins]\ndir = \"p\"\n[[pipeline]]\nname = \"o\"\nsink = {{ plugin = \"s\" }}\n",
            dir.path().display()
        ))
    };
    let missing = weft_host::server::tls::Tls::load(cfg("").unwrap().server.tls.as_ref().unwrap())
        .err()
        .unwrap();
    assert!(missing.contains("c.pem"), "{missing}");
    let server = leaf(&ca("x"), &["localhost"]);
    std::fs::write(dir.path().join("c.pem"), &server.cert_pem).unwrap();
    std::fs::write(dir.path().join("k.pem"), "garbage").unwrap();
    let bad_key = weft_host::server::tls::Tls::load(cfg("").unwrap().server.tls.as_ref().unwrap())
        .err()
        .unwrap();
    assert!(
        bad_key.contains("k.pem") && bad_key.contains("private key"),
        "{bad_key}"
    );
    assert!(
        cfg(", client_auth = \"optional\"")
            .unwrap_err()
            .contains("needs client_ca")
    );
}
