//! Publishing to message brokers (NATS core, NATS JetStream, AMQP 0-9-1).
//!
//! The operator configures each broker once (`[brokers.NAME]`: kind, URL,
//! credentials) and grants a plugin the subjects it may publish to. A
//! plugin names the broker and the subject; the host publishes and waits
//! for the broker's confirmation, so a returned `Ok` means the broker has
//! the message. Give every message the event's idempotency key as its id:
//! JetStream then refuses a repeat, and an AMQP consumer can.
//!
//! Outside wasm (in a plugin's unit tests) [`fake`] records what would
//! have been published.
//!
//! ```
//! use weft_sdk::messaging::{self, fake, Message};
//!
//! let seq = messaging::publish(
//!     "orders",
//!     "orders.created",
//!     Message::new(br#"{"id":7}"#.to_vec()).id("order-7"),
//! )
//! .unwrap();
//! assert_eq!(seq, "published");
//! let sent = fake::published();
//! assert_eq!(sent[0].subject, "orders.created");
//! assert_eq!(sent[0].message.id.as_deref(), Some("order-7"));
//! ```

use std::fmt;

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Message id (JetStream dedup, AMQP `message-id`): use the event's key.
    pub id: Option<String>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Message {
    /// A message with this body, no id and no headers.
    pub fn new(body: Vec<u8>) -> Self {
        Message {
            body,
            ..Message::default()
        }
    }

    /// Set the message id.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Why a publish failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessagingError {
    /// The grant does not name the broker or the subject.
    NotGranted(String),
    /// Not reached or not confirmed: retry (safe with an id).
    Unavailable(String),
    /// The broker refused the message.
    Refused(String),
    /// The request is malformed.
    Invalid(String),
}

impl fmt::Display for MessagingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessagingError::NotGranted(m) => write!(f, "publish not granted: {m}"),
            MessagingError::Unavailable(m) => write!(f, "broker unavailable: {m}"),
            MessagingError::Refused(m) => write!(f, "broker refused the message: {m}"),
            MessagingError::Invalid(m) => write!(f, "publish request invalid: {m}"),
        }
    }
}

impl std::error::Error for MessagingError {}

/// Unavailable is worth retrying; a refusal or a missing grant is not.
impl From<MessagingError> for crate::Error {
    fn from(e: MessagingError) -> Self {
        match e {
            MessagingError::Unavailable(_) => crate::Error::Transient(e.to_string()),
            _ => crate::Error::Fatal(e.to_string()),
        }
    }
}

/// Publish `message` to `subject` on broker `broker` and wait for the
/// broker's confirmation; returns what it said (e.g. `stream ORDERS seq 42`).
pub fn publish(broker: &str, subject: &str, message: Message) -> Result<String, MessagingError> {
    backend::publish(broker, subject, message)
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::{Message, MessagingError};
    use crate::bindings::sink::weft::plugin::messaging as wit;

    pub fn publish(broker: &str, subject: &str, m: Message) -> Result<String, MessagingError> {
        let message = wit::Message {
            id: m.id,
            headers: m.headers,
            body: m.body,
        };
        wit::publish(broker, subject, &message).map_err(|e| match e {
            wit::MessagingError::NotGranted(m) => MessagingError::NotGranted(m),
            wit::MessagingError::Unavailable(m) => MessagingError::Unavailable(m),
            wit::MessagingError::Refused(m) => MessagingError::Refused(m),
            wit::MessagingError::Invalid(m) => MessagingError::Invalid(m),
        })
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod backend {
    use super::{Message, MessagingError};

    pub fn publish(broker: &str, subject: &str, m: Message) -> Result<String, MessagingError> {
        super::fake::record(broker, subject, m)
    }
}

/// What a plugin's unit tests see instead of a broker: every publish is
/// recorded, and a failure can be queued for the next one.
pub mod fake {
    use super::{Message, MessagingError};
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// One publish, as the broker would have received it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Published {
        /// The broker's name.
        pub broker: String,
        /// The subject (AMQP: routing key).
        pub subject: String,
        /// The message.
        pub message: Message,
    }

    #[derive(Default)]
    struct State {
        failures: VecDeque<MessagingError>,
        published: Vec<Published>,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::default();
    }

    /// The next publish fails with `error` (and is not recorded).
    pub fn fail_next(error: MessagingError) {
        STATE.with(|s| s.borrow_mut().failures.push_back(error));
    }

    /// Everything published so far on this thread, oldest first.
    pub fn published() -> Vec<Published> {
        STATE.with(|s| s.borrow().published.clone())
    }

    /// Forget what was published and any queued failure.
    pub fn reset() {
        STATE.with(|s| *s.borrow_mut() = State::default());
    }

    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(super) fn record(
        broker: &str,
        subject: &str,
        message: Message,
    ) -> Result<String, MessagingError> {
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(e) = s.failures.pop_front() {
                return Err(e);
            }
            s.published.push(Published {
                broker: broker.to_string(),
                subject: subject.to_string(),
                message,
            });
            Ok("published".to_string())
        })
    }
}
