//! Per-call store data and the host side of the `log` and `kv` interfaces.

use super::bindings::transform::weft::plugin::{kv, log};
use super::call::CallContext;
use super::egress::EgressHooks;
use std::sync::Arc;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Bytes of log output (the `log` interface plus stdout and stderr) a plugin
/// may write per call; later lines are dropped with one notice.
pub const LOG_BUDGET: usize = 64 * 1024;
/// Longest kv key, in bytes.
pub const MAX_KV_KEY: usize = 512;

/// The data of one call's store.
pub struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) http: WasiHttpCtx,
    pub(super) hooks: EgressHooks,
    pub(super) limits: StoreLimits,
    pub(super) ctx: Arc<CallContext>,
    pub(super) kv: KvAccess,
    pub(super) log_left: usize,
    pub(super) stdout: MemoryOutputPipe,
    pub(super) stderr: MemoryOutputPipe,
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
    /// Log a line on the plugin's behalf, within its budget.
    pub(super) fn plugin_log(&mut self, level: tracing::Level, message: &str, fields: &str) {
        let cost = message.len() + fields.len();
        if self.log_left == 0 {
            return;
        }
        if cost > self.log_left {
            self.log_left = 0;
            let c = &self.ctx;
            tracing::warn!(
                pipeline = %c.pipeline, plugin = %c.plugin, event = %c.event_id,
                correlation_id = %c.correlation_id,
                "plugin log output over {LOG_BUDGET} bytes in one call; further lines dropped"
            );
            return;
        }
        self.log_left -= cost;
        let c = &self.ctx;
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(
                    target: "weft::plugin", $lvl,
                    pipeline = %c.pipeline, plugin = %c.plugin, event = %c.event_id,
                    correlation_id = %c.correlation_id, fields = fields, "{message}"
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
    }

    /// Send what the plugin printed to stdout and stderr to the log.
    pub(super) fn drain_stdio(&mut self) {
        for (stream, pipe) in [
            ("stdout", self.stdout.clone()),
            ("stderr", self.stderr.clone()),
        ] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                self.plugin_log(tracing::Level::INFO, line, stream);
            }
        }
    }
}

impl log::Host for HostState {
    async fn write(&mut self, level: log::Level, message: String, fields: Vec<(String, String)>) {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        let fields = fields
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        self.plugin_log(level, &message, &fields);
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
        check_key(&key)?;
        self.kv
            .tree
            .get(value_key(&self.kv.namespace, &key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(unavailable)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        self.kv.swap(&key, None, Some(&value))?;
        self.kv.flush().await
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        self.kv.swap(&key, None, None)?;
        self.kv.flush().await
    }

    async fn cas(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, kv::KvError> {
        let swapped = self
            .kv
            .swap(&key, Some(expected.as_deref()), new.as_deref())?;
        if swapped {
            self.kv.flush().await?;
        }
        Ok(swapped)
    }

    async fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, kv::KvError> {
        let start = value_key(&self.kv.namespace, &prefix);
        let skip = self.kv.namespace.len() + 1;
        let mut out = Vec::new();
        for item in self.kv.tree.scan_prefix(&start).keys().take(limit as usize) {
            let k = item.map_err(unavailable)?;
            out.push(String::from_utf8_lossy(&k[skip..]).into_owned());
        }
        Ok(out)
    }
}

impl super::bindings::transform::weft::plugin::types::Host for HostState {}
