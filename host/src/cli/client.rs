//! A small HTTP client for the CLI: `weft send` and the admin commands talk
//! to a running host through it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a call to the host failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the address.
    #[error("no weft host answers at {0}")]
    NotRunning(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A response: status and parsed JSON body (or the raw text as a string).
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body as JSON.
    pub body: serde_json::Value,
    /// `Retry-After` in seconds, when the answer has one.
    pub retry_after_s: Option<u64>,
}

/// Talks to one host.
pub struct HostClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// For an `https://` base: TLS trusting what it was given.
    tls: Option<Client<crate::sandbox::HttpsConnector, Full<Bytes>>>,
    /// Whether the listener asks every client for a certificate, and then
    /// whether this client shows one: a failed connection is most likely
    /// the listener refusing it.
    asks_certificate: Option<bool>,
}

impl HostClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`), sending `token` as
    /// a bearer token when given.
    pub fn new(base: &str, token: Option<String>) -> Self {
        HostClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            tls: None,
            asks_certificate: None,
        }
    }

    /// Whether the listener asks every client for a certificate, and
    /// whether this client shows one: a failed connection then says what
    /// to check.
    pub fn asked_certificate(mut self, asked: bool, shown: bool) -> Self {
        self.asks_certificate = asked.then_some(shown);
        self
    }

    /// A client for an `https://` base, trusting the public web roots and
    /// `trust` (the host's certificate file).
    pub fn with_tls(base: &str, token: Option<String>, trust: crate::sandbox::OutboundTls) -> Self {
        let connector = crate::sandbox::HttpsConnector::new(
            std::sync::Arc::new(trust),
            false,
            std::time::Duration::from_secs(5),
        );
        HostClient {
            tls: Some(Client::builder(TokioExecutor::new()).build(connector)),
            ..HostClient::new(base, token)
        }
    }

    /// Send a request with an optional JSON body and extra headers.
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<Reply, ClientError> {
        let (status, retry_after_s, bytes) = self.exchange(method, path, body, headers).await?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        Ok(Reply {
            status,
            body,
            retry_after_s,
        })
    }

    /// GET `path` as bytes: the status and the body.
    pub async fn get_bytes(&self, path: &str) -> Result<(u16, Bytes), ClientError> {
        let (status, _, bytes) = self.exchange(hyper::Method::GET, path, None, &[]).await?;
        Ok((status, bytes))
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Option<u64>, Bytes), ClientError> {
        let url = format!("{}{path}", self.base);
        let json = body.is_some() || method == hyper::Method::POST;
        let mut req = hyper::Request::builder().method(method).uri(&url);
        if json {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Other(format!("bad request to {url}: {e}")))?;
        let sent = match &self.tls {
            Some(tls) => tls.request(req).await,
            None => self.client.request(req).await,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                use std::error::Error as _;
                let tls = e
                    .source()
                    .and_then(|s| crate::sandbox::find_tls_failure(s).map(|t| t.0.clone()));
                if let Some(why) = tls {
                    return Err(ClientError::Other(format!(
                        "{why} (the CLI trusts the public roots and the certificates in server.tls.cert)"
                    )));
                }
                if e.is_connect() {
                    return Err(ClientError::NotRunning(self.base.clone()));
                }
                // What the failure was, from its causes (a TLS alert is
                // only named deep in the chain).
                let mut causes = Vec::new();
                let mut next = e.source();
                while let Some(cause) = next {
                    causes.push(cause.to_string());
                    next = cause.source();
                }
                let causes = causes.join(": ");
                let alert = [
                    "CertificateRequired",
                    "BadCertificate",
                    "UnknownCA",
                    "CertificateUnknown",
                ]
                .iter()
                .any(|a| causes.contains(a));
                if self.tls.is_some() && (alert || self.asks_certificate.is_some()) {
                    let fix = if self.asks_certificate == Some(true) {
                        "check that --client-cert is signed by the listener's client_ca and --client-key is its key"
                    } else {
                        "pass --client-cert and --client-key (or WEFT_CLIENT_CERT and WEFT_CLIENT_KEY)"
                    };
                    return Err(ClientError::Other(format!(
                        "the host at {} refused the connection: it asks for a client certificate its client_ca signed ({causes}); {fix}",
                        self.base
                    )));
                }
                return Err(ClientError::Other(format!(
                    "request to {url} failed: {e}{}",
                    if causes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({causes})")
                    }
                )));
            }
        };
        let status = resp.status().as_u16();
        let retry_after_s = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Other(format!("reading the answer from {url}: {e}")))?
            .to_bytes();
        Ok((status, retry_after_s, bytes))
    }
}
