//! Ordered pipelines across hosts. Every host accepts their events, but
//! one host at a time works them: the holder of the lease
//! `order:PIPELINE`. Accepting an event of an ordered pipeline appends its
//! id to the stream `PREFIX-order` (subject `PREFIX.order.PIPELINE`) before
//! the sender is answered, so the stream's sequence is the order in which
//! events were accepted across the cluster. The holder follows the stream
//! and takes each event it names (a compare-and-set on its owner),
//! stamping it with its place in the sequence; its engine then keeps each
//! key's events in that order, as one host does. A new holder first takes
//! the stamped events a previous holder left unfinished, in stamp order,
//! then follows the stream from where the previous one checkpointed.

use super::*;
use async_nats::jetstream::consumer::{DeliverPolicy, push::OrderedConfig};
use futures_util::StreamExt;

/// How long the feed waits for a new event before saying it has none.
const FEED_WAIT: Duration = Duration::from_secs(1);
/// The holder checkpoints how far it has read at least this often (in
/// events), and whenever the stream falls quiet.
const CHECKPOINT_EVERY: u64 = 64;

/// An event taken in order, with its queue entry: the engine needs no
/// second read of it.
type Taken = (QueueEntry, EventRecord);

impl Shared {
    fn order_subject(&self, pipeline: &str) -> String {
        format!(
            "{}.order.{}",
            self.names.prefix,
            hexname(pipeline.as_bytes())
        )
    }

    fn checkpoint_key(pipeline: &str) -> String {
        format!("order-at.{}", hexname(pipeline.as_bytes()))
    }

    /// Give an event of an ordered pipeline its place in the pipeline's
    /// sequence: acknowledged once the stream's replicas have it.
    pub(super) async fn sequence(&self, record: &EventRecord) -> Result<(), StoreError> {
        self.sequence_id(&record.pipeline, record.id).await
    }

    async fn sequence_id(&self, pipeline: &str, id: EventId) -> Result<(), StoreError> {
        let ack = self
            .js
            .publish(self.order_subject(pipeline), id.as_bytes().to_vec().into())
            .await
            .map_err(write_err)?;
        ack.await.map_err(write_err)?;
        Ok(())
    }

    /// Give the queued event `id` of `pipeline` a place if it has none yet
    /// (a place given twice is taken once, at the first).
    pub(super) async fn ensure_sequenced(
        &self,
        pipeline: &str,
        id: EventId,
    ) -> Result<(), StoreError> {
        if let Some(e) = self.events.entry(id.to_string()).await.map_err(read_err)?
            && e.operation == kv::Operation::Put
            && let Ok(st) = postcard::from_bytes::<Stored>(&e.value)
            && matches!(st.place, Place::Queued { .. })
            && st.order_seq.is_none()
        {
            self.sequence_id(pipeline, id).await?;
        }
        Ok(())
    }

    /// An event of an ordered pipeline whose host stopped before it was
    /// given its place (it was never acknowledged, or was replayed there):
    /// taken by this host (one host does it) and given one now.
    pub(super) async fn resequence(
        &self,
        stored: &Stored,
        record: &EventRecord,
        rev: u64,
    ) -> Result<(), StoreError> {
        let value = self.stored(record, stored.place, &self.host);
        match self.events.update(record.id.to_string(), value, rev).await {
            Ok(_) => {
                tracing::info!(event = %record.id, from = %stored.owner,
                    "an event of an ordered pipeline left by a host that stopped is given its place in the order");
                self.sequence(record).await
            }
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(write_err(e)),
        }
    }

