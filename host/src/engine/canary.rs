//! Canaries: a share of a step's events run on a candidate version of its
//! plugin, chosen by a stable hash of the idempotency key (an event's
//! retries stay on one version). Each version's last calls are kept; when
//! the candidate fails past the baseline by more than the margin, or with
//! a `fatal` error, or an event runs out of attempts on it, it is rolled
//! back: its events go to the baseline from then on, and the state is
//! kept in the store, so a restart does not bring it back.

use crate::config::CanaryConfig;
use crate::histogram::Histogram;
use crate::store::{AuditEntry, ErrorKind};
use sha2::Digest;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

/// Where a canary stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryState {
    /// Its share of events runs on the candidate.
    Running,
    /// Every event runs on the baseline.
    RolledBack,
    /// Every event runs on the candidate.
    Promoted,
}

impl CanaryState {
    fn code(self) -> u8 {
        match self {
            CanaryState::Running => 0,
            CanaryState::RolledBack => 1,
            CanaryState::Promoted => 2,
        }
    }

    fn of(code: u8) -> CanaryState {
        match code {
            1 => CanaryState::RolledBack,
            2 => CanaryState::Promoted,
            _ => CanaryState::Running,
        }
    }

    /// `running`, `rolled-back`, `promoted`.
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryState::Running => "running",
            CanaryState::RolledBack => "rolled-back",
            CanaryState::Promoted => "promoted",
        }
    }
}

/// Calls of one version: counted, failures by kind, and timed.
#[derive(Default)]
pub(super) struct VersionStats {
    calls: AtomicU64,
    failures: Mutex<BTreeMap<&'static str, u64>>,
    latency: Histogram,
}

/// A step's canary.
pub(super) struct Canary {
    /// The candidate's plugin file.
    candidate: String,
    share: f64,
    rule: CanaryConfig,
    state: AtomicU8,
    /// The last `window` outcomes (true: ok) of the baseline and the candidate.
    recent: Mutex<(VecDeque<bool>, VecDeque<bool>)>,
    stats: [VersionStats; 2],
    rollbacks: AtomicU64,
    /// The pipeline and `step 1` / `sink`.
    pipeline: String,
    place: String,
    /// Names it in the store: pipeline, place and the candidate's digest,
    /// so a new candidate starts afresh.
    key: String,
    /// Why it last changed state.
    why: Mutex<String>,
}

/// A canary as the API and `/metrics` show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CanaryView {
    /// `step 1`, `sink`.
    pub step: String,
    /// The baseline's plugin file.
    pub baseline: String,
    /// The candidate's plugin file.
    pub candidate: String,
    /// Its share of events while running.
    pub share: f64,
    /// Where it stands.
    pub state: CanaryState,
    /// Why it last changed state (empty while it never did).
    pub reason: String,
    /// Calls, failures by kind, latency sum (s) and count: baseline, then candidate.
    pub versions: [VersionView; 2],
    /// Times it was rolled back since start.
    pub rollbacks: u64,
}

/// One version's calls within a canary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct VersionView {
    /// `baseline` or `candidate`.
    pub version: String,
    /// Its plugin file.
    pub plugin: String,
    /// Calls made.
    pub calls: u64,
    /// Failed calls by error kind.
    pub failures: BTreeMap<String, u64>,
    /// Of the last calls (up to `window`), how many failed.
    pub recent_failures: usize,
    /// Of the last calls, how many there are.
    pub recent_calls: usize,
}

/// Whether an idempotency key falls in the candidate's `share`: the same
/// key always answers the same.
pub fn in_share(key: &str, share: f64) -> bool {
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) as f64 / u64::MAX as f64) < share
}

impl Canary {
    /// The canary of the step at `place` of `pipeline`, in the state the
    /// store keeps for it.
    pub fn new(
        candidate: &crate::sandbox::Plugin,
        rule: CanaryConfig,
        pipeline: &str,
        place: &str,
        store: &dyn crate::store::Store,
    ) -> Canary {
        let key = format!("{pipeline}/{place}/{}/{}", candidate.name, candidate.sha256);
        let (state, why) = match store.canary(&key).as_deref() {
            Some("rolled-back") => (CanaryState::RolledBack, "rolled back before this start"),
            Some("promoted") => (CanaryState::Promoted, "promoted before this start"),
            _ => (CanaryState::Running, ""),
        };
        Canary {
            candidate: candidate.name.clone(),
            share: rule.share,
            rule,
            state: AtomicU8::new(state.code()),
            recent: Mutex::default(),
            stats: Default::default(),
            rollbacks: AtomicU64::new(0),
            pipeline: pipeline.to_string(),
            place: place.to_string(),
            key,
            why: Mutex::new(why.to_string()),
        }
    }

    pub fn state(&self) -> CanaryState {
        CanaryState::of(self.state.load(Ordering::SeqCst))
    }

    /// Whether the event with idempotency key `key` runs on the candidate.
    pub fn takes(&self, key: &str) -> bool {
        match self.state() {
            CanaryState::Running => in_share(key, self.share),
            CanaryState::Promoted => true,
            CanaryState::RolledBack => false,
        }
    }

