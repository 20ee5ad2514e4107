//! The webhook trigger: `POST /hooks/{pipeline}` with a JSON body, checked
//! (size, type, signature, contract) and answered `202` only once the event
//! is durable.

mod form;
mod rejection;
pub mod verify;

pub use rejection::Rejection;

use self::verify::Verifier;
use crate::contract::Contracts;
use crate::engine::{AcceptError, Accepted, Engine, Incoming};
use crate::reply::{Body, error};
use http_body_util::BodyExt;
use hyper::body::Incoming as HyperBody;
use hyper::{Request, Response, StatusCode, header};
use std::sync::atomic::Ordering;

use crate::reply::is_json;

fn header_str(req: &Request<HyperBody>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The correlation id a sender supplied: `X-Correlation-Id`, or the trace id
/// of a W3C `traceparent`.
fn correlation(req: &Request<HyperBody>) -> Option<String> {
    header_str(req, "x-correlation-id").or_else(|| {
        header_str(req, "traceparent").and_then(|tp| tp.split('-').nth(1).map(str::to_string))
    })
}

/// A pipeline's webhook: its signature check and its contract.
pub struct Webhook {
    pipeline: String,
    verifier: Option<Verifier>,
    contract: Option<Contracts>,
    max_body: usize,
    body_timeout: std::time::Duration,
    /// Who may send, when `allow_from` is set.
    gate: Option<crate::perimeter::Gate>,
    /// Refuse clients without a verified certificate.
    require_client_cert: bool,
}

impl Webhook {
    /// The webhook of pipeline `p`: its verifier's keys from `secrets`, its
    /// contract loaded from its file.
    pub fn build(
        p: &crate::config::PipelineConfig,
        secrets: &crate::secrets::Secrets,
        server: &crate::config::ServerConfig,
    ) -> Result<Webhook, super::TriggerError> {
        let contract = p
            .contract
            .as_ref()
            .map(Contracts::load)
            .transpose()
            .map_err(|e| super::TriggerError(format!("pipeline {:?}: {e}", p.name)))?;
        Ok(Webhook {
            pipeline: p.name.clone(),
            verifier: verifier_of(p, secrets)?,
            contract,
            max_body: server.max_body_bytes,
            body_timeout: std::time::Duration::from_millis(server.body_timeout_ms),
            require_client_cert: p.require_client_cert,
            gate: p.allow_from.clone().map(|allow| {
                crate::perimeter::Gate::new(&p.name, Some(allow), server.trusted_proxies.clone())
            }),
        })
    }

    /// Handle one delivery.
    pub async fn handle(&self, engine: &Engine, req: Request<HyperBody>) -> Response<Body> {
        handle(engine, self, req).await
    }
}

impl super::Trigger for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn run(self: std::sync::Arc<Self>, engine: Engine) -> super::Running {
        // Requests reach it through the server; it only makes its refusal
        // reasons known, so each shows with a count from the start.
        if let Some(stats) = engine.stats(&self.pipeline) {
            stats.expect_rejections(&Rejection::ALL.map(Rejection::as_str));
        }
        Box::pin(async {})
    }
}

/// The webhook verifier a pipeline's config asks for, with its keys.
fn verifier_of(
    p: &crate::config::PipelineConfig,
    secrets: &crate::secrets::Secrets,
) -> Result<Option<Verifier>, super::TriggerError> {
    let Some(w) = &p.trigger.webhook else {
        return Ok(None);
    };
    let mut keys = Vec::new();
    for name in w.secret_names() {
        let value = secrets.get(name).ok_or_else(|| {
            super::TriggerError(format!(
                "pipeline {:?}: the webhook secret {name} is not loaded; export {}",
                p.name,
                crate::secrets::env_var(name)
            ))
        })?;
        keys.push(verify::key_bytes(w.verify, value).map_err(|e| {
            super::TriggerError(format!("pipeline {:?}: secret {name}: {e}", p.name))
        })?);
    }
    Ok(Some(verify::Verifier {
        preset: w.verify,
        keys,
        tolerance_s: w.tolerance_s,
        header: w
            .header
            .clone()
            .unwrap_or_else(|| "x-signature".into())
            .to_ascii_lowercase(),
    }))
}

