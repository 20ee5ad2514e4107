//! A recording HTTP receiver on 127.0.0.1: the downstream system in tests,
//! benchmarks and the quickstart. It records every request, can be told to
//! fail, and counts effects by idempotency key like an idempotent API would.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// 200 for everything.
    Accept,
    /// Answer `status` to the first `failures` requests of each key, then 200.
    FailFirst {
        /// Failures per key.
        failures: usize,
        /// Status of a failure.
        status: u16,
    },
    /// Always this status.
    Always(u16),
}

/// One request the receiver took.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Request path.
    pub path: String,
    /// `Idempotency-Key` header.
    pub key: String,
    /// `X-Correlation-Id` header.
    pub correlation_id: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Status it answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    behavior: Option<Behavior>,
    requests: Vec<Delivery>,
    attempts_by_key: HashMap<String, usize>,
    effects_by_key: HashMap<String, usize>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Start on a free port of 127.0.0.1.
    pub async fn start(behavior: Behavior) -> Receiver {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), behavior).await
    }

    /// Start on a given address.
    pub async fn start_on(addr: SocketAddr, behavior: Behavior) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("receiver binds");
        let addr = listener.local_addr().expect("receiver addr");
        let state = Arc::new(Mutex::new(State {
            behavior: Some(behavior),
            ..State::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Change how it answers from now on.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.lock().behavior = Some(behavior);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Delivery> {
        self.lock().requests.clone()
    }

    /// Requests answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<Delivery> {
        self.lock()
            .requests
            .iter()
            .filter(|d| (200..300).contains(&d.status))
            .cloned()
            .collect()
    }

    /// Keys that took effect, with how many 2xx answers each got.
    pub fn effects(&self) -> HashMap<String, usize> {
        self.lock().effects_by_key.clone()
    }

    /// How many distinct keys took effect.
    pub fn effect_count(&self) -> usize {
        self.lock().effects_by_key.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    state: &Mutex<State>,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let key = header("idempotency-key");
    let correlation_id = header("x-correlation-id");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let attempts = {
        let n = s.attempts_by_key.entry(key.clone()).or_default();
        *n += 1;
        *n
    };
    let status = match s.behavior.clone().unwrap_or(Behavior::Accept) {
        Behavior::Accept => 200,
        Behavior::FailFirst { failures, status } if attempts <= failures => status,
        Behavior::FailFirst { .. } => 200,
        Behavior::Always(status) => status,
    };
    if (200..300).contains(&status) {
        *s.effects_by_key.entry(key.clone()).or_default() += 1;
    }
    s.requests.push(Delivery {
        path,
        key,
        correlation_id,
        body,
        status,
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp
}
