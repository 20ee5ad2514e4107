//! A recording HTTP receiver on 127.0.0.1: the downstream system in tests,
//! benchmarks and the quickstart. It records every request, can be told to
//! fail, and counts effects by idempotency key like an idempotent API would.
//!
//! A request with an `Idempotency-Keys` header is a batch (a JSON array or
//! NDJSON, gzipped or not): each item is recorded and answered as if it
//! had come alone, and the answer lists every item's status
//! (`{"items": [{"status": 200}, …]}`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// One way to fail a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status.
    Status(u16),
    /// Answer 429 with `Retry-After: secs`.
    RetryAfter(u64),
    /// Wait this long, then answer 200 (a sink timeout shorter than this fails).
    Slow(Duration),
    /// Close the connection without answering, without taking effect.
    Reset,
    /// Take effect, then close the connection without answering.
    CommitThenDrop,
}

/// How the receiver answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// 200 for everything.
    Accept,
    /// Fail the first `failures` requests of each key with `status`, then 200.
    FailFirst {
        /// Failures per key.
        failures: usize,
        /// Status of a failure.
        status: u16,
    },
    /// Fail the first `failures` requests of each key with `fault`, then 200.
    FaultFirst {
        /// Failures per key.
        failures: usize,
        /// How they fail.
        fault: Fault,
    },
    /// Always this status.
    Always(u16),
    /// This status for keys starting with `prefix`, 200 for the others.
    FailKeys {
        /// Key prefix.
        prefix: String,
        /// Status.
        status: u16,
    },
    /// This status for the first `times` requests of exactly this key, 200
    /// for everything else.
    FailKeyTimes {
        /// The key.
        key: String,
        /// How many of its requests fail.
        times: usize,
        /// Status.
        status: u16,
    },
    /// `302 Found` to this URL.
    Redirect(String),
    /// 200 with a body of this many bytes.
    Body(usize),
    /// 200 for everything, each answer held back this long.
    Slow(Duration),
    /// This status, with every request header echoed in the body (a careless
    /// upstream that reflects credentials into its error pages).
    EchoHeaders(u16),
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
    /// `traceparent` header.
    pub traceparent: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// The raw body.
    pub raw_body: Bytes,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// Status it answered (0: the connection was dropped); for an item of
    /// a batch, the item's own status.
    pub status: u16,
    /// Events in the request it came in (1 unless it came in a batch).
    pub batch: usize,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    behavior: Option<Behavior>,
    requests: Vec<Delivery>,
    attempts_by_key: HashMap<String, usize>,
    effects_by_key: HashMap<String, usize>,
    in_flight: usize,
    peak_in_flight: usize,
    batches: Vec<usize>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Delivery {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
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
                        async move { answer(&state, req).await }
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

    /// Requests of one key, in arrival order.
    pub fn requests_for(&self, key: &str) -> Vec<Delivery> {
        self.lock()
            .requests
            .iter()
            .filter(|d| d.key == key)
            .cloned()
            .collect()
    }

    /// Keys that took effect, with how many times each did.
    pub fn effects(&self) -> HashMap<String, usize> {
        self.lock().effects_by_key.clone()
    }

    /// How many distinct keys took effect.
    pub fn effect_count(&self) -> usize {
        self.lock().effects_by_key.len()
    }

    /// Batch requests so far, as the number of items in each.
    pub fn batches(&self) -> Vec<usize> {
        self.lock().batches.clone()
    }

    /// Requests being answered now.
    pub fn in_flight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
    }

    /// Most requests it was answering at the same moment.
    pub fn peak_in_flight(&self) -> usize {
        self.lock().peak_in_flight
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

/// The connection is dropped instead of answered.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// Counts a request as in flight until dropped.
struct InFlight<'a>(&'a Mutex<State>);

impl<'a> InFlight<'a> {
    fn enter(state: &'a Mutex<State>) -> Self {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.in_flight += 1;
        s.peak_in_flight = s.peak_in_flight.max(s.in_flight);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).in_flight -= 1;
    }
}

