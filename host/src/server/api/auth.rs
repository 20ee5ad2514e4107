//! Who may call the admin API: bearer tokens with roles, compared in
//! constant time, and the audit record of every mutating call.

use crate::config::{Config, Role};
use crate::engine::Engine;
use crate::secrets::constant_time_eq;
use crate::store::AuditEntry;
use hyper::Request;
use hyper::body::Incoming;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest admin token accepted: shorter ones can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;
/// Failed logins from one address per minute before it gets 429.
const MAX_FAILURES_PER_MINUTE: u32 = 20;
/// Failed logins from one address per minute written to the audit log; the
/// rest are counted in the next record.
const AUDITED_FAILURES_PER_MINUTE: u32 = 5;

/// Who may call the API, and what it shows about plugins.
pub struct ApiState {
    /// (name, role, sha256 of the token value)
    tokens: Vec<(String, Role, [u8; 32])>,
    pub(super) plugins: crate::sandbox::Plugins,
    /// Failed logins per address in the current minute.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    /// Where backups taken through the API wait to be fetched.
    pub(super) backups: std::path::PathBuf,
    /// Who may reach the admin listener at all.
    pub(crate) gate: crate::perimeter::Gate,
    /// The static credentials the grants attach, for `/credentials`.
    pub(super) secrets: Vec<crate::sandbox::oauth::CredentialStatus>,
}

/// An authenticated caller.
pub(super) struct Caller {
    pub(super) name: String,
    pub(super) role: Role,
}

fn digest(value: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(value).into()
}

/// What to do about a failed login.
pub(super) enum Refusal {
    /// Answer 401; audit it when `audit` says so (with how many went unaudited).
    Unauthorized { audit: Option<u32> },
    /// Too many failures from this address: answer 429 for this long.
    TooMany(u64),
}

impl ApiState {
    /// Tokens from `[[admin.tokens]]` (values from `secrets`), the only
    /// ones the server takes: a variable exported for the CLI grants
    /// nothing here. Refuses tokens shorter than [`MIN_TOKEN_LEN`], and an
    /// admin listener off loopback with no token at all.
    pub fn new(
        config: &Config,
        secrets: &crate::secrets::Secrets,
        plugins: crate::sandbox::Plugins,
    ) -> Result<ApiState, String> {
        let mut tokens = Vec::new();
        for (i, t) in config.admin.tokens.iter().enumerate() {
            for (secret, name) in [
                (Some(&t.secret), t.name.clone()),
                (
                    t.previous_secret.as_ref(),
                    format!("{} (previous token)", t.name),
                ),
            ] {
                let Some(value) = secret.and_then(|s| secrets.get(s)) else {
                    continue;
                };
                if value.len() < MIN_TOKEN_LEN {
                    return Err(format!(
                        "admin.tokens[{i}] ({:?}): the token in {} is {} bytes; admin tokens must be at least {MIN_TOKEN_LEN} (make one with `openssl rand -hex 32`)",
                        t.name,
                        crate::secrets::env_var(secret.map_or("", String::as_str)),
                        value.len()
                    ));
                }
                tokens.push((name, t.role, digest(value.as_bytes())));
            }
        }
        let admin = config.server.admin_addr();
        if tokens.is_empty() {
            if !admin.ip().is_loopback() {
                return Err(format!(
                    "server.admin_listen {admin} is not a loopback address and no admin token is configured: anyone who reaches it could pause, replay and purge; add [[admin.tokens]] or listen on 127.0.0.1"
                ));
            }
            tracing::warn!(
                "the admin API has no tokens: anyone on this machine who reaches {admin} may pause, replay and purge; add [[admin.tokens]]"
            );
        }
        Ok(ApiState {
            tokens,
            plugins,
            secrets: crate::sandbox::oauth::secret_statuses(config),
            failures: Mutex::default(),
            backups: config.server.data_dir.join(crate::store::BACKUP_STAGING),
            gate: crate::perimeter::Gate::new(
                "admin",
                config.server.admin_allow_from.clone(),
                config.server.trusted_proxies.clone(),
            ),
        })
    }

    /// Whether calls need a token (`[[admin.tokens]]` is configured).
    pub(crate) fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The caller, or `None` for a missing or wrong token. Tokens are
    /// compared by digest, so neither their content nor their length shows
    /// in the timing.
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
        let given = digest(given.as_bytes());
        // Compare with every token, so timing says nothing about which matched.
        let mut found = None;
        for (name, role, value) in &self.tokens {
            if constant_time_eq(&given, value) {
                found = Some(Caller {
                    name: name.clone(),
                    role: *role,
                });
            }
        }
        found
    }

    /// Whether `peer` may try again now (429 for this many seconds when not).
    pub(super) fn blocked(&self, peer: Option<IpAddr>) -> Option<u64> {
        let peer = peer?;
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, since) = failures.get(&peer)?;
        let left = Duration::from_secs(60).saturating_sub(since.elapsed());
        (*n >= MAX_FAILURES_PER_MINUTE && !left.is_zero()).then(|| left.as_secs().max(1))
    }

    /// Count a failed login from `peer`.
    pub(super) fn failed(&self, peer: Option<IpAddr>) -> Refusal {
        let Some(peer) = peer else {
            return Refusal::Unauthorized { audit: Some(0) };
        };
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() > 10_000 {
            failures.retain(|_, (_, since)| since.elapsed() < Duration::from_secs(60));
        }
        let entry = failures.entry(peer).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= Duration::from_secs(60) {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
        if entry.0 > MAX_FAILURES_PER_MINUTE {
            return Refusal::TooMany(
                Duration::from_secs(60)
                    .saturating_sub(entry.1.elapsed())
                    .as_secs()
                    .max(1),
            );
        }
        let audit = match entry.0 {
            n if n <= AUDITED_FAILURES_PER_MINUTE => Some(0),
            MAX_FAILURES_PER_MINUTE => {
                Some(MAX_FAILURES_PER_MINUTE - AUDITED_FAILURES_PER_MINUTE - 1)
            }
            _ => None,
        };
        Refusal::Unauthorized { audit }
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
