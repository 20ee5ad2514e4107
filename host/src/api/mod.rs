//! The admin API under `/api/v1`: pipelines, dead letters, replays and event
//! history. When the admin token variable is set, every call needs
//! `Authorization: Bearer <token>`.

use crate::engine::{DeadLetterView, Engine, dead_letter_views, replay};
use crate::http_util::{Body, constant_time_eq, error, json};
use crate::store::{AttemptOutcome, EventId};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

/// Body of `POST /api/v1/dlq/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Event ids to replay.
    #[serde(default)]
    pub ids: Vec<String>,
    /// Replay every dead letter (of `pipeline`, when given).
    #[serde(default)]
    pub all: bool,
    /// Limit `all` to one pipeline.
    #[serde(default)]
    pub pipeline: Option<String>,
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.to_string())
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
    match (req.method().clone(), rest) {
        (Method::GET, "/pipelines") => {
            let list: Vec<_> = engine
                .pipeline_names()
                .iter()
                .filter_map(|n| engine.stats_json(n))
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "pipelines": list }))
        }
        (Method::GET, "/dlq") => {
            let pipeline = query_param(&req, "pipeline");
            match dead_letter_views(engine.store(), pipeline.as_deref()) {
                Ok(list) => json(StatusCode::OK, &serde_json::json!({ "dead_letters": list })),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        (Method::POST, "/dlq/replay") => {
            let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
            };
            let request: ReplayRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("expected {{\"ids\": [...]}} or {{\"all\": true}}: {e}"),
                    );
                }
            };
            replay_handler(engine, request).await
        }
        (Method::GET, p) if p.starts_with("/events/") => {
            let id = &p["/events/".len()..];
            let id: EventId = match id.parse() {
                Ok(id) => id,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match engine.store().event(&id) {
                Ok(Some(r)) => {
                    let mut view =
                        serde_json::to_value(DeadLetterView::from(&r)).unwrap_or_default();
                    view["state"] = r.state.as_str().into();
                    if let Some(AttemptOutcome::Delivered { receipt }) =
                        r.attempts.last().map(|a| &a.outcome)
                    {
                        view["receipt"] = receipt.clone().into();
                    }
                    json(StatusCode::OK, &view)
                }
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

async fn replay_handler(engine: &Engine, request: ReplayRequest) -> Response<Body> {
    let ids: Vec<EventId> = if request.all {
        match engine.store().dead_letters(request.pipeline.as_deref()) {
            Ok(list) => list.iter().map(|r| r.id).collect(),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    } else {
        let parsed: Result<Vec<EventId>, String> = request.ids.iter().map(|s| s.parse()).collect();
        match parsed {
            Ok(ids) if !ids.is_empty() => ids,
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "name the ids to replay, or send \"all\": true",
                );
            }
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        }
    };
    match replay(engine.store(), Some(engine), &ids).await {
        Ok(outcomes) => json(StatusCode::OK, &serde_json::json!({ "replayed": outcomes })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
