//! The listener: accept connections and serve each with HTTP/1.1 until the
//! server is told to stop, then let requests in progress finish.

use super::Shared;
use super::routes::route;
use crate::engine::Engine;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub(super) async fn serve(
    listener: TcpListener,
    engine: Engine,
    state: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (engine, state) = (engine.clone(), state.clone());
                let mut conn_stopped = stopped.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let (engine, state) = (engine.clone(), state.clone());
                        async move { Ok::<_, std::convert::Infallible>(route(&engine, &state, req).await) }
                    });
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = conn_stopped.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = stopped.changed() => break,
        }
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
