//! `[server]`, `[plugins]` and `[admin]`: where weft listens and keeps its
//! data, where plugins live, and who may use the admin API.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the public listener: webhooks and health.
    pub listen: SocketAddr,
    /// Address of the admin listener: the admin API, `/metrics` and health
    /// (default: loopback, on the port after `listen`'s). Without admin
    /// tokens it must be a loopback address.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Directory of the durable store; relative paths are relative to the config file.
    pub data_dir: PathBuf,
    /// Largest accepted webhook body, in bytes (default 1 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Bytes of events held in memory at once, over every pipeline: bodies
    /// being received and accepted, and payloads in an attempt (default
    /// 268435456, 256 MiB). Past it, webhooks get `429` with `Retry-After`
    /// before their body is read.
    #[serde(default = "default_max_inflight_bytes")]
    pub max_inflight_bytes: u64,
    /// How long delivered and filtered events stay in the run history, in hours (default 24).
    #[serde(default = "default_keep_hours")]
    pub keep_history_hours: u64,
    /// Most finished events kept in the run history, oldest dropped first
    /// (default: no limit besides `keep_history_hours`).
    #[serde(default)]
    pub keep_history_events: Option<usize>,
    /// How long a dead letter is kept for replay, in hours from its last
    /// attempt (default 336, two weeks); 0 keeps dead letters until they
    /// are replayed or purged. Expired ones are logged and counted in
    /// `weft_dead_letters_expired_total`.
    #[serde(default = "default_keep_dead_letters_hours")]
    pub keep_dead_letters_hours: u64,
    /// How long an idempotency key is remembered at ingress, in hours (default 24).
    #[serde(default = "default_keep_hours")]
    pub dedup_window_hours: u64,
    /// No longer read: server tokens come only from `[[admin.tokens]]`, and
    /// the CLI reads its own from `WEFT_TOKEN`. Kept to name the change
    /// when an old config sets it.
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// A TOML file of `NAME = "secret"` lines, readable by its owner only
    /// (mode 0600). `WEFT_SECRET_NAME` in the environment wins over it.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
    /// Longest wait for a request's headers, and for the next request on an
    /// idle keep-alive connection, in ms (default 10000).
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// Longest time to receive a request's body, in ms (default 30000).
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Connections open at once (default 1024). Past it, a new connection
    /// takes the place of the longest-idle one.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one address (default 256).
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Addresses that may reach the admin listener (API, console,
    /// `/metrics`, health): CIDR blocks such as `["10.0.0.0/8"]`; others
    /// get 403 (default: every address, tokens still required off loopback).
    #[serde(default)]
    pub admin_allow_from: Option<super::Allowlist>,
    /// Proxies whose `X-Forwarded-For` names the client (CIDR blocks); from
    /// any other peer the header is ignored and the peer is the client.
    #[serde(default)]
    pub trusted_proxies: Option<super::Allowlist>,
    /// HTTPS on the public listener: `tls = { cert = "cert.pem", key =
    /// "key.pem" }`, with `client_ca` for client certificates (mTLS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// HTTPS on the admin listener (API, console, `/metrics`), the same
    /// table as `tls`; the CLI trusts the certificates in its `cert` file.
    #[serde(default)]
    pub admin_tls: Option<TlsConfig>,
    /// Encryption at rest: `encryption = { key = "STORE_KEY" }` seals
    /// payloads, event records and plugin state in the store under the
    /// credential `STORE_KEY` (32 random bytes as 64 hex digits, from
    /// `weft store keygen`); `previous = ["OLD_KEY"]` keeps values written
    /// under earlier keys readable until `weft store reencrypt`.
    #[serde(default)]
    pub encryption: Option<EncryptionConfig>,
}

/// `encryption = { key = "…", previous = […] }`: the store's keys, by
/// credential name (read like every other secret).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// The key new values are sealed under.
    pub key: String,
    /// Keys values written earlier may be sealed under.
    #[serde(default)]
    pub previous: Vec<String>,
}

impl EncryptionConfig {
    /// Every credential it names: the current key first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.key.as_str()).chain(self.previous.iter().map(String::as_str))
    }
}

