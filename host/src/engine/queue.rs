//! Putting jobs in front of a pipeline's dispatcher: now, later, on entry
//! and when an event leaves for good (the next of its ordering key goes).

use super::handle::Engine;
use super::job::Job;
use super::pipeline::Entry;
use crate::store::now_ms;
use std::sync::atomic::Ordering;

/// How an event left its pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Left {
    /// The sink took it.
    Delivered,
    /// A step dropped it.
    Filtered,
    /// Into the dead-letter queue.
    DeadLettered,
    /// Split into children, or routed to its routes' pipelines.
    Split,
}

impl Engine {
    /// Send a job to its pipeline now, or when it is due.
    pub(super) fn schedule(&self, job: Job) {
        let wait = job.due_ms.saturating_sub(now_ms());
        self.send_later(job, std::time::Duration::from_millis(wait));
    }

    /// Hand a job to its pipeline's dispatcher after `wait` (at once when zero).
    /// The job keeps its due time, which names its queue entry.
    pub(super) fn send_later(&self, job: Job, wait: std::time::Duration) {
        let Some(p) = self.inner.pipelines.get(&job.pipeline) else {
            return;
        };
        if wait.is_zero() {
            p.stats.ready.fetch_add(1, Ordering::Relaxed);
            let _ = p.ready.send(job);
        } else {
            let p = p.clone();
            self.inner.runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                p.stats.ready.fetch_add(1, Ordering::Relaxed);
                let _ = p.ready.send(job);
            });
        }
    }

    /// An event entered (or re-entered) its pipeline's queue: count it, give
    /// it its place in its key's lane, and schedule it.
    pub(super) fn requeued(&self, job: Job, entry: Entry, weight: super::job::Weight) {
        if let Some(p) = self.inner.pipelines.get(&job.pipeline) {
            let stats = p.stats_for(weight.synthetic);
            match entry {
                Entry::Accepted | Entry::Sequenced => {}
                Entry::Recovered => {
                    stats.recovered.fetch_add(1, Ordering::Relaxed);
                }
                Entry::Replayed => {
                    stats.replayed.fetch_add(1, Ordering::Relaxed);
                }
                Entry::Child => {
                    stats.children.fetch_add(1, Ordering::Relaxed);
                }
            }
            // On a store hosts share, an ordered pipeline's events are
            // worked where its order is kept: they come back through its
            // feed there (which may be this host).
            if p.gate.is_some() && entry != Entry::Sequenced && self.inner.store.shared() {
                return;
            }
            // A synthetic check's event is no part of the queue the
            // pipeline reports and reconciles.
            if !weight.synthetic {
                p.open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(job.id, weight.bytes);
            }
            if let (Some(gate), Some(key)) = (&p.gate, &job.order_key) {
                gate.enter(key, job.id);
            }
        }
        self.schedule(job);
    }

    /// An event left its pipeline for good, its outcome durable: count how
    /// it left, take it out of the queue's count (both at once, so the
    /// books balance at every moment, and a status that says 0 queued
    /// means every outcome is on disk), and release the next one of its key.
    pub(super) fn finished(
        &self,
        pipeline: &str,
        order_key: Option<&str>,
        id: crate::store::EventId,
        left: Left,
        synthetic: bool,
    ) {
        let Some(p) = self.inner.pipelines.get(pipeline) else {
            return;
        };
        let stats = p.stats_for(synthetic);
        match left {
            Left::Delivered => &stats.delivered,
            Left::Filtered => &stats.filtered,
            Left::DeadLettered => &stats.dead_lettered,
            Left::Split => &stats.split,
        }
        .fetch_add(1, Ordering::Relaxed);
        p.close(&id);
        if let (Some(gate), Some(key)) = (&p.gate, order_key)
            && let Some(next) = gate.leave(key, id)
        {
            self.schedule(next);
        }
    }
}
