//! Replies of the HTTP handlers (the webhook trigger and the admin API):
//! JSON, with secret values masked.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};

/// The body type of every response.
pub type Body = Full<Bytes>;

/// A JSON response; secret values in it are masked.
///
/// What the caller sent is never put in one: masking it would answer
/// "[redacted]" to a correct guess of a secret, an oracle anyone could
/// query. An answer made only of the caller's own input (and of
/// configuration) goes through [`echo`] instead.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let text = value.to_string();
    respond(status, crate::redact::mask(&text).into_owned())
}

/// A JSON response made only of what the caller sent (and of
/// configuration, which holds no secrets), not masked: it tells the caller
/// nothing it did not send, whatever a guess it holds.
pub fn echo(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, value.to_string())
}

fn respond(status: StatusCode, text: String) -> Response<Body> {
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

/// The media type of a `Content-Type` value: lower case, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a content type is JSON (`application/json`, `application/*+json`,
/// with or without parameters).
pub fn is_json(content_type: &str) -> bool {
    let essence = media_type(content_type);
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}
