//! Batches at the sink: an attempt whose event reaches a batching sink
//! hands the event to its pipeline's batcher and waits for its own result,
//! so each event keeps its own outcome, history and retries while the sink
//! is called once per batch. This file holds where events wait and how a
//! batch fills; `batches.rs` closes and delivers them.

use crate::config::BatchConfig;
use crate::redact::FieldMask;
use crate::sandbox::bindings::WitEvent;
use crate::sandbox::{CallCost, CallError};
use crate::store::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How often an open batch looks again at whether it should close.
pub(super) const TICK: Duration = Duration::from_millis(2);

/// One event's result from its batch: the receipt or error, and what the
/// batch call cost.
pub(super) type Delivered = (Result<String, CallError>, CallCost);

/// An event waiting at the sink for its batch.
pub(super) struct Waiting {
    pub event: WitEvent,
    pub mask: Arc<FieldMask>,
    pub reply: oneshot::Sender<Delivered>,
}

/// A pipeline's batcher: where attempts hand in their events.
pub(super) struct Batcher {
    pub config: BatchConfig,
    tx: mpsc::UnboundedSender<Waiting>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Waiting>>>,
    /// Events in batches being delivered (still in flight, but no longer
    /// able to join a batch).
    pub delivering: AtomicU64,
}

impl Batcher {
    pub(super) fn new(config: BatchConfig) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        Batcher {
            config,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            delivering: AtomicU64::new(0),
        }
    }

    /// Deliver `event` with the next batch and wait for its own result.
    pub(super) async fn deliver(&self, event: WitEvent, mask: Arc<FieldMask>) -> Delivered {
        let (reply, result) = oneshot::channel();
        let gone = || {
            (
                Err(CallError {
                    kind: ErrorKind::Transient,
                    message: "the engine stopped before the event's batch was delivered".into(),
                    retry_after_ms: None,
                }),
                CallCost::default(),
            )
        };
        if self.tx.send(Waiting { event, mask, reply }).is_err() {
            return gone();
        }
        result.await.unwrap_or_else(|_| gone())
    }

    /// The receiving end, once, for the task that delivers the batches.
    pub(super) fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Waiting>> {
        self.rx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// A batch begun by `first`, filled from `rx` until it holds `max_events`,
/// one more would pass `max_bytes` (that one is left in `carry` for the
/// next batch), `max_wait_ms` have passed, or no other event could join
/// soon: `in_flight()` (events in flight and not yet being delivered) is no
/// more than the batch holds, or `stopping()`.
pub(super) async fn fill(
    first: Waiting,
    rx: &mut mpsc::UnboundedReceiver<Waiting>,
    carry: &mut Option<Waiting>,
    config: BatchConfig,
    in_flight: impl Fn() -> u64,
    stopping: impl Fn() -> bool,
) -> Vec<Waiting> {
    let deadline = Instant::now() + Duration::from_millis(config.max_wait_ms);
    let mut bytes = first.event.payload.len() as u64;
    let mut batch = vec![first];
    while batch.len() < config.max_events {
        let next = if in_flight() <= batch.len() as u64 || stopping() {
            match rx.try_recv() {
                Ok(w) => Some(w),
                Err(_) => break,
            }
        } else {
            tokio::select! {
                w = rx.recv() => w,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::time::sleep(TICK) => continue,
            }
        };
        let Some(w) = next else { break };
        let size = w.event.payload.len() as u64;
        if bytes + size > config.max_bytes {
            *carry = Some(w);
            break;
        }
        bytes += size;
        batch.push(w);
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_events: usize, max_bytes: u64, max_wait_ms: u64) -> BatchConfig {
        BatchConfig {
            max_events,
            max_bytes,
            max_wait_ms,
        }
    }

    fn waiting(payload: usize) -> (Waiting, oneshot::Receiver<Delivered>) {
        let (reply, rx) = oneshot::channel();
        let event = WitEvent {
            id: String::new(),
            key: String::new(),
            source: String::new(),
            content_type: String::new(),
            headers: Vec::new(),
            payload: vec![b'x'; payload],
            attempt: 1,
            correlation_id: String::new(),
            received_at_ms: 0,
        };
        let w = Waiting {
            event,
            mask: Arc::default(),
            reply,
        };
        (w, rx)
    }

    /// [`fill`] from a first event taken off `rx`, with `in_flight` events
    /// that could still join and no stop.
    async fn fill_from(
        rx: &mut mpsc::UnboundedReceiver<Waiting>,
        carry: &mut Option<Waiting>,
        config: BatchConfig,
        in_flight: u64,
    ) -> Vec<Waiting> {
        let first = rx.recv().await.unwrap();
        fill(first, rx, carry, config, || in_flight, || false).await
    }

    /// Sends `n` events of `payload` bytes; keeps their reply ends alive.
    fn queue(
        tx: &mpsc::UnboundedSender<Waiting>,
        n: usize,
        payload: usize,
    ) -> Vec<oneshot::Receiver<Delivered>> {
        (0..n)
            .map(|_| {
                let (w, r) = waiting(payload);
                assert!(tx.send(w).is_ok());
                r
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_at_max_events() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _replies = queue(&tx, 25, 10);
        let mut carry = None;
        let batch = fill_from(&mut rx, &mut carry, config(10, 1 << 20, 1000), 100).await;
        assert_eq!(batch.len(), 10);
        assert!(carry.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_before_passing_max_bytes_and_keeps_the_next_event() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _replies = queue(&tx, 5, 400);
        let mut carry = None;
        let batch = fill_from(&mut rx, &mut carry, config(100, 1000, 1000), 100).await;
        assert_eq!(batch.len(), 2, "800 bytes fit in 1000, 1200 would not");
        assert_eq!(carry.map(|w| w.event.payload.len()), Some(400));
        // A single event over max_bytes still goes, alone.
        let (big, _r) = waiting(5000);
        let batch = fill(
            big,
            &mut rx,
            &mut None,
            config(100, 1000, 1000),
            || 100,
            || false,
        )
        .await;
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_after_max_wait_when_others_are_still_coming() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _replies = queue(&tx, 3, 10);
        let mut carry = None;
        let started = Instant::now();
        // Ten events are in flight, three arrived: it waits for the rest,
        // until max_wait_ms.
        let batch = fill_from(&mut rx, &mut carry, config(100, 1 << 20, 300), 10).await;
        assert_eq!(batch.len(), 3);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_millis(310),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_closes_at_once_when_every_event_in_flight_is_in_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _replies = queue(&tx, 3, 10);
        let started = Instant::now();
        let batch = fill_from(&mut rx, &mut None, config(100, 1 << 20, 5000), 3).await;
        assert_eq!(batch.len(), 3);
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "no waiting for events that cannot come"
        );
        // Stopping closes it at once too.
        let _more = queue(&tx, 2, 10);
        let first = rx.recv().await.unwrap();
        let batch = fill(
            first,
            &mut rx,
            &mut None,
            config(100, 1 << 20, 5000),
            || 50,
            || true,
        )
        .await;
        assert_eq!(batch.len(), 2);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
