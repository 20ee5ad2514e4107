//! `weft.toml`: parsed strictly, validated without I/O, with errors that name
//! the file, the key and the fix. One file per section; config imports
//! nothing from the rest of the host but the origin parser.

mod allow;
mod broker;
mod canary;
mod credential;
mod grant;
mod oauth;
mod objective;
mod pattern;
mod pipeline;
mod queue;
mod route;
mod server;
mod step;
mod store;
mod synthetic;
mod trigger;
mod upstream;
mod values;
pub mod version;

pub use allow::Allowlist;
pub use broker::{BrokerConfig, BrokerKind, MessagingGrant, check_subject, subject_matches};
pub use canary::CanaryConfig;
pub use credential::{CREDENTIAL_HEADERS, CredentialGrant};
pub use grant::{DEFAULT_MEMORY_MIB, DEFAULT_TIMEOUT_MS, Grant, KvGrant};
pub use oauth::{ClientAuth as OAuthClientAuth, OAuthConfig, OAuthGrant};
pub use objective::{Catalog, LatencyObjective, QualityAction, QualityConfig, SloConfig};
pub use pattern::OriginPattern;
pub use pipeline::{
    COMPENSATE, ContractConfig, PipelineConfig, RetentionConfig, VersionedContract,
};
pub use queue::QueueConfig;
pub use route::{RouteConfig, RouteOf, route_pipeline};
pub use server::{
    AdminConfig, ClientAuth, PluginsConfig, Role, ServerConfig, TlsConfig, TokenConfig,
};
pub use step::{BatchConfig, BreakerConfig, BreakerIntake, Jitter, RetryConfig, StepConfig};
pub use store::{StoreBackend, StoreConfig};
pub use synthetic::SyntheticConfig;
pub use trigger::{
    OnMissed, PollConfig, Preset, Schedule, ScheduleConfig, TriggerConfig, WebhookConfig,
};
pub use upstream::{ClientCertConfig, RateLimitConfig, UpstreamConfig};
pub use values::valid_credential_name;

use crate::origin::Origin;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listener and data directory.
    pub server: ServerConfig,
    /// Where plugins live.
    pub plugins: PluginsConfig,
    /// What each plugin may do, by plugin name.
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// The pipelines, in `[[pipeline]]` tables.
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
    /// Limits per upstream origin, shared by every plugin and pipeline that
    /// calls it: `[upstreams."https://api.example.com"]`.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Who may use the admin API.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Credentials that are OAuth 2.0 clients, by credential name: the
    /// host holds their tokens (`[oauth.CRM]`).
    #[serde(default)]
    pub oauth: BTreeMap<String, OAuthConfig>,
    /// Message brokers, by name: for plugins granted `messaging` and for
    /// queue triggers (`[brokers.orders]`).
    #[serde(default)]
    pub brokers: BTreeMap<String, BrokerConfig>,
    /// Where events and state are kept: sled in `server.data_dir`
    /// (default) or a NATS JetStream cluster several hosts share.
    #[serde(default)]
    pub store: StoreConfig,
}

