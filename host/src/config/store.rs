//! `[store]`: where the host keeps its events and state. The embedded
//! default is sled in `server.data_dir`; `backend = "jetstream"` keeps them
//! in a NATS JetStream cluster that several hosts share.

use super::broker::{BrokerConfig, BrokerKind};
use super::values::valid_credential_name;
use serde::Deserialize;

/// Which store the host runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// sled in `server.data_dir`: one host, nothing else to run.
    #[default]
    Sled,
    /// NATS JetStream key-value buckets and streams, shared by every host
    /// pointed at the same cluster and prefix.
    Jetstream,
}

/// The `[store]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sled` (default) or `jetstream`.
    #[serde(default)]
    pub backend: StoreBackend,
    /// The cluster's URLs, comma-separated (`nats://a:4222,nats://b:4222`).
    #[serde(default)]
    pub url: String,
    /// User name, when the server wants one (its password is `credential`).
    pub user: Option<String>,
    /// The credential holding the password (or the token, without `user`).
    pub credential: Option<String>,
    /// How many servers keep each bucket and stream (1, 3 or 5; 3 keeps
    /// going through the loss of one server).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Names of the buckets and streams start with this: hosts sharing a
    /// prefix share one installation.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The credential holding the key (32 bytes, hex or base64) that every
    /// host shares for the audit chain's MACs and the idempotency index.
    pub audit_key: Option<String>,
    /// How long a JetStream operation may take before it counts as failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_replicas() -> usize {
    1
}

fn default_prefix() -> String {
    "weft".into()
}

fn default_timeout_ms() -> u64 {
    5000
}

impl StoreConfig {
    /// The connection settings as a broker's, for the URL checks and the
    /// connection code they share.
    pub fn as_broker(&self) -> BrokerConfig {
        BrokerConfig {
            kind: BrokerKind::Jetstream,
            url: self.url.clone(),
            user: self.user.clone(),
            credential: self.credential.clone(),
            exchange: String::new(),
            confirm_timeout_ms: self.timeout_ms,
        }
    }

    /// The credentials the store needs: (name, what for).
    pub fn credentials(&self) -> Vec<(&str, &'static str)> {
        let mut out = Vec::new();
        if self.backend == StoreBackend::Jetstream {
            if let Some(c) = &self.credential {
                out.push((c.as_str(), "the store's connection"));
            }
            if let Some(c) = &self.audit_key {
                out.push((c.as_str(), "the store's audit key"));
            }
        }
        out
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        if self.backend == StoreBackend::Sled {
            if !self.url.is_empty() || self.credential.is_some() || self.audit_key.is_some() {
                return Err(
                    "store: url, credential and audit_key are for backend = \"jetstream\"; the sled store lives in server.data_dir"
                        .into(),
                );
            }
            return Ok(());
        }
        if self.url.trim().is_empty() {
            return Err(
                "store.url is required with backend = \"jetstream\": the cluster's URLs, e.g. \"nats://127.0.0.1:4222,nats://127.0.0.1:4223\""
                    .into(),
            );
        }
        self.as_broker()
            .validate("store")
            .map_err(|e| e.replacen("brokers.store", "store", 1))?;
        if ![1, 3, 5].contains(&self.replicas) {
            return Err(format!(
                "store.replicas = {}: JetStream keeps 1, 3 or 5 copies (3 survives the loss of one server)",
                self.replicas
            ));
        }
        if self.prefix.is_empty()
            || self.prefix.len() > 32
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "store.prefix {:?}: use 1 to 32 letters, digits, '-' and '_'",
                self.prefix
            ));
        }
        match &self.audit_key {
            None => {
                return Err(
                    "store.audit_key is required with backend = \"jetstream\": name a credential holding 32 random bytes (weft store keygen prints one) that every host shares"
                        .into(),
                );
            }
            Some(c) if !valid_credential_name(c) => {
                return Err(format!(
                    "store.audit_key {c:?} is not a credential name; use upper-case letters, digits and '_'"
                ));
            }
            Some(_) => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<StoreConfig, String> {
        let c: StoreConfig = toml::from_str(toml).map_err(|e| e.to_string())?;
        c.validate().map(|()| c)
    }

    const GOOD: &str = "backend = \"jetstream\"\nurl = \"nats://127.0.0.1:4222,nats://127.0.0.1:4223\"\nreplicas = 3\naudit_key = \"AUDIT_KEY\"\n";

    #[test]
    fn a_jetstream_store_needs_its_cluster_and_audit_key_and_keeps_secrets_out_of_the_url() {
        let c = parse(GOOD).unwrap();
        assert_eq!(
            (c.backend, c.replicas, c.prefix.as_str()),
            (StoreBackend::Jetstream, 3, "weft")
        );
        assert_eq!(
            c.credentials(),
            vec![("AUDIT_KEY", "the store's audit key")]
        );
        let refused = |toml: &str, says: &str| {
            let e = parse(toml).unwrap_err();
            assert!(e.contains(says), "{toml}: {e}");
            e
        };
        refused(
            "backend = \"jetstream\"\naudit_key = \"K\"\n",
            "store.url is required",
        );
        refused(
            &GOOD.replace("audit_key = \"AUDIT_KEY\"\n", ""),
            "store.audit_key is required",
        );
        refused(&GOOD.replace("replicas = 3", "replicas = 2"), "1, 3 or 5");
        refused(&format!("{GOOD}prefix = \"a.b\"\n"), "store.prefix");
        refused(&format!("{GOOD}prefix = \"\"\n"), "store.prefix");
        let e = refused(
            &GOOD.replace(
                "nats://127.0.0.1:4222,",
                "nats://weft:hunter2@127.0.0.1:4222,",
            ),
            "holds a password",
        );
        assert!(!e.contains("hunter2"), "the password is not echoed: {e}");
        refused(
            &GOOD.replace("nats://127.0.0.1:4222", "amqp://127.0.0.1:5672"),
            "nats://",
        );
        refused(&format!("{GOOD}audit_key2 = 1\n"), "unknown field");
        // Settings of a JetStream store on the sled backend are a mistake.
        refused(
            "url = \"nats://127.0.0.1:4222\"\n",
            "for backend = \"jetstream\"",
        );
        assert_eq!(parse("").unwrap().backend, StoreBackend::Sled);
    }

    #[test]
    fn ordered_pipelines_run_on_a_shared_store() {
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"d\"\n\n[plugins]\ndir = \"p\"\n\n[store]\n{GOOD}\n[[pipeline]]\nname = \"orders\"\norder_by = \"/customer\"\nsink = {{ plugin = \"http-sink\" }}\n"
        );
        let c = crate::config::Config::parse(&config).unwrap();
        assert_eq!(c.store.backend, StoreBackend::Jetstream);
        assert_eq!(c.pipelines[0].order_by.as_deref(), Some("/customer"));
    }
}
