//! Message brokers: the connections the host holds to each
//! `[brokers.NAME]`, for plugins that publish (the `messaging` grant) and
//! for queue triggers. Publishing waits for the broker's confirmation; a
//! connection that fails is dropped and made again on the next use.

mod amqp;
mod nats;

use crate::config::{BrokerConfig, BrokerKind, Config};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub use amqp::{AmqpConsumer, AmqpDelivery, settle as settle_amqp};
pub use nats::{JetStreamConsumer, JetStreamMessage, NatsSubscriber, settle as settle_jetstream};

/// Why a publish (or a consume set-up) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// Not reached, or no confirmation in time: the message may or may not
    /// have arrived. Retrying is safe with a message id.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused it (no stream or queue takes it, a negative
    /// confirm, too large).
    #[error("broker refused the message: {0}")]
    Refused(String),
    /// The request cannot be sent (bad subject, bad header).
    #[error("invalid publish: {0}")]
    Invalid(String),
}

/// One message to publish.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// The message id: JetStream's `Nats-Msg-Id`, AMQP's `message-id`.
    pub id: Option<String>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// One message a queue trigger took from a broker, not yet acknowledged.
#[derive(Debug)]
pub struct Incoming {
    /// The idempotency key the event gets.
    pub key: String,
    /// The body.
    pub body: Vec<u8>,
    /// The subject or routing key it came on.
    pub subject: String,
}

/// What becomes of a message a trigger took.
#[derive(Debug, Clone, Copy)]
pub enum Settle {
    /// Stored (or already stored): the broker may forget it.
    Ack,
    /// Not stored: deliver it again after this long.
    Later(Duration),
    /// Never storable (not JSON): do not deliver it again.
    Drop,
}

/// Every configured broker, connected on first use.
#[derive(Default)]
pub struct Brokers {
    brokers: BTreeMap<String, Arc<Broker>>,
}

impl Brokers {
    /// The brokers `config` names, with their credentials from `secrets`.
    /// Nothing connects yet.
    pub fn build(config: &Config, secrets: &crate::secrets::Secrets) -> Brokers {
        let brokers = config
            .brokers
            .iter()
            .map(|(name, c)| {
                let secret = c
                    .credential
                    .as_deref()
                    .and_then(|n| secrets.get(n))
                    .map(str::to_string);
                (
                    name.clone(),
                    Arc::new(Broker {
                        name: name.clone(),
                        config: c.clone(),
                        secret,
                        nats: tokio::sync::Mutex::new(None),
                        amqp: tokio::sync::Mutex::new(None),
                    }),
                )
            })
            .collect();
        Brokers { brokers }
    }

    /// The broker called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Broker>> {
        self.brokers.get(name)
    }
}

/// One broker: its config, its credential and its connection.
pub struct Broker {
    name: String,
    config: BrokerConfig,
    secret: Option<String>,
    nats: tokio::sync::Mutex<Option<nats::Link>>,
    amqp: tokio::sync::Mutex<Option<amqp::Link>>,
}

impl Broker {
    /// Its name in the config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> BrokerKind {
        self.config.kind
    }

    /// How long a publish waits for the broker's confirmation.
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.config.confirm_timeout_ms)
    }

    /// Publish `message` to `subject` (AMQP: the routing key on the
    /// broker's exchange) and wait for the broker to confirm it; returns
    /// what the broker said.
    pub async fn publish(&self, subject: &str, message: Outgoing) -> Result<String, BrokerError> {
        crate::config::check_subject(subject, false)
            .map_err(|e| BrokerError::Invalid(format!("subject {subject:?} {e}")))?;
        if let Some(id) = &message.id
            && (id.is_empty() || id.len() > 512 || id.chars().any(char::is_control))
        {
            return Err(BrokerError::Invalid(
                "a message id is 1 to 512 bytes without control characters".into(),
            ));
        }
        for (k, v) in &message.headers {
            if k.is_empty()
                || k.chars().any(|c| c.is_control() || c == ':' || c == ' ')
                || v.chars().any(char::is_control)
            {
                return Err(BrokerError::Invalid(format!(
                    "header {k:?} is not a valid header name and value"
                )));
            }
        }
        let deadline = self.confirm_timeout();
        let sent = match self.config.kind {
            BrokerKind::Nats | BrokerKind::Jetstream => {
                tokio::time::timeout(deadline, nats::publish(self, subject, message)).await
            }
            BrokerKind::Amqp => {
                tokio::time::timeout(deadline, amqp::publish(self, subject, message)).await
            }
        };
        sent.unwrap_or_else(|_| {
            Err(BrokerError::Unavailable(format!(
                "broker {} did not confirm within {} ms",
                self.name, self.config.confirm_timeout_ms
            )))
        })
    }
}