async fn handle(engine: &Engine, hook: &Webhook, req: Request<HyperBody>) -> Response<Body> {
    let (pipeline, max_body) = (hook.pipeline.as_str(), hook.max_body);
    let Some(stats) = engine.stats(pipeline) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown pipeline {pipeline:?}; configured pipelines: {}",
                engine.pipeline_names().join(", ")
            ),
        );
    };
    stats.received.fetch_add(1, Ordering::Relaxed);
    let refuse = |why: Rejection, resp: Response<Body>| {
        stats.reject(why.as_str());
        if why == Rejection::Contract {
            engine.refused_by_contract(pipeline);
        }
        resp
    };
    if let Some(gate) = &hook.gate
        && let Some(peer) = req.extensions().get::<crate::perimeter::Peer>()
    {
        let forwarded = header_str(&req, "x-forwarded-for");
        if let Err(ip) = gate.admit(peer.0, forwarded.as_deref(), engine.store().as_ref()) {
            return refuse(
                Rejection::AddressNotAllowed,
                unheard(
                    req,
                    error(
                        StatusCode::FORBIDDEN,
                        format!(
                            "{ip} may not send to pipeline {pipeline:?}: not in its allow_from"
                        ),
                    ),
                ),
            );
        }
    }
    let client_cert = req
        .extensions()
        .get::<crate::perimeter::ClientCert>()
        .cloned();
    if hook.require_client_cert && client_cert.is_none() {
        return refuse(
            Rejection::ClientCertificate,
            unheard(
                req,
                error(
                    StatusCode::FORBIDDEN,
                    format!(
                        "pipeline {pipeline:?} takes webhooks only from clients with a certificate (require_client_cert)"
                    ),
                ),
            ),
        );
    }
    let content_type = header_str(&req, "content-type").unwrap_or_default();
    // Slack signs form-encoded bodies: the slack preset takes them too.
    let preset = hook.verifier.as_ref().map(|v| v.preset);
    let form = form::is_form(&content_type) && preset.is_some_and(|p| p.takes_forms());
    // Provider headers the preset keeps (only for a verified delivery,
    // checked below), each cut to a sane length.
    let mut kept: Vec<(String, String)> = preset
        .map(|p| p.kept_headers())
        .unwrap_or_default()
        .iter()
        .filter_map(|name| {
            let value = header_str(&req, name)?;
            Some((name.to_string(), value.chars().take(256).collect()))
        })
        .collect();
    // Who the client is, over mTLS: routes and filters may test it.
    if let Some(c) = client_cert {
        kept.push((crate::store::CLIENT_CERT_HEADER.into(), c.0));
    }
    // The header naming the payload's schema version, if its contract has
    // versions named that way.
    let version_header = hook
        .contract
        .as_ref()
        .and_then(|c| c.version_header())
        .and_then(|h| header_str(&req, h))
        .map(|v| v.chars().take(64).collect::<String>());
    // Stripe's signing time, without the signatures beside it.
    if preset == Some(crate::config::Preset::Stripe)
        && let Some(t) = header_str(&req, "stripe-signature").and_then(|v| {
            v.split(',')
                .find_map(|part| part.trim().strip_prefix("t="))
                .filter(|t| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
                .map(str::to_string)
        })
    {
        kept.push(("stripe-signature-timestamp".into(), t));
    }
    let unsupported = || {
        error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this content type is not accepted; send the body as application/json",
        )
    };
    // Without a signature to check, a wrong type is refused before the
    // body is read; with one, the signature is checked first, so an
    // unsigned caller learns nothing about what else would be accepted.
    if hook.verifier.is_none() && !is_json(&content_type) {
        return refuse(Rejection::UnsupportedMediaType, unheard(req, unsupported()));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_body as u64) {
        return refuse(Rejection::TooLarge, unheard(req, too_large(max_body)));
    }
    // Room in memory for the body, before a byte of it is read: what it
    // declares, or the most it may be.
    let expected = declared.unwrap_or(max_body as u64).min(max_body as u64);
    let Some(_held) = engine.inflight().try_hold(expected) else {
        let mut resp = error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "weft holds {} bytes of events in memory, its limit (server.max_inflight_bytes = {}); nothing was read or stored, send it again shortly",
                engine.inflight().bytes(),
                engine.inflight().max()
            ),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return refuse(Rejection::Backpressure, unheard(req, resp));
    };
    let mut idempotency_header = header_str(&req, "idempotency-key");
    let verifier = hook.verifier.as_ref();
    let signed_headers = verifier.map(|_| req.headers().clone());
    let correlation_id = correlation(&req);
    let mut incoming = req.into_body();
    let reading = read_at_most(&mut incoming, max_body);
    let Ok(read) = tokio::time::timeout(hook.body_timeout, reading).await else {
        return refuse(
            Rejection::BodyTimeout,
            error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} ms (server.body_timeout_ms); nothing was stored, send it again",
                    hook.body_timeout.as_millis()
                ),
            ),
        );
    };
    let body = match read {
        Ok(Some(body)) => body,
        Ok(None) => {
            return refuse(Rejection::TooLarge, drained(incoming, too_large(max_body)));
        }
        Err(e) => {
            return refuse(
                Rejection::UnreadableBody,
                error(
                    StatusCode::BAD_REQUEST,
                    format!("could not read the request body: {e}"),
                ),
            );
        }
    };
    if let (Some(v), Some(headers)) = (verifier, &signed_headers) {
        let now_s = crate::store::now_ms() / 1000;
        match v.verify(headers, &body, now_s) {
            // Only signed material names a verified delivery.
            Ok(key) => idempotency_header = Some(key),
            Err(reason) => {
                tracing::warn!(
                    pipeline,
                    scheme = v.preset.as_str(),
                    "webhook refused: {reason}"
                );
                return refuse(
                    Rejection::Signature,
                    error(
                        StatusCode::UNAUTHORIZED,
                        format!("{} signature check failed: {reason}", v.preset.as_str()),
                    ),
                );
            }
        }
    }
    if !is_json(&content_type) && !form {
        return refuse(Rejection::UnsupportedMediaType, unsupported());
    }
    let body = if form {
        let converted = if preset == Some(verify::Preset::Github) {
            form::github_payload(&body)
        } else {
            form::to_json(&body)
        };
        match converted {
            Ok(json) => bytes::Bytes::from(json),
            Err(why) => {
                return refuse(Rejection::InvalidJson, error(StatusCode::BAD_REQUEST, why));
            }
        }
    } else {
        body
    };
    if let Some(contracts) = &hook.contract {
        let (contract, version) = match contracts.pick(version_header.as_deref(), &body) {
            Ok(picked) => picked,
            // The caller's own version, and the configured ones.
            Err(why) => {
                return refuse(
                    Rejection::Contract,
                    crate::reply::echo(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &serde_json::json!({ "error": why }),
                    ),
                );
            }
        };
        if let Some(v) = version {
            kept.push(("contract-version".into(), v.to_string()));
        }
        let violations = contract.check_bytes(&body);
        if !violations.is_empty() {
            // The violations quote the payload: the caller's own input.
            return refuse(
                Rejection::Contract,
                crate::reply::echo(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &serde_json::json!({
                        "error": format!(
                            "the payload breaks the contract {}: {}",
                            contract.file,
                            crate::contract::summary(&violations)
                        ),
                        "violations": violations,
                    }),
                ),
            );
        }
    }
    let incoming = Incoming {
        // Taken over from the request buffer, not copied, when it came in one piece.
        body: Vec::from(body),
        content_type: "application/json".to_string(),
        idempotency_header,
        correlation_id,
        headers: kept,
        key: None,
    };
    match engine.accept(pipeline, incoming).await {
        // The key and correlation id are the caller's own input.
        Ok(Accepted::New {
            id,
            key,
            correlation_id,
        }) => crate::reply::echo(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "id": id.to_string(), "key": key, "correlation_id": correlation_id }),
        ),
        Ok(Accepted::Duplicate { id, key }) => crate::reply::echo(
            StatusCode::OK,
            &serde_json::json!({ "id": id.to_string(), "key": key, "duplicate": true }),
        ),
        Err(e @ AcceptError::UnknownPipeline { .. }) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ AcceptError::InvalidJson(_)) => refuse(
            Rejection::InvalidJson,
            error(StatusCode::BAD_REQUEST, e.to_string()),
        ),
        Err(e @ AcceptError::MissingKey(_)) => refuse(
            Rejection::MissingKey,
            error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        ),
        Err(AcceptError::Backpressure {
            retry_after_s,
            reason,
        }) => {
            stats.reject(Rejection::Backpressure.as_str());
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, reason);
            if let Ok(v) = header::HeaderValue::from_str(&retry_after_s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Err(AcceptError::Store(e)) => {
            stats.reject(Rejection::StoreError.as_str());
            tracing::error!(pipeline, "could not store a webhook event: {e}");
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be stored and was not accepted; retry later",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            resp
        }
    }
}

