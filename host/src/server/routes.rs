//! Routing: webhooks to their pipeline's trigger, `/metrics`, health, and
//! the admin API.

use super::live::Current;
use super::{Plane, Shared};
use crate::reply::{Body, error, json};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

pub(super) async fn route(
    plane: Plane,
    current: &Current,
    state: &Shared,
    req: Request<Incoming>,
) -> Response<Body> {
    let engine = &current.engine;
    if plane == Plane::Admin
        && let Some(peer) = req.extensions().get::<crate::perimeter::Peer>()
    {
        let forwarded = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        if let Err(ip) = current
            .api
            .gate
            .admit(peer.0, forwarded, engine.store().as_ref())
        {
            return error(
                StatusCode::FORBIDDEN,
                format!("{ip} may not use the admin listener: not in server.admin_allow_from"),
            );
        }
    }
    let path = req.uri().path().to_string();
    let admin_only = path == "/metrics"
        || path == "/api/v1"
        || path.starts_with("/api/v1/")
        || path == "/ui"
        || path.starts_with("/ui/");
    if admin_only && plane == Plane::Public {
        return error(
            StatusCode::NOT_FOUND,
            "no such route here: the admin API, the console and /metrics are on the admin listener (server.admin_listen)",
        );
    }
    if (path == "/ui" || path.starts_with("/ui/"))
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && let Some(resp) = super::ui::asset(&path, current.api.has_tokens())
    {
        return resp;
    }
    if path.starts_with("/hooks/") && plane == Plane::Admin {
        return error(
            StatusCode::NOT_FOUND,
            "webhooks go to the public listener (server.listen), not the admin one",
        );
    }
    match (req.method(), path.as_str()) {
        (&Method::POST, p) if p.starts_with("/hooks/") => {
            let name = p["/hooks/".len()..].trim_end_matches('/');
            match current.triggers.webhook(name) {
                Some(hook) => hook.handle(engine, req).await,
                None => error(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no webhook pipeline by that name; configured pipelines: {}",
                        engine.pipeline_names().join(", ")
                    ),
                ),
            }
        }
        (_, p) if p.starts_with("/hooks/") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "webhooks take POST with a JSON body",
        ),
        // HEAD answers as GET does, without the body (hyper leaves it out).
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(
                super::metrics::render(engine, &state.live),
            )));
            resp.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            resp
        }
        (&Method::GET | &Method::HEAD, "/healthz") => {
            json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
        }
        (&Method::GET | &Method::HEAD, "/readyz") => match engine.store().failing() {
            // Not ready while the store cannot write: a balancer sends
            // traffic elsewhere until a write succeeds again.
            Some(why) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({ "status": "not ready", "reason": format!("the store cannot write: {why}") }),
            ),
            None => json(
                StatusCode::OK,
                &serde_json::json!({ "status": "ready", "pipelines": engine.pipeline_names() }),
            ),
        },
        (_, p) if p == "/api/v1" || p.starts_with("/api/v1/") => {
            super::api::handle(engine, &current.api, &*state.live, state.body_timeout, req).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "no such route; webhooks go to POST /hooks/{pipeline}, health to GET /healthz and /readyz",
        ),
    }
}
