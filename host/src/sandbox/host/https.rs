//! Pooled HTTPS for plugin requests: a connector for hyper's pooled client
//! that resolves through the egress check (public addresses only, unless
//! the checks are off), connects within the connect timeout, and makes the
//! TLS handshake with the config of the request's origin (see
//! [`super::trust`]). Connections are then kept and reused per origin, so
//! a sink delivering to one API pays one handshake, not one per event.

use super::trust::OutboundTls;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Connects HTTPS origins for the pooled client.
#[derive(Clone)]
pub struct HttpsConnector {
    pub(super) trust: Arc<OutboundTls>,
    pub(super) guarded: bool,
    pub(super) connect_timeout: Duration,
}

/// The handshake failed: the origin's certificate, or ours.
#[derive(Debug)]
pub struct TlsFailure(pub String);

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// The `TlsFailure` in an error's chain, if there is one.
pub fn find_tls_failure<'a>(
    mut e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a TlsFailure> {
    loop {
        if let Some(t) = e.downcast_ref::<TlsFailure>() {
            return Some(t);
        }
        e = e.source()?;
    }
}

/// One TLS connection.
pub struct HttpsConn(TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>);

impl Connection for HttpsConn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for HttpsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for HttpsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for HttpsConnector {
    type Response = HttpsConn;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpsConn, Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

impl HttpsConnector {
    /// A connector trusting `trust`; `guarded` keeps to public addresses
    /// (plugin requests), off for the CLI reaching its own host.
    pub fn new(trust: Arc<OutboundTls>, guarded: bool, connect_timeout: Duration) -> Self {
        HttpsConnector {
            trust,
            guarded,
            connect_timeout,
        }
    }

    async fn connect(&self, uri: http::Uri) -> Result<HttpsConn, Error> {
        let host = uri.host().ok_or("the URL has no host")?.to_string();
        let port = uri.port_u16().unwrap_or(443);
        let addrs: Vec<std::net::SocketAddr> = if self.guarded {
            super::net::resolve(&host, port).await?
        } else {
            tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect()
        };
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&addrs[..]),
        )
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )?;
        let (config, upstream) = self.trust.for_uri(&uri);
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))?
            .map_err(|e| {
                let origin = format!("https://{host}:{port}");
                let hint = match upstream {
                    Some(u) => format!("the trust configured in [upstreams.{u:?}] does not cover it"),
                    None => format!(
                        "if it is signed by a private CA, add [upstreams.\"{origin}\"] ca = \"that-ca.pem\" (or system_roots = true)"
                    ),
                };
                TlsFailure(format!("TLS with {origin} failed ({e}); {hint}"))
            })?;
        Ok(HttpsConn(TokioIo::new(tls)))
    }
}