/// `tls = { … }`: a listener's certificate, and which client certificates
/// it takes. Files are PEM, read again when they change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates client certificates must chain to; with it, clients
    /// show a certificate (see `client_auth`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// `required` (default): a client without a valid certificate is
    /// refused at the handshake; `optional`: it may connect, and pipelines
    /// with `require_client_cert = true` refuse it.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// Whether every client must show a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Refused at the handshake without one.
    #[default]
    Required,
    /// Allowed without one; pipelines may still require one.
    Optional,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_inflight_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_peer() -> usize {
    256
}

impl ServerConfig {
    /// Where the admin listener binds: `admin_listen`, or 127.0.0.1 on the
    /// port after `listen`'s (any free port when `listen`'s is 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listen.unwrap_or_else(|| {
            let port = match self.listen.port() {
                0 => 0,
                p => p.saturating_add(1),
            };
            SocketAddr::from(([127, 0, 0, 1], port))
        })
    }

    /// Check the listener's limits.
    pub(super) fn validate(&self) -> Result<(), String> {
        for (key, t) in [("tls", &self.tls), ("admin_tls", &self.admin_tls)] {
            if let Some(t) = t
                && t.client_ca.is_none()
                && t.client_auth == ClientAuth::Optional
            {
                return Err(format!(
                    "server.{key}.client_auth = \"optional\" needs client_ca: the CA client certificates are checked against"
                ));
            }
        }
        if let Some(e) = &self.encryption {
            if let Some(bad) = e.names().find(|n| !super::valid_credential_name(n)) {
                return Err(format!(
                    "server.encryption: {bad:?} is not a credential name; write the NAME whose key is in WEFT_SECRET_NAME or the secrets file"
                ));
            }
            if e.previous.contains(&e.key) {
                return Err(format!(
                    "server.encryption.previous names the current key {:?} too; list only earlier keys there",
                    e.key
                ));
            }
        }
        if self.max_body_bytes == 0 {
            return Err("server.max_body_bytes must be at least 1".into());
        }
        if let Some(var) = &self.admin_token_env {
            return Err(format!(
                "server.admin_token_env = {var:?} is no longer read: an environment variable meant for the CLI must not make anyone an admin on the server. Declare the token under [[admin.tokens]] (name, role, secret) and remove the line; the CLI takes its token from WEFT_TOKEN"
            ));
        }
        if self.max_inflight_bytes == 0 {
            return Err("server.max_inflight_bytes must be at least 1".into());
        }
        if self.header_timeout_ms == 0 || self.body_timeout_ms == 0 {
            return Err("server.header_timeout_ms and body_timeout_ms must be at least 1".into());
        }
        if self.max_connections == 0
            || self.max_connections_per_peer == 0
            || self.max_connections_per_peer > self.max_connections
        {
            return Err(format!(
                "server.max_connections_per_peer ({}) must be between 1 and max_connections ({})",
                self.max_connections_per_peer, self.max_connections
            ));
        }
        Ok(())
    }
}
fn default_keep_hours() -> u64 {
    24
}
fn default_keep_dead_letters_hours() -> u64 {
    336
}

/// `[plugins]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory of `*.wasm` plugin files; a plugin's name is its file stem.
    pub dir: PathBuf,
    /// Most bytes the compiled-code cache in the data directory may take;
    /// past it a plugin is compiled at each start instead of cached.
    #[serde(default = "default_cache_max_bytes")]
    pub cache_max_bytes: u64,
}

fn default_cache_max_bytes() -> u64 {
    256 * 1024 * 1024
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer tokens of the admin API, each with a role; the only ones the
    /// server accepts. With none the API is open to anyone who reaches the
    /// (loopback) listener.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// `[[admin.tokens]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: named in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Credential holding the token value (`WEFT_SECRET_<NAME>` or the
    /// secrets file), never the value itself.
    pub secret: String,
    /// The token being rotated out: it still works (its calls are audited
    /// as `NAME (previous token)`) until it is removed and the config
    /// reloaded.
    #[serde(default)]
    pub previous_secret: Option<String>,
}

impl TokenConfig {
    /// The credentials it names: the token, and the one being rotated out.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.secret.as_str()).chain(self.previous_secret.as_deref())
    }
}

/// An admin API role; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also pause, resume and replay.
    Operator,
    /// Also purge.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}