    /// Count one call; `Some(reason)` when the candidate must be rolled
    /// back because of it.
    pub fn observe(
        &self,
        on_candidate: bool,
        failed: Option<ErrorKind>,
        took: std::time::Duration,
    ) -> Option<String> {
        let v = &self.stats[usize::from(on_candidate)];
        v.calls.fetch_add(1, Ordering::Relaxed);
        v.latency.observe(took);
        if let Some(kind) = failed {
            *v.failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(kind.as_str())
                .or_default() += 1;
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let list = if on_candidate {
            &mut recent.1
        } else {
            &mut recent.0
        };
        list.push_back(failed.is_none());
        while list.len() > self.rule.window {
            list.pop_front();
        }
        if !on_candidate || self.state() != CanaryState::Running {
            return None;
        }
        if failed == Some(ErrorKind::Fatal) {
            return Some(format!("{} failed with a fatal error", self.candidate));
        }
        let ratio = |l: &VecDeque<bool>| -> (usize, f64) {
            let bad = l.iter().filter(|ok| !**ok).count();
            (
                bad,
                if l.is_empty() {
                    0.0
                } else {
                    bad as f64 / l.len() as f64
                },
            )
        };
        let (cand, base) = (&recent.1, &recent.0);
        if cand.len() < self.rule.min_calls {
            return None;
        }
        let ((cb, cr), (bb, br)) = (ratio(cand), ratio(base));
        (cr - br > self.rule.margin).then(|| {
            format!(
                "{} failed {cb} of its last {} calls ({:.0}%) against the baseline's {bb} of {} ({:.0}%), past the margin of {:.0} points",
                self.candidate,
                cand.len(),
                cr * 100.0,
                base.len(),
                br * 100.0,
                self.rule.margin * 100.0
            )
        })
    }

    /// Move to `to` now (the next event already sees it); false when it
    /// was already there. [`Canary::record`] then keeps and reports it.
    fn flip(&self, to: CanaryState, why: &str) -> bool {
        let was = self.state.swap(to.code(), Ordering::SeqCst);
        if was == to.code() {
            return false;
        }
        if to == CanaryState::RolledBack {
            self.rollbacks.fetch_add(1, Ordering::Relaxed);
        }
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = why.to_string();
        true
    }

    /// Move to `to`: kept in the store, logged and audited.
    pub async fn set(&self, store: &Store, to: CanaryState, actor: &str, why: &str) -> bool {
        if !self.flip(to, why) {
            return false;
        }
        self.record(store, to, actor, why).await;
        true
    }

    /// Roll back now, because of what an event showed; kept in the store
    /// and reported in the background.
    pub fn roll_back_now(self: &std::sync::Arc<Self>, store: &Store, why: String) {
        if self.state() != CanaryState::Running || !self.flip(CanaryState::RolledBack, &why) {
            return;
        }
        let (canary, store) = (self.clone(), store.clone());
        tokio::spawn(async move {
            canary
                .record(&store, CanaryState::RolledBack, "weft", &why)
                .await;
        });
    }

    async fn record(&self, store: &Store, to: CanaryState, actor: &str, why: &str) {
        if let Err(e) = store.set_canary(&self.key, to.as_str()).await {
            tracing::error!(
                "could not keep the canary's state in the store: {e}; it applies until the next start"
            );
        }
        let action = match to {
            CanaryState::RolledBack => "canary-rollback",
            CanaryState::Promoted => "canary-promote",
            CanaryState::Running => "canary-restart",
        };
        let detail = format!("{}: {why}", self.place);
        tracing::warn!(pipeline = %self.pipeline, step = %self.place, candidate = %self.candidate,
            actor, "{action}: {why}");
        if let Err(e) = store.audit().append(AuditEntry {
            kind: "admin",
            actor: actor.to_string(),
            pipeline: self.pipeline.clone(),
            action: action.into(),
            detail,
        }) {
            tracing::error!("could not write the canary's change to the audit log: {e}");
        }
        let _ = store.flush().await;
    }

    pub fn view(&self, baseline: &str) -> CanaryView {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let version = |i: usize, name: &'static str, plugin: &str, l: &VecDeque<bool>| {
            let s = &self.stats[i];
            VersionView {
                version: name.to_string(),
                plugin: plugin.to_string(),
                calls: s.calls.load(Ordering::Relaxed),
                failures: s
                    .failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                recent_failures: l.iter().filter(|ok| !**ok).count(),
                recent_calls: l.len(),
            }
        };
        CanaryView {
            step: self.place.clone(),
            baseline: baseline.to_string(),
            candidate: self.candidate.clone(),
            share: self.share,
            state: self.state(),
            reason: self.why.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            versions: [
                version(0, "baseline", baseline, &recent.0),
                version(1, "candidate", &self.candidate, &recent.1),
            ],
            rollbacks: self.rollbacks.load(Ordering::Relaxed),
        }
    }

    /// `step 1`, `sink`: where in its pipeline.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// The latency histograms: baseline, candidate.
    pub fn latencies(&self) -> [&Histogram; 2] {
        [&self.stats[0].latency, &self.stats[1].latency]
    }
}

/// The store, as canaries keep their state in it.
type Store = std::sync::Arc<dyn crate::store::Store>;

/// What to do with a canary by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryAction {
    /// Every event on the candidate.
    Promote,
    /// Every event on the baseline.
    Rollback,
}

#[cfg(test)]
mod tests {
    use super::in_share;

    #[test]
    fn a_share_takes_about_its_part_of_keys_and_always_the_same_ones() {
        let taken = (0..10_000)
            .filter(|i| in_share(&format!("k-{i}"), 0.1))
            .count();
        assert!((800..1200).contains(&taken), "{taken} of 10000 at 10%");
        for i in 0..100 {
            let k = format!("k-{i}");
            assert_eq!(in_share(&k, 0.1), in_share(&k, 0.1));
            // A larger share takes every key a smaller one did.
            assert!(!in_share(&k, 0.1) || in_share(&k, 0.5));
        }
        assert_eq!(
            (0..1000).filter(|i| in_share(&format!("{i}"), 1.0)).count(),
            1000
        );
    }
}
