//! Outbound HTTP for plugins: every request is checked against the plugin's
//! grant before it leaves, and plain-HTTP requests share a connection pool.

use crate::limit::{UpstreamLimits, parse_retry_after};
use crate::origin::Origin;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Connect timeout for plugin requests.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled client shared by every plugin call.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, WasiBody>,
}

impl HttpClient {
    /// A client with keep-alive pooling.
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        HttpClient { client }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Called when a plugin tries to reach a place outside its grant.
pub type DenialHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The `wasi:http` hooks of one call.
pub struct EgressHooks {
    pub(super) origins: Arc<Vec<Origin>>,
    pub(super) client: HttpClient,
    pub(super) timeout: Duration,
    pub(super) on_denied: DenialHook,
    pub(super) upstreams: Arc<UpstreamLimits>,
    /// W3C trace context sent with every request that has none, so the
    /// event's correlation id reaches the receiver.
    pub(super) traceparent: Option<http::HeaderValue>,
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

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        drop(fut);
        let uri = request.uri().clone();
        if !self.origins.iter().any(|o| o.allows_uri(&uri)) {
            (self.on_denied)(&uri.to_string());
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
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
        Box::new(async move {
            if let Some(l) = &limiter {
                l.acquire().await;
            }
            let result = send(client, request, first_byte).await;
            if let (Some(l), Ok((resp, _))) = (&limiter, &result)
                && matches!(resp.status().as_u16(), 429 | 503)
                && let Some(wait) = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
            {
                tracing::warn!(url = %uri, "upstream asked to slow down for {wait:?}");
                l.cool_down(wait);
            }
            result
        })
    }
}

/// Send one request: https through wasmtime's sender, http through the pool.
async fn send(client: HttpClient, request: http::Request<WasiBody>, first_byte: Duration) -> Sent {
    if request.uri().scheme_str() == Some("https") {
        let options = RequestOptions {
            connect_timeout: Some(CONNECT_TIMEOUT),
            first_byte_timeout: Some(first_byte),
            between_bytes_timeout: Some(first_byte),
        };
        let (resp, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
        return Ok((
            resp.map(BodyExt::boxed_unsync),
            Box::new(io) as Box<dyn Future<Output = _> + Send>,
        ));
    }
    let resp = match tokio::time::timeout(first_byte, client.client.request(request)).await {
        Err(_) => return Err(HttpError::ConnectionReadTimeout),
        Ok(Err(e)) if e.is_connect() => return Err(HttpError::ConnectionRefused),
        Ok(Err(e)) => return Err(HttpError::InternalError(Some(format!("{e:#}")))),
        Ok(Ok(resp)) => resp,
    };
    let resp = resp.map(|body| body.map_err(HttpError::from).boxed_unsync());
    Ok((
        resp,
        Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>,
    ))
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
