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

    /// Take over `old`'s results of the checks this one still has (a reload).
    pub fn carry_from(&self, old: &SyntheticChecks) {
        let old = old.checks.lock().unwrap_or_else(|e| e.into_inner());
        let mut mine = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        for (name, view) in mine.iter_mut() {
            if let Some(was) = old.get(name) {
                *view = was.clone();
            }
        }
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
