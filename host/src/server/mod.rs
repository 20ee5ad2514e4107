//! The HTTP front door: one listener for webhooks, health, `/metrics` and
//! the admin API; routing; JSON responses; the admin API itself.

pub mod api;
pub(crate) mod connections;
mod listener;
pub mod live;
pub mod metrics;
pub mod query;
mod routes;
pub mod tls;
mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plane {
    /// Webhooks and health: meant to face the internet.
    Public,
    /// The admin API, `/metrics` and health: loopback unless tokens guard it.
    Admin,
}

/// What every request handler shares.
pub(crate) struct Shared {
    pub(crate) live: Arc<live::Live>,
    /// Longest time to receive a request body.
    pub(crate) body_timeout: Duration,
}

/// A running server: the public and the admin listener.
pub struct Server {
    /// The public listener's address (webhooks, health).
    pub addr: SocketAddr,
    /// The admin listener's address (API, metrics, health).
    pub admin_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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
    /// Bind the public and the admin listener and serve the webhooks,
    /// health, metrics and API of what `live` holds.
    pub async fn start(
        config: &crate::config::ServerConfig,
        live: Arc<live::Live>,
        tls: [Option<Arc<tls::Tls>>; 2],
    ) -> Result<Server, BindError> {
        let limits = listener::ListenerLimits {
            connections: connections::Limits {
                max: config.max_connections,
                per_peer: config.max_connections_per_peer,
            },
            header_timeout: Duration::from_millis(config.header_timeout_ms),
        };
        let shared = Arc::new(Shared {
            live,
            body_timeout: Duration::from_millis(config.body_timeout_ms),
        });
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        let [public_tls, admin_tls] = tls;
        for (plane, addr, tls) in [
            (Plane::Public, config.listen, public_tls),
            (Plane::Admin, config.admin_addr(), admin_tls),
        ] {
            let bind_err = |e: std::io::Error| BindError {
                addr,
                reason: e.to_string(),
            };
            let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
            bound.push(listener.local_addr().map_err(bind_err)?);
            tasks.push(tokio::spawn(listener::serve(
                listener,
                plane,
                shared.clone(),
                limits,
                tls,
                stopped.clone(),
            )));
        }
        Ok(Server {
            addr: bound[0],
            admin_addr: bound[1],
            stop,
            tasks,
        })
    }

    /// Stop accepting and let requests in progress finish, up to `grace`.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let listeners = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        let _ = tokio::time::timeout(grace, listeners).await;
    }

    /// Wait until the listeners end (they end only on shutdown).
    pub async fn wait(&mut self) {
        for task in &mut self.tasks {
            let _ = task.await;
        }
    }
}
