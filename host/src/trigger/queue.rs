//! The queue trigger: messages consumed from a broker (a JetStream stream
//! through a durable pull consumer, an AMQP queue, a core NATS subject).
//! A message is acknowledged only once it is stored: the items taken are
//! committed in one write, with the message id (or the stream position, or
//! a digest) as idempotency key, then acked. A crash between the two
//! redelivers what was stored, and the key turns it away. No more is taken
//! than the pipeline's queue has room for, and nothing while its breaker is
//! open: the broker holds the rest.

use super::{Running, Trigger, TriggerError};
use crate::config::{BrokerKind, PipelineConfig, QueueConfig};
use crate::engine::Engine;
use crate::messaging::{
    AmqpConsumer, AmqpDelivery, Broker, BrokerError, Incoming, JetStreamConsumer, JetStreamMessage,
    NatsSubscriber, Settle,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A pipeline's queue trigger.
pub struct QueueTrigger {
    pipeline: String,
    broker: Arc<Broker>,
    config: QueueConfig,
    /// Largest message body taken, as for a webhook (`server.max_body_bytes`).
    max_body: usize,
}

impl QueueTrigger {
    /// The queue trigger of pipeline `p`, on a broker of `engine`'s sandbox.
    pub fn build(
        p: &PipelineConfig,
        q: &QueueConfig,
        engine: &Engine,
        max_body: usize,
    ) -> Result<Self, TriggerError> {
        // Config validation names the configured brokers when this fails;
        // here it can only be a sandbox built without them.
        let broker = engine
            .sandbox()
            .brokers()
            .get(&q.broker)
            .cloned()
            .ok_or_else(|| {
                TriggerError(format!(
                    "pipeline {:?}, trigger.queue: broker {:?} is not configured; add [brokers.{}]",
                    p.name, q.broker, q.broker
                ))
            })?;
        Ok(QueueTrigger {
            pipeline: p.name.clone(),
            broker,
            config: q.clone(),
            max_body,
        })
    }

    /// Where it consumes from, for logs.
    fn source_name(&self) -> String {
        let c = &self.config;
        match self.broker.kind() {
            BrokerKind::Jetstream => format!(
                "stream {}{}",
                c.stream.as_deref().unwrap_or_default(),
                c.subject
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default()
            ),
            BrokerKind::Amqp => format!("queue {}", c.queue.as_deref().unwrap_or_default()),
            BrokerKind::Nats => format!("subject {}", c.subject.as_deref().unwrap_or_default()),
        }
    }

    async fn open(&self) -> Result<Source, BrokerError> {
        let c = &self.config;
        let name = c.consumer_name(&self.pipeline);
        Ok(match self.broker.kind() {
            BrokerKind::Jetstream => Source::JetStream(Box::new(
                self.broker
                    .jetstream_consumer(
                        c.stream.as_deref().unwrap_or_default(),
                        &name,
                        c.subject.as_deref(),
                        c.prefetch as usize,
                        Duration::from_millis(c.ack_wait_ms),
                    )
                    .await?,
            )),
            BrokerKind::Amqp => Source::Amqp(Box::new(
                self.broker
                    .amqp_consumer(
                        c.queue.as_deref().unwrap_or_default(),
                        c.prefetch,
                        c.declare,
                        &name,
                    )
                    .await?,
            )),
            BrokerKind::Nats => Source::Core(
                self.broker
                    .nats_subscribe(c.subject.as_deref().unwrap_or_default(), &name)
                    .await?,
            ),
        })
    }
}

impl Trigger for QueueTrigger {
    fn kind(&self) -> &'static str {
        "queue"
    }

    fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn run(self: Arc<Self>, engine: Engine) -> Running {
        Box::pin(async move { run(engine, &self).await })
    }
}

/// Where messages come from.
enum Source {
    JetStream(Box<JetStreamConsumer>),
    Amqp(Box<AmqpConsumer>),
    Core(NatsSubscriber),
}

/// A message taken and not yet settled.
enum Taken {
    JetStream(JetStreamMessage),
    Amqp(AmqpDelivery),
    /// Core NATS: nothing to acknowledge.
    Core,
}

