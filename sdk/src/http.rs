//! A small blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host decides where a request may go: a URL outside the plugin's grant
//! fails with [`HttpError::Denied`] before anything leaves the sandbox.

use std::fmt;

/// Largest response body the client reads by default (16 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

/// An outgoing request; build it, then [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout_ms: Option<u64>,
    max_response_bytes: usize,
    credentials: Vec<(String, crate::credentials::Placement)>,
    max_redirects: u32,
}

/// Redirects followed by default.
pub const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// A response with its whole body read.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers, names in lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the destination: it is outside the plugin's grant.
    Denied(String),
    /// The request itself is malformed (bad URL, bad header).
    InvalidRequest(String),
    /// Connect, first-byte or read timeout.
    Timeout(String),
    /// Connection refused, reset, DNS failure and other network errors.
    Network(String),
    /// The response was larger than the configured cap.
    TooLarge(usize),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(m) => write!(f, "request denied by the host: {m}"),
            HttpError::InvalidRequest(m) => write!(f, "invalid request: {m}"),
            HttpError::Timeout(m) => write!(f, "timed out: {m}"),
            HttpError::Network(m) => write!(f, "network error: {m}"),
            HttpError::TooLarge(n) => write!(f, "response body over {n} bytes"),
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for crate::Error {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Denied(_) | HttpError::InvalidRequest(_) | HttpError::TooLarge(_) => {
                crate::Error::Fatal(e.to_string())
            }
            HttpError::Timeout(_) | HttpError::Network(_) => crate::Error::Transient(e.to_string()),
        }
    }
}

impl Request {
    /// A request with the given method and absolute `http://` or `https://` URL.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            credentials: Vec::new(),
            max_redirects: DEFAULT_MAX_REDIRECTS,
        }
    }
    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }
    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }
    /// A PUT request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }
    /// Add a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }
    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    /// Set a JSON body and `content-type: application/json`.
    pub fn json_body(self, body: impl Into<Vec<u8>>) -> Self {
        self.header("content-type", "application/json").body(body)
    }
    /// Ask for a first-byte timeout shorter than the host's.
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
    /// Cap the response body; larger bodies fail with [`HttpError::TooLarge`].
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    /// Have the host attach credential `name` (from the plugin's grant) as
    /// the request leaves; the secret never enters the plugin. It is not sent
    /// again if a redirect leads to another origin.
    pub fn credential(mut self, name: &str, placement: crate::credentials::Placement) -> Self {
        self.credentials.push((name.to_string(), placement));
        self
    }
    /// Follow at most `n` redirects (default 5; 0 returns 3xx responses as
    /// they are). Each hop is checked against the plugin's grant by the host.
    pub fn max_redirects(mut self, n: u32) -> Self {
        self.max_redirects = n;
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }
    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Send the request and read the whole response, following redirects.
    pub fn send(mut self) -> Result<Response, HttpError> {
        let mut target = Target::parse(&self.url)?;
        let origin = (target.https, target.authority.clone());
        let mut tokens = Vec::new();
        for (name, placement) in &self.credentials {
            let (header, token) = crate::credentials::attach(name, placement)
                .map_err(|e| HttpError::Denied(e.to_string()))?;
            tokens.push((header.to_ascii_lowercase(), token.into_bytes()));
        }
        let mut hops = 0;
        loop {
            if !self.body.is_empty()
                || matches!(self.method, Method::Post | Method::Put | Method::Patch)
            {
                self.headers.retain(|(k, _)| k != "content-length");
                let len = self.body.len().to_string();
                self.headers
                    .push(("content-length".into(), len.into_bytes()));
            }
            let mut req = self.clone();
            if (target.https, &target.authority) == (origin.0, &origin.1) {
                req.headers.extend(tokens.iter().cloned());
            }
            let resp = transport::send(req, target)?;
            let location = match resp.status {
                301 | 302 | 303 | 307 | 308 if hops < self.max_redirects => {
                    resp.header("location").map(str::to_string)
                }
                _ => None,
            };
            let Some(location) = location else {
                return Ok(resp);
            };
            hops += 1;
            self.url = resolve_location(&self.url, &location);
            target = Target::parse(&self.url)?;
            let keeps_body = matches!(resp.status, 307 | 308) || self.method == Method::Get;
            if !keeps_body {
                self.method = Method::Get;
                self.body.clear();
                self.headers
                    .retain(|(k, _)| k != "content-length" && k != "content-type");
            }
        }
    }
}

/// The absolute URL a `Location` header points to, from the URL that answered.
fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..]
        .find(['/', '?'])
        .map_or(base.len(), |i| scheme_end + i);
    let root = &base[..path_start];
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{}{rest}", &base[..scheme_end]);
    }
    if location.starts_with('/') {
        return format!("{root}{location}");
    }
    let path = &base[path_start..];
    let path = path.split('?').next().unwrap_or("");
    let dir = path.rfind('/').map_or("/", |i| &path[..=i]);
    format!("{root}{dir}{location}")
}