/// The body, read up to `max` bytes; `None` past that (the rest unread).
async fn read_at_most(
    body: &mut HyperBody,
    max: usize,
) -> Result<Option<bytes::Bytes>, hyper::Error> {
    let mut read = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if read.len() + data.len() > max {
                return Ok(None);
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(Some(read.freeze()))
}

/// A refusal answered before the body was read: see [`drained`].
fn unheard(req: Request<HyperBody>, resp: Response<Body>) -> Response<Body> {
    drained(req.into_body(), resp)
}

/// Most a refused body is read (and thrown away) for, so that its sender,
/// still writing, sees the answer instead of a reset connection.
const DRAIN_BYTES: u64 = 64 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Answer a refusal while the rest of the body is read and dropped in the
/// background, a frame at a time (nothing of it is kept), for at most
/// [`DRAIN_BYTES`] and [`DRAIN_TIME`]. Closing a socket with unread bytes
/// resets it, and a sender still writing its body then loses the answer:
/// a 429 looks like a network failure. The connection closes afterwards.
fn drained(mut body: HyperBody, mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    if hyper::body::Body::is_end_stream(&body) {
        return resp;
    }
    tokio::spawn(async move {
        let drain = async {
            let mut seen = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen += data.len() as u64;
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    });
    resp
}

fn too_large(max: usize) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the {max}-byte limit (server.max_body_bytes)"),
    )
}

#[cfg(test)]
mod tests {
    use super::is_json;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("Application/JSON; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json("application/x-www-form-urlencoded"));
        assert!(!is_json(""));
    }
}
