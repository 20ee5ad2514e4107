//! `weft.toml`: parsed strictly, validated without I/O, with errors that name
//! the file, the key and the fix.

use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::origin::Origin;

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
}

/// `[admin]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer tokens of the admin API, each with a role. With none (and no
    /// `server.admin_token_env` variable set) the API is open to anyone who
    /// reaches the listener.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// `[[admin.tokens]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it: named in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Credential holding the token value (`WEFT_SECRET_<NAME>` or the
    /// secrets file), never the value itself.
    pub secret: String,
}

/// An admin API role; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read everything.
    Viewer,
    /// Also pause, resume and replay.
    Operator,
    /// Also purge.
    Admin,
}

impl Role {
    /// `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `[upstreams."ORIGIN"]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Requests per second to this origin, from all plugins together.
    pub rate_limit: RateLimitConfig,
}

/// `rate_limit = { per_second = 50, burst = 10 }`: a token bucket (GCRA).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate.
    pub per_second: u32,
    /// How many calls may go at once after a quiet period (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// `breaker = { … }`: the circuit breaker of a pipeline's sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open when at least this share of sink calls in the window failed (default 0.5).
    #[serde(default = "default_failure_ratio")]
    pub failure_ratio: f64,
    /// ... and the window holds at least this many calls (default 20).
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// Length of the rolling window, in ms (default 30000).
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// How long it stays open before letting probes through, in ms (default 5000).
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// Calls let through while half-open; all must succeed to close (default 1).
    #[serde(default = "default_probes")]
    pub probes: u32,
    /// `false` turns the breaker off.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_failure_ratio() -> f64 {
    0.5
}
fn default_min_calls() -> u32 {
    20
}
fn default_window_ms() -> u64 {
    30_000
}
fn default_open_ms() -> u64 {
    5_000
}
fn default_probes() -> u32 {
    1
}
fn default_true() -> bool {
    true
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_ratio: default_failure_ratio(),
            min_calls: default_min_calls(),
            window_ms: default_window_ms(),
            open_ms: default_open_ms(),
            probes: default_probes(),
            enabled: true,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP listener (webhooks, health, admin API).
    pub listen: SocketAddr,
    /// Directory of the durable store; relative paths are relative to the config file.
    pub data_dir: PathBuf,
    /// Largest accepted webhook body, in bytes (default 1 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long delivered and filtered events stay in the run history, in hours (default 24).
    #[serde(default = "default_keep_hours")]
    pub keep_history_hours: u64,
    /// Most finished events kept in the run history, oldest dropped first
    /// (default: no limit besides `keep_history_hours`).
    #[serde(default)]
    pub keep_history_events: Option<usize>,
    /// How long an idempotency key is remembered at ingress, in hours (default 24).
    #[serde(default = "default_keep_hours")]
    pub dedup_window_hours: u64,
    /// Environment variable holding the admin API bearer token; when it is
    /// set, `/api/v1` requires `Authorization: Bearer <token>`.
    #[serde(default = "default_admin_token_env")]
    pub admin_token_env: String,
    /// A TOML file of `NAME = "secret"` lines, readable by its owner only
    /// (mode 0600). `WEFT_SECRET_NAME` in the environment wins over it.
    #[serde(default)]
    pub secrets_file: Option<PathBuf>,
}

fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_keep_hours() -> u64 {
    24
}
fn default_admin_token_env() -> String {
    "WEFT_ADMIN_TOKEN".to_string()
}

/// `[plugins]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Directory of `*.wasm` plugin files; a plugin's name is its file stem.
    pub dir: PathBuf,
}

