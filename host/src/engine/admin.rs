//! What operators see and steer: a pipeline's status, pause and resume,
//! and whether it takes new events now.

use super::EngineError;
use super::breaker::BreakerState;
use super::handle::Engine;
use super::stats::{PipelineStatus, Usage};
use crate::store::now_ms;
use std::sync::atomic::{AtomicU64, Ordering};

impl Engine {
    /// Bytes in memory and on disk, by kind: what an operator sizes a
    /// container and a volume from. The store's part is measured once a
    /// minute (with the retention sweep) and at start.
    pub fn usage(&self) -> Usage {
        let inflight = &self.inner.inflight;
        Usage {
            inflight_bytes: inflight.bytes(),
            inflight_peak_bytes: inflight.peak(),
            max_inflight_bytes: inflight.max(),
            queued_bytes: self
                .inner
                .pipelines
                .values()
                .map(|p| p.open_events().2)
                .sum(),
            store: *self
                .inner
                .store_usage
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            store_failing: self.inner.store.failing(),
        }
    }

    /// Measure the store's usage by kind again (it reads every index key).
    pub async fn measure_store(&self) {
        let store = self.inner.store.clone();
        if let Ok(usage) = tokio::task::spawn_blocking(move || store.usage()).await {
            *self
                .inner
                .store_usage
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = usage;
        }
    }

    /// A snapshot of one pipeline's state and counters.
    pub fn status(&self, pipeline: &str) -> Option<PipelineStatus> {
        let p = self.inner.pipelines.get(pipeline)?;
        let s = &p.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (queued, oldest, queued_bytes) = p.open_events();
        let oldest_age_ms = oldest.map_or(0, |id| now_ms().saturating_sub(id.created_ms()));
        let entered = get(&s.accepted) + get(&s.recovered) + get(&s.replayed) + get(&s.children);
        let left = get(&s.delivered) + get(&s.dead_lettered) + get(&s.filtered) + get(&s.split);
        Some(PipelineStatus {
            name: pipeline.to_string(),
            paused: p.paused.load(Ordering::Relaxed),
            queued: queued as u64,
            breaker: p.breaker.state().as_str().to_string(),
            rate_limit_waits: p.limiter.as_ref().map_or(0, |l| l.waits()),
            order_keys_active: p.gate.as_ref().map_or(0, |g| g.keys()),
            accepted: get(&s.accepted),
            duplicates: get(&s.duplicates),
            delivered: get(&s.delivered),
            filtered: get(&s.filtered),
            retried: get(&s.retried),
            dead_lettered: get(&s.dead_lettered),
            dead_letters_expired: get(&s.dead_letters_expired),
            split: get(&s.split),
            children: get(&s.children),
            in_flight: get(&s.in_flight),
            batches: get(&s.batches),
            polls: get(&s.polls),
            polled_items: get(&s.polled_items),
            polled_new: get(&s.polled_new),
            poll_failures: s
                .poll_failures
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            cursor_age_ms: match get(&s.cursor_moved_ms) {
                0 => 0,
                at => now_ms().saturating_sub(at),
            },
            received: get(&s.received),
            rejected: s
                .rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            recovered: get(&s.recovered),
            replayed: get(&s.replayed),
            attempts: get(&s.attempts),
            oldest_age_ms,
            queued_bytes,
            dead_letters: self
                .inner
                .store
                .dead_letter_counts()
                .get(pipeline)
                .copied()
                .unwrap_or(0),
            lifetime: p
                .lifetime_base
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .plus(s.totals()),
            unaccounted: entered as i64 - left as i64 - queued as i64,
            canaries: self.canaries(pipeline),
            pause_reason: p
                .pause_reason
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            catalog: p.config.catalog(),
            route_of: p.config.route_of.as_ref().map(|r| r.parent.clone()),
            routes: p.routes.iter().map(|r| r.pipeline.clone()).collect(),
            objectives: p
                .objectives
                .as_ref()
                .map(|o| o.report(now_ms(), oldest.map(|id| id.created_ms()))),
            synthetic: p.synthetic.views(),
        })
    }

    /// [`Engine::status`] as JSON, for the API.
    pub fn stats_json(&self, pipeline: &str) -> Option<serde_json::Value> {
        self.status(pipeline)
            .and_then(|s| serde_json::to_value(s).ok())
    }

    /// Pause delivery (accepting goes on); the state survives a restart.
    pub async fn pause(&self, pipeline: &str) -> Result<(), EngineError> {
        self.set_paused(pipeline, Some("paused by hand")).await
    }

    /// Pause delivery for `reason` (the quality gate's); shown in the
    /// status until an operator resumes.
    pub async fn pause_for(&self, pipeline: &str, reason: &str) -> Result<(), EngineError> {
        self.set_paused(pipeline, Some(reason)).await
    }

    /// Resume delivery of a paused pipeline.
    pub async fn resume(&self, pipeline: &str) -> Result<(), EngineError> {
        self.set_paused(pipeline, None).await
    }

    async fn set_paused(&self, pipeline: &str, reason: Option<&str>) -> Result<(), EngineError> {
        let p = self.pipeline(pipeline)?;
        self.inner
            .store
            .set_paused(pipeline, reason)
            .await
            .map_err(EngineError::from)?;
        self.apply_pause(pipeline, p, reason);
        Ok(())
    }

