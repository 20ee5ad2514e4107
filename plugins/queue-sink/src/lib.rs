//! queue-sink: publish each event to a message broker the operator
//! configured (`[brokers.NAME]`: NATS core, NATS JetStream or AMQP 0-9-1).
//!
//! The event's idempotency key is the message id (JetStream's
//! `Nats-Msg-Id`, AMQP's `message-id`), so a retried or replayed event is
//! refused by JetStream's dedup window and recognisable by an AMQP
//! consumer. The host waits for the broker's confirmation (a JetStream
//! publish ack, an AMQP publisher confirm) before the attempt counts as
//! delivered; a broker that cannot be reached or does not confirm in time
//! is retried, a refusal is dead-lettered.

use serde::Deserialize;
use std::collections::BTreeMap;
use weft_sdk::messaging::{self, Message};
use weft_sdk::{Error, Event, Plugin, PluginInfo, Receipt, Result, Sink};

/// The `config` table of a queue-sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The broker, by its `[brokers.NAME]` name; the plugin's grant must name it.
    pub broker: String,
    /// The subject (AMQP: the routing key on the broker's exchange); the
    /// grant must allow it.
    pub subject: String,
    /// Extra headers put on every message.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// The plugin.
pub struct QueueSink(Config);

impl Plugin for QueueSink {
    type Config = Config;

    fn describe() -> PluginInfo {
        PluginInfo::new("queue-sink", env!("CARGO_PKG_VERSION"))
            .config_schema(include_str!("../schema.json"))
    }

    fn new(config: Config) -> Result<Self> {
        if config.broker.is_empty() || config.subject.is_empty() {
            return Err(Error::fatal(
                "invalid config for plugin queue-sink: broker and subject must not be empty",
            ));
        }
        Ok(QueueSink(config))
    }
}

/// The message that carries `event`: its key as id, its ids as headers.
pub fn message_of(config: &Config, event: &Event) -> Message {
    let mut m = Message::new(event.payload.clone())
        .id(event.key.clone())
        .header("content-type", event.content_type.clone())
        .header("x-weft-event-id", event.id.clone())
        .header("x-correlation-id", event.correlation_id.clone());
    for (k, v) in &config.headers {
        m = m.header(k.clone(), v.clone());
    }
    m
}

impl Sink for QueueSink {
    fn deliver(&mut self, event: &Event) -> Result<Receipt> {
        let said = messaging::publish(&self.0.broker, &self.0.subject, message_of(&self.0, event))?;
        Ok(Receipt::new(format!(
            "published to {} {}: {said}",
            self.0.broker, self.0.subject
        )))
    }
}

weft_sdk::export!(sink: QueueSink);

#[cfg(test)]
mod tests {
    use super::*;
    use weft_sdk::messaging::{MessagingError, fake};

    fn sink() -> QueueSink {
        QueueSink::new(Config {
            broker: "orders".into(),
            subject: "orders.created".into(),
            headers: BTreeMap::from([("x-team".into(), "billing".into())]),
        })
        .unwrap()
    }

    #[test]
    fn the_key_is_the_message_id_and_refusals_are_not_retried() {
        fake::reset();
        let mut event = Event::from_json("k-1", &serde_json::json!({"a": 1}));
        event.id = "ev-1".into();
        let receipt = sink().deliver(&event).unwrap();
        assert_eq!(
            receipt.detail,
            "published to orders orders.created: published"
        );
        let sent = fake::published();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].message.id.as_deref(), Some("k-1"));
        assert_eq!(sent[0].message.body, br#"{"a":1}"#);
        assert!(
            sent[0]
                .message
                .headers
                .contains(&("x-team".to_string(), "billing".to_string()))
        );
        fake::fail_next(MessagingError::Unavailable("no confirm".into()));
        assert!(matches!(sink().deliver(&event), Err(Error::Transient(_))));
        fake::fail_next(MessagingError::NotGranted("subject".into()));
        assert!(matches!(sink().deliver(&event), Err(Error::Fatal(_))));
    }
}
