//! AMQP 0-9-1 (RabbitMQ): publishes on a confirm channel, marked
//! persistent and mandatory, so a message no queue takes comes back as a
//! refusal; a consumer with a prefetch window for queue triggers.

use super::{Broker, BrokerError, Incoming, Outgoing, Settle};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use sha2::Digest;
use std::time::Duration;

/// A connection and the confirm channel publishes go on.
pub(super) struct Link {
    connection: Connection,
    channel: Channel,
}

fn unavailable(b: &Broker, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("broker {} ({}): {e}", b.name, b.config.url))
}

/// A new connection with the broker's user and password.
async fn connect(b: &Broker) -> Result<Connection, BrokerError> {
    let mut uri: lapin::uri::AMQPUri = b
        .config
        .url
        .parse()
        .map_err(|e| BrokerError::Invalid(format!("broker {}: url: {e}", b.name)))?;
    if let (Some(user), Some(pass)) = (&b.config.user, &b.secret) {
        uri.authority.userinfo.username = user.clone();
        uri.authority.userinfo.password = pass.clone();
    }
    let properties = ConnectionProperties::default().with_connection_name("weft".into());
    tokio::time::timeout(
        b.confirm_timeout(),
        Connection::connect_uri(uri, properties),
    )
    .await
    .map_err(|_| unavailable(b, "connecting timed out"))?
    .map_err(|e| unavailable(b, e))
}

async fn channel(b: &Broker) -> Result<Channel, BrokerError> {
    let mut held = b.amqp.lock().await;
    if let Some(l) = held.as_ref()
        && l.connection.status().connected()
        && l.channel.status().connected()
    {
        return Ok(l.channel.clone());
    }
    *held = None;
    let connection = connect(b).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| unavailable(b, e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| unavailable(b, e))?;
    *held = Some(Link {
        connection,
        channel: channel.clone(),
    });
    Ok(channel)
}

pub(super) async fn publish(
    b: &Broker,
    routing_key: &str,
    m: Outgoing,
) -> Result<String, BrokerError> {
    let ch = channel(b).await?;
    let mut headers = FieldTable::default();
    for (k, v) in &m.headers {
        headers.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(ct) = m
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        properties = properties.with_content_type(ShortString::from(ct.1.as_str()));
    }
    if let Some(id) = &m.id {
        properties = properties.with_message_id(ShortString::from(id.as_str()));
    }
    let sent = ch
        .basic_publish(
            b.config.exchange.as_str().into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                immediate: false,
            },
            &m.body,
            properties,
        )
        .await;
    let confirm = match sent {
        Ok(c) => c,
        Err(e) => {
            *b.amqp.lock().await = None;
            return Err(unavailable(b, e));
        }
    };
    let exchange = if b.config.exchange.is_empty() {
        "the default exchange".to_string()
    } else {
        format!("exchange {:?}", b.config.exchange)
    };
    match confirm.await {
        Ok(Confirmation::Ack(None)) => Ok(format!("confirmed on {exchange}")),
        Ok(Confirmation::Ack(Some(_))) => Err(BrokerError::Refused(format!(
            "broker {}: no queue is bound to routing key {routing_key:?} on {exchange}; bind one or fix the subject",
            b.name
        ))),
        Ok(Confirmation::Nack(_)) => Err(unavailable(
            b,
            "the broker did not take the message (negative confirm)",
        )),
        Ok(Confirmation::NotRequested) => Err(unavailable(b, "the channel lost its confirms")),
        Err(e) => {
            *b.amqp.lock().await = None;
            Err(unavailable(b, e))
        }
    }
}

/// A consumer of one queue with a prefetch window, on a connection of its own.
pub struct AmqpConsumer {
    _connection: Connection,
    consumer: lapin::Consumer,
    queue: String,
}

/// A delivery taken from AMQP, to ack once it is stored.
pub type AmqpDelivery = lapin::message::Delivery;

impl Broker {
    /// Consume `queue` with at most `prefetch` unacknowledged deliveries;
    /// with `declare`, a durable queue of that name is made when missing.
    pub async fn amqp_consumer(
        &self,
        queue: &str,
        prefetch: u16,
        declare: bool,
        tag: &str,
    ) -> Result<AmqpConsumer, BrokerError> {
        let connection = connect(self).await?;
        let ch = connection
            .create_channel()
            .await
            .map_err(|e| unavailable(self, e))?;
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: !declare,
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            BrokerError::Refused(format!(
                "broker {}: queue {queue:?} cannot be used ({e}); declare it, or set declare = true",
                self.name
            ))
        })?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| unavailable(self, e))?;
        let consumer = ch
            .basic_consume(
                queue.into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| unavailable(self, e))?;
        Ok(AmqpConsumer {
            _connection: connection,
            consumer,
            queue: queue.to_string(),
        })
    }
}

impl AmqpConsumer {
    /// Up to `max` deliveries: waits at most `wait` for the first, then
    /// takes what is already there. An error when the connection is gone
    /// (what was not acked goes back to the queue).
    pub async fn next_batch(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<(Incoming, AmqpDelivery)>, BrokerError> {
        let mut out = Vec::new();
        let mut wait = wait;
        while out.len() < max {
            match tokio::time::timeout(wait, self.consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    let incoming = self.incoming(&d);
                    out.push((incoming, d));
                }
                Ok(Some(Err(e))) if out.is_empty() => {
                    return Err(BrokerError::Unavailable(e.to_string()));
                }
                Ok(None) if out.is_empty() => {
                    return Err(BrokerError::Unavailable(
                        "the broker ended the consumer".into(),
                    ));
                }
                Ok(_) | Err(_) => break,
            }
            wait = Duration::from_millis(5);
        }
        Ok(out)
    }

    /// Its message id, or else a digest of queue and body: a redelivery of
    /// the same message gets the same key.
    fn incoming(&self, d: &AmqpDelivery) -> Incoming {
        let key = match d.properties.message_id() {
            Some(id) if !id.as_str().is_empty() => id.as_str().to_string(),
            _ => {
                let mut h = sha2::Sha256::new();
                h.update(self.queue.as_bytes());
                h.update([0]);
                h.update(&d.data);
                format!("sha256:{}", hex::encode(h.finalize()))
            }
        };
        Incoming {
            key,
            body: d.data.clone(),
            subject: d.routing_key.to_string(),
        }
    }
}

/// Acknowledge a delivery, give it back to the queue, or drop it.
pub async fn settle(d: &AmqpDelivery, how: Settle) -> Result<(), BrokerError> {
    let done = match how {
        Settle::Ack => d.acker.ack(BasicAckOptions::default()).await,
        Settle::Later(_) => d.acker.reject(BasicRejectOptions { requeue: true }).await,
        Settle::Drop => d.acker.reject(BasicRejectOptions { requeue: false }).await,
    };
    done.map(|_| ())
        .map_err(|e| BrokerError::Unavailable(e.to_string()))
}
