//! `[grants.NAME]`: what one plugin may do. Anything not written is denied.

use super::broker::MessagingGrant;
use super::credential::CredentialGrant;
use super::pattern::OriginPattern;
use super::values::valid_credential_name;
use serde::Deserialize;

/// `[grants.NAME]`: what one plugin may do. Anything not written is denied.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Origins (scheme://host[:port][/path-prefix]) the plugin may call.
    #[serde(default)]
    pub http: Vec<OriginPattern>,
    /// Credentials the host may attach to the plugin's outbound requests,
    /// each tied to the origins it may be sent to.
    #[serde(default)]
    pub credentials: Vec<CredentialGrant>,
    /// Credentials whose raw value the plugin may read (implies `credentials`).
    #[serde(default)]
    pub reveal: Vec<String>,
    /// Durable key-value state; without it the plugin has none.
    #[serde(default)]
    pub kv: Option<KvGrant>,
    /// Brokers and subjects the plugin may publish to.
    #[serde(default)]
    pub messaging: Vec<MessagingGrant>,
    /// Memory cap per instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Wall-time cap per call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// CPU budget per call in wasm fuel units (roughly one per instruction);
    /// without it only the wall-time cap applies.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Refuse to load the file unless its sha256 (hex) is this.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Most bytes a call may return (events or receipt), in KiB (default 4096).
    #[serde(default = "default_output_kib")]
    pub output_kib: u32,
    /// Most bytes of log output (log interface, stdout, stderr) per call, in KiB (default 64).
    #[serde(default = "default_log_kib")]
    pub log_kib: u32,
    /// Largest HTTP response body the plugin may receive, in KiB (default 16384).
    #[serde(default = "default_response_kib")]
    pub response_kib: u32,
    /// Most events one transform call may return (default 1000): a split
    /// into more is refused as `invalid-input`.
    #[serde(default = "default_max_events_out")]
    pub max_events_out: u32,
}

/// `kv = { quota_kib = 1024 }`
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KvGrant {
    /// Bytes of keys and values the plugin may keep, in KiB (default 1024).
    #[serde(default = "default_quota_kib")]
    pub quota_kib: u64,
}

/// Memory cap of a plugin without a grant, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// Wall-time cap per call of a plugin without a grant, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

fn default_memory_mib() -> u32 {
    DEFAULT_MEMORY_MIB
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_output_kib() -> u32 {
    4096
}
fn default_log_kib() -> u32 {
    64
}
fn default_response_kib() -> u32 {
    16 * 1024
}
fn default_max_events_out() -> u32 {
    1000
}
fn default_quota_kib() -> u64 {
    1024
}

impl Default for Grant {
    fn default() -> Self {
        Grant {
            http: Vec::new(),
            credentials: Vec::new(),
            reveal: Vec::new(),
            kv: None,
            messaging: Vec::new(),
            memory_mib: DEFAULT_MEMORY_MIB,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            fuel: None,
            sha256: None,
            output_kib: default_output_kib(),
            log_kib: default_log_kib(),
            response_kib: default_response_kib(),
            max_events_out: default_max_events_out(),
        }
    }
}

impl Grant {
    /// How the plugin may have credential `name` attached to requests:
    /// its own entry, or (for a credential it may reveal) one that may go
    /// wherever the plugin may send requests.
    pub fn attachable(&self, name: &str) -> Option<CredentialGrant> {
        if let Some(c) = self.credentials.iter().find(|c| c.name == name) {
            return Some(c.clone());
        }
        self.reveal
            .iter()
            .any(|r| r == name)
            .then(|| CredentialGrant {
                name: name.to_string(),
                origins: Vec::new(),
                headers: Vec::new(),
            })
    }

    /// Every credential the grant names (attach or reveal), sorted, once each.
    pub fn credential_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .credentials
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.reveal.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), String> {
        for origin in &self.http {
            origin
                .origin()
                .map_err(|e| format!("grants.{name}.http: {e}"))?;
        }
        if self.memory_mib == 0 || self.memory_mib > 4096 {
            return Err(format!(
                "grants.{name}.memory_mib = {} is out of range; use 1 to 4096",
                self.memory_mib
            ));
        }
        if self.timeout_ms == 0 {
            return Err(format!("grants.{name}.timeout_ms must be at least 1"));
        }
        if self.fuel == Some(0) {
            return Err(format!(
                "grants.{name}.fuel must be at least 1; leave it out for no fuel limit"
            ));
        }
        if self.output_kib == 0
            || self.log_kib == 0
            || self.response_kib == 0
            || self.max_events_out == 0
        {
            return Err(format!(
                "grants.{name}: output_kib, log_kib, response_kib and max_events_out must be at least 1"
            ));
        }
        if let Some(kv) = &self.kv
            && kv.quota_kib == 0
        {
            return Err(format!(
                "grants.{name}.kv.quota_kib must be at least 1; leave kv out to grant no state"
            ));
        }
        if let Some(pin) = &self.sha256
            && !(pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!(
                "grants.{name}.sha256 {pin:?} is not a sha256 digest; write the 64 hex digits `weft plugin inspect FILE` prints"
            ));
        }
        for c in &self.credentials {
            c.validate(name, &self.http)?;
        }
        for m in &self.messaging {
            m.validate(name)?;
        }
        for c in &self.reveal {
            if !valid_credential_name(c) {
                return Err(format!(
                    "grants.{name}.reveal: {c:?} is not a credential name; use upper-case letters, digits and '_' (it is read from WEFT_SECRET_{c})"
                ));
            }
        }
        Ok(())
    }
}
