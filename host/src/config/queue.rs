//! `trigger = { queue = { … } }`: messages consumed from a broker's
//! stream (JetStream), queue (AMQP) or subject (core NATS), checked
//! against the kind of broker it names.

use serde::Deserialize;

/// `queue = { broker = "orders", stream = "ORDERS" }` (JetStream),
/// `{ broker = "rabbit", queue = "orders" }` (AMQP) or
/// `{ broker = "events", subject = "orders.>" }` (core NATS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The broker, by its `[brokers.NAME]` name.
    pub broker: String,
    /// Core NATS: the subject subscribed to; JetStream: a filter within the stream.
    #[serde(default)]
    pub subject: Option<String>,
    /// JetStream: the stream consumed.
    #[serde(default)]
    pub stream: Option<String>,
    /// AMQP: the queue consumed.
    #[serde(default)]
    pub queue: Option<String>,
    /// The durable consumer (JetStream), consumer tag (AMQP) or queue
    /// group (core NATS); default `weft-PIPELINE`, shared by every host.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Most messages taken and not yet acknowledged (default 64); fewer
    /// are taken when the pipeline's queue has less room.
    #[serde(default = "default_prefetch")]
    pub prefetch: u16,
    /// AMQP: declare the queue (durable) when it is missing, instead of
    /// refusing to start.
    #[serde(default)]
    pub declare: bool,
    /// JetStream: how long a message taken but not acknowledged waits
    /// before the broker delivers it again, in ms (default 30000).
    #[serde(default = "default_ack_wait_ms")]
    pub ack_wait_ms: u64,
}

fn default_prefetch() -> u16 {
    64
}
fn default_ack_wait_ms() -> u64 {
    30_000
}

impl QueueConfig {
    /// The consumer's name for pipeline `pipeline`.
    pub fn consumer_name(&self, pipeline: &str) -> String {
        self.consumer
            .clone()
            .unwrap_or_else(|| format!("weft-{pipeline}"))
    }

    /// Check it against the broker it names (`kind`); `at` names the pipeline.
    pub fn validate(&self, at: &str, kind: super::BrokerKind) -> Result<(), String> {
        use super::BrokerKind as K;
        let at = format!("{at}: trigger.queue");
        if self.prefetch == 0 || self.prefetch > 1000 {
            return Err(format!(
                "{at}.prefetch = {} is out of range; use 1 to 1000",
                self.prefetch
            ));
        }
        if self.ack_wait_ms < 1000 {
            return Err(format!("{at}.ack_wait_ms must be at least 1000"));
        }
        let only = |field: &str, set: bool, kinds: &str| {
            if set {
                Err(format!(
                    "{at}.{field} applies only to {kinds} brokers; broker {:?} is {}",
                    self.broker,
                    kind.as_str()
                ))
            } else {
                Ok(())
            }
        };
        match kind {
            K::Jetstream => {
                if self.stream.as_deref().is_none_or(str::is_empty) {
                    return Err(format!(
                        "{at}: a JetStream trigger names its stream: stream = \"ORDERS\""
                    ));
                }
                only("queue", self.queue.is_some(), "AMQP")?;
                only("declare", self.declare, "AMQP")?;
                if let Some(s) = &self.subject {
                    super::check_subject(s, true).map_err(|e| format!("{at}.subject {s:?} {e}"))?;
                }
            }
            K::Nats => {
                let Some(s) = &self.subject else {
                    return Err(format!(
                        "{at}: a core NATS trigger names its subject: subject = \"orders.>\""
                    ));
                };
                super::check_subject(s, true).map_err(|e| format!("{at}.subject {s:?} {e}"))?;
                only("stream", self.stream.is_some(), "JetStream")?;
                only("queue", self.queue.is_some(), "AMQP")?;
                only("declare", self.declare, "AMQP")?;
            }
            K::Amqp => {
                if self.queue.as_deref().is_none_or(str::is_empty) {
                    return Err(format!(
                        "{at}: an AMQP trigger names its queue: queue = \"orders\""
                    ));
                }
                only("stream", self.stream.is_some(), "JetStream")?;
                only("subject", self.subject.is_some(), "NATS")?;
            }
        }
        Ok(())
    }
}