    /// Follow a pause or resume another host wrote to the store it
    /// shares with this one (nothing when the state is already this).
    pub(super) fn follow_pause(&self, pipeline: &str, reason: Option<&str>) {
        let Ok(p) = self.pipeline(pipeline) else {
            return;
        };
        let now = p
            .pause_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if now.as_deref() != reason {
            self.apply_pause(pipeline, p, reason);
        }
    }

    /// Pause or resume `pipeline` here, its state durable already.
    fn apply_pause(
        &self,
        pipeline: &str,
        p: &std::sync::Arc<super::pipeline::Pipeline>,
        reason: Option<&str>,
    ) {
        p.paused.store(reason.is_some(), Ordering::SeqCst);
        *p.pause_reason.lock().unwrap_or_else(|e| e.into_inner()) = reason.map(str::to_string);
        if let Some(reason) = reason {
            tracing::warn!(
                pipeline,
                reason,
                "pipeline paused: events are accepted but not delivered"
            );
            return;
        }
        // Resumed: the quality gate judges from here on.
        if let Some(o) = &p.objectives {
            o.resumed(crate::store::now_ms());
        }
        let parked = std::mem::take(&mut *p.parked.lock().unwrap_or_else(|e| e.into_inner()));
        tracing::info!(pipeline, released = parked.len(), "pipeline resumed");
        for job in parked {
            self.schedule(job);
        }
    }

    /// Wait while the pipeline's backlog is at `max_backlog` and it is
    /// delivering, then take a place in it: intake goes at the pace of
    /// delivery instead of filling the queue. `Ok(None)` for a paused
    /// pipeline, or one holding events while its sink fails (bounded by
    /// `max_queue` alone); `Err` (after
    /// [`INTAKE_WAIT`]) carries the seconds a sender should wait and why.
    pub(super) async fn wait_for_room<'a>(
        &self,
        p: &'a super::pipeline::Pipeline,
    ) -> Result<Option<super::pipeline::Reservation<'a>>, (u64, String)> {
        let high = p.max_backlog();
        let deadline = tokio::time::Instant::now() + INTAKE_WAIT;
        loop {
            if p.paused.load(Ordering::SeqCst) || p.holding() {
                return Ok(None);
            }
            let notified = p.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(place) = p.reserve(high) {
                return Ok(Some(place));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err((
                    1,
                    format!(
                        "pipeline {:?} has {high} events waiting for delivery (max_backlog) and delivery is behind; retry later",
                        p.name
                    ),
                ));
            }
        }
    }

    /// How many more events pipeline `pipeline` takes now from a trigger
    /// that can wait (a poll, a queue): none while its breaker is open,
    /// else the room left under `max_queue`.
    pub fn room(&self, pipeline: &str) -> usize {
        let Some(p) = self.inner.pipelines.get(pipeline) else {
            return 0;
        };
        if let BreakerState::Open(_) = p.breaker.state() {
            return 0;
        }
        let (queued, _, bytes) = p.open_events();
        if bytes >= p.config.max_queue_bytes {
            return 0;
        }
        p.config.max_queue.saturating_sub(queued)
    }

    /// Whether a pipeline takes new events now; `Err` carries the seconds a
    /// sender should wait and why. While its breaker is open, a poll
    /// (`polled`) waits, and a webhook too with `breaker.intake = "refuse"`.
    pub fn admission(
        &self,
        pipeline: &str,
        incoming_bytes: u64,
        polled: bool,
    ) -> Result<(), (u64, String)> {
        let Some(p) = self.inner.pipelines.get(pipeline) else {
            return Ok(());
        };
        let (queued, _, bytes) = p.open_events();
        if bytes + incoming_bytes > p.config.max_queue_bytes {
            return Err((
                1,
                format!(
                    "pipeline {pipeline:?} holds {bytes} bytes of events waiting and this one would pass max_queue_bytes = {}; retry later",
                    p.config.max_queue_bytes
                ),
            ));
        }
        if queued >= p.config.max_queue {
            return Err((
                1,
                format!(
                    "pipeline {pipeline:?} has {queued} events waiting (max_queue = {}); retry later",
                    p.config.max_queue
                ),
            ));
        }
        if let BreakerState::Open(until) = p.breaker.state()
            && (polled || p.config.breaker.intake == crate::config::BreakerIntake::Refuse)
        {
            let secs = until
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs()
                .max(1);
            return Err((
                secs,
                format!(
                    "the sink of pipeline {pipeline:?} is failing and its circuit breaker is open; retry later"
                ),
            ));
        }
        // Last, so that what is refused for another reason costs nothing.
        if let Err(secs) = p.intake.take(incoming_bytes) {
            return Err((
                secs,
                format!(
                    "pipeline {pipeline:?} takes in at most {} bytes a second (max_ingress_bytes_per_sec) and this body would pass it; retry later",
                    p.config.max_ingress_bytes_per_sec
                ),
            ));
        }
        Ok(())
    }
}

/// Longest an event waits at intake for the backlog to shrink.
pub const INTAKE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