impl Source {
    /// Up to `max` messages, waiting at most `wait` for the first.
    async fn take(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(Incoming, Taken)>, BrokerError> {
        Ok(match self {
            Source::JetStream(c) => c
                .fetch(max, wait)
                .await?
                .into_iter()
                .map(|(i, m)| (i, Taken::JetStream(m)))
                .collect(),
            Source::Amqp(c) => c
                .next_batch(max, wait)
                .await?
                .into_iter()
                .map(|(i, d)| (i, Taken::Amqp(d)))
                .collect(),
            Source::Core(s) => s
                .next_batch(max, wait)
                .await
                .ok_or_else(|| BrokerError::Unavailable("the subscription ended".into()))?
                .into_iter()
                .map(|i| (i, Taken::Core))
                .collect(),
        })
    }
}

impl Taken {
    /// Settle it, giving up after a few seconds on a broker that does not
    /// take the answer (it delivers the message again, and its key is known).
    async fn settle(&self, how: Settle) -> Result<(), BrokerError> {
        let settled = async {
            match self {
                Taken::JetStream(m) => crate::messaging::settle_jetstream(m, how).await,
                Taken::Amqp(d) => crate::messaging::settle_amqp(d, how).await,
                Taken::Core => Ok(()),
            }
        };
        tokio::time::timeout(SETTLE_TIMEOUT, settled)
            .await
            .unwrap_or_else(|_| {
                Err(BrokerError::Unavailable(
                    "the broker did not take the ack".into(),
                ))
            })
    }
}

/// How long settling one message may take.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Backoff after `failures` failures in a row: 0.5 s doubling to 30 s, jittered.
fn backoff(failures: u32) -> Duration {
    let ceiling = 500u64.saturating_mul(1 << failures.min(6)).min(30_000);
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

/// Consume until the engine stops; reconnect with backoff when the broker
/// goes away.
async fn run(engine: Engine, t: &QueueTrigger) {
    let pipeline = t.pipeline.as_str();
    let mut stop = engine.stopping();
    let mut failures: u32 = 0;
    let mut source: Option<Source> = None;
    let stats = engine.stats(pipeline);
    let failed = |kind: &'static str| {
        if let Some(s) = stats {
            s.poll_failed(kind);
        }
    };
    loop {
        if *stop.borrow() {
            return;
        }
        let mut wait = Duration::ZERO;
        if source.is_none() {
            match t.open().await {
                Ok(s) => {
                    tracing::info!(
                        pipeline,
                        broker = t.broker.name(),
                        "consuming {}",
                        t.source_name()
                    );
                    source = Some(s);
                }
                Err(e) => {
                    failures += 1;
                    failed("broker");
                    wait = backoff(failures);
                    tracing::warn!(
                        pipeline,
                        broker = t.broker.name(),
                        retry_in_ms = wait.as_millis() as u64,
                        "cannot consume {}: {e}",
                        t.source_name()
                    );
                }
            }
        }
        if let Some(s) = source.as_mut() {
            let room = engine.room(pipeline).min(t.config.prefetch as usize);
            if room == 0 {
                // The pipeline is full or its breaker is open: the broker
                // keeps the messages until there is room.
                wait = Duration::from_millis(200);
            } else {
                let taken = tokio::select! {
                    taken = s.take(room, Duration::from_secs(1)) => taken,
                    _ = stop.wait_for(|s| *s) => return,
                };
                match taken {
                    Ok(batch) if batch.is_empty() => failures = 0,
                    Ok(batch) => {
                        failures = 0;
                        if let Err(d) = store(&engine, pipeline, batch, t.max_body).await {
                            failures += 1;
                            wait = d.max(backoff(failures));
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        failed("broker");
                        wait = backoff(failures);
                        tracing::warn!(
                            pipeline,
                            broker = t.broker.name(),
                            retry_in_ms = wait.as_millis() as u64,
                            "lost the broker: {e}"
                        );
                        source = None;
                    }
                }
            }
        }
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Store what was taken, then settle each message: ack what is stored (or
/// was already), drop what can never be stored, give back the rest.
/// `Err` carries how long to wait when nothing could be stored.
async fn store(
    engine: &Engine,
    pipeline: &str,
    batch: Vec<(Incoming, Taken)>,
    max_body: usize,
) -> Result<(), Duration> {
    let mut items = Vec::with_capacity(batch.len());
    let mut keep = Vec::with_capacity(batch.len());
    let mut refused = Vec::new();
    for (incoming, taken) in batch {
        let why = if incoming.key.is_empty() || incoming.key.len() > crate::engine::MAX_KEY_LEN {
            Some(format!(
                "its message id is {} bytes long; at most {} are taken",
                incoming.key.len(),
                crate::engine::MAX_KEY_LEN
            ))
        } else if incoming.body.len() > max_body {
            Some(format!(
                "its body of {} bytes passes server.max_body_bytes ({max_body})",
                incoming.body.len()
            ))
        } else if serde_json::from_slice::<serde::de::IgnoredAny>(&incoming.body).is_err() {
            Some("its body is not JSON".to_string())
        } else {
            None
        };
        match why {
            Some(why) => refused.push((incoming, taken, why)),
            None => {
                items.push(crate::engine::BatchItem {
                    key: incoming.key,
                    body: incoming.body,
                    headers: vec![(
                        crate::store::QUEUE_SUBJECT_HEADER.to_string(),
                        incoming.subject,
                    )],
                });
                keep.push(taken);
            }
        }
    }
    for (incoming, taken, why) in refused {
        // Never storable: redelivering it would only block the queue.
        tracing::warn!(pipeline, subject = %incoming.subject, key = %incoming.key, "a queued message is dropped: {why}; publish JSON with a message id of at most {} bytes", crate::engine::MAX_KEY_LEN);
        if let Some(s) = engine.stats(pipeline) {
            s.poll_failed("invalid");
        }
        let _ = taken.settle(Settle::Drop).await;
    }
    if keep.is_empty() {
        return Ok(());
    }
    let found = keep.len();
    match engine.accept_batch(pipeline, "queue", items, None).await {
        Ok(new) => {
            // Stored: the acks go out while the next fetch is made. One
            // that is lost only brings a message back, which its key turns
            // away.
            let owner = pipeline.to_string();
            tokio::spawn(async move {
                for taken in &keep {
                    if let Err(e) = taken.settle(Settle::Ack).await {
                        tracing::debug!(
                            pipeline = %owner,
                            "ack not sent ({e}); the message will come again and be recognised"
                        );
                    }
                }
            });
            if let Some(s) = engine.stats(pipeline) {
                s.polls.fetch_add(1, Ordering::Relaxed);
                s.polled_items.fetch_add(found as u64, Ordering::Relaxed);
                s.polled_new.fetch_add(new as u64, Ordering::Relaxed);
            }
            tracing::debug!(pipeline, found, new, "consumed");
            Ok(())
        }
        Err(e) => {
            let wait = Duration::from_secs(1);
            tracing::warn!(
                pipeline,
                "could not store what was consumed, the broker keeps it: {e}"
            );
            for taken in &keep {
                let _ = taken.settle(Settle::Later(wait)).await;
            }
            Err(wait)
        }
    }
}
