//! NATS: core publishes (flushed to the server) and JetStream publishes
//! (acknowledged by a stream, deduplicated by `Nats-Msg-Id`); a durable
//! pull consumer and a core queue subscription for queue triggers.

use super::{Broker, BrokerError, Incoming, Outgoing, Settle};
use crate::config::BrokerKind;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures_util::StreamExt;
use std::time::Duration;

/// The header JetStream deduplicates by.
const MSG_ID: &str = "Nats-Msg-Id";

fn unavailable(b: &Broker, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("broker {} ({}): {e}", b.name, b.config.url))
}

/// A connection: the client (which reconnects by itself) and its
/// JetStream context (one acknowledgement task for every publish).
#[derive(Clone)]
pub(super) struct Link {
    client: async_nats::Client,
    js: jetstream::Context,
}

/// The broker's connection, made on first use.
pub(super) async fn link(b: &Broker) -> Result<Link, BrokerError> {
    let mut held = b.nats.lock().await;
    if let Some(l) = held.as_ref() {
        return Ok(l.clone());
    }
    let options = match (&b.config.user, &b.secret) {
        (Some(user), Some(pass)) => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), pass.clone())
        }
        (None, Some(token)) => async_nats::ConnectOptions::with_token(token.clone()),
        _ => async_nats::ConnectOptions::new(),
    }
    .name("weft")
    .connection_timeout(b.confirm_timeout());
    // Several seed URLs, comma-separated, for a cluster; the client
    // learns the rest of the cluster from whichever answers.
    let seeds: Vec<&str> = b.config.url.split(',').map(str::trim).collect();
    let client = options
        .connect(seeds)
        .await
        .map_err(|e| unavailable(b, e))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(b.confirm_timeout())
        .build(client.clone());
    let l = Link { client, js };
    *held = Some(l.clone());
    Ok(l)
}

fn headers_of(m: &Outgoing) -> async_nats::HeaderMap {
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in &m.headers {
        h.append(k.as_str(), v.as_str());
    }
    if let Some(id) = &m.id {
        h.insert(MSG_ID, id.as_str());
    }
    h
}

pub(super) async fn publish(b: &Broker, subject: &str, m: Outgoing) -> Result<String, BrokerError> {
    let Link { client, js } = link(b).await?;
    let headers = headers_of(&m);
    if b.config.kind == BrokerKind::Nats {
        client
            .publish_with_headers(subject.to_string(), headers, m.body.into())
            .await
            .map_err(|e| unavailable(b, e))?;
        client.flush().await.map_err(|e| unavailable(b, e))?;
        return Ok("published (core NATS: the server keeps nothing)".into());
    }
    let ack = js
        .send_publish(
            subject.to_string(),
            jetstream::message::PublishMessage::build()
                .payload(m.body.into())
                .headers(headers),
        )
        .await
        .map_err(|e| publish_error(b, subject, e))?
        .await
        .map_err(|e| publish_error(b, subject, e))?;
    Ok(if ack.duplicate {
        format!("duplicate of stream {} seq {}", ack.stream, ack.sequence)
    } else {
        format!("stream {} seq {}", ack.stream, ack.sequence)
    })
}

fn publish_error(
    b: &Broker,
    subject: &str,
    e: async_nats::jetstream::context::PublishError,
) -> BrokerError {
    use async_nats::jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::StreamNotFound => BrokerError::Refused(format!(
            "no JetStream stream on broker {} takes subject {subject:?}; add one whose subjects cover it",
            b.name
        )),
        K::MaxPayloadExceeded => BrokerError::Refused(format!(
            "the message is larger than broker {}'s max_payload",
            b.name
        )),
        _ => unavailable(b, e),
    }
}

/// A durable JetStream pull consumer of one stream.
pub struct JetStreamConsumer {
    consumer: PullConsumer,
}

/// A message taken from JetStream, to ack once it is stored.
pub type JetStreamMessage = jetstream::Message;

