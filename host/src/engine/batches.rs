//! The task that closes a pipeline's batches at the sink and delivers
//! them, handing each waiting attempt its own result.

use super::batch::{TICK, Waiting, fill};
use super::handle::Engine;
use super::pipeline::Pipeline;
use crate::redact::FieldMask;
use crate::sandbox::CallContext;
use crate::sandbox::bindings::WitEvent;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Close batches and deliver them, until the engine stops and no event of
/// the pipeline is in flight any more.
pub(super) async fn run(
    engine: Engine,
    pipeline: Arc<Pipeline>,
    mut rx: mpsc::UnboundedReceiver<Waiting>,
) {
    let Some(batcher) = pipeline.batcher.as_ref() else {
        return;
    };
    let config = batcher.config;
    let mut stop = engine.stopping();
    let mut carry: Option<Waiting> = None;
    loop {
        let stopped = *stop.borrow();
        let first = match carry.take() {
            Some(w) => w,
            None => tokio::select! {
                w = rx.recv() => match w {
                    Some(w) => w,
                    None => return,
                },
                _ = stop.changed(), if !stopped => continue,
                _ = tokio::time::sleep(TICK), if stopped => {
                    if pipeline.stats.in_flight.load(Ordering::Relaxed) == 0 {
                        return;
                    }
                    continue;
                }
            },
        };
        // Events that may still join: in flight and not being delivered,
        // or ready for the dispatcher to start.
        let others = || {
            let s = &pipeline.stats;
            let coming = s.in_flight.load(Ordering::Relaxed) + s.ready.load(Ordering::Relaxed);
            coming.saturating_sub(batcher.delivering.load(Ordering::Relaxed))
        };
        let batch = fill(first, &mut rx, &mut carry, config, others, || {
            *stop.borrow()
        })
        .await;
        batcher
            .delivering
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        tokio::spawn(flush(engine.clone(), pipeline.clone(), batch));
    }
}

/// Deliver one batch and hand each event its own result.
async fn flush(engine: Engine, pipeline: Arc<Pipeline>, batch: Vec<Waiting>) {
    let n = batch.len();
    let Some(sink) = &pipeline.sink else {
        // A batcher is made only for a pipeline's own sink.
        return;
    };
    let mask = FieldMask::union(batch.iter().map(|w| w.mask.as_ref()));
    let ctx = CallContext {
        pipeline: pipeline.name.clone(),
        plugin: sink.plugin.name.as_str().into(),
        event_id: if n == 1 {
            batch[0].event.id.clone()
        } else {
            format!("{} (+{} in its batch)", batch[0].event.id, n - 1)
        },
        correlation_id: batch[0].event.correlation_id.clone(),
        redact: Arc::new(mask),
    };
    let (events, replies): (Vec<WitEvent>, Vec<_>) =
        batch.into_iter().map(|w| (w.event, w.reply)).unzip();
    if let Some(limiter) = &pipeline.limiter {
        limiter.acquire().await;
    }
    let started = std::time::Instant::now();
    let (results, cost) = engine
        .inner
        .sandbox
        .deliver_batch(&sink.plugin, &sink.config_json, ctx, &events)
        .instrument(tracing::debug_span!("batch", pipeline = %pipeline.name, step = %sink.label, events = n))
        .await;
    if let Some(h) = pipeline.step_latency.last() {
        h.observe(started.elapsed());
    }
    if let Some(b) = &pipeline.batcher {
        b.delivering.fetch_sub(n as u64, Ordering::Relaxed);
    }
    pipeline.stats.batches.fetch_add(1, Ordering::Relaxed);
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send((result, cost));
    }
}
