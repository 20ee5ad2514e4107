//! The host side of `weft:plugin/messaging`: a plugin names a broker and
//! a subject from its grant; the host publishes on its own connection and
//! answers once the broker confirmed.

use crate::messaging::{BrokerError, Outgoing};
use crate::sandbox::bindings::sink::weft::plugin::messaging;
use crate::sandbox::state::HostState;

/// Most headers on one published message.
const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values on one published message.
const MAX_HEADER_BYTES: usize = 16 * 1024;

impl messaging::Host for HostState {
    async fn publish(
        &mut self,
        broker: String,
        subject: String,
        message: messaging::Message,
    ) -> Result<String, messaging::MessagingError> {
        use messaging::MessagingError as E;
        let Some(grant) = self.grant.messaging.iter().find(|m| m.broker == broker) else {
            let granted: Vec<&str> = self
                .grant
                .messaging
                .iter()
                .map(|m| m.broker.as_str())
                .collect();
            return Err(E::NotGranted(self.hooks.denier.deny(
                "messaging",
                &format!(
                    "broker {broker:?} is not in the plugin's messaging grant (granted: {})",
                    if granted.is_empty() {
                        "none".to_string()
                    } else {
                        granted.join(", ")
                    }
                ),
            )));
        };
        if let Err(e) = crate::config::check_subject(&subject, false) {
            return Err(E::Invalid(format!("subject {subject:?} {e}")));
        }
        if !grant.may_publish(&subject) {
            return Err(E::NotGranted(self.hooks.denier.deny(
                "messaging",
                &format!(
                    "subject {subject:?} on broker {broker:?} is not in the plugin's grant (it may publish to: {})",
                    grant.publish.join(", ")
                ),
            )));
        }
        // What a plugin hands the broker is capped like what it returns.
        let cap = self.grant.output_kib as usize * 1024;
        let header_bytes: usize = message.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        if message.body.len() > cap {
            return Err(E::Invalid(format!(
                "a message of {} bytes passes the plugin's output_kib ({} KiB)",
                message.body.len(),
                self.grant.output_kib
            )));
        }
        if message.headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
            return Err(E::Invalid(format!(
                "a message carries at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all"
            )));
        }
        if self.hooks.replaying() {
            // A replay sends nothing: the grant was checked, that is all.
            return Ok("not published (replay)".into());
        }
        let Some(b) = self.hooks.brokers.get(&broker).cloned() else {
            return Err(E::Unavailable(format!(
                "broker {broker} is not configured on this host"
            )));
        };
        let outgoing = Outgoing {
            id: message.id,
            headers: message.headers,
            body: message.body,
        };
        match b.publish(&subject, outgoing).await {
            Ok(said) => Ok(said),
            Err(BrokerError::Unavailable(m)) => Err(E::Unavailable(m)),
            Err(BrokerError::Refused(m)) => Err(E::Refused(m)),
            Err(BrokerError::Invalid(m)) => Err(E::Invalid(m)),
        }
    }
}
