//! The listener: accept connections within the connection limits, serve
//! each with HTTP/1.1 under a header timeout (which also closes idle
//! keep-alive connections), back off when accepting fails, and on stop let
//! requests in progress finish.

use super::connections::{Connections, Limits};
use super::routes::route;
use super::{Plane, Shared};
use crate::perimeter::{ClientCert, Peer};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How the listener treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    /// Connections, in all and per peer address.
    pub connections: Limits,
    /// Longest wait for a request's headers, and for the next request on
    /// an idle keep-alive connection.
    pub header_timeout: Duration,
}

pub(super) async fn serve(
    listener: TcpListener,
    plane: Plane,
    state: Arc<Shared>,
    limits: ListenerLimits,
    tls: Option<Arc<super::tls::Tls>>,
    mut stopped: watch::Receiver<bool>,
) {
    let conns = Connections::new(limits.connections);
    let mut connections = tokio::task::JoinSet::new();
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => {
                        backoff = Duration::ZERO;
                        a
                    }
                    Err(e) => {
                        // Out of file descriptors, most often: wait instead of
                        // spinning, so the connections being served can finish.
                        backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                        tracing::warn!(open = conns.open(), retry_in_ms = backoff.as_millis() as u64,
                            "cannot accept a connection: {e}");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                };
                let Some(admitted) = conns.admit(peer.ip()) else {
                    tracing::debug!(%peer, "connection refused: every connection is busy");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (state, tls, conn_stopped) = (state.clone(), tls.clone(), stopped.clone());
                connections.spawn(async move {
                    let admitted = Arc::new(admitted);
                    let Some(tls) = tls else {
                        let conn = Conn { plane, state, peer, client: None, limits, admitted };
                        return conn.serve(stream, conn_stopped).await;
                    };
                    // The handshake gets as long as a request's headers do.
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    let stream = match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake refused: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake did not finish in time");
                            return;
                        }
                    };
                    let client = super::tls::client_cert(stream.get_ref().1);
                    let conn = Conn { plane, state, peer, client, limits, admitted };
                    conn.serve(stream, conn_stopped).await
                });
            }
            _ = stopped.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// One accepted connection (in the clear or TLS) and what its requests see.
struct Conn {
    plane: Plane,
    state: Arc<Shared>,
    peer: std::net::SocketAddr,
    client: Option<ClientCert>,
    limits: ListenerLimits,
    admitted: Arc<super::connections::Admitted>,
}

impl Conn {
    /// Serve HTTP/1.1 on `stream` until the client leaves, the connection
    /// is evicted, or the server stops (letting requests in progress end).
    async fn serve<S>(self, stream: S, mut stopped: watch::Receiver<bool>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            plane,
            state,
            peer,
            client,
            limits,
            admitted,
        } = self;
        let marker = admitted.clone();
        let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            let state = state.clone();
            let in_progress = marker.request();
            req.extensions_mut().insert(Peer(peer.ip()));
            if let Some(c) = &client {
                req.extensions_mut().insert(c.clone());
            }
            async move {
                // What is in force when the request came in.
                let current = state.live.current();
                let resp = route(plane, &current, &state, req).await;
                drop(in_progress);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = admitted.evicted.notified() => {}
            _ = stopped.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}
