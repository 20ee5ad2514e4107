//! Replies of the HTTP handlers (the webhook trigger and the admin API):
//! JSON, with secret values masked.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

/// The body type of every response.
pub type Body = Full<Bytes>;

/// A JSON response; secret values in it are masked.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let text = value.to_string();
    let text = crate::redact::mask(&text).into_owned();
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A JSON error: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.into() }))
}
