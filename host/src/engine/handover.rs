//! Handing over from one engine to the next when the configuration is
//! reloaded: both share the store and a [`Switch`]. The old engine stops
//! taking jobs and lets its attempts finish on the plugins they started
//! with; then, with new writes held for the moment it takes, the new engine
//! finds the work in the store and the old one forwards whatever still
//! reaches it.

use super::handle::Engine;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// What the engines of one host share across reloads: the gate every write
/// that queues new work passes, closed only while a new engine takes over.
#[derive(Default)]
pub struct Switch {
    gate: tokio::sync::RwLock<()>,
}

impl Switch {
    /// A switch for a host's first engine.
    pub fn new() -> Arc<Switch> {
        Arc::default()
    }
}

/// How a hand-over went.
#[derive(Debug, Default)]
pub struct HandedOver {
    /// Queued events the new engine found in the store.
    pub recovered: usize,
    /// Queued events left in the store, by pipeline: their pipeline is not
    /// in the new configuration.
    pub kept: std::collections::BTreeMap<String, usize>,
    /// Attempts of the old engine still running when the grace ran out.
    pub still_running: u64,
}

/// Held while a write queues new work: the engine to queue it on.
pub(super) struct Pass<'a> {
    _open: tokio::sync::RwLockReadGuard<'a, ()>,
    pub engine: Engine,
}

impl Engine {
    /// The engine that took over from this one, if it was replaced (the
    /// newest one, through any number of reloads).
    pub fn successor(&self) -> Option<Engine> {
        let mut next = self.inner.successor.get()?.clone();
        while let Some(newer) = next.inner.successor.get() {
            next = newer.clone();
        }
        Some(next)
    }

    /// Whether `other` is this very engine.
    pub fn is(&self, other: &Engine) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The switch this engine shares with the engines before and after it.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.inner.switch
    }

    /// Wait until new work may be queued, and on which engine: this one, or
    /// the one that replaced it. Hold the pass until the write is durable
    /// and its job handed over.
    pub(super) async fn pass(&self) -> Pass<'_> {
        let open = self.inner.switch.gate.read().await;
        Pass {
            _open: open,
            engine: self.successor().unwrap_or_else(|| self.clone()),
        }
    }

    /// Attempts running now, over every pipeline.
    pub fn attempts_in_flight(&self) -> u64 {
        self.inner
            .pipelines
            .values()
            .map(|p| p.stats.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Stop this engine in favour of `next` (built from the new
    /// configuration, on the same store and switch, not yet started): this
    /// one stops taking jobs, its attempts in progress finish (up to
    /// `grace`), its counters are saved; then, with writes held, `next`
    /// starts from what the store holds and this engine forwards new work
    /// to it. Attempts still running when `grace` runs out write their
    /// outcome to the store; what they leave queued waits for the next
    /// start or reload.
    pub async fn hand_over(&self, next: &Engine, grace: Duration) -> HandedOver {
        debug_assert!(Arc::ptr_eq(&self.inner.switch, &next.inner.switch));
        self.stop(grace).await;
        let deadline = tokio::time::Instant::now() + grace;
        while self.attempts_in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let left = self.attempts_in_flight();
        super::janitor::save_totals(self).await;
        let held = self.inner.switch.gate.write().await;
        let queued = match self.inner.store.claim_queue() {
            Ok(q) => q,
            Err(e) => {
                // Not undone: this engine is stopped. The queued events stay
                // in the store, and are found by the next start.
                tracing::error!(
                    "the new configuration runs, but the queue could not be read from the store ({e}): events queued before the reload wait until weft is restarted"
                );
                Vec::new()
            }
        };
        // The objectives' windows and the checks' results go on.
        for (name, p) in &next.inner.pipelines {
            let Some(old) = self.inner.pipelines.get(name) else {
                continue;
            };
            if let (Some(new), Some(was)) = (&p.objectives, &old.objectives) {
                new.carry_from(was);
            }
            p.synthetic.carry_from(&old.synthetic);
        }
        let _ = self.inner.successor.set(next.clone());
        let (recovered, kept) = next.start_with(queued);
        drop(held);
        HandedOver {
            recovered,
            kept,
            still_running: left,
        }
    }
}
