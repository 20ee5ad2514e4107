//! Synthetic checks' results: each run is an event marked synthetic that
//! goes through the real pipeline; its outcome is counted here, per check,
//! and never in the pipeline's business counters, latency, objectives or
//! reconciliation.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One check's results since start.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct SyntheticView {
    /// The check's name.
    pub check: String,
    /// Runs sent into the pipeline.
    pub sent: u64,
    /// Deliveries that reached a sink (one per route a run takes).
    pub ok: u64,
    /// Runs (or routes of one) dead-lettered or filtered out.
    pub failed: u64,
    /// The last success, ms since the epoch (0: none yet).
    pub last_ok_ms: u64,
    /// Accept to delivery of the last success, in ms.
    pub last_latency_ms: u64,
    /// What went wrong last, if anything has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl super::handle::Engine {
    /// A synthetic run of `pipeline`'s `check` was not accepted.
    pub fn synthetic_refused(&self, pipeline: &str, check: &str, why: String) {
        if let Some(p) = self.inner.pipelines.get(pipeline) {
            p.synthetic.sent(check);
            tracing::warn!(pipeline, check, "synthetic check failed: {why}");
            p.synthetic.failed(check, why);
        }
    }

    /// A synthetic run's outcome in `pipeline` (a route's pipeline counts it
    /// in its parent's checks): `Ok` with its latency, or why it failed.
    pub(super) fn synthetic_result(
        &self,
        pipeline: &super::pipeline::Pipeline,
        check: &str,
        result: Result<u64, String>,
    ) {
        let root = pipeline
            .config
            .route_of
            .as_ref()
            .and_then(|r| self.inner.pipelines.get(&r.parent))
            .map_or(pipeline, |p| p.as_ref());
        match result {
            Ok(latency_ms) => root.synthetic.ok(check, crate::store::now_ms(), latency_ms),
            Err(why) => {
                tracing::warn!(pipeline = %pipeline.name, check, "synthetic check failed: {why}");
                root.synthetic.failed(check, why);
            }
        }
    }
}

/// The checks of one pipeline.
#[derive(Debug, Default)]
pub struct SyntheticChecks {
    checks: Mutex<BTreeMap<String, SyntheticView>>,
}

impl SyntheticChecks {
    /// Checks known from the config, shown with zero counts from the start.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> SyntheticChecks {
        let checks = names
            .into_iter()
            .map(|n| {
                let view = SyntheticView {
                    check: n.to_string(),
                    ..SyntheticView::default()
                };
                (n.to_string(), view)
            })
            .collect();
        SyntheticChecks {
            checks: Mutex::new(checks),
        }
    }

    fn with(&self, check: &str, f: impl FnOnce(&mut SyntheticView)) {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        let view = checks
            .entry(check.to_string())
            .or_insert_with(|| SyntheticView {
                check: check.to_string(),
                ..SyntheticView::default()
            });
        f(view);
    }

    /// A run was accepted.
    pub fn sent(&self, check: &str) {
        self.with(check, |v| v.sent += 1);
    }

    /// A run reached a sink at `now`, `latency_ms` after it was accepted.
    pub fn ok(&self, check: &str, now: u64, latency_ms: u64) {
        self.with(check, |v| {
            v.ok += 1;
            v.last_ok_ms = now;
            v.last_latency_ms = latency_ms;
        });
    }

    /// A run failed for `why`.
    pub fn failed(&self, check: &str, why: String) {
        self.with(check, |v| {
            v.failed += 1;
            v.last_error = Some(why);
        });
    }

    /// Every check's results, by name.
    pub fn views(&self) -> Vec<SyntheticView> {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
