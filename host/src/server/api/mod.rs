//! The admin API under `/api/v1`: pipelines (status, pause, resume), dead
//! letters (list, replay, purge), event history, plugins, usage and the
//! audit log (records and a verification of its chain). With tokens
//! configured every call needs `Authorization: Bearer <token>` of a role
//! that allows it (viewer reads, operator also pauses, resumes and replays,
//! admin also purges); every mutating call is written to the audit log.

mod auth;
mod backups;
mod openapi;
pub(crate) mod table;
mod views;

pub use views::PluginView;

pub use auth::ApiState;

use self::auth::{Refusal, audit};
use self::table::Op;
use crate::engine::{Selection, dead_letter_views, purge, replay};
use crate::reply::{Body, error, json};
use crate::store::EventId;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// What a reload answers: a summary of what changed, or why nothing did.
pub type ReloadResult = Result<serde_json::Value, String>;

/// Reloads the configuration (`POST /api/v1/reload`); the host provides it.
pub trait Reload: Send + Sync {
    /// Reload on behalf of `by` (a token's name, `signal`, `watch`).
    fn reload<'a>(
        &'a self,
        by: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ReloadResult> + Send + 'a>>;
}

fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    crate::server::query::param(req.uri().query(), name)
}

/// Route one `/api/v1` request.
pub(crate) async fn handle(
    engine: &crate::engine::Engine,
    state: &ApiState,
    reload: &dyn Reload,
    body_timeout: std::time::Duration,
    req: Request<Incoming>,
) -> Response<Body> {
    let peer = req
        .extensions()
        .get::<crate::perimeter::Peer>()
        .map(|p| p.0);
    if let Some(secs) = state.blocked(peer) {
        return too_many(secs);
    }
    let Some(caller) = state.authenticate(&req) else {
        let at = format!("{} {}", req.method(), req.uri().path());
        match state.failed(peer) {
            Refusal::TooMany(secs) => return too_many(secs),
            Refusal::Unauthorized {
                audit: Some(unaudited),
            } => {
                let who = peer.map_or("unknown".to_string(), |p| p.to_string());
                let more = if unaudited > 0 {
                    format!(
                        " ({unaudited} more from this address in this minute were not recorded)"
                    )
                } else {
                    String::new()
                };
                audit(
                    engine,
                    &format!("peer:{who}"),
                    "refused-login",
                    "",
                    format!("{at}: missing or wrong bearer token{more}"),
                )
                .await;
            }
            Refusal::Unauthorized { audit: None } => {}
        }
        return error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token; send Authorization: Bearer <token>",
        );
    };
    if req.method() != hyper::Method::GET
        && let Some(refusal) = cross_site_refusal(&req)
    {
        return refusal;
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let rest = path.strip_prefix("/api/v1").unwrap_or("");
    let method = req.method().clone();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let need = table::role_of(&method, &segments);
    if caller.role < need {
        if method != Method::GET {
            audit(
                engine,
                &caller.name,
                "refused",
                "",
                format!("{method} {path}: needs the {} role", need.as_str()),
            )
            .await;
        }
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "this call needs the {} role; token {:?} has {}",
                need.as_str(),
                caller.name,
                caller.role.as_str()
            ),
        );
    }
    let Some((route, params)) = table::find(&method, &segments) else {
        return error(
            StatusCode::NOT_FOUND,
            "no such API route; GET /api/v1/openapi.json lists them all",
        );
    };
    let param = |i: usize| params.get(i).map(String::as_str).unwrap_or_default();
    match route.op {
        Op::OpenApi => json(StatusCode::OK, &openapi::document()),
        Op::WhoAmI => json(
            StatusCode::OK,
            &serde_json::json!({ "name": caller.name, "role": caller.role.as_str() }),
        ),
        Op::Plugins => {
            let denials = engine.sandbox().denial_counts();
            let users = engine.plugin_users();
            let list: Vec<PluginView> = state
                .plugins
                .values()
                .map(|p| {
                    let denied = denials
                        .iter()
                        .filter(|((name, _), _)| *name == p.name)
                        .map(|((_, cap), n)| (cap.to_string(), *n))
                        .collect();
                    PluginView::of(p, users.get(&p.name).cloned().unwrap_or_default(), denied)
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "plugins": list }))
        }
        Op::AuditLog => {
            let from = query_param(&req, "from")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            match engine.store().audit().records(from) {
                Ok(records) => json(StatusCode::OK, &serde_json::json!({ "records": records })),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        Op::AuditVerify => {
            let answer = match engine.store().audit().verify() {
                Ok(n) => serde_json::json!({ "intact": true, "records": n }),
                Err(b) => {
                    serde_json::json!({ "intact": false, "index": b.index, "reason": b.reason })
                }
            };
            json(StatusCode::OK, &answer)
        }
        Op::Reload => match reload.reload(&caller.name).await {
            Ok(summary) => json(StatusCode::OK, &summary),
            Err(why) => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("nothing was changed: {why}"),
            ),
        },
        Op::BackupTake => {
            let resp = backups::take(engine, state).await;
            let detail = if resp.status() == StatusCode::OK {
                "taken".to_string()
            } else {
                format!("failed ({})", resp.status())
            };
            audit(engine, &caller.name, "backup", "", detail).await;
            resp
        }
        Op::BackupFile => {
            let offset = query_param(&req, "offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let file: Vec<&str> = param(1).split('/').collect();
            backups::chunk(state, param(0), &file, offset)
        }
        Op::BackupRemove => backups::remove(state, param(0)),
        Op::Usage => json(
            StatusCode::OK,
            &serde_json::to_value(engine.usage()).unwrap_or_default(),
        ),
        Op::Pipelines => {
            let list: Vec<_> = engine
                .pipeline_names()
                .iter()
                .filter_map(|n| engine.stats_json(n))
                .collect();
            json(StatusCode::OK, &serde_json::json!({ "pipelines": list }))
        }
        Op::Pipeline => match engine.stats_json(param(0)) {
            Some(v) => json(StatusCode::OK, &v),
            None => error(
                StatusCode::NOT_FOUND,
                format!(
                    "no pipeline by that name; configured pipelines: {}",
                    engine.pipeline_names().join(", ")
                ),
            ),
        },
        Op::Pause | Op::Resume => {
            let (name, action) = (
                param(0),
                if route.op == Op::Pause {
                    "pause"
                } else {
                    "resume"
                },
            );
            let result = if route.op == Op::Pause {
                engine.pause(name).await
            } else {
                engine.resume(name).await
            };
            let detail = match &result {
                Ok(()) => "done".to_string(),
                Err(e) => format!("failed: {e}"),
            };
            audit(engine, &caller.name, action, name, detail).await;
            match result {
                Ok(()) => json(StatusCode::OK, &engine.stats_json(name).unwrap_or_default()),
                Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
            }
        }
        Op::CanaryPromote | Op::CanaryRollback => {
            let (name, step) = (param(0), query_param(&req, "step"));
            let what = if route.op == Op::CanaryPromote {
                crate::engine::CanaryAction::Promote
            } else {
                crate::engine::CanaryAction::Rollback
            };
            match engine
                .canary_action(name, step.as_deref(), what, &caller.name)
                .await
            {
                Ok(view) => json(
                    StatusCode::OK,
                    &serde_json::to_value(view).unwrap_or_default(),
                ),
                Err(why) => error(StatusCode::NOT_FOUND, why),
            }
        }
        Op::Erase => {
            let body = match read_body(req, body_timeout).await {
                Ok(b) => b,
                Err(resp) => return resp,
            };
            let request: crate::engine::EraseRequest = match serde_json::from_slice(&body) {
                Ok(r) => r,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "expected {{\"subject\": \"email\", \"value\": \"…\", \"emit\": \"pipeline\" (optional)}}: {e}"
                        ),
                    );
                }
            };
            let result = engine.erase_subject(&request).await;
            let detail = match &result {
                Ok(e) => format!(
                    "subject {}: {} events in the history and {} dead letters erased, {} still queued{} (the value is not recorded)",
                    e.subject,
                    e.history,
                    e.dead_letters,
                    e.queued_left,
                    request
                        .emit
                        .as_ref()
                        .map_or(String::new(), |p| format!("; request sent into {p}"))
                ),
                Err(why) => format!("subject {}: failed: {why}", request.subject),
            };
            audit(engine, &caller.name, "erase", "", detail).await;
            match result {
                Ok(e) => json(StatusCode::OK, &serde_json::to_value(e).unwrap_or_default()),
                Err(why) => error(StatusCode::UNPROCESSABLE_ENTITY, why),
            }
        }
        Op::Credentials => {
            let mut list = state.secrets.clone();
            list.extend(engine.sandbox().oauth().statuses());
            json(StatusCode::OK, &serde_json::json!({ "credentials": list }))
        }
        Op::Encryption => json(
            StatusCode::OK,
            &serde_json::to_value(engine.store().encryption()).unwrap_or_default(),
        ),
        Op::Reencrypt => {
            let result = engine.store().reencrypt().await;
            let detail = match &result {
                Ok(r) => reencrypted_detail(r),
                Err(e) => format!("failed: {e}"),
            };
            audit(engine, &caller.name, "reencrypt", "", detail).await;
            match result {
                Ok(r) => json(StatusCode::OK, &serde_json::to_value(r).unwrap_or_default()),
                Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            }
        }
        Op::PurgeQueued => {
            let name = param(0);
            let result =
                crate::engine::purge_queued(engine.store(), name, &engine.pipeline_names()).await;
            let detail = match &result {
                Ok(n) => format!("{n} queued events deleted"),
                Err(e) => format!("refused: {e}"),
            };
            audit(engine, &caller.name, "purge-queued", name, detail).await;
            match result {
                Ok(n) => json(StatusCode::OK, &serde_json::json!({ "purged": n })),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        Op::DeadLetters => {
            let pipeline = query_param(&req, "pipeline");
            let since = query_param(&req, "since");
            match dead_letter_views(
                engine.store(),
                pipeline.as_deref(),
                since.as_deref(),
                engine.redaction(),
            ) {
                Ok(list) => json(StatusCode::OK, &serde_json::json!({ "dead_letters": list })),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        Op::Replay | Op::PurgeDeadLetters | Op::Compensate => {
            let action = match route.op {
                Op::Replay => "replay",
                Op::Compensate => "compensate",
                _ => "purge",
            };
            let body = match read_body(req, body_timeout).await {
                Ok(b) => b,
                Err(resp) => return resp,
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
            let result = match action {
                "replay" => replay(engine.store(), Some(engine), &ids).await,
                "compensate" => engine.compensate(&ids).await,
                _ => purge(engine.store(), &ids).await,
            };
            let shown: Vec<String> = ids.iter().take(20).map(ToString::to_string).collect();
            let detail = format!(
                "{} event(s){}: {}{}",
                ids.len(),
                match &result {
                    Ok(_) => String::new(),
                    Err(e) => format!(" (failed: {e})"),
                },
                shown.join(", "),
                if ids.len() > 20 { ", …" } else { "" }
            );
            audit(engine, &caller.name, &format!("dlq-{action}"), "", detail).await;
            match result {
                Ok(outcomes) => json(StatusCode::OK, &serde_json::json!({ "results": outcomes })),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        Op::Events => {
            let limit = query_param(&req, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(50usize)
                .min(10_000);
            match crate::engine::run_history(
                engine.store(),
                query_param(&req, "pipeline").as_deref(),
                query_param(&req, "state").as_deref(),
                query_param(&req, "since").as_deref(),
                limit,
                engine.redaction(),
            ) {
                Ok(list) => json(StatusCode::OK, &serde_json::json!({ "events": list })),
                Err(e) => error(StatusCode::BAD_REQUEST, e),
            }
        }
        Op::Event => {
            let id: EventId = match param(0).parse() {
                Ok(id) => id,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            match engine.store().event(&id) {
                Ok(Some(r)) => json(StatusCode::OK, &event_view(&engine.redaction().record(&r))),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    "no event with that id; it may have passed the history window",
                ),
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
    }
}

/// An event with its state, history and receipt, as JSON.
pub fn event_view(r: &crate::store::EventRecord) -> serde_json::Value {
    serde_json::to_value(crate::engine::EventView::from(r)).unwrap_or_default()
}

fn too_many(secs: u64) -> Response<Body> {
    let mut resp = error(
        StatusCode::TOO_MANY_REQUESTS,
        format!("too many failed logins from this address; try again in {secs} s"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    resp
}

/// The refusal of a mutating call that is not JSON or comes from another
/// site, if it is one of those:
/// a page elsewhere cannot make a browser send either without the
/// browser's own cross-origin check.
fn cross_site_refusal(req: &Request<Incoming>) -> Option<Response<Body>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if !header("content-type").is_some_and(|c| crate::reply::is_json(&c)) {
        return Some(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "mutating calls take Content-Type: application/json",
        ));
    }
    let cross_site = header("sec-fetch-site").is_some_and(|s| s != "same-origin" && s != "none");
    let foreign_origin = match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => {
            origin != format!("http://{host}") && origin != format!("https://{host}")
        }
        (Some(_), None) => true,
        (None, _) => false,
    };
    (cross_site || foreign_origin).then(|| {
        error(
            StatusCode::FORBIDDEN,
            "cross-site requests may not change anything; call the admin API from the CLI or a same-origin page",
        )
    })
}

/// A request's body, at most 1 MiB, within `server.body_timeout_ms`; the
/// answer to give when it cannot be read.
async fn read_body(
    req: Request<Incoming>,
    body_timeout: std::time::Duration,
) -> Result<bytes::Bytes, Response<Body>> {
    let reading = Limited::new(req.into_body(), 1024 * 1024).collect();
    match tokio::time::timeout(body_timeout, reading).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => Err(error(StatusCode::BAD_REQUEST, e.to_string())),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time (server.body_timeout_ms); send it again",
        )),
    }
}

/// A re-encryption pass, for the audit log.
pub fn reencrypted_detail(r: &crate::store::Reencrypted) -> String {
    format!(
        "{} records, {} payloads and {} plugin state values sealed under key {}; keys in use: {}",
        r.records,
        r.payloads,
        r.kv_values,
        r.encryption.current_key.as_deref().unwrap_or("none"),
        r.encryption.keys_in_use.join(", ")
    )
}
