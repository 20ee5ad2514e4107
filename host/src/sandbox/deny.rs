//! Capability denials: each one is a log line, a metric and an entry in the
//! audit log.

use super::types::CallContext;
use crate::store::{AuditEntry, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counts and records denials for one host.
pub struct Denials {
    store: Arc<dyn Store>,
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl Denials {
    /// Record into this store's audit log.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Denials {
            store,
            counts: Mutex::default(),
        }
    }

    /// Record that the plugin of `ctx` tried `action` outside its grant, and
    /// return the message the plugin gets.
    pub fn record(&self, ctx: &CallContext, action: &'static str, detail: &str) -> String {
        let detail = crate::redact::mask(detail).into_owned();
        tracing::warn!(
            pipeline = %ctx.pipeline, plugin = %ctx.plugin, event = %ctx.event_id,
            correlation_id = %ctx.correlation_id, capability = action,
            "capability denied: {detail}"
        );
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((ctx.plugin.to_string(), action))
            .or_default() += 1;
        self.audit(ctx, "denial", action, &detail);
        format!("denied: {detail}")
    }

    fn audit(&self, ctx: &CallContext, kind: &'static str, action: &str, detail: &str) {
        if let Err(e) = self.store.audit().append(AuditEntry {
            kind,
            actor: ctx.plugin.to_string(),
            pipeline: ctx.pipeline.to_string(),
            action: action.to_string(),
            detail: detail.to_string(),
        }) {
            tracing::error!("could not write a {kind} to the audit log: {e}");
        }
    }

    /// Record that the plugin of `ctx` broke one of its limits (time, memory,
    /// stack, fuel, output, logs, response size): the call was stopped.
    pub fn limit(&self, ctx: &CallContext, detail: &str) {
        // The audit log masks secrets itself.
        self.audit(ctx, "limit", "limit", detail);
    }

    /// Denials so far, by (plugin, capability).
    pub fn counts(&self) -> BTreeMap<(String, &'static str), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The denial recorder bound to one call.
#[derive(Clone)]
pub struct Denier {
    pub(super) ctx: Arc<CallContext>,
    pub(super) denials: Arc<Denials>,
}

impl Denier {
    /// Record a denial of `action`; returns the message for the plugin.
    pub fn deny(&self, action: &'static str, detail: &str) -> String {
        self.denials.record(&self.ctx, action, detail)
    }

    /// Record a broken limit.
    pub fn limit(&self, detail: &str) {
        self.denials.limit(&self.ctx, detail)
    }
}