/// A configuration error, naming the file.
#[derive(Debug)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read, parse and validate a config file; relative paths in it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            file: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read the config file: {e}")))?;
        let mut config = Config::parse(&text).map_err(err)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parse and validate config text.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        config.validate()?;
        // Each route runs as a pipeline of its own.
        let routes: Vec<PipelineConfig> = config
            .pipelines
            .iter()
            .flat_map(PipelineConfig::route_pipelines)
            .collect();
        config.pipelines.extend(routes);
        // Each pipeline (a route's included) with `compensate` runs its
        // compensations in a pipeline of their own.
        let compensations: Vec<PipelineConfig> = config
            .pipelines
            .iter()
            .filter_map(PipelineConfig::compensation_pipeline)
            .collect();
        config.pipelines.extend(compensations);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &Path| -> PathBuf {
            if p.is_absolute() {
                return p.to_path_buf();
            }
            let rest: PathBuf = p
                .components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .collect();
            base.join(rest)
        };
        self.server.data_dir = resolve(&self.server.data_dir);
        self.plugins.dir = resolve(&self.plugins.dir);
        self.server.secrets_file = self.server.secrets_file.as_deref().map(resolve);
        for u in self.upstreams.values_mut() {
            u.ca = u.ca.as_deref().map(resolve);
            if let Some(c) = &mut u.client_cert {
                c.cert = resolve(&c.cert);
            }
        }
        for t in [&mut self.server.tls, &mut self.server.admin_tls]
            .into_iter()
            .flatten()
        {
            t.cert = resolve(&t.cert);
            t.key = resolve(&t.key);
            t.client_ca = t.client_ca.as_deref().map(resolve);
        }
        for p in &mut self.pipelines {
            if let Some(c) = &mut p.contract {
                for f in c.files_mut() {
                    *f = resolve(f);
                }
            }
            for s in p.steps.iter_mut().chain(&mut p.sink) {
                s.contract = s.contract.as_deref().map(resolve);
            }
            for r in &mut p.sinks {
                r.contract = r.contract.as_deref().map(resolve);
            }
        }
    }

    /// Check everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        for (name, grant) in &self.grants {
            grant.validate(name)?;
            if let Some(r) = grant.reveal.iter().find(|r| self.oauth.contains_key(*r)) {
                return Err(format!(
                    "grants.{name}.reveal: {r} is an OAuth credential, and plugins never see its tokens; attach it instead (credentials = [\"{r}\"])"
                ));
            }
        }
        for (name, o) in &self.oauth {
            o.validate(name, self.server.encryption.is_some())?;
        }
        for (name, b) in &self.brokers {
            b.validate(name)?;
        }
        self.store.validate()?;
        for (plugin, grant) in &self.grants {
            for m in &grant.messaging {
                if !self.brokers.contains_key(&m.broker) {
                    return Err(format!(
                        "grants.{plugin}.messaging names broker {:?}, which is not configured; add [brokers.{}] (configured: {})",
                        m.broker,
                        m.broker,
                        self.broker_names()
                    ));
                }
            }
        }
        if self.pipelines.is_empty() {
            return Err("no [[pipeline]] is configured; add at least one".into());
        }
        let mut names = HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = format!("pipeline[{i}] ({:?})", p.name);
            if !values::valid_pipeline_name(&p.name) {
                return Err(format!(
                    "{at}: name must be non-empty and use only letters, digits, '-' and '_'"
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("{at}: another pipeline already has this name"));
            }
            if p.require_client_cert
                && self
                    .server
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.client_ca.is_none())
            {
                return Err(format!(
                    "{at}: require_client_cert needs client certificates at the listener: set server.tls with client_ca"
                ));
            }
            if let Some(c) = &p.contract {
                c.validate(&format!("{at}.contract"))?;
            }
            p.validate(&at)?;
            if let Some(q) = &p.trigger.queue {
                let Some(b) = self.brokers.get(&q.broker) else {
                    return Err(format!(
                        "{at}: trigger.queue names broker {:?}, which is not configured; add [brokers.{}] (configured: {})",
                        q.broker,
                        q.broker,
                        self.broker_names()
                    ));
                };
                q.validate(&at, b.kind)?;
            }
        }
        let mut token_names = HashSet::new();
        for (i, t) in self.admin.tokens.iter().enumerate() {
            if t.name.is_empty() || !token_names.insert(t.name.as_str()) {
                return Err(format!(
                    "admin.tokens[{i}]: name must be non-empty and unique"
                ));
            }
            if let Some(bad) = t.secret_names().find(|s| !valid_credential_name(s)) {
                return Err(format!(
                    "admin.tokens[{i}] ({:?}): secret {:?} is not a credential name; write the NAME whose value is in WEFT_SECRET_NAME or the secrets file",
                    t.name, bad
                ));
            }
        }
        for (origin, u) in &self.upstreams {
            Origin::parse(origin).map_err(|e| format!("upstreams: {e}"))?;
            if let Some(r) = &u.rate_limit {
                upstream::check_rate(&format!("upstreams.{origin:?}.rate_limit"), r)?;
            }
            let tls = u.ca.is_some() || u.system_roots || u.client_cert.is_some();
            if tls && !origin.starts_with("https://") {
                return Err(format!(
                    "upstreams.{origin:?}: ca, system_roots and client_cert are for https:// origins"
                ));
            }
            if let Some(c) = &u.client_cert
                && !valid_credential_name(&c.key)
            {
                return Err(format!(
                    "upstreams.{origin:?}.client_cert.key {:?} is not a credential name; write the NAME whose PEM value is in WEFT_SECRET_NAME or the secrets file",
                    c.key
                ));
            }
        }
        Ok(())
    }

    /// The grant of a plugin; a plugin without `[grants.NAME]` gets the
    /// defaults (no HTTP, default memory and time caps).
    /// A file with a version in its name (`json-map@2.0.0`) takes the grant
    /// of that exact name if there is one, else its plugin's.
    pub fn grant(&self, plugin: &str) -> Grant {
        self.grants
            .get(plugin)
            .or_else(|| self.grants.get(version::base(plugin)))
            .cloned()
            .unwrap_or_default()
    }

    /// Whether a pipeline uses the plugin named `plugin` (as a step, its sink
    /// or its poll trigger's source).
    pub fn uses_plugin(&self, plugin: &str) -> bool {
        !self.pipelines_using(plugin).is_empty()
    }

    /// (pipeline, config as JSON) of every step, sink and poll source that
    /// names `plugin`.
    pub fn step_configs(&self, plugin: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for p in &self.pipelines {
            for s in p.steps.iter().chain(&p.sink) {
                if version::may_name(&s.plugin, plugin) {
                    out.push((p.name.clone(), s.config.to_string()));
                }
                if let Some(c) = s
                    .canary
                    .as_ref()
                    .filter(|c| version::may_name(&c.plugin, plugin))
                {
                    let config = c.config.as_ref().unwrap_or(&s.config);
                    out.push((p.name.clone(), config.to_string()));
                }
            }
            if let Some(poll) = p
                .trigger
                .poll
                .as_ref()
                .filter(|poll| version::may_name(&poll.plugin, plugin))
            {
                out.push((p.name.clone(), poll.config.to_string()));
            }
        }
        out
    }

    /// The pipelines that name `plugin` (as a step, sink or poll source).
    pub fn pipelines_using(&self, plugin: &str) -> Vec<&str> {
        self.pipelines
            .iter()
            .filter(|p| {
                p.steps.iter().chain(&p.sink).any(|s| {
                    version::may_name(&s.plugin, plugin)
                        || s.canary
                            .as_ref()
                            .is_some_and(|c| version::may_name(&c.plugin, plugin))
                }) || p
                    .trigger
                    .poll
                    .as_ref()
                    .is_some_and(|poll| version::may_name(&poll.plugin, plugin))
            })
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Every credential the config uses, with what uses it: grants, admin
    /// tokens and webhook verification.
    pub fn credential_uses(&self) -> Vec<(&str, &str)> {
        self.grants
            .iter()
            .flat_map(|(plugin, g)| {
                g.credential_names()
                    .into_iter()
                    // An OAuth credential is read through its client's secrets.
                    .filter(|c| !self.oauth.contains_key(*c))
                    .map(move |c| (c, plugin.as_str()))
            })
            .chain(
                self.oauth
                    .values()
                    .flat_map(|o| o.secret_names().map(|s| (s, "an OAuth client"))),
            )
            .chain(
                self.admin
                    .tokens
                    .iter()
                    .flat_map(|t| t.secret_names().map(|s| (s, "the admin API"))),
            )
            .chain(self.pipelines.iter().flat_map(|p| {
                p.trigger
                    .webhook
                    .iter()
                    .flat_map(|w| w.secret_names())
                    .map(|s| (s, "webhook verification"))
            }))
            .chain(self.upstreams.values().filter_map(|u| {
                u.client_cert
                    .as_ref()
                    .map(|c| (c.key.as_str(), "an upstream's client certificate"))
            }))
            .chain(
                self.server
                    .encryption
                    .iter()
                    .flat_map(|e| e.names().map(|n| (n, "the store's encryption"))),
            )
            .chain(
                self.brokers
                    .values()
                    .filter_map(|b| b.credential.as_deref().map(|c| (c, "a message broker"))),
            )
            .collect()
    }

    /// The configured brokers' names, for messages that list them.
    pub fn broker_names(&self) -> String {
        if self.brokers.is_empty() {
            return "none".into();
        }
        self.brokers.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// Each pipeline's `redact` pointers: (pipeline, pointers).
    pub fn redact_lists(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.pipelines
            .iter()
            .map(|p| (p.name.as_str(), p.redact.as_slice()))
    }

    /// (pipeline, pointer) of every pipeline that names subject `subject`.
    pub fn subject_pointers(&self, subject: &str) -> Vec<(String, String)> {
        subject_pointers(&self.pipelines, subject)
    }

    /// The pipeline with this name.
    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.pipelines.iter().find(|p| p.name == name)
    }
}

