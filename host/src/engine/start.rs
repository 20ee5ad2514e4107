//! Starting and stopping the engine: a dispatcher per pipeline, the work
//! found in the store requeued, and the retention sweep.

use super::EngineError;
use super::handle::Engine;
use super::job::Job;
use super::pipeline::Entry;

impl Engine {
    /// Start the workers, requeue the work found in the store, and start the
    /// retention sweep. Returns how many queued events were recovered.
    pub fn start(&self) -> Result<usize, EngineError> {
        let queued = self.inner.store.claim_queue().map_err(EngineError::from)?;
        Ok(self.start_with(queued).0)
    }

    /// Start with the queue entries found in the store (`queued`), which
    /// are requeued; the rest as [`Engine::start`] does. Returns how many
    /// were requeued, and how many were left in the store by pipeline
    /// because no pipeline of that name is configured.
    pub(super) fn start_with(
        &self,
        queued: Vec<crate::store::QueueEntry>,
    ) -> (usize, std::collections::BTreeMap<String, usize>) {
        // Counters and the pause are as the store has them now: the engine
        // may have been built a while before it starts (a reload).
        for (name, p) in &self.inner.pipelines {
            *p.lifetime_base.lock().unwrap_or_else(|e| e.into_inner()) = self
                .inner
                .store
                .totals(name)
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let reason = self.inner.store.pause_reason(name);
            p.paused
                .store(reason.is_some(), std::sync::atomic::Ordering::SeqCst);
            *p.pause_reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
        }
        let receivers = std::mem::take(
            &mut *self
                .inner
                .receivers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut tasks = Vec::new();
        for (pipeline, rx) in receivers {
            if let Some(batches) = pipeline.batcher.as_ref().and_then(|b| b.take_receiver()) {
                tasks.push(tokio::spawn(super::batches::run(
                    self.clone(),
                    pipeline.clone(),
                    batches,
                )));
            }
            tasks.push(tokio::spawn(super::dispatch::dispatch(
                self.clone(),
                pipeline,
                rx,
            )));
        }
        let (recovered, kept) = self.requeue_found(queued);
        if self.inner.store.shared() {
            tasks.push(tokio::spawn(adopt(self.clone())));
            for (name, p) in &self.inner.pipelines {
                if p.gate.is_some() {
                    tasks.push(tokio::spawn(super::sequence::hold(
                        self.clone(),
                        name.to_string(),
                    )));
                }
            }
        }
        tasks.push(tokio::spawn(super::janitor::run(self.clone())));
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        for (pipeline, n) in &kept {
            tracing::warn!(pipeline = %pipeline, queued = n,
                "queued events of a pipeline that is not configured: they stay in the store until it is configured again or purged (weft pipeline purge)");
        }
        (recovered, kept)
    }

    /// Requeue queue entries found in the store, in acceptance order;
    /// how many, and how many were left by pipeline because no pipeline of
    /// that name is configured.
    fn requeue_found(
        &self,
        mut queued: Vec<crate::store::QueueEntry>,
    ) -> (usize, std::collections::BTreeMap<String, usize>) {
        // Event ids are time-ordered: this is acceptance order, which ordered
        // pipelines must keep.
        queued.sort_by_key(|e| e.id);
        let mut recovered = 0;
        let mut kept = std::collections::BTreeMap::<String, usize>::new();
        for crate::store::QueueEntry {
            due_ms: due,
            id,
            attempt,
        } in queued
        {
            let Ok(Some(rec)) = self.inner.store.event(&id) else {
                continue;
            };
            if self.inner.pipelines.contains_key(&rec.pipeline) {
                self.requeued(
                    Job {
                        pipeline: rec.pipeline.clone(),
                        id,
                        attempt,
                        due_ms: due,
                        order_key: rec.order_key.clone(),
                        record: None,
                    },
                    Entry::Recovered,
                    super::job::Weight::of(&rec),
                );
                recovered += 1;
            } else {
                *kept.entry(rec.pipeline.clone()).or_default() += 1;
            }
        }
        (recovered, kept)
    }

    /// Requeue the events an ordered pipeline's feed took, in its order,
    /// from the records it read.
    pub(super) fn requeue_taken(
        &self,
        taken: Vec<(crate::store::QueueEntry, crate::store::EventRecord)>,
    ) {
        for (q, rec) in taken {
            if !self.inner.pipelines.contains_key(&rec.pipeline) {
                continue;
            }
            let weight = super::job::Weight::of(&rec);
            let rec = std::sync::Arc::new(rec);
            self.requeued(
                Job {
                    pipeline: rec.pipeline.clone(),
                    id: q.id,
                    attempt: q.attempt,
                    due_ms: q.due_ms,
                    order_key: rec.order_key.clone(),
                    record: Job::keep(&rec),
                },
                Entry::Sequenced,
                weight,
            );
        }
    }

    /// Stop taking jobs, wait (up to `grace`) for attempts in progress to
    /// finish, and end the engine's tasks. Unfinished work stays queued in
    /// the store for the next start.
    pub async fn stop(&self, grace: std::time::Duration) {
        let _ = self.inner.stop.send(true);
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for mut task in tasks {
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
            }
        }
        // The janitor saved them as it stopped, perhaps before the last
        // attempts had counted their outcome.
        super::janitor::save_totals(self).await;
    }

    /// Run the retention sweep now (it also runs every minute).
    pub async fn sweep_history(&self) {
        super::janitor::sweep(self).await;
    }
}

/// How often a host on a shared store looks for work other hosts left.
const ADOPT_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// On a store several hosts share: take over, until the engine stops, the
/// queued events of hosts that stopped, and follow pauses and resumes
/// made through another host.
async fn adopt(engine: Engine) {
    let mut stop = engine.stopping();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ADOPT_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match engine.inner.store.adopt().await {
            Ok(found) if !found.is_empty() => {
                let n = found.len();
                let (recovered, _) = engine.requeue_found(found);
                tracing::warn!(
                    taken_over = n,
                    requeued = recovered,
                    "took over the queued events of a host that stopped"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("could not look for work other hosts left: {e}"),
        }
        for (name, p) in &engine.inner.pipelines {
            let reason = engine.inner.store.pause_reason(name);
            engine.follow_pause(name, reason.as_deref());
            // A sink another host found failing is left alone here too.
            if p.config.breaker.enabled
                && let Some(until) = engine.inner.store.breaker_open_until(name)
            {
                let left = until.saturating_sub(crate::store::now_ms());
                if p.breaker
                    .follow_open(std::time::Duration::from_millis(left))
                {
                    tracing::warn!(pipeline = %name, "circuit breaker of the sink opened: another host found the sink failing; events wait here too");
                }
            }
        }
    }
}