/// `[grants.NAME]`: what one plugin may do. Anything not written is denied.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Origins (scheme://host[:port][/path-prefix]) the plugin may call.
    #[serde(default)]
    pub http: Vec<String>,
    /// Credentials the host may attach to the plugin's outbound requests.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// Credentials whose raw value the plugin may read (implies `credentials`).
    #[serde(default)]
    pub reveal: Vec<String>,
    /// Durable key-value state; without it the plugin has none.
    #[serde(default)]
    pub kv: Option<KvGrant>,
    /// Memory cap per instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Wall-time cap per call, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// CPU budget per call in wasm fuel units (roughly one per instruction);
    /// without it only the wall-time cap applies.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Refuse to load the file unless its sha256 (hex) is this.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Most bytes a call may return (events or receipt), in KiB (default 4096).
    #[serde(default = "default_output_kib")]
    pub output_kib: u32,
    /// Most bytes of log output (log interface, stdout, stderr) per call, in KiB (default 64).
    #[serde(default = "default_log_kib")]
    pub log_kib: u32,
    /// Largest HTTP response body the plugin may receive, in KiB (default 16384).
    #[serde(default = "default_response_kib")]
    pub response_kib: u32,
}

/// `kv = { quota_kib = 1024 }`
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct KvGrant {
    /// Bytes of keys and values the plugin may keep, in KiB (default 1024).
    #[serde(default = "default_quota_kib")]
    pub quota_kib: u64,
}

/// Memory cap of a plugin without a grant, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// Wall-time cap per call of a plugin without a grant, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

