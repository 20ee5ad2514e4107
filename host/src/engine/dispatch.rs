//! The per-pipeline dispatcher: pause, ordering by key, the breaker and the
//! concurrency limit stand between a ready job and its attempt.

use super::attempt::attempt;
use super::breaker::Admission;
use super::handle::Engine;
use super::job::Job;
use super::pipeline::Pipeline;
use crate::store::EventId;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc};

/// Feed a pipeline's jobs to at most `concurrency` concurrent attempts.
pub(super) async fn dispatch(
    engine: Engine,
    pipeline: Arc<Pipeline>,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let permits = Arc::new(Semaphore::new(pipeline.config.in_flight()));
    let settling = Arc::new(Semaphore::new(settling_room(&pipeline)));
    let running: Arc<Mutex<HashSet<EventId>>> = Arc::default();
    let mut stop = engine.stopping();
    loop {
        let mut job = tokio::select! {
            job = rx.recv() => match job {
                Some(job) => {
                    pipeline.stats.ready.fetch_sub(1, Ordering::Relaxed);
                    job
                }
                None => break,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        if pipeline.paused.load(Ordering::SeqCst) {
            pipeline
                .parked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(job);
            continue;
        }
        if let (Some(gate), Some(key)) = (&pipeline.gate, job.order_key.clone()) {
            match gate.admit(&key, job) {
                Some(j) => job = j,
                None => continue,
            }
        }
        let probe = match pipeline.breaker.admit() {
            Admission::Go => false,
            Admission::Probe => true,
            Admission::Wait(d) => {
                // Not an attempt: the event keeps its queue entry and its count.
                engine.send_later(job, d);
                continue;
            }
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        if !running
            .lock()
            .map(|mut r| r.insert(job.id))
            .unwrap_or(false)
        {
            // The previous attempt of this event is still writing its outcome
            // (its retry can be due at once): try again in a moment.
            if probe {
                pipeline.breaker.cancel_probe();
            }
            drop(permit);
            engine.send_later(job, std::time::Duration::from_millis(5));
            continue;
        }
        // Counted before the task starts, so that a batch waiting at the
        // sink knows this event may still join it.
        pipeline.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        pipeline.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let (engine, pipeline, running) = (engine.clone(), pipeline.clone(), running.clone());
        let settling = settling.clone();
        tokio::spawn(async move {
            let id = job.id;
            let outcome = attempt(&engine, &pipeline, job, probe).await;
            pipeline.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            if let Ok(mut r) = running.lock() {
                r.remove(&id);
            }
            // The next attempt may start while this outcome is written,
            // within the pipeline's room for outcomes not yet durable.
            let Some(outcome) = outcome else { return };
            let Ok(settle) = settling.acquire_owned().await else {
                return;
            };
            drop(permit);
            let _ = outcome.await;
            drop(settle);
        });
    }
    // Let attempts in progress write their outcome before the engine stops.
    let _ = permits
        .acquire_many(pipeline.config.in_flight() as u32)
        .await;
}

/// How many attempts of `pipeline` may have ended with their outcome not
/// yet durable: what a crash can make it deliver a second time beyond the
/// attempts under way. As many as may be under way, and at least a group
/// commit's worth so that outcomes still share flushes.
fn settling_room(pipeline: &Pipeline) -> usize {
    pipeline.config.in_flight().max(crate::store::MAX_GROUP)
}
