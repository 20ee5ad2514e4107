//! Outbound HTTP for plugins. Every request is checked against the plugin's
//! grant before it leaves, host names are resolved to public addresses only
//! (see [`super::net`]), credentials are put on at the last moment, and
//! responses are capped in size and time.

use super::net::{GuardedResolver, find_prohibited};
use crate::config::CredentialGrant;
use crate::limit::{UpstreamLimits, parse_retry_after};
use crate::origin::Origin;
use crate::sandbox::bindings::sink::weft::plugin::credentials::Placement;
use crate::sandbox::deny::Denier;
use crate::secrets::Secrets;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Connect timeout for plugin requests.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The header a plugin puts on a request to have a credential attached.
pub const CREDENTIAL_HEADER: &str = "weft-credential";
/// Largest request body the host buffers to sign it (16 MiB).
pub const MAX_SIGNED_BODY: usize = 16 * 1024 * 1024;

/// Pooled clients shared by every plugin call: plain HTTP and HTTPS, each
/// with the egress checks (and without, for benchmarks only).
#[derive(Clone)]
pub struct HttpClient {
    guarded: Client<HttpConnector<GuardedResolver>, WasiBody>,
    open: Client<HttpConnector, WasiBody>,
    https_guarded: Client<super::https::HttpsConnector, WasiBody>,
    https_open: Client<super::https::HttpsConnector, WasiBody>,
}

fn connector<R: Clone>(resolver: R) -> HttpConnector<R> {
    let mut c = HttpConnector::new_with_resolver(resolver);
    c.set_connect_timeout(Some(CONNECT_TIMEOUT));
    c.set_nodelay(true);
    c.enforce_http(true);
    c
}

impl HttpClient {
    /// Clients with keep-alive pooling, trusting the public web roots.
    pub fn new() -> Self {
        Self::with_trust(Arc::new(super::trust::OutboundTls::web()))
    }