fn default_memory_mib() -> u32 {
    DEFAULT_MEMORY_MIB
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_output_kib() -> u32 {
    4096
}
fn default_log_kib() -> u32 {
    64
}
fn default_response_kib() -> u32 {
    16 * 1024
}
fn default_quota_kib() -> u64 {
    1024
}

impl Default for Grant {
    fn default() -> Self {
        Grant {
            http: Vec::new(),
            credentials: Vec::new(),
            reveal: Vec::new(),
            kv: None,
            memory_mib: DEFAULT_MEMORY_MIB,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            fuel: None,
            sha256: None,
            output_kib: default_output_kib(),
            log_kib: default_log_kib(),
            response_kib: default_response_kib(),
        }
    }
}

impl Grant {
    /// Whether the plugin may have credential `name` attached to requests.
    pub fn may_attach(&self, name: &str) -> bool {
        self.credentials
            .iter()
            .chain(&self.reveal)
            .any(|c| c == name)
    }

    /// Every credential the grant names (attach or reveal), sorted, once each.
    pub fn credential_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .credentials
            .iter()
            .chain(&self.reveal)
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    fn validate(&self, name: &str) -> Result<(), String> {
        for origin in &self.http {
            Origin::parse(origin).map_err(|e| format!("grants.{name}.http: {e}"))?;
        }
        if self.memory_mib == 0 || self.memory_mib > 4096 {
            return Err(format!(
                "grants.{name}.memory_mib = {} is out of range; use 1 to 4096",
                self.memory_mib
            ));
        }
        if self.timeout_ms == 0 {
            return Err(format!("grants.{name}.timeout_ms must be at least 1"));
        }
        if self.fuel == Some(0) {
            return Err(format!(
                "grants.{name}.fuel must be at least 1; leave it out for no fuel limit"
            ));
        }
        if self.output_kib == 0 || self.log_kib == 0 || self.response_kib == 0 {
            return Err(format!(
                "grants.{name}: output_kib, log_kib and response_kib must be at least 1"
            ));
        }
        if let Some(kv) = &self.kv
            && kv.quota_kib == 0
        {
            return Err(format!(
                "grants.{name}.kv.quota_kib must be at least 1; leave kv out to grant no state"
            ));
        }
        if let Some(pin) = &self.sha256
            && !(pin.len() == 64 && pin.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(format!(
                "grants.{name}.sha256 {pin:?} is not a sha256 digest; write the 64 hex digits `weft plugin inspect FILE` prints"
            ));
        }
        for (key, list) in [("credentials", &self.credentials), ("reveal", &self.reveal)] {
            for c in list {
                if !crate::secrets::valid_name(c) {
                    return Err(format!(
                        "grants.{name}.{key}: {c:?} is not a credential name; use upper-case letters, digits and '_' (it is read from WEFT_SECRET_{c})"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[[pipeline]]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name; webhooks arrive at `POST /hooks/{name}`.
    pub name: String,
    /// JSON pointer to the idempotency key in the payload; without it the
    /// `Idempotency-Key` header is used, or else the event id.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Transforms, run in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
    /// Where events end up.
    pub sink: StepConfig,
    /// Retry policy for transient failures.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How many events of this pipeline are processed at once (default 32).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// JSON pointer to an ordering key: events with the same key are
    /// delivered one at a time, in acceptance order.
    #[serde(default)]
    pub order_by: Option<String>,
    /// Most events waiting in the queue before webhooks get 429 (default 50000).
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Calls per second to this pipeline's sink.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Circuit breaker of the sink (on by default).
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// JSON pointers of payload fields never shown: masked in logs, errors,
    /// dead-letter views and API answers (the sink still gets them).
    #[serde(default)]
    pub redact: Vec<String>,
    /// JSON Schema (2020-12) file that webhook payloads must satisfy;
    /// others get `422` with every violation and are not stored.
    #[serde(default)]
    pub contract: Option<PathBuf>,
    /// How events enter: `trigger = { webhook = { verify = "github", secret = "GH_SECRET" } }`.
    #[serde(default)]
    pub trigger: TriggerConfig,
}

/// `trigger = { … }`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Webhooks at `POST /hooks/{name}` (always on; this adds verification).
    #[serde(default)]
    pub webhook: Option<WebhookTrigger>,
    /// A tick event on a cron schedule (with `poll`: poll on the ticks instead).
    #[serde(default)]
    pub schedule: Option<ScheduleTrigger>,
    /// A source plugin polled for new items.
    #[serde(default)]
    pub poll: Option<PollTrigger>,
}

/// `poll = { plugin = "http-poll", config = { … }, every_ms = 30000 }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollTrigger {
    /// A plugin of the `source` world.
    pub plugin: String,
    /// Its configuration, handed to it as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Pause between polls that found nothing more, in ms (default 60000).
    #[serde(default = "default_every_ms")]
    pub every_ms: u64,
    /// Longest back-off after failed polls, in ms (default 300000).
    #[serde(default = "default_poll_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_every_ms() -> u64 {
    60_000
}
fn default_poll_backoff_ms() -> u64 {
    300_000
}

/// `schedule = { cron = "0 */5 * * * *", tz = "UTC", on_missed = "skip" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Six or seven fields, seconds first.
    pub cron: String,
    /// `UTC` (default) or a fixed offset such as `+02:00`.
    #[serde(default = "default_tz")]
    pub tz: String,
    /// `skip` (default) or `once`: what happens to ticks missed while down.
    #[serde(default)]
    pub on_missed: crate::trigger::schedule::OnMissed,
}

fn default_tz() -> String {
    "UTC".into()
}

impl ScheduleTrigger {
    /// The parsed schedule.
    pub fn schedule(&self) -> Result<crate::trigger::schedule::Schedule, String> {
        crate::trigger::schedule::Schedule::parse(&self.cron, &self.tz, self.on_missed)
    }
}

/// `webhook = { verify = "…", secret = "NAME", tolerance_s = 300, header = "…" }`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTrigger {
    /// Signature scheme: `standard-webhooks`, `github`, `stripe`, `slack`, `hmac-sha256`.
    pub verify: crate::trigger::verify::Preset,
    /// Credential holding the signing secret.
    pub secret: String,
    /// The secret being rotated out: deliveries signed with it still pass.
    #[serde(default)]
    pub previous_secret: Option<String>,
    /// Largest age of a signed timestamp, in seconds (default 300).
    #[serde(default = "default_tolerance_s")]
    pub tolerance_s: u64,
    /// Header of the `hmac-sha256` scheme (default `x-signature`).
    #[serde(default)]
    pub header: Option<String>,
}

fn default_tolerance_s() -> u64 {
    300
}

impl WebhookTrigger {
    /// The credential names it needs.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.secret.as_str()).chain(self.previous_secret.as_deref())
    }
}

fn default_max_queue() -> usize {
    50_000
}

fn default_concurrency() -> usize {
    32
}

/// One plugin use: a step or a sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Plugin name (the `.wasm` file stem in the plugin directory).
    pub plugin: String,
    /// The plugin's own configuration, handed to it as JSON.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
    /// Retry policy for failures of this step, instead of the pipeline's.
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    /// JSON Schema (2020-12) file every event this step returns must
    /// satisfy; a violation is `invalid-input` (dead-lettered).
    #[serde(default)]
    pub contract: Option<PathBuf>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// `retry = { … }`: exponential backoff with jitter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 5).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the second attempt, in ms (default 200).
    #[serde(default = "default_initial_ms")]
    pub initial_ms: u64,
    /// Largest delay, in ms (default 60000).
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    /// Growth factor between attempts (default 2.0).
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    /// `full` (default): a random delay between 0 and the computed one; `none`.
    #[serde(default)]
    pub jitter: Jitter,
    /// Stop retrying once this long has passed since the event was accepted
    /// (or replayed), in ms.
    #[serde(default)]
    pub max_elapsed_ms: Option<u64>,
}

/// Jitter mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Uniform in `[0, delay]`.
    #[default]
    Full,
    /// The computed delay exactly.
    None,
}