/// The parts of an absolute URL that `wasi:http` wants separately.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    authority: String,
    path_with_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, HttpError> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(HttpError::InvalidRequest(format!(
                "URL {url:?} must start with http:// or https://"
            )));
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() || authority.contains('@') {
            return Err(HttpError::InvalidRequest(format!(
                "URL {url:?} needs a host (and no user info)"
            )));
        }
        let path_with_query = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Target {
            https,
            authority: authority.to_string(),
            path_with_query,
        })
    }
}

#[cfg(target_arch = "wasm32")]
mod transport {
    use super::{HttpError, Method, Request, Response, Target};
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{self as t, ErrorCode};
    use wasip2::io::streams::StreamError;

    fn classify(e: ErrorCode) -> HttpError {
        let text = format!("{e:?}");
        match e {
            ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
                HttpError::Denied(text)
            }
            ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid => {
                HttpError::InvalidRequest(text)
            }
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::DnsTimeout
            | ErrorCode::HttpResponseTimeout => HttpError::Timeout(text),
            ErrorCode::HttpResponseBodySize(n) => HttpError::TooLarge(n.map_or(0, |n| n as usize)),
            ErrorCode::InternalError(Some(m)) if m.starts_with("denied") => HttpError::Denied(m),
            _ => HttpError::Network(text),
        }
    }

    pub(super) fn send(req: Request, target: Target) -> Result<Response, HttpError> {
        let headers = t::Fields::from_list(&req.headers)
            .map_err(|e| HttpError::InvalidRequest(format!("header rejected: {e:?}")))?;
        let out = t::OutgoingRequest::new(headers);
        let method = match req.method {
            Method::Get => t::Method::Get,
            Method::Post => t::Method::Post,
            Method::Put => t::Method::Put,
            Method::Patch => t::Method::Patch,
            Method::Delete => t::Method::Delete,
        };
        let bad =
            |what: &str| HttpError::InvalidRequest(format!("{what} rejected for {}", req.url));
        out.set_method(&method).map_err(|()| bad("method"))?;
        let scheme = if target.https {
            t::Scheme::Https
        } else {
            t::Scheme::Http
        };
        out.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
        out.set_authority(Some(&target.authority))
            .map_err(|()| bad("authority"))?;
        out.set_path_with_query(Some(&target.path_with_query))
            .map_err(|()| bad("path"))?;
        let options = req.timeout_ms.map(|ms| {
            let o = t::RequestOptions::new();
            let ns = ms.saturating_mul(1_000_000);
            // A host may refuse to shorten a timeout; its own limits still apply.
            let _ = o.set_first_byte_timeout(Some(ns));
            o
        });
        let body = out.body().map_err(|()| bad("body"))?;
        let pending = outgoing_handler::handle(out, options).map_err(classify)?;
        let written = (|| {
            let stream = body.write().map_err(|()| bad("body stream"))?;
            for chunk in req.body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| HttpError::Network(format!("writing request body: {e:?}")))?;
            }
            drop(stream);
            t::OutgoingBody::finish(body, None).map_err(classify)
        })();
        if let Err(e) = written {
            // A host that refused the request (outside the grant, a
            // prohibited address) stops reading the body: its answer says why.
            pending.subscribe().block();
            return Err(match pending.get() {
                Some(Ok(Err(code))) => classify(code),
                _ => e,
            });
        }
        pending.subscribe().block();
        let resp = match pending.get() {
            Some(Ok(Ok(resp))) => resp,
            Some(Ok(Err(e))) => return Err(classify(e)),
            Some(Err(())) | None => {
                return Err(HttpError::Network("response already taken".into()));
            }
        };
        let status = resp.status();
        let headers = resp.headers().entries();
        let incoming = resp
            .consume()
            .map_err(|()| HttpError::Network("response body unavailable".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| HttpError::Network("response body unavailable".into()))?;
            loop {
                match stream.blocking_read(64 * 1024) {
                    Ok(chunk) => {
                        body.extend_from_slice(&chunk);
                        if body.len() > req.max_response_bytes {
                            return Err(HttpError::TooLarge(req.max_response_bytes));
                        }
                    }
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        if let Some(code) = t::http_error_code(&e) {
                            return Err(classify(code));
                        }
                        return Err(HttpError::Network(format!(
                            "reading response body: {}",
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        drop(t::IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod transport {
    use super::{HttpError, Request, Response, Target};

    pub(super) fn send(req: Request, _target: Target) -> Result<Response, HttpError> {
        super::fake::answer(req)
    }
}

/// A test double for outbound HTTP, for a plugin's native unit tests
/// (`cargo test`; not in wasm, where the host answers): queue the answers
/// the upstream would give, run the plugin, then look at what it sent,
/// credentials included (by name and placement; no secret is involved).
/// State is per thread, so tests running in parallel do not see each
/// other's requests.
///
/// ```
/// use weft_sdk::credentials::Placement;
/// use weft_sdk::http::{self, fake};
///
/// fake::respond(201, r#"{"ok":true}"#);
/// let resp = http::Request::post("https://chat.example.com/api/post")
///     .credential("CHAT_TOKEN", Placement::Bearer)
///     .json_body(br#"{"text":"hi"}"#.to_vec())
///     .send()
///     .unwrap();
/// assert_eq!(resp.status, 201);
/// let sent = fake::sent();
/// assert_eq!(sent[0].url, "https://chat.example.com/api/post");
/// assert_eq!(sent[0].credentials, vec![("CHAT_TOKEN".to_string(), Placement::Bearer)]);
/// assert_eq!(sent[0].body, br#"{"text":"hi"}"#);
/// // Nothing queued: the plugin sees a network error, as with no upstream.
/// assert!(http::Request::get("https://chat.example.com/").send().is_err());
/// ```
#[cfg(not(target_arch = "wasm32"))]
pub mod fake {
    use super::{HttpError, Method, Request, Response};
    use crate::credentials::Placement;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// A request the plugin sent, as the upstream would have seen it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Sent {
        /// Its method.
        pub method: Method,
        /// Its absolute URL.
        pub url: String,
        /// Its headers (names in lower case as the plugin set them).
        pub headers: Vec<(String, Vec<u8>)>,
        /// Its body.
        pub body: Vec<u8>,
        /// The credentials the host was asked to attach: name and placement.
        pub credentials: Vec<(String, Placement)>,
    }

    impl Sent {
        /// The first header with this name (case-insensitive), if it is UTF-8.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        }

        /// The body as JSON.
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
        }
    }

    #[derive(Default)]
    struct State {
        answers: VecDeque<Result<Response, HttpError>>,
        sent: Vec<Sent>,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::default();
    }

    /// Queue an answer: the next request gets `status` with `body`.
    pub fn respond(status: u16, body: impl Into<Vec<u8>>) {
        respond_with(Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        });
    }

    /// Queue a whole response (headers too).
    pub fn respond_with(response: Response) {
        STATE.with(|s| s.borrow_mut().answers.push_back(Ok(response)));
    }

    /// Queue a failure: the next request gets this error (a timeout, say).
    pub fn fail(error: HttpError) {
        STATE.with(|s| s.borrow_mut().answers.push_back(Err(error)));
    }

    /// The requests sent so far on this thread, oldest first.
    pub fn sent() -> Vec<Sent> {
        STATE.with(|s| s.borrow().sent.clone())
    }

    /// Forget queued answers and sent requests.
    pub fn reset() {
        STATE.with(|s| *s.borrow_mut() = State::default());
    }

    pub(super) fn answer(req: Request) -> Result<Response, HttpError> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            s.sent.push(Sent {
                method: req.method,
                url: req.url.clone(),
                headers: req
                    .headers
                    .iter()
                    .filter(|(k, _)| k != "weft-credential")
                    .cloned()
                    .collect(),
                body: req.body.clone(),
                credentials: req.credentials.clone(),
            });
            s.answers.pop_front().unwrap_or_else(|| {
                Err(HttpError::Network(format!(
                    "no answer queued for {} (outbound HTTP reaches the world only inside the weft host; in a test, queue one with weft_sdk::http::fake::respond)",
                    req.url
                )))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_into_wasi_parts() {
        let t = Target::parse("http://127.0.0.1:9090/leads?x=1").unwrap();
        assert_eq!(
            t,
            Target {
                https: false,
                authority: "127.0.0.1:9090".into(),
                path_with_query: "/leads?x=1".into()
            }
        );
        let t = Target::parse("https://api.example.com").unwrap();
        assert!(t.https);
        assert_eq!(t.path_with_query, "/");
        assert_eq!(Target::parse("https://h?q").unwrap().path_with_query, "/?q");
        assert!(matches!(
            Target::parse("ftp://x"),
            Err(HttpError::InvalidRequest(_))
        ));
        assert!(matches!(
            Target::parse("http://user@host/"),
            Err(HttpError::InvalidRequest(_))
        ));
    }

    #[test]
    fn redirect_locations_resolve_against_the_answering_url() {
        let base = "http://h:1/a/b?x=1";
        assert_eq!(resolve_location(base, "https://o/p"), "https://o/p");
        assert_eq!(resolve_location(base, "/root"), "http://h:1/root");
        assert_eq!(resolve_location(base, "c"), "http://h:1/a/c");
        assert_eq!(resolve_location(base, "//o:2/z"), "http://o:2/z");
        assert_eq!(resolve_location("http://h", "z"), "http://h/z");
    }

    #[test]
    fn errors_map_to_the_engine_error_kinds() {
        assert!(matches!(
            crate::Error::from(HttpError::Denied("x".into())),
            crate::Error::Fatal(_)
        ));
        assert!(matches!(
            crate::Error::from(HttpError::Timeout("x".into())),
            crate::Error::Transient(_)
        ));
    }
}
