//! Who may call the admin API: bearer tokens with roles, compared in
//! constant time, and the audit record of every mutating call.

use crate::config::{Config, Role};
use crate::engine::Engine;
use crate::secrets::constant_time_eq;
use crate::store::AuditEntry;
use hyper::body::Incoming;
use hyper::{Method, Request};

/// Who may call the API, and what it shows about plugins.
pub struct ApiState {
    /// (name, role, token value)
    tokens: Vec<(String, Role, String)>,
    pub(super) plugins: crate::sandbox::Plugins,
}

/// An authenticated caller.
pub(super) struct Caller {
    pub(super) name: String,
    pub(super) role: Role,
}

impl ApiState {
    /// Tokens from `[admin]` (values from `secrets`) and the legacy
    /// `server.admin_token_env` variable (an admin token named `admin-token`).
    pub fn new(
        config: &Config,
        secrets: &crate::secrets::Secrets,
        plugins: crate::sandbox::Plugins,
    ) -> ApiState {
        let mut tokens: Vec<(String, Role, String)> = config
            .admin
            .tokens
            .iter()
            .filter_map(|t| Some((t.name.clone(), t.role, secrets.get(&t.secret)?.to_string())))
            .collect();
        if let Ok(t) = std::env::var(&config.server.admin_token_env)
            && !t.is_empty()
        {
            crate::redact::register(&t);
            tokens.push(("admin-token".into(), Role::Admin, t));
        }
        if tokens.is_empty() {
            tracing::warn!(
                "the admin API has no tokens: anyone who reaches {} may pause, replay and purge; add [[admin.tokens]]",
                config.server.listen
            );
        }
        ApiState { tokens, plugins }
    }

    /// The caller, or `None` for a missing or wrong token.
    pub(super) fn authenticate(&self, req: &Request<Incoming>) -> Option<Caller> {
        if self.tokens.is_empty() {
            return Some(Caller {
                name: "anonymous".into(),
                role: Role::Admin,
            });
        }
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compare with every token, so timing says nothing about which matched.
        let mut found = None;
        for (name, role, value) in &self.tokens {
            if constant_time_eq(given.as_bytes(), value.as_bytes()) {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }
}

/// The role a call needs.
pub(super) fn required_role(method: &Method, segments: &[&str]) -> Role {
    match (method, segments) {
        (&Method::GET, _) => Role::Viewer,
        (_, ["dlq", "purge"]) => Role::Admin,
        _ => Role::Operator,
    }
}

/// Append a mutating call to the audit log and flush it.
pub(super) async fn audit(
    engine: &Engine,
    caller: &str,
    action: &str,
    pipeline: &str,
    detail: String,
) {
    let store = engine.store();
    if let Err(e) = store.audit().append(AuditEntry {
        kind: "admin",
        actor: caller.to_string(),
        pipeline: pipeline.to_string(),
        action: action.to_string(),
        detail,
    }) {
        tracing::error!("could not write an admin call to the audit log: {e}");
    }
    let _ = store.flush().await;
}
