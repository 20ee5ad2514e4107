//! The data of one call's store: WASI and HTTP contexts, the egress hooks,
//! limits and budgets. Each WIT interface's host side lives in `host/`.

use super::host::egress::EgressHooks;
use super::types::{CallContext, CallCost};
use crate::config::Grant;
use std::sync::Arc;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// The data of one call's store.
pub struct HostState {
    pub(in crate::sandbox) wasi: WasiCtx,
    pub(in crate::sandbox) table: ResourceTable,
    pub(in crate::sandbox) http: WasiHttpCtx,
    pub(in crate::sandbox) hooks: EgressHooks,
    pub(in crate::sandbox) limits: Limiter,
    pub(in crate::sandbox) ctx: Arc<CallContext>,
    pub(in crate::sandbox) grant: Arc<Grant>,
    /// `None` when the grant has no kv.
    pub(in crate::sandbox) kv: Option<KvAccess>,
    pub(in crate::sandbox) log_left: usize,
    pub(in crate::sandbox) log_budget: usize,
    pub(in crate::sandbox) stdout: MemoryOutputPipe,
    pub(in crate::sandbox) stderr: MemoryOutputPipe,
    /// The last line the plugin wrote to stderr (a panic message, usually).
    pub(in crate::sandbox) last_stderr: Option<String>,
    /// When the call began.
    pub(in crate::sandbox) started: std::time::Instant,
    /// What the call cost, once it is over.
    pub(in crate::sandbox) cost: CallCost,
}

/// A plugin's view of the store's kv state: its own namespace and quota.
pub struct KvAccess {
    pub(in crate::sandbox) store: std::sync::Arc<dyn crate::store::Store>,
    /// `pipeline \0 plugin \0`
    pub(in crate::sandbox) namespace: Vec<u8>,
    pub(in crate::sandbox) quota_bytes: u64,
}

/// The store's resource limiter: wasmtime's [`StoreLimits`], remembering
/// the largest memory the plugin asked for.
pub struct Limiter {
    pub(in crate::sandbox) inner: StoreLimits,
    pub(in crate::sandbox) peak: usize,
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

/// A plugin passed one of its limits; the call is stopped with this message.
#[derive(Debug, Clone)]
pub struct LimitExceeded(pub String);

impl std::fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitExceeded {}

impl super::bindings::transform::weft::plugin::types::Host for HostState {}