    /// Clients with keep-alive pooling whose TLS follows `trust`.
    pub fn with_trust(trust: Arc<super::trust::OutboundTls>) -> Self {
        let pooled = || {
            let mut b = Client::builder(TokioExecutor::new());
            b.pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(256);
            b
        };
        let https = |guarded| super::https::HttpsConnector {
            trust: trust.clone(),
            guarded,
            connect_timeout: CONNECT_TIMEOUT,
        };
        HttpClient {
            guarded: pooled().build(connector(GuardedResolver)),
            open: pooled().build(HttpConnector::new()),
            https_guarded: pooled().build(https(true)),
            https_open: pooled().build(https(false)),
        }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// The `wasi:http` hooks of one call.
pub struct EgressHooks {
    pub(in crate::sandbox) origins: Arc<Vec<Origin>>,
    pub(in crate::sandbox) client: HttpClient,
    pub(in crate::sandbox) timeout: Duration,
    pub(in crate::sandbox) denier: Denier,
    pub(in crate::sandbox) upstreams: Arc<UpstreamLimits>,
    /// W3C trace context sent with every request that has none, so the
    /// event's correlation id reaches the receiver.
    pub(in crate::sandbox) traceparent: Option<http::HeaderValue>,
    /// Off only in benchmarks that measure what the checks cost.
    pub(in crate::sandbox) guarded: bool,
    pub(in crate::sandbox) secrets: Arc<Secrets>,
    /// OAuth clients: their access tokens are put on at send time.
    pub(in crate::sandbox) oauth: Arc<crate::sandbox::oauth::OAuthClients>,
    /// Credential tokens handed out in this call: token → (the credential
    /// as granted, placement).
    pub(in crate::sandbox) attachments: HashMap<String, (CredentialGrant, Placement)>,
    /// The plugin's grant: where its credentials may go.
    pub(in crate::sandbox) grant: Arc<crate::config::Grant>,
    pub(in crate::sandbox) response_cap: usize,
    /// Record or replay every exchange (`weft plugin test`).
    pub(in crate::sandbox) tape: Option<Arc<super::tape::Tape>>,
    /// The brokers a plugin granted `messaging` publishes through.
    pub(in crate::sandbox) brokers: Arc<crate::messaging::Brokers>,
}

/// A `traceparent` whose trace id is the correlation id (a UUID, or a hash of
/// any other id) and whose parent id is random.
pub fn traceparent_for(correlation_id: &str) -> Option<http::HeaderValue> {
    use sha2::Digest;
    let hex: String = correlation_id.chars().filter(|c| *c != '-').collect();
    let trace_id = if hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        hex.to_ascii_lowercase()
    } else {
        hex::encode(&sha2::Sha256::digest(correlation_id.as_bytes())[..16])
    };
    let parent: u64 = rand::random::<u64>() | 1;
    http::HeaderValue::from_str(&format!("00-{trace_id}-{parent:016x}-01")).ok()
}

type Sent = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

/// Most request-body bytes read and thrown away from a refused request.
const REFUSED_BODY_DRAIN: usize = 16 * 1024 * 1024;

/// An OAuth access token to put on a request: the client, the header and
/// whether it goes as `Bearer <token>` or as it is.
type TokenPlacement = (
    Arc<crate::sandbox::oauth::OAuthClient>,
    http::HeaderName,
    bool,
);

/// What a request's credentials still need once its body can be read:
/// HMAC signatures (header, secret) and OAuth tokens.
#[derive(Default)]
struct Pending {
    signing: Vec<(http::HeaderName, String)>,
    tokens: Vec<TokenPlacement>,
}

/// Refuse a request. Its body is read and thrown away (up to a cap) first,
/// so a plugin still writing it sees the refusal as the answer to its
/// request, not as a broken body stream that looks like a network fault.
fn refuse(
    request: http::Request<WasiBody>,
    message: String,
) -> Box<dyn Future<Output = Sent> + Send> {
    Box::new(async move {
        let mut body = request.into_body();
        let mut read = 0usize;
        while read < REFUSED_BODY_DRAIN {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        Err(HttpError::InternalError(Some(message)))
    })
}

/// A URL without its query, for messages (queries may hold tokens).
fn shown(uri: &http::Uri) -> String {
    format!(
        "{}://{}{}",
        uri.scheme_str().unwrap_or("?"),
        uri.authority().map_or("?", |a| a.as_str()),
        uri.path()
    )
}

fn sensitive(value: &str) -> Option<http::HeaderValue> {
    let mut v = http::HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl EgressHooks {
    /// Swap the credential tokens on `request` for the credentials; returns
    /// the HMAC signatures still to compute over the body: (header, secret).
    /// Whether requests are answered from a cassette.
    pub(in crate::sandbox) fn replaying(&self) -> bool {
        matches!(self.tape.as_deref(), Some(super::tape::Tape::Replay { .. }))
    }

    /// The credentials a request asks for (`NAME as PLACEMENT`), and the
    /// headers they will take besides `Authorization`, for a cassette.
    fn asked_credentials(&self, request: &http::Request<WasiBody>) -> (Vec<String>, Vec<String>) {
        let mut asked = Vec::new();
        let mut headers = Vec::new();
        for v in request.headers().get_all(CREDENTIAL_HEADER) {
            let token = String::from_utf8_lossy(v.as_bytes());
            if let Some((granted, how)) = self.attachments.get(token.trim()) {
                let placement = match how {
                    Placement::Bearer => "bearer".to_string(),
                    Placement::Basic(user) => format!("basic as {user}"),
                    Placement::Header(h) => {
                        headers.push(h.clone());
                        format!("header {h}")
                    }
                    Placement::HmacSha256(h) => {
                        headers.push(h.clone());
                        format!("hmac-sha256 in {h}")
                    }
                };
                asked.push(format!("{} as {placement}", granted.name));
            }
        }
        (asked, headers)
    }

    /// Put the requested credentials on the request; with `dry` (a
    /// replay, which sends nothing) only check where they may go.
    fn attach_credentials(
        &self,
        request: &mut http::Request<WasiBody>,
        dry: bool,
    ) -> Result<Pending, String> {
        let tokens: Vec<String> = request
            .headers()
            .get_all(CREDENTIAL_HEADER)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        request.headers_mut().remove(CREDENTIAL_HEADER);
        let mut pending = Pending::default();
        for token in tokens {
            let Some((granted, how)) = self.attachments.get(token.trim()) else {
                return Err(self.denier.deny(
                    "credential",
                    "the request carries a credential token the host did not hand out in this call",
                ));
            };
            let name = &granted.name;
            if !granted.may_go_to(&self.grant.http, request.uri()) {
                let to: Vec<String> = granted
                    .origins(&self.grant.http)
                    .iter()
                    .map(|o| o.to_string())
                    .collect();
                return Err(self.denier.deny(
                    "credential",
                    &format!(
                        "credential {name:?} may not be sent to {}; it is tied to {}",
                        shown(request.uri()),
                        if to.is_empty() {
                            "no origin".to_string()
                        } else {
                            to.join(", ")
                        }
                    ),
                ));
            }
            if dry {
                continue;
            }
            if let Some(client) = self.oauth.get(name) {
                let (header, bearer) = match how {
                    Placement::Bearer => (http::header::AUTHORIZATION, true),
                    Placement::Header(h) => (
                        http::HeaderName::try_from(h.as_str())
                            .map_err(|_| format!("{h:?} is not a header name"))?,
                        false,
                    ),
                    // Refused when attached.
                    Placement::Basic(_) | Placement::HmacSha256(_) => continue,
                };
                pending.tokens.push((client.clone(), header, bearer));
                continue;
            }
            let Some(secret) = self.secrets.get(name) else {
                return Err(format!("credential {name} is not loaded on this host"));
            };
            let bad = || format!("credential {name} cannot be sent as a header value");
            match how {
                Placement::Bearer => {
                    let v = sensitive(&format!("Bearer {secret}")).ok_or_else(bad)?;
                    request.headers_mut().insert(http::header::AUTHORIZATION, v);
                }
                Placement::Basic(user) => {
                    use base64::Engine as _;
                    let encoded = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{secret}"));
                    crate::redact::register(&encoded);
                    let v = sensitive(&format!("Basic {encoded}")).ok_or_else(bad)?;
                    request.headers_mut().insert(http::header::AUTHORIZATION, v);
                }
                Placement::Header(h) => {
                    let name = http::HeaderName::try_from(h.as_str()).map_err(|_| bad())?;
                    request
                        .headers_mut()
                        .insert(name, sensitive(secret).ok_or_else(bad)?);
                }
                Placement::HmacSha256(h) => {
                    let name = http::HeaderName::try_from(h.as_str()).map_err(|_| bad())?;
                    pending.signing.push((name, secret.to_string()));
                }
            }
        }
        Ok(pending)
    }
}

/// Buffer the body and add an HMAC-SHA256 signature header for each secret.
async fn sign(
    request: http::Request<WasiBody>,
    signing: Vec<(http::HeaderName, String)>,
) -> Result<http::Request<WasiBody>, HttpError> {
    use hmac::Mac;
    let (mut parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_SIGNED_BODY)
        .collect()
        .await
        .map_err(|_| HttpError::HttpRequestBodySize(Some(MAX_SIGNED_BODY as u64)))?
        .to_bytes();
    for (header, secret) in signing {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
        mac.update(&body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        if let Ok(v) = http::HeaderValue::from_str(&sig) {
            parts.headers.insert(header, v);
        }
    }
    let body = Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        let uri = request.uri().clone();
        if self.guarded && !self.origins.iter().any(|o| o.allows_uri(&uri)) {
            let granted: Vec<String> = self.origins.iter().map(|o| o.to_string()).collect();
            let message = self.denier.deny(
                "http",
                &format!(
                    "{} is outside the plugin's http grant ({})",
                    shown(&uri),
                    if granted.is_empty() {
                        "none".to_string()
                    } else {
                        granted.join(", ")
                    }
                ),
            );
            return refuse(request, message);
        }
        let tape = self.tape.clone();
        let replaying = self.replaying();
        let (asked, attached) = self.asked_credentials(&request);
        let Pending { signing, tokens } = match self.attach_credentials(&mut request, replaying) {
            Ok(s) => s,
            Err(message) => return refuse(request, message),
        };
        let first_byte = options
            .and_then(|o| o.first_byte_timeout)
            .map_or(self.timeout, |t| t.min(self.timeout));
        if let Some(tp) = &self.traceparent
            && !request.headers().contains_key("traceparent")
        {
            request.headers_mut().insert("traceparent", tp.clone());
        }
        let client = self.client.clone();
        let limiter = self.upstreams.for_uri(&uri);
        let (denier, guarded, cap) = (self.denier.clone(), self.guarded, self.response_cap);
        Box::new(async move {
            let request = if signing.is_empty() {
                request
            } else {
                sign(request, signing).await?
            };
            let done = || Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>;
            let (request, taped) = match &tape {
                Some(_) => {
                    let (request, body) =
                        super::tape::buffer_request(request, MAX_SIGNED_BODY).await?;
                    let taped = super::tape::tape_request(&request, &body, asked, &attached);
                    (request, Some(taped))
                }
                None => (request, None),
            };
            if let (Some(tape), Some(taped)) = (&tape, &taped)
                && replaying
            {
                return match tape.answer(taped) {
                    Ok(resp) => Ok((resp, done())),
                    Err(why) => Err(HttpError::InternalError(Some(why))),
                };
            }
            if let Some(l) = &limiter {
                l.acquire().await;
            }
            let sent = if tokens.is_empty() {
                send(&client, request, first_byte, guarded).await
            } else {
                send_with_tokens(&client, request, &tokens, first_byte, guarded).await
            };
            let result = match sent {
                Err(Failure::Prohibited(detail)) => {
                    return Err(HttpError::InternalError(Some(
                        denier.deny("connect", &detail),
                    )));
                }
                Err(Failure::Http(e)) => Err(e),
                Ok(resp) => Ok(resp),
            };
            if let (Some(l), Ok(resp)) = (&limiter, &result)
                && matches!(resp.status().as_u16(), 429 | 503)
                && let Some(wait) = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
            {
                tracing::warn!(url = %shown(&uri), "upstream asked to slow down for {wait:?}");
                l.cool_down(wait);
            }
            let shown_uri = shown(&uri);
            let mut result = result;
            if let (Some(tape), Some(taped)) = (&tape, taped)
                && result.is_ok()
            {
                let resp = result?;
                result = tape.keep(taped, resp, cap).await;
            }
            let resp = result?.map(move |body| {
                Limited::new(body, cap)
                    .map_err(move |e| match e.downcast::<HttpError>() {
                        Ok(inner) => *inner,
                        Err(_) => {
                            denier.limit(&format!(
                                "the response from {shown_uri} passed the {cap}-byte response cap and was cut off"
                            ));
                            HttpError::HttpResponseBodySize(Some(cap as u64))
                        }
                    })
                    .boxed_unsync()
            });
            Ok((
                resp,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Put OAuth access tokens on `request` and send it; when the API answers
/// 401, drop the tokens it was sent with and send it once more with new
/// ones (the body is held for that, up to [`MAX_SIGNED_BODY`]).
async fn send_with_tokens(
    client: &HttpClient,
    request: http::Request<WasiBody>,
    tokens: &[TokenPlacement],
    first_byte: Duration,
    guarded: bool,
) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_SIGNED_BODY)
        .collect()
        .await
        .map_err(|_| HttpError::HttpRequestBodySize(Some(MAX_SIGNED_BODY as u64)))?
        .to_bytes();
    let mut refused: Option<(Vec<String>, Response)> = None;
    loop {
        let mut next = http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .version(parts.version)
            .body(
                Full::new(body.clone())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
        *next.headers_mut() = parts.headers.clone();
        let mut fresh = Vec::with_capacity(tokens.len());
        for (oauth, header, bearer) in tokens {
            let token = oauth
                .token()
                .await
                .map_err(|why| HttpError::InternalError(Some(why)))?;
            let value = if *bearer {
                format!("Bearer {token}")
            } else {
                token.clone()
            };
            let value = sensitive(&value).ok_or_else(|| {
                HttpError::InternalError(Some(format!(
                    "the access token of credential {} cannot be sent as a header value",
                    oauth.name()
                )))
            })?;
            next.headers_mut().insert(header.clone(), value);
            fresh.push(token);
        }
        match refused {
            // The token endpoint gave the refused tokens again: the API's
            // 401 is the answer.
            Some((used, resp)) if used == fresh => return Ok(resp),
            // Sent once more with new tokens: whatever the API says now.
            Some(_) => return send(client, next, first_byte, guarded).await,
            None => {}
        }
        let resp = send(client, next, first_byte, guarded).await?;
        if resp.status() != http::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        for ((oauth, _, _), token) in tokens.iter().zip(&fresh) {
            oauth.refused(token).await;
        }
        refused = Some((fresh, resp));
    }
}

enum Failure {
    /// The name resolved only to addresses the plugin may not reach.
    Prohibited(String),
    Http(HttpError),
}

impl From<HttpError> for Failure {
    fn from(e: HttpError) -> Self {
        Failure::Http(e)
    }
}

type Response = http::Response<WasiBody>;

/// Send a request the host makes itself (an OAuth token request) through
/// the same pooled clients and connect-time checks as plugin requests.
pub(super) async fn send_checked(
    client: &HttpClient,
    request: http::Request<WasiBody>,
    timeout: Duration,
    guarded: bool,
) -> Result<Response, String> {
    match send(client, request, timeout, guarded).await {
        Ok(resp) => Ok(resp),
        Err(Failure::Prohibited(why)) => Err(format!("refused at connect: {why}")),
        Err(Failure::Http(e)) => Err(e.to_string()),
    }
}

/// Send one request over the pooled client of its scheme.
async fn send(
    client: &HttpClient,
    request: http::Request<WasiBody>,
    first_byte: Duration,
    guarded: bool,
) -> Result<Response, Failure> {
    let https = request.uri().scheme_str() == Some("https");
    let sent = match (https, guarded) {
        (false, true) => tokio::time::timeout(first_byte, client.guarded.request(request)).await,
        (false, false) => tokio::time::timeout(first_byte, client.open.request(request)).await,
        (true, true) => {
            tokio::time::timeout(first_byte, client.https_guarded.request(request)).await
        }
        (true, false) => tokio::time::timeout(first_byte, client.https_open.request(request)).await,
    };
    let resp = match sent {
        Err(_) => return Err(HttpError::ConnectionReadTimeout.into()),
        Ok(Err(e)) => {
            if let Some(p) = find_prohibited(&e) {
                return Err(Failure::Prohibited(p.to_string()));
            }
            if let Some(t) = super::https::find_tls_failure(&e) {
                return Err(HttpError::InternalError(Some(t.0.clone())).into());
            }
            if e.is_connect() {
                return Err(HttpError::ConnectionRefused.into());
            }
            return Err(HttpError::InternalError(Some(format!("{e:#}"))).into());
        }
        Ok(Ok(resp)) => resp,
    };
    Ok(resp.map(|body| body.map_err(HttpError::from).boxed_unsync()))
}

#[cfg(test)]
mod tests {
    use super::traceparent_for;

    #[test]
    fn traceparent_carries_the_correlation_id() {
        let tp = traceparent_for("01a201ad-6049-7356-95e3-826335776746").unwrap();
        let tp = tp.to_str().unwrap();
        assert!(
            tp.starts_with("00-01a201ad6049735695e3826335776746-"),
            "{tp}"
        );
        assert_eq!(tp.len(), 55);
        assert!(tp.ends_with("-01"));
        let other = traceparent_for("order-42").unwrap();
        let parts: Vec<&str> = other.to_str().unwrap().split('-').collect();
        assert_eq!(parts[1].len(), 32, "other ids are hashed into a trace id");
        assert_eq!(
            parts[1],
            traceparent_for("order-42")
                .unwrap()
                .to_str()
                .unwrap()
                .split('-')
                .nth(1)
                .unwrap(),
            "the same id gives the same trace id"
        );
    }
}
