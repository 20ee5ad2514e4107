//! OAuth 2.0 clients held by the host: it gets access tokens from each
//! `[oauth.NAME]` token endpoint, caches them, refreshes them before they
//! expire (and once when an API answers 401), and puts them on plugin
//! requests at the last moment. Plugins name the credential; they never
//! see a token.
//!
//! Token requests go through the same pooled clients, connect-time checks,
//! outbound trust and per-origin rate limits as plugin requests. Tokens are
//! registered for masking as soon as they arrive, and only kept in memory;
//! a refresh token the server rotates in is kept in the store — sealed
//! under a key derived from the client secret (and the store key, when the
//! store is encrypted) — and durable before the new access token is used.
//! A failing token endpoint makes the requests that need a token fail as
//! transient errors (so events are retried with their backoff), and the
//! endpoint itself is tried again only after a backoff of its own.

use super::egress::{HttpClient, send_checked};
use crate::config::{Config, OAuthClientAuth, OAuthConfig, OAuthGrant};
use crate::limit::UpstreamLimits;
use crate::secrets::Secrets;
use crate::store::{Keyring, Store};
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for the token endpoint.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest token endpoint answer read.
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Least time between two refreshes an API's 401 asks for: an API that
/// refuses every token cannot make the host hammer the token endpoint.
const REFUSED_EVERY: Duration = Duration::from_secs(1);
/// First wait after a failed token request; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One credential's state, as `weft credentials status` and the API show
/// it: never a token or a secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CredentialStatus {
    /// The credential's name.
    pub name: String,
    /// `secret` (a static value) or `oauth`.
    pub kind: String,
    /// The plugins whose grants attach it.
    pub used_by: Vec<String>,
    /// `oauth`: `client_credentials` or `refresh_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// `oauth`: the token endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// `oauth`: the scopes asked for.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub scopes: Vec<String>,
    /// `loaded` (a secret), `valid`, `no token yet`, `expired` or `failing`.
    pub state: String,
    /// When the current access token expires (ms since the epoch), when
    /// the server said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_until_ms: Option<u64>,
    /// When a token was last obtained (ms since the epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_ms: Option<u64>,
    /// Tokens obtained since the host started.
    pub refreshes: u64,
    /// Refresh tokens the server rotated in (kept in the store).
    pub rotations: u64,
    /// Failed token requests since the host started.
    pub failures: u64,
    /// Why the latest token request failed, while it has not succeeded
    /// since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An access token and when it goes stale.
struct Access {
    token: String,
    /// When it should be refreshed (before it expires); `None` when the
    /// server gave no lifetime: used until an API refuses it.
    stale_at: Option<Instant>,
    expires_ms: Option<u64>,
}

#[derive(Default)]
struct Tokens {
    access: Option<Access>,
    /// The token before the current one, still masked.
    previous: Option<String>,
    /// The refresh token to use next (`refresh_token` clients).
    refresh: Option<String>,
    /// Whether the refresh token kept in the store was read.
    loaded: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// When a 401 last dropped the token.
    last_refused: Option<Instant>,
}

/// What is kept in the store for a `refresh_token` client.
#[derive(Serialize, Deserialize)]
struct Kept {
    /// SHA-256 (hex) of the first refresh token the operator configured:
    /// a new one there wins over what is kept.
    from: String,
    /// The refresh token, sealed under the client secret's key (base64),
    /// or as it is when there is no client secret (the store seals it).
    refresh: String,
}

/// One OAuth client.
pub struct OAuthClient {
    name: String,
    config: OAuthConfig,
    client_secret: Option<String>,
    first_refresh: Option<String>,
    store: Arc<dyn Store>,
    /// The pooled clients and whether egress checks apply; replaced when
    /// a reload builds new ones.
    http: Mutex<(HttpClient, bool, Arc<UpstreamLimits>)>,
    tokens: tokio::sync::Mutex<Tokens>,
    status: Mutex<CredentialStatus>,
}

fn now_ms() -> u64 {
    crate::store::now_ms()
}

impl OAuthClient {
    fn new(
        name: &str,
        config: &OAuthConfig,
        secrets: &Secrets,
        store: Arc<dyn Store>,
        http: (HttpClient, bool, Arc<UpstreamLimits>),
    ) -> OAuthClient {
        let get = |n: &Option<String>| n.as_deref().and_then(|n| secrets.get(n)).map(String::from);
        OAuthClient {
            name: name.to_string(),
            config: config.clone(),
            client_secret: get(&config.client_secret),
            first_refresh: get(&config.refresh_token),
            store,
            http: Mutex::new(http),
            tokens: tokio::sync::Mutex::new(Tokens {
                backoff: MIN_BACKOFF,
                ..Tokens::default()
            }),
            status: Mutex::new(CredentialStatus {
                name: name.to_string(),
                kind: "oauth".into(),
                grant: Some(
                    match config.grant {
                        OAuthGrant::ClientCredentials => "client_credentials",
                        OAuthGrant::RefreshToken => "refresh_token",
                    }
                    .into(),
                ),
                token_url: Some(config.token_url.clone()),
                scopes: config.scopes.clone(),
                state: "no token yet".into(),
                ..CredentialStatus::default()
            }),
        }
    }

