//! `[brokers.NAME]`: a message broker the host connects to, for plugins
//! that publish (through the `messaging` grant) and for queue triggers.
//! The host holds the connection and the credential; plugins only name
//! the broker.
//!
//! ```toml
//! [brokers.orders]
//! kind = "jetstream"               # "nats", "jetstream" or "amqp"
//! url = "nats://127.0.0.1:4222"
//! user = "weft"                    # optional; with it the credential is the password
//! credential = "NATS_PASSWORD"     # optional; without user, a NATS token
//!
//! [brokers.rabbit]
//! kind = "amqp"
//! url = "amqp://127.0.0.1:5672/%2f"
//! exchange = "events"              # where sinks publish (default: the default exchange)
//! ```

use super::values::valid_credential_name;
use serde::Deserialize;

/// Which protocol a broker speaks, and with which guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerKind {
    /// Core NATS: a publish is flushed to the server, which keeps nothing;
    /// a subscriber gets only what is published while it listens.
    Nats,
    /// NATS JetStream: publishes are acknowledged by a stream (with its
    /// replication) and deduplicated by message id; consumers are durable.
    Jetstream,
    /// AMQP 0-9-1 (RabbitMQ): publisher confirms, durable queues, acks.
    Amqp,
}

impl BrokerKind {
    /// As written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Nats => "nats",
            BrokerKind::Jetstream => "jetstream",
            BrokerKind::Amqp => "amqp",
        }
    }
}

/// `[brokers.NAME]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// `nats`, `jetstream` or `amqp`.
    pub kind: BrokerKind,
    /// `nats://` or `tls://` (NATS), `amqp://` or `amqps://` (AMQP), with
    /// no password in it.
    pub url: String,
    /// User name; the credential is then its password.
    #[serde(default)]
    pub user: Option<String>,
    /// The credential (a name, read like every secret): the password with
    /// `user`, a NATS token without.
    #[serde(default)]
    pub credential: Option<String>,
    /// AMQP: the exchange sinks publish to (default: the default exchange,
    /// where the routing key is a queue name).
    #[serde(default)]
    pub exchange: String,
    /// How long a publish waits for the broker's confirmation, in
    /// milliseconds (default 10000); past it the attempt is retried.
    #[serde(default = "default_confirm_timeout_ms")]
    pub confirm_timeout_ms: u64,
}

fn default_confirm_timeout_ms() -> u64 {
    10_000
}

impl BrokerConfig {
    /// One URL of the broker: the scheme its kind speaks, a host, and no
    /// user or password in it.
    fn check_url(&self, at: &str, url: &str) -> Result<(), String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            // Not echoed: a malformed URL may still hold a password.
            format!("{at}.url is not a URL; write e.g. nats://127.0.0.1:4222 or amqp://127.0.0.1:5672/%2f")
        })?;
        let schemes: &[&str] = match self.kind {
            BrokerKind::Nats | BrokerKind::Jetstream => &["nats", "tls"],
            BrokerKind::Amqp => &["amqp", "amqps"],
        };
        if !schemes.contains(&scheme) {
            return Err(format!(
                "{at}.url: a {} broker's URL starts with {}://, not {scheme}://",
                self.kind.as_str(),
                schemes.join(":// or ")
            ));
        }
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Err(format!(
                    "{at}.url holds a password; keep secrets out of weft.toml: set user = \"...\" and credential = \"NAME\" (read from WEFT_SECRET_NAME)"
                ));
            }
            return Err(format!(
                "{at}.url holds a user name; write it as user = {userinfo:?} instead"
            ));
        }
        if authority.is_empty() {
            return Err(format!("{at}.url names no host"));
        }
        Ok(())
    }

    pub(super) fn validate(&self, name: &str) -> Result<(), String> {
        let at = format!("brokers.{name}");
        if !super::values::valid_pipeline_name(name) {
            return Err(format!(
                "{at}: a broker name uses only letters, digits, '-' and '_'"
            ));
        }
        let urls: Vec<&str> = self.url.split(',').map(str::trim).collect();
        if self.kind == BrokerKind::Amqp && urls.len() > 1 {
            return Err(format!(
                "{at}.url: an AMQP broker takes one URL; several, comma-separated, are for NATS clusters"
            ));
        }
        for url in urls {
            self.check_url(&at, url)?;
        }
        if let Some(c) = &self.credential
            && !valid_credential_name(c)
        {
            return Err(format!(
                "{at}.credential {c:?} is not a credential name; use upper-case letters, digits and '_' (it is read from WEFT_SECRET_{c})"
            ));
        }
        if self.user.is_some() && self.credential.is_none() {
            return Err(format!(
                "{at}: user is set but credential is not; name the credential that holds the password"
            ));
        }
        if self.kind == BrokerKind::Amqp && self.user.is_none() && self.credential.is_some() {
            return Err(format!(
                "{at}: an AMQP broker's credential is a password: set user too"
            ));
        }
        if self.kind != BrokerKind::Amqp && !self.exchange.is_empty() {
            return Err(format!(
                "{at}.exchange is for AMQP brokers; a {} broker publishes to subjects",
                self.kind.as_str()
            ));
        }
        if self.confirm_timeout_ms == 0 {
            return Err(format!("{at}.confirm_timeout_ms must be at least 1"));
        }
        Ok(())
    }
}

