//! Record and replay of a plugin's outbound HTTP at the WIT boundary, for
//! `weft plugin test`: a cassette holds each request the plugin made (after
//! the grant check; credentials by name and placement only, never their
//! values) and the response it got. Replaying answers from it in order,
//! without a network, and refuses any request it does not hold.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

/// A body, as text when it is UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TapeBody {
    /// UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Anything else, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl TapeBody {
    fn of(bytes: &[u8]) -> TapeBody {
        match std::str::from_utf8(bytes) {
            Ok("") => TapeBody::default(),
            Ok(t) => TapeBody {
                text: Some(crate::redact::mask(t).into_owned()),
                base64: None,
            },
            Err(_) => {
                use base64::Engine as _;
                TapeBody {
                    text: None,
                    base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                }
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        use base64::Engine as _;
        match (&self.text, &self.base64) {
            (Some(t), _) => t.clone().into_bytes(),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// A request as the cassette keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapeRequest {
    /// Method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers the plugin set (none the host attached).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: TapeBody,
    /// Credentials the host was asked to attach: `NAME as PLACEMENT`.
    #[serde(default)]
    pub credentials: Vec<String>,
}

/// A response as the cassette keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapeResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: TapeBody,
}

/// One request and its response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// What the plugin sent.
    pub request: TapeRequest,
    /// What it got.
    pub response: TapeResponse,
}

/// A cassette file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Cassette {
    /// Its format's version (1).
    pub weft_cassette: u32,
    /// The exchanges, in order.
    pub exchanges: Vec<Exchange>,
}

/// What a call's outbound HTTP does.
pub enum Tape {
    /// Go out, and keep every exchange.
    Record(Mutex<Vec<Exchange>>),
    /// Answer from these, in order; anything else is refused.
    Replay {
        /// What is left to answer.
        left: Mutex<VecDeque<Exchange>>,
        /// Requests refused for not being on the cassette.
        unexpected: Mutex<Vec<String>>,
    },
}

impl Tape {
    /// A tape that records.
    pub fn record() -> Arc<Tape> {
        Arc::new(Tape::Record(Mutex::default()))
    }

    /// A tape that replays `cassette`.
    pub fn replay(cassette: Cassette) -> Arc<Tape> {
        Arc::new(Tape::Replay {
            left: Mutex::new(cassette.exchanges.into()),
            unexpected: Mutex::default(),
        })
    }

    /// What was recorded, as a cassette.
    pub fn cassette(&self) -> Cassette {
        match self {
            Tape::Record(kept) => Cassette {
                weft_cassette: 1,
                exchanges: kept.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            },
            Tape::Replay { .. } => Cassette::default(),
        }
    }

    /// For a replay: the requests refused, and the exchanges never asked for.
    pub fn leftovers(&self) -> (Vec<String>, usize) {
        match self {
            Tape::Replay { left, unexpected } => (
                unexpected.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                left.lock().unwrap_or_else(|e| e.into_inner()).len(),
            ),
            Tape::Record(_) => (Vec::new(), 0),
        }
    }
}

/// Headers never kept: those the host sets, and the credential marker.
fn kept_header(name: &str, attached: &[String]) -> bool {
    let name = name.to_ascii_lowercase();
    !matches!(
        name.as_str(),
        "authorization" | "traceparent" | "weft-credential" | "host" | "content-length"
    ) && !attached.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

fn headers_of(map: &http::HeaderMap, attached: &[String]) -> Vec<(String, String)> {
    map.iter()
        .filter(|(k, _)| kept_header(k.as_str(), attached))
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                crate::redact::mask(&String::from_utf8_lossy(v.as_bytes())).into_owned(),
            )
        })
        .collect()
}

/// Buffer a request's body: the request, rebuilt, and the body's bytes.
pub async fn buffer_request(
    request: http::Request<WasiBody>,
    cap: usize,
) -> Result<(http::Request<WasiBody>, Bytes), HttpError> {
    let (parts, body) = request.into_parts();
    let bytes = Limited::new(body, cap)
        .collect()
        .await
        .map_err(|_| HttpError::HttpRequestBodySize(Some(cap as u64)))?
        .to_bytes();
    let body = Full::new(bytes.clone())
        .map_err(|never| match never {})
        .boxed_unsync();
    Ok((http::Request::from_parts(parts, body), bytes))
}

/// The cassette's form of a request.
pub fn tape_request(
    request: &http::Request<WasiBody>,
    body: &[u8],
    credentials: Vec<String>,
    attached: &[String],
) -> TapeRequest {
    TapeRequest {
        method: request.method().as_str().to_string(),
        url: request.uri().to_string(),
        headers: headers_of(request.headers(), attached),
        body: TapeBody::of(body),
        credentials,
    }
}

impl Tape {
    /// Keep a response (its body read within `cap`) with its request, and
    /// hand it on.
    pub async fn keep(
        &self,
        request: TapeRequest,
        response: http::Response<WasiBody>,
        cap: usize,
    ) -> Result<http::Response<WasiBody>, HttpError> {
        let (parts, body) = response.into_parts();
        let bytes = Limited::new(body, cap)
            .collect()
            .await
            .map_err(|_| HttpError::HttpResponseBodySize(Some(cap as u64)))?
            .to_bytes();
        if let Tape::Record(kept) = self {
            kept.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Exchange {
                    request,
                    response: TapeResponse {
                        status: parts.status.as_u16(),
                        headers: headers_of(&parts.headers, &[]),
                        body: TapeBody::of(&bytes),
                    },
                });
        }
        let body = Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync();
        Ok(http::Response::from_parts(parts, body))
    }

    /// The recorded answer to `request`, or why there is none.
    pub fn answer(&self, request: &TapeRequest) -> Result<http::Response<WasiBody>, String> {
        let Tape::Replay { left, unexpected } = self else {
            return Err("the tape records; it does not answer".into());
        };
        let mut left = left.lock().unwrap_or_else(|e| e.into_inner());
        let fits = left.front().is_some_and(|next| {
            next.request.method == request.method
                && next.request.url == request.url
                && next.request.body == request.body
                && next.request.credentials == request.credentials
        });
        if !fits {
            let why = match left.front() {
                Some(next) => format!(
                    "{} {} is not the request the cassette holds next ({} {}{})",
                    request.method,
                    request.url,
                    next.request.method,
                    next.request.url,
                    if next.request.url == request.url {
                        ", with another body or credentials"
                    } else {
                        ""
                    }
                ),
                None => format!(
                    "{} {} was not on the cassette (every recorded request was already answered)",
                    request.method, request.url
                ),
            };
            unexpected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(why.clone());
            return Err(why);
        }
        let Some(exchange) = left.pop_front() else {
            return Err("the cassette is empty".into());
        };
        let mut response = http::Response::builder().status(exchange.response.status);
        for (k, v) in &exchange.response.headers {
            response = response.header(k, v);
        }
        let body = Full::new(Bytes::from(exchange.response.body.bytes()))
            .map_err(|never| match never {})
            .boxed_unsync();
        response
            .body(body)
            .map_err(|e| format!("the cassette's response is not valid HTTP: {e}"))
    }
}