async fn answer(
    state: &Mutex<State>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let _in_flight = InFlight::enter(state);
    let arrived = Instant::now();
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
    let traceparent = header("traceparent");
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let raw_body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some((_, keys)) = headers.iter().find(|(k, _)| k == "idempotency-keys") {
        let keys = keys.clone();
        return Ok(answer_batch(
            state,
            path,
            &keys,
            correlation_id,
            headers,
            raw_body,
            arrived,
        ));
    }
    let body = serde_json::from_slice(&raw_body).unwrap_or(serde_json::Value::Null);
    let mut reply_body = Bytes::new();
    let mut location = None;
    let (fault, status) = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        let attempts = {
            let n = s.attempts_by_key.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        let fault = match s.behavior.clone().unwrap_or(Behavior::Accept) {
            Behavior::Accept => None,
            Behavior::Slow(d) => Some(Fault::Slow(d)),
            Behavior::FailFirst { failures, status } if attempts <= failures => {
                Some(Fault::Status(status))
            }
            Behavior::FaultFirst { failures, fault } if attempts <= failures => Some(fault),
            Behavior::FailFirst { .. } | Behavior::FaultFirst { .. } => None,
            Behavior::Always(status) if (200..300).contains(&status) => None,
            Behavior::Always(status) => Some(Fault::Status(status)),
            Behavior::FailKeys { prefix, status } if key.starts_with(&prefix) => {
                Some(Fault::Status(status))
            }
            Behavior::FailKeys { .. } => None,
            Behavior::FailKeyTimes {
                key: failing,
                times,
                status,
            } if key == failing && attempts <= times => Some(Fault::Status(status)),
            Behavior::FailKeyTimes { .. } => None,
            Behavior::Body(n) => {
                reply_body = Bytes::from(vec![b'x'; n]);
                None
            }
            Behavior::Redirect(to) => {
                location = Some(to);
                Some(Fault::Status(302))
            }
            Behavior::EchoHeaders(status) => {
                let mut sorted = headers.clone();
                sorted.sort_by_key(|(k, _)| k != "authorization");
                let text: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                reply_body = Bytes::from(format!("refused; you sent:\n{}", text.join("\n")));
                Some(Fault::Status(status))
            }
        };
        let status = match &fault {
            None | Some(Fault::Slow(_)) => 200,
            Some(Fault::Status(s)) => *s,
            Some(Fault::RetryAfter(_)) => 429,
            Some(Fault::Reset) | Some(Fault::CommitThenDrop) => 0,
        };
        let commits = status == 200 || fault == Some(Fault::CommitThenDrop);
        if commits {
            *s.effects_by_key.entry(key.clone()).or_default() += 1;
        }
        let record = Delivery {
            path,
            key,
            correlation_id,
            traceparent,
            body,
            raw_body,
            headers,
            status,
            batch: 1,
            at: arrived,
        };
        s.requests.push(record);
        (fault, status)
    };
    match fault {
        // Slow: it took effect, but the answer comes late.
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::Reset) | Some(Fault::CommitThenDrop) => return Err(Dropped),
        _ => {}
    }
    let mut resp = Response::new(Full::new(reply_body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(to) = location
        && let Ok(v) = hyper::header::HeaderValue::from_str(&to)
    {
        resp.headers_mut().insert(hyper::header::LOCATION, v);
    }
    if let Some(Fault::RetryAfter(secs)) = fault {
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from(secs),
        );
    }
    Ok(resp)
}

/// Percent-decoding of one key of an `Idempotency-Keys` list.
fn decode_key(k: &str) -> String {
    crate::percent_decode(k)
}

/// One batch request: each item answered as if it came alone (statuses
/// only; slow and dropped answers are for single requests).
fn answer_batch(
    state: &Mutex<State>,
    path: String,
    keys: &str,
    correlation_id: String,
    headers: Vec<(String, String)>,
    raw_body: Bytes,
    arrived: Instant,
) -> Response<Full<Bytes>> {
    use std::io::Read;
    let gzipped = headers
        .iter()
        .any(|(k, v)| k == "content-encoding" && v == "gzip");
    let mut body = raw_body.to_vec();
    if gzipped {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(raw_body.as_ref())
            .read_to_end(&mut out)
            .is_err()
        {
            return status_only(400);
        }
        body = out;
    }
    let items: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(serde_json::Value::Array(items)) => items,
        _ => match String::from_utf8(body)
            .ok()
            .and_then(|t| t.lines().map(|l| serde_json::from_str(l).ok()).collect())
        {
            Some(items) => items,
            None => return status_only(400),
        },
    };
    let keys: Vec<String> = keys.split(',').map(decode_key).collect();
    if keys.len() != items.len() {
        return status_only(400);
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.batches.push(items.len());
    let n = items.len();
    let mut statuses = Vec::with_capacity(n);
    for (key, item) in keys.into_iter().zip(items) {
        let attempts = {
            let a = s.attempts_by_key.entry(key.clone()).or_default();
            *a += 1;
            *a
        };
        let status = match s.behavior.clone().unwrap_or(Behavior::Accept) {
            Behavior::FailFirst { failures, status } if attempts <= failures => status,
            Behavior::Always(status) => status,
            Behavior::FailKeys { prefix, status } if key.starts_with(&prefix) => status,
            Behavior::FailKeyTimes {
                key: failing,
                times,
                status,
            } if key == failing && attempts <= times => status,
            _ => 200,
        };
        if (200..300).contains(&status) {
            *s.effects_by_key.entry(key.clone()).or_default() += 1;
        }
        statuses.push(serde_json::json!({ "status": status }));
        let raw = Bytes::from(item.to_string());
        s.requests.push(Delivery {
            path: path.clone(),
            key,
            correlation_id: correlation_id.clone(),
            traceparent: String::new(),
            body: item,
            raw_body: raw,
            headers: headers.clone(),
            status,
            batch: n,
            at: arrived,
        });
    }
    let body = serde_json::json!({ "items": statuses }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status_only(status: u16) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp
}