/// (pipeline, pointer) of each of `pipelines` that names subject `subject`.
pub fn subject_pointers<'a>(
    pipelines: impl IntoIterator<Item = &'a PipelineConfig>,
    subject: &str,
) -> Vec<(String, String)> {
    pipelines
        .into_iter()
        .filter_map(|p| Some((p.name.clone(), p.subjects.get(subject)?.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
data_dir = "./weft-data"

[plugins]
dir = "./plugins.d"

[grants.http-sink]
http = ["http://127.0.0.1:9090"]

[[pipeline]]
name = "leads"
idempotency_key = "/id"
steps = [
  { plugin = "json-map", config = { lowercase = ["/email"], title_case = ["/name"], date = [{ field = "/created", from = "%m/%d/%Y", to = "%Y-%m-%d" }], cents_to_decimal = ["/amount_cents"] } },
  { plugin = "filter", config = { require = ["/email"] } },
]
sink = { plugin = "http-sink", config = { url = "http://127.0.0.1:9090/leads" } }
retry = { max_attempts = 5, initial_ms = 100, max_ms = 10000 }
"#;

    #[test]
    fn every_example_pipeline_has_an_owner_objectives_and_a_gate() {
        let config = Config::parse(include_str!("../../../examples/weft.toml")).unwrap();
        assert!(!config.pipelines.is_empty());
        for p in &config.pipelines {
            assert!(p.owner.is_some(), "{} has no owner", p.name);
            assert!(p.slo.is_some(), "{} has no objectives", p.name);
            assert!(p.quality.is_some(), "{} has no quality gate", p.name);
            assert!(p.catalog().runbook.is_some(), "{} has no runbook", p.name);
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(EXAMPLE).unwrap();
        let p = c.pipeline("leads").unwrap();
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].config["date"][0]["from"], "%m/%d/%Y");
        assert_eq!(p.retry.max_attempts, 5);
        assert_eq!(p.retry.multiplier, 2.0);
        assert_eq!(c.grant("http-sink").http, ["http://127.0.0.1:9090"]);
        assert!(c.grant("json-map").http.is_empty());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse(&EXAMPLE.replace("data_dir", "datadir")).unwrap_err();
        assert!(err.contains("unknown field `datadir`"), "{err}");
        let err = Config::parse(&EXAMPLE.replace("max_attempts", "attempts")).unwrap_err();
        assert!(err.contains("unknown field `attempts`"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn invalid_values_say_what_to_do() {
        let err = Config::parse(&EXAMPLE.replace("\"/id\"", "\"id\"")).unwrap_err();
        assert_eq!(
            err,
            "pipeline[0] (\"leads\"): idempotency_key \"id\" is not a JSON pointer; write it like \"/id\""
        );
        let err =
            Config::parse(&EXAMPLE.replace("initial_ms = 100", "initial_ms = 100000")).unwrap_err();
        assert!(
            err.contains("retry.initial_ms (100000) is larger than retry.max_ms"),
            "{err}"
        );
        let err =
            Config::parse(&EXAMPLE.replace("http://127.0.0.1:9090\"]", "ftp://x\"]")).unwrap_err();
        assert!(err.starts_with("grants.http-sink.http:"), "{err}");
        let err =
            Config::parse(&EXAMPLE.replace("name = \"leads\"", "name = \"le ads\"")).unwrap_err();
        assert!(err.contains("name must be non-empty"), "{err}");
        let twice =
            format!("{EXAMPLE}\n[[pipeline]]\nname = \"leads\"\nsink = {{ plugin = \"x\" }}\n");
        assert!(
            Config::parse(&twice)
                .unwrap_err()
                .contains("already has this name")
        );
    }

    #[test]
    fn load_resolves_paths_against_the_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.toml");
        std::fs::write(&path, EXAMPLE).unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.server.data_dir, dir.path().join("weft-data"));
        std::fs::write(&path, "[server]\nlisten = 5\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
    }

    #[test]
    fn canaries_and_versions_are_checked() {
        let with = |canary: &str| {
            Config::parse(&EXAMPLE.replace(
                r#"config = { url = "http://127.0.0.1:9090/leads" } }"#,
                &format!(r#"config = {{ url = "http://127.0.0.1:9090/leads" }}{canary} }}"#),
            ))
        };
        assert!(with(r#", canary = { plugin = "http-sink@2", share = 0.05 }"#).is_ok());
        let bad = [
            (
                r#", canary = { plugin = "http-sink@2", share = 0 }"#,
                "share = 0",
            ),
            (
                r#", canary = { plugin = "http-sink@2", share = 1.5 }"#,
                "share = 1.5",
            ),
            (
                r#", canary = { plugin = "http-sink@two", share = 0.1 }"#,
                "is not a version",
            ),
            (
                r#", canary = { plugin = "http-sink@2", share = 0.1, min_calls = 50 }"#,
                "min_calls",
            ),
            (
                r#", canary = { plugin = "http-sink@2", share = 0.1 }, batch = { max_events = 10 }"#,
                "batching sink",
            ),
        ];
        for (canary, named) in bad {
            let e = with(canary).unwrap_err();
            assert!(e.contains(named) && e.contains("sink"), "{canary}: {e}");
        }
        let e = Config::parse(&EXAMPLE.replace(r#"plugin = "filter""#, r#"plugin = "filter@1.x""#))
            .unwrap_err();
        assert!(e.contains("is not a version"), "{e}");
    }
}
