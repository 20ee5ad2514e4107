//! Capability denials: each one is counted in a metric; the first few of
//! each kind per plugin per minute are also a log line and an audit record,
//! and the rest are summed into the next record, so a plugin that tries a
//! closed door in a loop cannot flood the log or the disk.

use super::types::CallContext;
use crate::store::{AuditEntry, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Counts and records denials for one host.
pub struct Denials {
    store: Arc<dyn Store>,
    counts: Mutex<BTreeMap<(String, &'static str), u64>>,
    windows: crate::limit::RecordBudget<(String, &'static str)>,
}

/// Records of one kind per plugin per minute, before the rest are summed.
pub const RECORDS_PER_MINUTE: u32 = 10;

impl Denials {
    /// Record into this store's audit log.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Denials {
            store,
            counts: Mutex::default(),
            // Plugins and kinds are few: every key fits.
            windows: crate::limit::RecordBudget::new(RECORDS_PER_MINUTE, usize::MAX),
        }
    }

    /// Record that the plugin of `ctx` tried `action` outside its grant, and
    /// return the message the plugin gets.
    pub fn record(&self, ctx: &CallContext, action: &'static str, detail: &str) -> String {
        let detail = crate::redact::mask(detail).into_owned();
        *self
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((ctx.plugin.to_string(), action))
            .or_default() += 1;
        let message = format!("denied: {detail}");
        let Some(detail) = self.admit(ctx, action, detail) else {
            return message;
        };
        tracing::warn!(
            pipeline = %ctx.pipeline, plugin = %ctx.plugin, event = %ctx.event_id,
            correlation_id = %ctx.correlation_id, capability = action,
            "capability denied: {detail}"
        );
        self.audit(ctx, "denial", action, &detail);
        message
    }

    /// Whether this record is written, and its detail with the count of
    /// those left out since the last one written.
    fn admit(&self, ctx: &CallContext, action: &'static str, detail: String) -> Option<String> {
        self.windows.admit(
            (ctx.plugin.to_string(), action),
            detail,
            crate::store::now_ms(),
        )
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
        if let Some(detail) = self.admit(ctx, "limit", detail.to_string()) {
            self.audit(ctx, "limit", "limit", &detail);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_looping_on_a_closed_door_cannot_flood_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path()).unwrap();
        let denials = Denials::new(store.clone());
        let ctx = CallContext::background("p", "looper");
        for i in 0..500 {
            let answer = denials.record(&ctx, "http", &format!("request to 10.0.0.{i}"));
            assert!(answer.starts_with("denied: "), "{answer}");
        }
        let other = CallContext::background("p", "other");
        denials.record(&other, "http", "request to 10.9.9.9");
        assert_eq!(
            denials.counts()[&("looper".to_string(), "http")],
            500,
            "every denial is counted"
        );
        let records = store.audit().records(0).unwrap();
        let looper = records.iter().filter(|r| r.actor == "looper").count();
        assert_eq!(looper, RECORDS_PER_MINUTE as usize);
        assert!(
            records.iter().any(|r| r.actor == "other"),
            "another plugin's denials are still recorded"
        );
        // The next window's first record carries the count of those left out.
        denials.windows.end_minute();
        denials.record(&ctx, "http", "request to 10.1.1.1");
        let last = store.audit().records(0).unwrap().pop().unwrap();
        assert!(last.detail.contains("and 490 more"), "{}", last.detail);
        assert_eq!(store.audit().verify(), Ok(RECORDS_PER_MINUTE as u64 + 2));
    }
}