impl Broker {
    /// The durable pull consumer `durable` of `stream` (made when missing),
    /// explicit acks, at most `max_ack_pending` unacknowledged.
    pub async fn jetstream_consumer(
        &self,
        stream: &str,
        durable: &str,
        filter: Option<&str>,
        max_ack_pending: usize,
        ack_wait: Duration,
    ) -> Result<JetStreamConsumer, BrokerError> {
        let js = link(self).await?.js;
        let s = js.get_stream(stream).await.map_err(|e| {
            use async_nats::jetstream::context::GetStreamErrorKind as K;
            match e.kind() {
                K::JetStream(_) => BrokerError::Refused(format!(
                    "broker {}: stream {stream:?} cannot be read ({e}); create it (nats stream add {stream} --subjects ...)",
                    self.name
                )),
                _ => unavailable(self, e),
            }
        })?;
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(durable.to_string()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait,
            max_ack_pending: max_ack_pending as i64,
            filter_subject: filter.unwrap_or_default().to_string(),
            ..Default::default()
        };
        let consumer = s
            .get_or_create_consumer(durable, config)
            .await
            .map_err(|e| {
                BrokerError::Refused(format!(
                    "broker {}: consumer {durable:?} of stream {stream:?}: {e}",
                    self.name
                ))
            })?;
        Ok(JetStreamConsumer { consumer })
    }

    /// A core NATS subscription to `subject` in queue group `group`.
    pub async fn nats_subscribe(
        &self,
        subject: &str,
        group: &str,
    ) -> Result<NatsSubscriber, BrokerError> {
        let sub = link(self)
            .await?
            .client
            .queue_subscribe(subject.to_string(), group.to_string())
            .await
            .map_err(|e| unavailable(self, e))?;
        Ok(NatsSubscriber { sub })
    }
}

impl JetStreamConsumer {
    /// Up to `max` messages, waiting at most `wait` for the first.
    pub async fn fetch(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(Incoming, JetStreamMessage)>, BrokerError> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| BrokerError::Unavailable(e.to_string()))?;
            let key = match m.headers.as_ref().and_then(|h| h.get(MSG_ID)) {
                Some(id) if !id.as_str().is_empty() => id.as_str().to_string(),
                _ => {
                    let info = m
                        .info()
                        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                    format!("{}:{}", info.stream, info.stream_sequence)
                }
            };
            out.push((
                Incoming {
                    key,
                    body: m.payload.to_vec(),
                    subject: m.subject.to_string(),
                },
                m,
            ));
        }
        Ok(out)
    }
}

/// Acknowledge (it is stored), give back for later, or drop for good.
pub async fn settle(m: &JetStreamMessage, how: Settle) -> Result<(), BrokerError> {
    let kind = match how {
        Settle::Ack => AckKind::Ack,
        Settle::Later(d) => AckKind::Nak(Some(d)),
        Settle::Drop => AckKind::Term,
    };
    m.ack_with(kind)
        .await
        .map_err(|e| BrokerError::Unavailable(e.to_string()))
}

/// A core NATS queue subscription.
pub struct NatsSubscriber {
    sub: async_nats::Subscriber,
}

impl NatsSubscriber {
    /// Up to `max` messages: waits at most `wait` for the first, then takes
    /// what is already there. `None` when the subscription ended.
    pub async fn next_batch(&mut self, max: usize, wait: Duration) -> Option<Vec<Incoming>> {
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, self.sub.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return None,
            Err(_) => return Some(out),
        };
        out.push(incoming_core(first));
        while out.len() < max {
            match tokio::time::timeout(Duration::from_millis(5), self.sub.next()).await {
                Ok(Some(m)) => out.push(incoming_core(m)),
                Ok(None) | Err(_) => break,
            }
        }
        Some(out)
    }
}

fn incoming_core(m: async_nats::Message) -> Incoming {
    let key = m
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_ID))
        .map(|v| v.as_str().to_string())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| format!("nats:{}", uuid::Uuid::now_v7()));
    Incoming {
        key,
        body: m.payload.to_vec(),
        subject: m.subject.to_string(),
    }
}
