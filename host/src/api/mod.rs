//! The admin API under `/api/v1`: pipelines (status, pause, resume), dead
//! letters (list, replay, purge) and event history. When the admin token
//! variable is set, every call needs `Authorization: Bearer <token>`.

use crate::engine::{DeadLetterView, Engine, Selection, dead_letter_views, purge, replay};
use crate::http_util::{Body, constant_time_eq, error, json};
use crate::store::{AttemptOutcome, EventId};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.replace("%3A", ":").replace("%2B", "+"))
    })
}

/// Route one `/api/v1` request.
pub async fn handle(
    engine: &Engine,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Some(token) = token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token; send Authorization: Bearer <token>",
            );
        }
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let rest = path.strip_prefix("/api/v1").unwrap_or("");
    let method = req.method().clone();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (method, segments.as_slice()) {
        (Method::GET, ["pipelines"]) => {
            let list: Vec<_> = engine
                .pipeline_names()
                .iter()
                .filter_map(|n| engine.stats_json(n))
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "pipelines": list }))
        }
        (Method::GET, ["pipelines", name]) => match engine.stats_json(name) {
            Some(v) => json(StatusCode::OK, &v),
            None => error(StatusCode::NOT_FOUND, format!("unknown pipeline {name:?}")),
        },
        (Method::POST, ["pipelines", name, action @ ("pause" | "resume")]) => {
            let result = if *action == "pause" {
                engine.pause(name).await
            } else {
                engine.resume(name).await
            };
            match result {
                Ok(()) => json(StatusCode::OK, &engine.stats_json(name).unwrap_or_default()),
                Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
            }
        }
        (Method::GET, ["dlq"]) => {
            let pipeline = query_param(&req, "pipeline");
            let since = query_param(&req, "since");
            match dead_letter_views(engine.store(), pipeline.as_deref(), since.as_deref()) {
                Ok(list) => json(StatusCode::OK, &serde_json::json!({ "dead_letters": list })),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        (Method::POST, ["dlq", action @ ("replay" | "purge")]) => {
            let action = action.to_string();
            let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let selection: Selection = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "expected {{\"ids\": [...]}} or {{\"all\": true, \"pipeline\": …, \"since\": …}}: {e}"
                        ),
                    );
                }
            };
            let ids: Vec<EventId> = match selection.resolve(engine.store()) {
                Ok(records) => records.iter().map(|r| r.id).collect(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let result = if action == "replay" {
                replay(engine.store(), Some(engine), &ids).await
            } else {
                purge(engine.store(), &ids).await
            };
            match result {
                Ok(outcomes) => json(StatusCode::OK, &serde_json::json!({ "results": outcomes })),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        (Method::GET, ["events", id]) => {
            let id: EventId = match id.parse() {
                Ok(id) => id,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match engine.store().event(&id) {
                Ok(Some(r)) => json(StatusCode::OK, &event_view(&r)),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    format!("no event {id}; it may have passed the history window"),
                ),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no such API route: {} {path}", req.method()),
        ),
    }
}

/// An event with its state, history and receipt, as JSON.
pub fn event_view(r: &crate::store::EventRecord) -> serde_json::Value {
    let mut view = serde_json::to_value(DeadLetterView::from(r)).unwrap_or_default();
    view["state"] = r.state.as_str().into();
    if let Some(AttemptOutcome::Delivered { receipt }) = r.attempts.last().map(|a| &a.outcome) {
        view["receipt"] = receipt.clone().into();
    }
    view
}
