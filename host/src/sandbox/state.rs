//! Per-call store data and the host side of the `log` and `kv` interfaces.

use super::bindings::sink::weft::plugin::credentials;
use super::bindings::transform::weft::plugin::{kv, log};
use super::call::CallContext;
use super::egress::{CREDENTIAL_HEADER, EgressHooks};
use crate::config::Grant;
use std::sync::Arc;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Longest kv key, in bytes.
pub const MAX_KV_KEY: usize = 512;

/// The data of one call's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) http: WasiHttpCtx,
    pub(super) hooks: EgressHooks,
    pub(super) limits: Limiter,
    pub(super) ctx: Arc<CallContext>,
    pub(super) grant: Arc<Grant>,
    /// `None` when the grant has no kv.
    pub(super) kv: Option<KvAccess>,
    pub(super) log_left: usize,
    pub(super) log_budget: usize,
    pub(super) stdout: MemoryOutputPipe,
    pub(super) stderr: MemoryOutputPipe,
    /// The last line the plugin wrote to stderr (a panic message, usually).
    pub(super) last_stderr: Option<String>,
    /// When the call began.
    pub(super) started: std::time::Instant,
    /// What the call cost, once it is over.
    pub(super) cost: super::call::CallCost,
}

/// The store's resource limiter: wasmtime's [`StoreLimits`], remembering
/// the largest memory the plugin asked for.
pub struct Limiter {
    pub(super) inner: StoreLimits,
    pub(super) peak: usize,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak = self.peak.max(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A plugin's view of the kv tree: its own namespace and quota.
pub struct KvAccess {
    pub(super) tree: sled::Tree,
    pub(super) db: sled::Db,
    /// `pipeline \0 plugin \0`
    pub(super) namespace: Vec<u8>,
    pub(super) quota_bytes: u64,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl HostState {
    /// Log a line on the plugin's behalf, within its budget. Passing the
    /// budget is an error: the call is stopped.
    pub(super) fn plugin_log(
        &mut self,
        level: tracing::Level,
        message: &str,
        fields: &[(String, String)],
    ) -> Result<(), LimitExceeded> {
        let cost = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if cost > self.log_left {
            self.log_left = 0;
            return Err(LimitExceeded(format!(
                "plugin {} wrote more than its log cap of {} KiB in one call and was stopped",
                self.ctx.plugin,
                self.log_budget / 1024
            )));
        }
        self.log_left -= cost;
        let c = &self.ctx;
        let message = crate::redact::mask_values(message, &c.redact);
        let masked: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    crate::redact::mask_values(v, &c.redact).into_owned(),
                )
            })
            .collect();
        let fields = crate::logging::encode_plugin_fields(&masked);
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(
                    target: "weft::plugin", $lvl,
                    pipeline = %c.pipeline, plugin = %c.plugin, event = %c.event_id,
                    correlation_id = %c.correlation_id, plugin_fields = %fields, "{message}"
                )
            };
        }
        match level {
            tracing::Level::TRACE => emit!(tracing::Level::TRACE),
            tracing::Level::DEBUG => emit!(tracing::Level::DEBUG),
            tracing::Level::INFO => emit!(tracing::Level::INFO),
            tracing::Level::WARN => emit!(tracing::Level::WARN),
            _ => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }

    /// Send what the plugin printed to stdout and stderr to the log. An
    /// error names the stream that passed the log cap.
    pub(super) fn drain_stdio(&mut self) -> Result<(), LimitExceeded> {
        for (stream, pipe) in [
            ("stdout", self.stdout.clone()),
            ("stderr", self.stderr.clone()),
        ] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            if stream == "stderr" {
                self.last_stderr = text
                    .lines()
                    .rfind(|l| !l.trim().is_empty() && !l.starts_with("note: run with"))
                    .map(|l| l.chars().take(512).collect());
            }
            let fields = [("stream".to_string(), stream.to_string())];
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if self
                    .plugin_log(tracing::Level::INFO, line, &fields)
                    .is_err()
                {
                    break;
                }
            }
            if bytes.len() >= self.log_budget || self.log_left == 0 {
                return Err(LimitExceeded(format!(
                    "plugin {} wrote more than its log cap of {} KiB to {stream} in one call and was stopped",
                    self.ctx.plugin,
                    self.log_budget / 1024
                )));
            }
        }
        Ok(())
    }
}

/// A plugin passed one of its limits; the call is stopped with this message.
#[derive(Debug, Clone)]
pub struct LimitExceeded(pub String);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitExceeded {}

impl log::Host for HostState {
    async fn write(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        self.plugin_log(level, &message, &fields)
            .map_err(wasmtime::Error::new)
    }
}

fn usage_key(ns: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 1);
    k.push(b'u');
    k.extend_from_slice(ns);
    k
}

fn value_key(ns: &[u8], key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + key.len() + 1);
    k.push(b'v');
    k.extend_from_slice(ns);
    k.extend_from_slice(key.as_bytes());
    k
}

