//! The HTTP front door: one listener for webhooks, health, `/metrics` and
//! the admin API; routing; JSON responses; the admin API itself.

pub mod api;
mod connections;
mod listener;
pub mod metrics;
pub mod query;
mod routes;

use crate::engine::Engine;
use crate::trigger::Triggers;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) triggers: Arc<Triggers>,
    pub(crate) api: api::ApiState,
    /// Longest time to receive a request body.
    pub(crate) body_timeout: Duration,
}

/// A running server.
pub struct Server {
    /// The address it is bound to.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} ({reason}); is another process using the port? Change server.listen or pass --listen"
)]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    pub reason: String,
}

impl Server {
    /// Bind `addr` and serve `engine`'s webhooks, health, metrics and API.
    pub async fn start(
        config: &crate::config::ServerConfig,
        engine: Engine,
        triggers: Arc<Triggers>,
        api: api::ApiState,
    ) -> Result<Server, BindError> {
        let addr = config.listen;
        let limits = listener::ListenerLimits {
            connections: connections::Limits {
                max: config.max_connections,
                per_peer: config.max_connections_per_peer,
            },
            header_timeout: Duration::from_millis(config.header_timeout_ms),
        };
        let bind_err = |e: std::io::Error| BindError {
            addr,
            reason: e.to_string(),
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(listener::serve(
            listener,
            engine,
            Arc::new(Shared {
                triggers,
                api,
                body_timeout: Duration::from_millis(config.body_timeout_ms),
            }),
            limits,
            stopped,
        ));
        Ok(Server { addr, stop, task })
    }

    /// Stop accepting and let requests in progress finish, up to `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(grace, self.task).await;
    }

    /// Wait until the server task ends (it ends only on shutdown).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}