    /// Whether this client was built from the same settings and secrets.
    fn same_as(&self, config: &OAuthConfig, secrets: &Secrets) -> bool {
        let get = |n: &Option<String>| n.as_deref().and_then(|n| secrets.get(n));
        self.config == *config
            && self.client_secret.as_deref() == get(&config.client_secret)
            && self.first_refresh.as_deref() == get(&config.refresh_token)
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its state, without any secret.
    pub fn status(&self) -> CredentialStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if s.state == "valid" && s.valid_until_ms.is_some_and(|v| v <= now_ms()) {
            s.state = "expired".into();
        }
        s
    }

    fn set_status(&self, f: impl FnOnce(&mut CredentialStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A valid access token: the cached one, or a new one from the token
    /// endpoint (one request at a time, however many callers wait).
    pub async fn token(&self) -> Result<String, String> {
        let mut t = self.tokens.lock().await;
        if let Some(a) = &t.access
            && a.stale_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(a.token.clone());
        }
        if let Some(at) = t.retry_at
            && Instant::now() < at
        {
            let last = self.status().last_error.unwrap_or_default();
            return Err(format!(
                "credential {} has no token: its token endpoint failed ({last}); tried again in {}s",
                self.name,
                at.saturating_duration_since(Instant::now())
                    .as_secs()
                    .max(1)
            ));
        }
        match self.fetch(&mut t).await {
            Ok(token) => {
                t.backoff = MIN_BACKOFF;
                t.retry_at = None;
                Ok(token)
            }
            Err(why) => {
                let why = crate::redact::mask(&why).into_owned();
                t.retry_at = Some(Instant::now() + t.backoff);
                t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                tracing::warn!(credential = %self.name, "token request failed: {why}");
                self.set_status(|s| {
                    s.failures += 1;
                    s.state = "failing".into();
                    s.last_error = Some(why.clone());
                });
                Err(format!("credential {} has no token: {why}", self.name))
            }
        }
    }

    /// An API refused `token` (401): drop it, so the next [`Self::token`]
    /// gets a new one. A token already replaced is left alone, and a 401
    /// drops a token at most once every [`REFUSED_EVERY`].
    pub async fn refused(&self, token: &str) {
        let mut t = self.tokens.lock().await;
        if t.access.as_ref().is_some_and(|a| a.token == token)
            && t.last_refused
                .is_none_or(|at| at.elapsed() >= REFUSED_EVERY)
        {
            t.access = None;
            t.last_refused = Some(Instant::now());
            tracing::info!(credential = %self.name, "an API refused the access token (401); getting a new one");
        }
    }

    /// The key the kept refresh token is sealed under: derived from the
    /// client secret.
    fn sealing(&self) -> Option<Keyring> {
        use sha2::Digest;
        let secret = self.client_secret.as_ref()?;
        let key: [u8; 32] = sha2::Sha256::new()
            .chain_update(b"weft oauth refresh token\0")
            .chain_update(self.name.as_bytes())
            .chain_update([0])
            .chain_update(secret.as_bytes())
            .finalize()
            .into();
        Some(Keyring::new(key, &[]))
    }

    fn first_digest(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            self.first_refresh.as_deref().unwrap_or("").as_bytes(),
        ))
    }

    /// The refresh token to use: the one kept in the store, unless the
    /// operator configured a new first one since.
    fn load_refresh(&self) -> Result<Option<String>, String> {
        let first = self.first_refresh.clone();
        let Some(bytes) = self
            .store
            .credential_state(&self.name)
            .map_err(|e| e.to_string())?
        else {
            return Ok(first);
        };
        let Ok(kept) = serde_json::from_slice::<Kept>(&bytes) else {
            return Ok(first);
        };
        if kept.from != self.first_digest() {
            tracing::info!(credential = %self.name, "a new refresh token is configured; the one kept in the store is set aside");
            return Ok(first);
        }
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&kept.refresh)
            .map_err(|e| e.to_string())?;
        let token = match self.sealing() {
            Some(keys) => match keys.open(self.name.as_bytes(), &raw) {
                Ok(plain) => plain,
                Err(_) => {
                    tracing::warn!(credential = %self.name, "the refresh token kept in the store does not open under the current client secret; using the configured one");
                    return Ok(first);
                }
            },
            None => raw,
        };
        let token = String::from_utf8(token).map_err(|e| e.to_string())?;
        crate::redact::register(&token);
        Ok(Some(token))
    }

    /// Keep a rotated refresh token, durably.
    async fn keep_refresh(&self, token: &str) -> Result<(), String> {
        use base64::Engine as _;
        let sealed = match self.sealing() {
            Some(keys) => keys
                .seal(self.name.as_bytes(), token.as_bytes())
                .unwrap_or_default(),
            None => token.as_bytes().to_vec(),
        };
        let kept = Kept {
            from: self.first_digest(),
            refresh: base64::engine::general_purpose::STANDARD.encode(sealed),
        };
        let bytes = serde_json::to_vec(&kept).map_err(|e| e.to_string())?;
        self.store
            .set_credential_state(&self.name, &bytes)
            .await
            .map(|_| ())
            .map_err(|e| format!("the rotated refresh token could not be kept ({e})"))
    }

    /// Ask the token endpoint for a new access token.
    async fn fetch(&self, t: &mut Tokens) -> Result<String, String> {
        let c = &self.config;
        let mut form: Vec<(&str, String)> = Vec::new();
        match c.grant {
            OAuthGrant::ClientCredentials => form.push(("grant_type", "client_credentials".into())),
            OAuthGrant::RefreshToken => {
                if !t.loaded {
                    t.refresh = self.load_refresh()?;
                    t.loaded = true;
                }
                let refresh = t
                    .refresh
                    .clone()
                    .ok_or("no refresh token is configured or kept")?;
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", refresh));
            }
        }
        if !c.scopes.is_empty() {
            form.push(("scope", c.scopes.join(" ")));
        }
        if let Some(a) = &c.audience {
            form.push(("audience", a.clone()));
        }
        let mut request = http::Request::post(&c.token_url)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json");
        match (c.client_auth, &self.client_secret) {
            (OAuthClientAuth::Basic, Some(secret)) => {
                use base64::Engine as _;
                let pair = format!(
                    "{}:{}",
                    crate::percent::encode(&c.client_id),
                    crate::percent::encode(secret)
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                crate::redact::register(&encoded);
                let mut v = http::HeaderValue::from_str(&format!("Basic {encoded}"))
                    .map_err(|_| "the client secret cannot be sent in a header")?;
                v.set_sensitive(true);
                request = request.header(http::header::AUTHORIZATION, v);
            }
            (OAuthClientAuth::Body, Some(secret)) => {
                form.push(("client_id", c.client_id.clone()));
                form.push(("client_secret", secret.clone()));
            }
            (_, None) => form.push(("client_id", c.client_id.clone())),
        }
        let body = form
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::percent::encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let body = Full::new(bytes::Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = request.body(body).map_err(|e| format!("token_url: {e}"))?;
        let (client, guarded, limits) = self.http.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(l) = limits.for_uri(request.uri()) {
            l.acquire().await;
        }
        let resp = send_checked(&client, request, TOKEN_TIMEOUT, guarded)
            .await
            .map_err(|e| format!("the token endpoint {} did not answer: {e}", c.token_url))?;
        let status = resp.status();
        let body = tokio::time::timeout(
            TOKEN_TIMEOUT,
            Limited::new(resp.into_body(), MAX_TOKEN_RESPONSE).collect(),
        )
        .await
        .map_err(|_| "the token endpoint's answer did not arrive in time".to_string())?
        .map_err(|_| {
            format!("the token endpoint's answer is cut off or over {MAX_TOKEN_RESPONSE} bytes")
        })?
        .to_bytes();
        if !status.is_success() {
            return Err(refusal(status, &body));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            format!("the token endpoint answered {status} without a JSON token (access_token, expires_in)")
        })?;
        crate::redact::register(&answer.access_token);
        if let Some(r) = &answer.refresh_token {
            crate::redact::register(r);
        }
        if answer.access_token.is_empty() {
            return Err("the token endpoint answered with an empty access_token".into());
        }
        if let Some(kind) = &answer.token_type
            && !kind.eq_ignore_ascii_case("bearer")
        {
            return Err(format!(
                "the token endpoint gave a {kind:?} token; only Bearer tokens are supported"
            ));
        }
        let mut rotated = false;
        if let Some(next) = answer.refresh_token.filter(|r| !r.is_empty())
            && c.grant == OAuthGrant::RefreshToken
            && t.refresh.as_deref() != Some(next.as_str())
        {
            // Kept before the new access token is used: a crash from here
            // on starts with the new refresh token. The server may have
            // retired the old one already, so this process goes on with the
            // new one even when it could not be kept; the access token is
            // not used then, and the next request rotates (and keeps) again.
            let kept = self.keep_refresh(&next).await;
            if let Some(old) = t.refresh.replace(next) {
                crate::redact::forget(&old);
            }
            kept?;
            rotated = true;
        }
        let lifetime = answer.expires_in.map(Duration::from_secs);
        let early = Duration::from_secs(c.refresh_before_s);
        let now = Instant::now();
        let access = Access {
            token: answer.access_token.clone(),
            stale_at: lifetime.map(|l| now + l.saturating_sub(early.min(l / 2))),
            expires_ms: lifetime.map(|l| now_ms() + l.as_millis() as u64),
        };
        if let Some(old) = t.access.replace(access)
            && let Some(older) = t.previous.replace(old.token)
        {
            crate::redact::forget(&older);
        }
        let expires_ms = t.access.as_ref().and_then(|a| a.expires_ms);
        self.set_status(|s| {
            s.state = "valid".into();
            s.valid_until_ms = expires_ms;
            s.last_refresh_ms = Some(now_ms());
            s.refreshes += 1;
            s.rotations += u64::from(rotated);
            s.last_error = None;
        });
        tracing::info!(
            credential = %self.name,
            expires_in_s = answer.expires_in,
            rotated,
            "got an access token"
        );
        Ok(answer.access_token)
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<String>,
}

/// The token endpoint's refusal, as RFC 6749 §5.2 words it: its `error`
/// and `error_description`, never the rest of the answer.
fn refusal(status: http::StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        error: String,
        #[serde(default)]
        error_description: Option<String>,
    }
    let clean = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect::<String>()
    };
    match serde_json::from_slice::<Refusal>(body) {
        Ok(r) => format!(
            "the token endpoint answered {status}: {}{}",
            clean(&r.error),
            r.error_description
                .map(|d| format!(" ({})", clean(&d)))
                .unwrap_or_default()
        ),
        Err(_) => format!("the token endpoint answered {status}"),
    }
}