/// `messaging = [{ broker = "orders", publish = ["orders.>"] }]` in a grant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct MessagingGrant {
    /// The broker, by its `[brokers.NAME]` name.
    pub broker: String,
    /// Subjects (AMQP: routing keys) the plugin may publish to: tokens
    /// separated by '.', where `*` matches one token and a last `>` (or
    /// `#`) one or more.
    #[serde(default)]
    pub publish: Vec<String>,
}

impl MessagingGrant {
    /// Whether the grant lets the plugin publish to `subject`.
    pub fn may_publish(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| subject_matches(p, subject))
    }

    pub(super) fn validate(&self, plugin: &str) -> Result<(), String> {
        let at = format!("grants.{plugin}.messaging ({:?})", self.broker);
        if self.publish.is_empty() {
            return Err(format!(
                "{at}: publish lists no subjects; add the ones the plugin may publish to, e.g. publish = [\"orders.>\"]"
            ));
        }
        for p in &self.publish {
            check_subject(p, true).map_err(|e| format!("{at}: publish pattern {p:?} {e}"))?;
        }
        Ok(())
    }
}

/// Whether `subject` is a usable subject (or, with `pattern`, a pattern):
/// non-empty tokens of printable characters without spaces; wildcards only
/// as whole tokens, a tail wildcard only last.
pub fn check_subject(subject: &str, pattern: bool) -> Result<(), String> {
    if subject.is_empty() || subject.len() > 255 {
        return Err("must be 1 to 255 bytes long".into());
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err("has an empty token (two dots, or a dot at an end)".into());
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("holds white space or a control character".into());
        }
        let wild = matches!(*t, "*" | ">" | "#");
        if !pattern && (wild || t.contains(['*', '>', '#'])) {
            return Err("holds a wildcard; publish to a concrete subject".into());
        }
        if pattern && !wild && t.contains(['*', '>', '#']) {
            return Err("uses a wildcard inside a token; a wildcard is a whole token".into());
        }
        if pattern && matches!(*t, ">" | "#") && i + 1 != tokens.len() {
            return Err("has a tail wildcard before its end".into());
        }
    }
    Ok(())
}

/// NATS subject matching: `*` is one token, a last `>` (or `#`) one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">" | "#"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats_and_refuse_what_could_escape() {
        assert!(subject_matches("orders.>", "orders.created"));
        assert!(subject_matches("orders.>", "orders.eu.created"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("orders.*", "orders.created"));
        assert!(!subject_matches("orders.*", "orders.eu.created"));
        assert!(!subject_matches("orders.created", "orders.created.x"));
        assert!(!subject_matches("orders.created", "billing.created"));
        assert!(subject_matches("#", "anything.at.all"));
        // A plugin cannot publish to a wildcard to reach more than its grant.
        assert!(check_subject("orders.>", false).is_err());
        assert!(check_subject("orders.*", false).is_err());
        assert!(check_subject("orders..x", false).is_err());
        assert!(check_subject("orders. x", false).is_err());
        assert!(check_subject("orders.x\r\nPUB y", false).is_err());
        assert!(check_subject("orders.>.x", true).is_err());
        assert!(check_subject("ord*", true).is_err());
        assert!(check_subject("orders.created", false).is_ok());
    }

    #[test]
    fn a_password_in_the_url_is_refused_with_the_fix() {
        let b = |url: &str, kind| BrokerConfig {
            kind,
            url: url.into(),
            user: None,
            credential: None,
            exchange: String::new(),
            confirm_timeout_ms: 1000,
        };
        let e = b("amqp://guest:guest@127.0.0.1:5672/%2f", BrokerKind::Amqp)
            .validate("rabbit")
            .unwrap_err();
        assert!(e.contains("credential = \"NAME\""), "{e}");
        let e = b("amqp://127.0.0.1:5672", BrokerKind::Nats)
            .validate("n")
            .unwrap_err();
        assert!(e.contains("nats://"), "{e}");
        let e = b("weft:s3cret-pass@127.0.0.1:4222", BrokerKind::Nats)
            .validate("n")
            .unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        let e = b(
            "nats://127.0.0.1:4222, nats://u:s3cret@127.0.0.1:4223",
            BrokerKind::Nats,
        )
        .validate("n")
        .unwrap_err();
        assert!(
            e.contains("holds a password") && !e.contains("s3cret"),
            "{e}"
        );
        b(
            "nats://127.0.0.1:4222, nats://127.0.0.1:4223",
            BrokerKind::Jetstream,
        )
        .validate("n")
        .unwrap();
        assert!(
            b(
                "amqp://127.0.0.1:5672,amqp://127.0.0.1:5673",
                BrokerKind::Amqp
            )
            .validate("r")
            .is_err()
        );
        b("nats://127.0.0.1:4222", BrokerKind::Jetstream)
            .validate("n")
            .unwrap();
    }
}