    /// Take the event `id` of `pipeline` for this host at `seq` in its
    /// order: the queue entry to work, or `None` when it is not queued or
    /// already has its place (a name read again, or given twice). A new
    /// holder's start (`taking_over`) takes events that have their place
    /// already, keeping it.
    async fn take_in_order(
        &self,
        pipeline: &str,
        id: EventId,
        seq: u64,
        taking_over: bool,
    ) -> Result<Option<Taken>, StoreError> {
        let key = id.to_string();
        loop {
            let Some(e) = self.events.entry(key.clone()).await.map_err(read_err)? else {
                return Ok(None);
            };
            if e.operation != kv::Operation::Put {
                return Ok(None);
            }
            let (mut st, record) = self.decode(&e.value)?;
            let Place::Queued { due_ms, attempt } = st.place else {
                return Ok(None);
            };
            if st.order_seq.is_some() != taking_over {
                return Ok(None);
            }
            let entry = QueueEntry {
                due_ms,
                id,
                attempt,
            };
            if taking_over && st.owner == self.host {
                // This host's already (an engine that was reloaded).
                self.sequenced
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, st.order_seq.unwrap_or(seq));
                return Ok(Some((entry, record)));
            }
            // The subject named the pipeline: a name in another pipeline's
            // stream is refused.
            if record.pipeline != pipeline {
                return Ok(None);
            }
            let order_seq = *st.order_seq.get_or_insert(seq);
            st.owner = self.host.clone();
            let value: bytes::Bytes = postcard::to_stdvec(&st).unwrap_or_default().into();
            match self.events.update(&key, value, e.revision).await {
                Ok(new) => {
                    self.owned
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, new);
                    self.sequenced
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, order_seq);
                    return Ok(Some((entry, record)));
                }
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(write_err(e)),
            }
        }
    }

    /// A new holder's start: the stamped events of `pipeline` still queued
    /// (a previous holder's unfinished work), taken in stamp order, and
    /// where the previous holder had read the stream to.
    async fn take_over_order(&self, pipeline: &str) -> Result<(Vec<Taken>, u64), StoreError> {
        let at = self
            .state_get(Self::checkpoint_key(pipeline))
            .await?
            .and_then(|(v, _)| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0u64);
        let mut stamped: Vec<(u64, EventId)> = self
            .scan_events()
            .await?
            .into_iter()
            .filter(|(s, r, _)| {
                matches!(s.place, Place::Queued { .. })
                    && r.pipeline == pipeline
                    && s.order_seq.is_some()
            })
            .map(|(s, r, _)| (s.order_seq.unwrap_or_default(), r.id))
            .collect();
        stamped.sort();
        let mut taken = Vec::with_capacity(stamped.len());
        for (seq, id) in stamped {
            if let Some(entry) = self.take_in_order(pipeline, id, seq, true).await? {
                taken.push(entry);
            }
        }
        Ok((taken, at))
    }

    /// Follow `pipeline`'s stream after `at`, sending what it takes, until
    /// the feed is dropped (`Ok`) or the stream cannot be read (`Err`).
    async fn follow_order(
        &self,
        pipeline: &str,
        at: &mut u64,
        tx: &tokio::sync::mpsc::Sender<Result<Vec<Taken>, StoreError>>,
    ) -> Result<(), StoreError> {
        let stream = self
            .js
            .get_stream(&self.names.order)
            .await
            .map_err(read_err)?;
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.js.client().new_inbox(),
                filter_subject: self.order_subject(pipeline),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: *at + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(read_err)?;
        let mut messages = consumer.messages().await.map_err(read_err)?;
        let mut saved = *at;
        loop {
            match tokio::time::timeout(FEED_WAIT, messages.next()).await {
                Ok(Some(m)) => {
                    let m = m.map_err(read_err)?;
                    let seq = m.info().map_err(read_err)?.stream_sequence;
                    let taken = match EventId::from_slice(&m.payload) {
                        Some(id) => self.take_in_order(pipeline, id, seq, false).await?,
                        None => None,
                    };
                    *at = seq;
                    if let Some(taken) = taken
                        && tx.send(Ok(vec![taken])).await.is_err()
                    {
                        break;
                    }
                    if *at - saved >= CHECKPOINT_EVERY {
                        self.checkpoint(pipeline, *at).await?;
                        saved = *at;
                    }
                }
                Ok(None) => return Err(read_err("the order stream ended")),
                Err(_) => {
                    if *at != saved {
                        self.checkpoint(pipeline, *at).await?;
                        saved = *at;
                    }
                    if tx.is_closed() {
                        break;
                    }
                }
            }
        }
        if *at != saved {
            self.checkpoint(pipeline, *at).await?;
        }
        Ok(())
    }

    /// Say how far the stream is read, and remove what was read from it.
    async fn checkpoint(&self, pipeline: &str, at: u64) -> Result<(), StoreError> {
        self.state_put(
            Self::checkpoint_key(pipeline),
            Some(at.to_string().into_bytes()),
        )
        .await?;
        if let Ok(stream) = self.js.get_stream(&self.names.order).await
            && let Err(e) = stream
                .purge()
                .filter(self.order_subject(pipeline))
                .sequence(at + 1)
                .await
        {
            tracing::debug!(
                pipeline,
                "could not remove the read part of the order stream: {e}"
            );
        }
        Ok(())
    }
}

/// The feed of one ordered pipeline: a task on the store's runtime takes
/// events in order and hands them over; dropping the feed ends it.
pub(super) struct JsOrderFeed {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<Taken>, StoreError>>,
}

impl JsOrderFeed {
    pub(super) fn start(s: Arc<Shared>, call: &Caller, pipeline: String) -> JsOrderFeed {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        call.spawn(async move {
            let mut at = loop {
                match s.take_over_order(&pipeline).await {
                    Ok((taken, at)) => {
                        if tx.send(Ok(taken)).await.is_err() {
                            return;
                        }
                        break at;
                    }
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(FEED_WAIT).await;
                    }
                }
            };
            loop {
                match s.follow_order(&pipeline, &mut at, &tx).await {
                    Ok(()) => return,
                    Err(e) => {
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(FEED_WAIT).await;
                    }
                }
            }
        });
        JsOrderFeed { rx }
    }
}

impl OrderFeed for JsOrderFeed {
    fn next(&mut self) -> StoreFuture<'_, Vec<Taken>> {
        Box::pin(async move { self.rx.recv().await.unwrap_or(Err(StoreError::Closed)) })
    }
}