/// The OAuth clients of one configuration, by credential name.
#[derive(Default, Clone)]
pub struct OAuthClients {
    by_name: BTreeMap<String, Arc<OAuthClient>>,
}

impl OAuthClients {
    /// The client of credential `name`, if it is an OAuth credential.
    pub fn get(&self, name: &str) -> Option<&Arc<OAuthClient>> {
        self.by_name.get(name)
    }

    /// Every client.
    pub fn all(&self) -> impl Iterator<Item = &Arc<OAuthClient>> {
        self.by_name.values()
    }
}

/// The host's OAuth clients across reloads: a client whose settings and
/// secrets did not change keeps its tokens.
#[derive(Default)]
pub struct Registry {
    clients: Mutex<BTreeMap<String, Arc<OAuthClient>>>,
}

impl Registry {
    /// The clients `config` names, reusing those that did not change, with
    /// requests sent through `http` (with egress checks when `guarded`).
    pub fn update(
        &self,
        config: &Config,
        secrets: &Secrets,
        store: &Arc<dyn Store>,
        http: HttpClient,
        guarded: bool,
        limits: Arc<UpstreamLimits>,
    ) -> Arc<OAuthClients> {
        let mut held = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = BTreeMap::new();
        for (name, o) in &config.oauth {
            let client = match held.get(name) {
                Some(c) if c.same_as(o, secrets) => {
                    *c.http.lock().unwrap_or_else(|e| e.into_inner()) =
                        (http.clone(), guarded, limits.clone());
                    c.clone()
                }
                _ => Arc::new(OAuthClient::new(
                    name,
                    o,
                    secrets,
                    store.clone(),
                    (http.clone(), guarded, limits.clone()),
                )),
            };
            let used_by: Vec<String> = config
                .grants
                .iter()
                .filter(|(_, g)| g.credentials.iter().any(|c| c.name == *name))
                .map(|(p, _)| p.clone())
                .collect();
            client.set_status(|s| s.used_by = used_by);
            next.insert(name.clone(), client);
        }
        *held = next.clone();
        Arc::new(OAuthClients { by_name: next })
    }
}

/// The static credentials `config`'s grants attach (not OAuth clients),
/// each as `loaded` with the plugins that use it.
pub fn secret_statuses(config: &Config) -> Vec<CredentialStatus> {
    let mut out: BTreeMap<String, CredentialStatus> = BTreeMap::new();
    for (plugin, g) in &config.grants {
        for c in g.credential_names() {
            if config.oauth.contains_key(c) {
                continue;
            }
            let s = out
                .entry(c.to_string())
                .or_insert_with(|| CredentialStatus {
                    name: c.to_string(),
                    kind: "secret".into(),
                    state: "loaded".into(),
                    ..CredentialStatus::default()
                });
            s.used_by.push(plugin.clone());
        }
    }
    out.into_values().collect()
}

impl OAuthClients {
    /// Every client's state.
    pub fn statuses(&self) -> Vec<CredentialStatus> {
        self.all().map(|c| c.status()).collect()
    }
}
