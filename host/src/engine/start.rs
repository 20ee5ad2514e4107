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
        let mut queued = self.inner.store.queue().map_err(EngineError::from)?;
        // Event ids are time-ordered: this is acceptance order, which ordered
        // pipelines must keep.
        queued.sort_by_key(|e| e.id);
        let mut recovered = 0;
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
                    rec.payload.len() as u64,
                );
                recovered += 1;
            } else {
                tracing::warn!(event = %id, pipeline = %rec.pipeline,
                    "queued event belongs to a pipeline that is no longer configured; it stays in the store");
            }
        }
        tasks.push(tokio::spawn(super::janitor::run(self.clone())));
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        Ok(recovered)
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
    }

    /// Run the retention sweep now (it also runs every minute).
    pub async fn sweep_history(&self) {
        super::janitor::sweep(self).await;
    }
}
