//! An OAuth 2.0 authorization server and a protected API in one loopback
//! server, for the tests of the host's OAuth clients: `POST /token` takes
//! `client_credentials` and `refresh_token` grants (rotating refresh
//! tokens, and refusing one used twice, when asked), and every other path
//! answers 200 to a valid bearer token and 401 otherwise.

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// One request to `/token`.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Its form fields (secrets included: the server checks them).
    pub form: BTreeMap<String, String>,
    /// Whether the client authenticated (Basic or in the form).
    pub client_ok: bool,
}

/// What the server does and saw.
#[derive(Debug, Default)]
pub struct AuthState {
    /// The client it knows.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// `expires_in` of the access tokens it issues.
    pub expires_in: u64,
    /// Issue a new refresh token at each refresh and refuse the old one.
    pub rotate: bool,
    /// Answer `/token` with this status (and an RFC 6749 error) instead.
    pub failing: Option<u16>,
    /// Answer every API request 401, whatever its token.
    pub refuse_all: bool,
    /// Access tokens it accepts.
    pub valid_access: HashSet<String>,
    /// Refresh tokens it accepts.
    pub valid_refresh: HashSet<String>,
    /// Every token it issued (access and refresh), in order.
    pub issued: Vec<String>,
    /// Every `/token` request.
    pub token_requests: Vec<TokenRequest>,
    /// Every API request: (bearer token, status answered).
    pub api_requests: Vec<(String, u16)>,
    counter: u64,
}

/// The server; stopped when dropped.
pub struct AuthServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it does and saw.
    pub state: Arc<Mutex<AuthState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn form_of(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| crate::percent_decode(&s.replace('+', " "));
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn json(status: u16, body: serde_json::Value) -> Response<Full<bytes::Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("response")
}

async fn answer(
    state: &Mutex<AuthState>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<bytes::Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = state.lock().expect("auth state");
    if path != "/token" {
        let bearer = auth.strip_prefix("Bearer ").unwrap_or("").to_string();
        let status = if s.valid_access.contains(&bearer) && !s.refuse_all {
            200
        } else {
            401
        };
        s.api_requests.push((bearer, status));
        return Ok(json(status, serde_json::json!({ "ok": status == 200 })));
    }
    let form = form_of(&body);
    use base64::Engine as _;
    let basic = auth
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let client_ok = basic.as_deref() == Some(&format!("{}:{}", s.client_id, s.client_secret))
        || (form.get("client_id") == Some(&s.client_id)
            && form.get("client_secret") == Some(&s.client_secret));
    s.token_requests.push(TokenRequest {
        form: form.clone(),
        client_ok,
    });
    if let Some(status) = s.failing {
        return Ok(json(
            status,
            serde_json::json!({"error": "temporarily_unavailable", "error_description": "try later"}),
        ));
    }
    if !client_ok {
        return Ok(json(401, serde_json::json!({"error": "invalid_client"})));
    }
    let mut new_refresh = None;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some("refresh_token") => {
            let given = form.get("refresh_token").cloned().unwrap_or_default();
            if !s.valid_refresh.contains(&given) {
                return Ok(json(
                    400,
                    serde_json::json!({"error": "invalid_grant", "error_description": "refresh token is not valid"}),
                ));
            }
            if s.rotate {
                s.valid_refresh.remove(&given);
                s.counter += 1;
                let next = format!("rt-{}-{:016x}", s.counter, rand::random::<u64>());
                s.valid_refresh.insert(next.clone());
                s.issued.push(next.clone());
                new_refresh = Some(next);
            }
        }
        _ => {
            return Ok(json(
                400,
                serde_json::json!({"error": "unsupported_grant_type"}),
            ));
        }
    }
    s.counter += 1;
    let access = format!("at-{}-{:016x}", s.counter, rand::random::<u64>());
    s.valid_access.insert(access.clone());
    s.issued.push(access.clone());
    let mut answer = serde_json::json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": s.expires_in,
    });
    if let Some(r) = new_refresh {
        answer["refresh_token"] = r.into();
    }
    Ok(json(200, answer))
}

impl AuthServer {
    /// Start on a loopback port, knowing client `client_id` with `secret`.
    pub async fn start(client_id: &str, secret: &str, expires_in: u64) -> AuthServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(AuthState {
            client_id: client_id.into(),
            client_secret: secret.into(),
            expires_in,
            ..AuthState::default()
        }));
        let task = crate::serve(listener, state.clone(), |state, req| async move {
            answer(&state, req).await
        });
        AuthServer { addr, state, task }
    }

    /// `http://127.0.0.1:PORT{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Change what the server does.
    pub fn with<T>(&self, f: impl FnOnce(&mut AuthState) -> T) -> T {
        f(&mut self.state.lock().expect("auth state"))
    }

    /// Requests to `/token` so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.with(|s| s.token_requests.clone())
    }

    /// API requests answered 200 so far.
    pub fn api_ok(&self) -> usize {
        self.with(|s| s.api_requests.iter().filter(|(_, st)| *st == 200).count())
    }

    /// Make every access token issued so far invalid (the API answers 401).
    pub fn revoke_access(&self) {
        self.with(|s| s.valid_access.clear());
    }

    /// A refresh token the server accepts, as an operator would get once.
    pub fn grant_refresh_token(&self) -> String {
        self.with(|s| {
            let t = format!("rt-0-{:016x}", rand::random::<u64>());
            s.valid_refresh.insert(t.clone());
            s.issued.push(t.clone());
            t
        })
    }
}
