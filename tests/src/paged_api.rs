//! A small REST API of contacts for polling tests: `GET /contacts?
//! updated_since=V&page_token=T` returns the contacts whose version is at
//! least `V`, ordered by (version, id), five per page, with keyset page
//! tokens; contacts can be changed while a poller pages through them.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// Items per page.
pub const PAGE: usize = 5;

#[derive(Default)]
struct State {
    /// (id, version)
    contacts: Vec<(u32, u64)>,
    next_version: u64,
    requests: usize,
}

/// The API; stops when dropped.
pub struct PagedApi {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn query(uri: &hyper::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.replace("%3A", ":"))
    })
}

impl PagedApi {
    /// Serve `n` contacts, versions 1..=n.
    pub async fn start(n: u32) -> PagedApi {
        let state = Arc::new(Mutex::new(State {
            contacts: (1..=n).map(|id| (id, id as u64)).collect(),
            next_version: n as u64 + 1,
            requests: 0,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("api binds");
        let addr = listener.local_addr().expect("api addr");
        let task = crate::serve(listener, state.clone(), |state, req| async move {
            let body = answer(&state, req.uri());
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok::<_, std::convert::Infallible>(resp)
        });
        PagedApi { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/contacts`
    pub fn url(&self) -> String {
        format!("http://{}/contacts", self.addr)
    }

    /// Change `count` contacts (each gets a new, higher version).
    pub fn touch(&self, count: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = s.contacts.len();
        for _ in 0..count {
            let i = rand::random_range(0..n);
            let v = s.next_version;
            s.next_version += 1;
            s.contacts[i].1 = v;
        }
    }

    /// Every contact's current `id:version` key.
    pub fn keys(&self) -> Vec<String> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.contacts
            .iter()
            .map(|(id, v)| format!("{id}:{v}"))
            .collect()
    }

    /// Requests served.
    pub fn requests(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .requests
    }
}

impl Drop for PagedApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(state: &Mutex<State>, uri: &hyper::Uri) -> String {
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.requests += 1;
    let since: u64 = query(uri, "updated_since")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Keyset paging: the token is the (version, id) of the last item sent.
    let after: Option<(u64, u32)> = query(uri, "page_token").and_then(|t| {
        let (v, id) = t.split_once(':')?;
        Some((v.parse().ok()?, id.parse().ok()?))
    });
    let mut rows: Vec<(u64, u32)> = s
        .contacts
        .iter()
        .filter(|(_, v)| *v >= since)
        .map(|(id, v)| (*v, *id))
        .filter(|row| after.is_none_or(|a| *row > a))
        .collect();
    rows.sort_unstable();
    let more = rows.len() > PAGE;
    rows.truncate(PAGE);
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|(v, id)| serde_json::json!({ "id": id, "updated_at": v, "name": format!("contact {id}") }))
        .collect();
    let next = if more {
        rows.last().map(|(v, id)| format!("{v}:{id}"))
    } else {
        None
    };
    serde_json::json!({ "items": items, "next_page_token": next }).to_string()
}
