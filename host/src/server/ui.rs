//! The console: a page and its script and style, built into the binary,
//! served at `/ui` on the admin listener. It holds no data of its own: it
//! reads and acts through `/api/v1` with the caller's token.

use crate::reply::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// What the page may load and do: its own script, style and API, nothing
/// inline, never in a frame.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path` (`/ui`, `/ui/`, `/ui/app.js`, `/ui/app.css`, and
/// `/ui/config.json`: whether the API wants a token, so the page asks for
/// one before it calls anything rather than after a refused call).
pub(super) fn asset(path: &str, tokens: bool) -> Option<Response<Body>> {
    let (body, kind) = match path {
        "/ui" | "/ui/" | "/ui/index.html" => (
            bytes::Bytes::from_static(INDEX.as_bytes()),
            "text/html; charset=utf-8",
        ),
        "/ui/app.js" => (
            bytes::Bytes::from_static(SCRIPT.as_bytes()),
            "text/javascript; charset=utf-8",
        ),
        "/ui/app.css" => (
            bytes::Bytes::from_static(STYLE.as_bytes()),
            "text/css; charset=utf-8",
        ),
        "/ui/config.json" => (
            bytes::Bytes::from(serde_json::json!({ "tokens": tokens }).to_string()),
            "application/json",
        ),
        _ => return None,
    };
    let mut resp = Response::new(http_body_util::Full::new(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}