fn check_key(key: &str) -> Result<(), kv::KvError> {
    if key.is_empty() || key.len() > MAX_KV_KEY {
        return Err(kv::KvError::Invalid(format!(
            "kv keys must be 1 to {MAX_KV_KEY} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

impl HostState {
    /// The plugin's kv namespace, after checking the key; a key with a NUL
    /// byte (the namespace separator) is a denial.
    fn kv_for(&self, key: Option<&str>) -> Result<&KvAccess, kv::KvError> {
        let Some(kv) = &self.kv else {
            let m = self.hooks.denier.deny("kv", "the plugin has no kv grant");
            return Err(kv::KvError::Invalid(m));
        };
        if let Some(key) = key {
            if key.contains('\0') {
                let m = self.hooks.denier.deny(
                    "kv",
                    &format!("kv key {key:?} holds a NUL byte, which would reach outside the plugin's own namespace"),
                );
                return Err(kv::KvError::Invalid(m));
            }
            check_key(key)?;
        }
        Ok(kv)
    }
}

fn unavailable(e: impl std::fmt::Display) -> kv::KvError {
    kv::KvError::Unavailable(e.to_string())
}

impl KvAccess {
    /// Replace (or, with `None`, remove) a key if its current value is
    /// `expected` (when given), keeping the namespace's usage within quota.
    fn swap(
        &self,
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
    ) -> Result<bool, kv::KvError> {
        check_key(key)?;
        let vkey = value_key(&self.namespace, key);
        let ukey = usage_key(&self.namespace);
        let quota = self.quota_bytes;
        let result = self.tree.transaction(|tx| {
            use sled::transaction::ConflictableTransactionError::Abort;
            let old = tx.get(&vkey)?;
            if let Some(want) = expected
                && old.as_deref() != want
            {
                return Ok(false);
            }
            let used = tx
                .get(&ukey)?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            let old_len = old.as_ref().map_or(0, |v| (v.len() + key.len()) as u64);
            let new_len = new.map_or(0, |v| (v.len() + key.len()) as u64);
            let next = used.saturating_sub(old_len) + new_len;
            if next > quota && new_len > old_len {
                return Err(Abort(kv::KvError::QuotaExceeded(format!(
                    "writing {key:?} would use {next} bytes of the {quota}-byte kv quota"
                ))));
            }
            match new {
                Some(v) => tx.insert(vkey.as_slice(), v)?,
                None => tx.remove(vkey.as_slice())?,
            };
            tx.insert(ukey.as_slice(), &next.to_be_bytes())?;
            Ok(true)
        });
        match result {
            Ok(swapped) => Ok(swapped),
            Err(sled::transaction::TransactionError::Abort(e)) => Err(e),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(unavailable(e)),
        }
    }

    async fn flush(&self) -> Result<(), kv::KvError> {
        self.db.flush_async().await.map(|_| ()).map_err(unavailable)
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        kv.tree
            .get(value_key(&kv.namespace, &key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(unavailable)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        kv.swap(&key, None, Some(&value))?;
        kv.flush().await
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        kv.swap(&key, None, None)?;
        kv.flush().await
    }

    async fn cas(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        let swapped = kv.swap(&key, Some(expected.as_deref()), new.as_deref())?;
        if swapped {
            kv.flush().await?;
        }
        Ok(swapped)
    }

    async fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, kv::KvError> {
        let kv = self.kv_for(None)?;
        if prefix.contains('\0') {
            return Err(kv::KvError::Invalid(self.hooks.denier.deny(
                "kv",
                &format!("kv prefix {prefix:?} holds a NUL byte, which would reach outside the plugin's own namespace"),
            )));
        }
        let start = value_key(&kv.namespace, &prefix);
        let skip = kv.namespace.len() + 1;
        let mut out = Vec::new();
        for item in kv.tree.scan_prefix(&start).keys().take(limit as usize) {
            let k = item.map_err(unavailable)?;
            out.push(String::from_utf8_lossy(&k[skip..]).into_owned());
        }
        Ok(out)
    }
}

impl super::bindings::transform::weft::plugin::types::Host for HostState {}

/// Headers a credential may not be placed in.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    CREDENTIAL_HEADER,
];

fn check_header(h: &str) -> Result<(), credentials::CredentialError> {
    let lower = h.to_ascii_lowercase();
    if http::HeaderName::try_from(h).is_err() || RESERVED_HEADERS.contains(&lower.as_str()) {
        return Err(credentials::CredentialError::Invalid(format!(
            "{h:?} cannot carry a credential; use an ordinary header name such as \"x-api-key\""
        )));
    }
    Ok(())
}

impl credentials::Host for HostState {
    async fn attach(
        &mut self,
        name: String,
        how: credentials::Placement,
    ) -> Result<(String, String), credentials::CredentialError> {
        if !self.grant.may_attach(&name) {
            let granted = self.grant.credential_names().join(", ");
            return Err(credentials::CredentialError::NotGranted(
                self.hooks.denier.deny(
                    "credential",
                    &format!(
                        "credential {name:?} is not in the plugin's grant (granted: {})",
                        if granted.is_empty() { "none" } else { &granted }
                    ),
                ),
            ));
        }
        match &how {
            credentials::Placement::Header(h) | credentials::Placement::HmacSha256(h) => {
                check_header(h)?
            }
            credentials::Placement::Basic(user) if user.contains(':') => {
                return Err(credentials::CredentialError::Invalid(
                    "a basic-auth user name cannot hold ':'".into(),
                ));
            }
            _ => {}
        }
        if self.hooks.secrets.get(&name).is_none() {
            return Err(credentials::CredentialError::Invalid(format!(
                "credential {name} is not loaded on this host"
            )));
        }
        let token = format!("{:032x}", rand::random::<u128>());
        self.hooks.attachments.insert(token.clone(), (name, how));
        Ok((CREDENTIAL_HEADER.to_string(), token))
    }

    async fn reveal(&mut self, name: String) -> Result<String, credentials::CredentialError> {
        if !self.grant.reveal.contains(&name) {
            return Err(credentials::CredentialError::NotGranted(
                self.hooks.denier.deny(
                    "reveal",
                    &format!(
                        "the raw value of credential {name:?} is not in the plugin's reveal grant"
                    ),
                ),
            ));
        }
        self.hooks
            .secrets
            .get(&name)
            .map(str::to_string)
            .ok_or_else(|| {
                credentials::CredentialError::Invalid(format!(
                    "credential {name} is not loaded on this host"
                ))
            })
    }
}