fn default_max_attempts() -> u32 {
    5
}
fn default_initial_ms() -> u64 {
    200
}
fn default_max_ms() -> u64 {
    60_000
}
fn default_multiplier() -> f64 {
    2.0
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: default_max_attempts(),
            initial_ms: default_initial_ms(),
            max_ms: default_max_ms(),
            multiplier: default_multiplier(),
            jitter: Jitter::Full,
            max_elapsed_ms: None,
        }
    }
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
        let config: Config =
            toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
        config.validate()?;
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
        for p in &mut self.pipelines {
            p.contract = p.contract.as_deref().map(resolve);
            for s in p.steps.iter_mut().chain([&mut p.sink]) {
                s.contract = s.contract.as_deref().map(resolve);
            }
        }
    }

    /// Check everything that can be checked without I/O.
    pub fn validate(&self) -> Result<(), String> {
        if self.server.max_body_bytes == 0 {
            return Err("server.max_body_bytes must be at least 1".into());
        }
        for (name, grant) in &self.grants {
            grant.validate(name)?;
        }
        if self.pipelines.is_empty() {
            return Err("no [[pipeline]] is configured; add at least one".into());
        }
        let mut names = HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let at = format!("pipeline[{i}] ({:?})", p.name);
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!(
                    "{at}: name must be non-empty and use only letters, digits, '-' and '_'"
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("{at}: another pipeline already has this name"));
            }
            if let Some(k) = &p.idempotency_key
                && !k.starts_with('/')
            {
                return Err(format!(
                    "{at}: idempotency_key {k:?} is not a JSON pointer; write it like \"/id\""
                ));
            }
            for (j, s) in p.steps.iter().chain([&p.sink]).enumerate() {
                if s.plugin.is_empty() {
                    return Err(format!("{at}: step {} has an empty plugin name", j + 1));
                }
                if !s.config.is_object() {
                    return Err(format!(
                        "{at}: the config of plugin {} must be a table",
                        s.plugin
                    ));
                }
            }
            check_retry(&at, "retry", &p.retry)?;
            for (j, s) in p.steps.iter().enumerate() {
                if let Some(r) = &s.retry {
                    check_retry(&at, &format!("steps[{j}].retry"), r)?;
                }
            }
            if let Some(r) = &p.sink.retry {
                check_retry(&at, "sink.retry", r)?;
            }
            if let Some(k) = &p.order_by
                && !k.starts_with('/')
            {
                return Err(format!(
                    "{at}: order_by {k:?} is not a JSON pointer; write it like \"/customer_id\""
                ));
            }
            if let Some(r) = p.redact.iter().find(|r| !r.starts_with('/')) {
                return Err(format!(
                    "{at}: redact entry {r:?} is not a JSON pointer; write it like \"/email\""
                ));
            }
            if let Some(poll) = &p.trigger.poll {
                if poll.every_ms == 0 || poll.max_backoff_ms == 0 {
                    return Err(format!(
                        "{at}: trigger.poll.every_ms and max_backoff_ms must be at least 1"
                    ));
                }
                if !poll.config.is_object() {
                    return Err(format!("{at}: trigger.poll.config must be a table"));
                }
            }
            if let Some(s) = &p.trigger.schedule {
                s.schedule()
                    .map_err(|e| format!("{at}: trigger.schedule: {e}"))?;
            }
            if let Some(w) = &p.trigger.webhook {
                for s in w.secret_names() {
                    if !crate::secrets::valid_name(s) {
                        return Err(format!(
                            "{at}: trigger.webhook secret {s:?} is not a credential name; write the NAME whose value is in WEFT_SECRET_NAME or the secrets file"
                        ));
                    }
                }
                if w.header.is_some() && w.verify != crate::trigger::verify::Preset::HmacSha256 {
                    return Err(format!(
                        "{at}: trigger.webhook.header applies only to verify = \"hmac-sha256\""
                    ));
                }
            }
            if p.max_queue == 0 {
                return Err(format!("{at}: max_queue must be at least 1"));
            }
            if let Some(rl) = &p.rate_limit {
                check_rate(&format!("{at}: rate_limit"), rl)?;
            }
            let b = &p.breaker;
            if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
                return Err(format!("{at}: breaker.failure_ratio must be in (0, 1]"));
            }
            if b.min_calls == 0 || b.probes == 0 || b.window_ms == 0 || b.open_ms == 0 {
                return Err(format!(
                    "{at}: breaker.min_calls, probes, window_ms and open_ms must be at least 1"
                ));
            }
            if p.concurrency == 0 || p.concurrency > 1024 {
                return Err(format!("{at}: concurrency must be between 1 and 1024"));
            }
        }
        let mut token_names = HashSet::new();
        for (i, t) in self.admin.tokens.iter().enumerate() {
            if t.name.is_empty() || !token_names.insert(t.name.as_str()) {
                return Err(format!(
                    "admin.tokens[{i}]: name must be non-empty and unique"
                ));
            }
            if !crate::secrets::valid_name(&t.secret) {
                return Err(format!(
                    "admin.tokens[{i}] ({:?}): secret {:?} is not a credential name; write the NAME whose value is in WEFT_SECRET_NAME or the secrets file",
                    t.name, t.secret
                ));
            }
        }
        for (origin, u) in &self.upstreams {
            Origin::parse(origin).map_err(|e| format!("upstreams: {e}"))?;
            check_rate(&format!("upstreams.{origin:?}.rate_limit"), &u.rate_limit)?;
        }
        Ok(())
    }

    /// The grant of a plugin; a plugin without `[grants.NAME]` gets the
    /// defaults (no HTTP, default memory and time caps).
    pub fn grant(&self, plugin: &str) -> Grant {
        self.grants.get(plugin).cloned().unwrap_or_default()
    }

    /// The pipeline with this name.
    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.pipelines.iter().find(|p| p.name == name)
    }
}

fn check_retry(at: &str, key: &str, r: &RetryConfig) -> Result<(), String> {
    if r.max_attempts == 0 {
        return Err(format!("{at}: {key}.max_attempts must be at least 1"));
    }
    if r.initial_ms > r.max_ms {
        return Err(format!(
            "{at}: {key}.initial_ms ({}) is larger than {key}.max_ms ({})",
            r.initial_ms, r.max_ms
        ));
    }
    if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
        return Err(format!("{at}: {key}.multiplier must be a number >= 1.0"));
    }
    Ok(())
}

fn check_rate(at: &str, r: &RateLimitConfig) -> Result<(), String> {
    if r.per_second == 0 || r.burst == Some(0) {
        return Err(format!("{at}: per_second and burst must be at least 1"));
    }
    Ok(())
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
}
