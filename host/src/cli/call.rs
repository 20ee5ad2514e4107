//! `weft plugin call`: one event (or one poll) through a plugin in the real
//! sandbox, with the limits and egress checks of a grant, and what it
//! returned, logged and cost.

use crate::config::Grant;
use crate::sandbox::bindings::WitEvent;
use crate::sandbox::{CallContext, CallCost, CallError, Sandbox, SandboxOptions};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Args)]
pub(super) struct CallArgs {
    /// The plugin's `.wasm` file (its name is the file stem).
    file: PathBuf,
    /// Its config: inline JSON, or a `.json` or `.toml` file.
    #[arg(long, default_value = "{}")]
    config: String,
    /// The event's body: a JSON file (`-` for stdin); for a transform or a sink.
    #[arg(long, conflicts_with = "poll")]
    event: Option<PathBuf>,
    /// The event's idempotency key.
    #[arg(long, default_value = "call-1")]
    key: String,
    /// Metadata headers on the event (`name=value`, repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Poll a source once instead.
    #[arg(long)]
    poll: bool,
    /// The cursor to poll from.
    #[arg(long, requires = "poll")]
    cursor: Option<String>,
    /// The grant it runs under, as a weft.toml `[grants.NAME]` table: inline
    /// TOML (`'http = ["https://api.example.com"]'`) or a `.toml` file.
    /// Without one it may do nothing beyond its baseline.
    #[arg(long)]
    grant: Option<String>,
    /// A credential's value (`NAME=VALUE`, repeatable), for a grant that
    /// lists the credential.
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn read_config(arg: &str) -> Result<serde_json::Value> {
    let trimmed = arg.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(arg).context("--config is not valid JSON");
    }
    let path = Path::new(arg);
    let text = std::fs::read_to_string(path).with_context(|| format!("reading --config {arg}"))?;
    if path.extension().is_some_and(|e| e == "toml") {
        let value: toml::Value =
            toml::from_str(&text).with_context(|| format!("parsing {arg} as TOML"))?;
        return serde_json::to_value(value).context("converting the TOML config");
    }
    serde_json::from_str(&text).with_context(|| format!("parsing {arg} as JSON"))
}

pub(super) fn read_grant(arg: Option<&str>) -> Result<Grant> {
    let Some(arg) = arg else {
        return Ok(Grant::default());
    };
    let text = if arg.ends_with(".toml") && Path::new(arg).exists() {
        std::fs::read_to_string(arg).with_context(|| format!("reading --grant {arg}"))?
    } else {
        arg.to_string()
    };
    toml::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "--grant is not a grant table (the keys of [grants.NAME] in weft.toml): {e}"
        )
    })
}

pub(super) fn pairs(list: &[String], what: &str) -> Result<Vec<(String, String)>> {
    list.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                .filter(|(k, _)| !k.is_empty())
                .with_context(|| format!("{what} {p:?} is not NAME=VALUE"))
        })
        .collect()
}

pub(super) fn show_cost(cost: &CallCost) -> String {
    format!(
        "{:.2} ms, fuel {}, peak memory {:.1} MiB",
        cost.duration_us as f64 / 1000.0,
        cost.fuel,
        cost.memory_bytes as f64 / (1024.0 * 1024.0)
    )
}

pub(super) fn show_error(e: &CallError) -> String {
    format!("{}: {}", e.kind.as_str(), e.message)
}

impl CallArgs {
    pub(super) async fn run(self) -> Result<()> {
        let name = self
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let config = read_config(&self.config)?;
        let grant = read_grant(self.grant.as_deref())?;
        let secrets = crate::secrets::Secrets::from_pairs(pairs(&self.secrets, "--secret")?);
        let ready = Ready::new(&self.file, &name, &grant, secrets, None, None).await?;
        ready.check(&config).await?;
        let (sandbox, plugin) = (&ready.sandbox, &ready.plugin);
        let config_json = config.to_string();
        let input = if plugin.world == crate::sandbox::World::Source {
            if self.event.is_some() {
                bail!("{name} is a source: call it with --poll");
            }
            Input::Poll(self.cursor.clone())
        } else {
            let Some(path) = &self.event else {
                bail!(
                    "{name} is a {}: give it an event with --event FILE (a JSON body)",
                    plugin.world
                );
            };
            let payload = if path.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
                buf
            } else {
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
            };
            Input::Event(event(&self.key, pairs(&self.headers, "--header")?, payload))
        };
        let (result, cost) = run_plugin(sandbox, plugin, &config_json, input).await;
        if self.json {
            let answer = match &result {
                Ok(v) => serde_json::json!({ "ok": v, "cost": cost_json(&cost) }),
                Err(e) => serde_json::json!({
                    "error": { "kind": e.kind.as_str(), "message": e.message },
                    "cost": cost_json(&cost),
                }),
            };
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            match &result {
                Ok(v) => println!("{}", serde_json::to_string_pretty(v)?),
                Err(e) => println!("error: {}", show_error(e)),
            }
            println!("cost: {}", show_cost(&cost));
        }
        if let Err(e) = result {
            bail!("the call failed ({})", e.kind.as_str());
        }
        Ok(())
    }
}

/// A plugin loaded in a sandbox of its own, over a throw-away store.
pub(super) struct Ready {
    pub(super) sandbox: Sandbox,
    pub(super) plugin: crate::sandbox::Plugin,
    store: Arc<dyn crate::store::Store>,
    _dir: tempfile::TempDir,
}

impl Ready {
    /// Load `file` as plugin `name` under `grant`, with `secrets`, its
    /// outbound HTTP on `tape` when given, and its compiled code kept in
    /// `cache` when given.
    pub(super) async fn new(
        file: &Path,
        name: &str,
        grant: &Grant,
        secrets: crate::secrets::Secrets,
        tape: Option<Arc<crate::sandbox::tape::Tape>>,
        cache: Option<&crate::sandbox::cache::CodeCache>,
    ) -> Result<Ready> {
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let store = crate::store::open(&dir.path().join("store"))?;
        let mut options = SandboxOptions::new(4, grant.memory_mib.max(16));
        // Fuel is counted so a call can say what it took.
        options.fuel = true;
        let mut sandbox =
            Sandbox::with_options(store.clone(), options)?.with_secrets(Arc::new(secrets));
        if let Some(tape) = tape {
            sandbox = sandbox.with_tape(tape);
        }
        let plugin = sandbox
            .load(file, name, grant, cache)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Ready {
            sandbox,
            plugin,
            store,
            _dir: dir,
        })
    }

    /// Check `config` as a host would before running: the plugin's schema,
    /// its own `configure`, and its planned URLs against the grant.
    pub(super) async fn check(&self, config: &serde_json::Value) -> Result<()> {
        let (sandbox, plugin, name) = (&self.sandbox, &self.plugin, &self.plugin.name);
        let config_json = config.to_string();
        if let Err(e) = crate::schema::check_plugin_config(sandbox, plugin, config, "config").await
        {
            bail!("the config does not match plugin {name}'s schema: {e}");
        }
        if let Err(e) = sandbox.check_config(plugin, &config_json, "call").await {
            bail!("plugin {name} refused its config: {}", show_error(&e));
        }
        if let Err(e) = sandbox.check_plan(plugin, &config_json, "call").await {
            bail!("{}", e.message);
        }
        Ok(())
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.store.close();
    }
}

/// What a plugin is run on.
pub(super) enum Input {
    /// An event, for a transform or a sink.
    Event(WitEvent),
    /// A poll from this cursor, for a source.
    Poll(Option<String>),
}

/// An event with this key, metadata headers and body.
pub(super) fn event(key: &str, headers: Vec<(String, String)>, payload: Vec<u8>) -> WitEvent {
    WitEvent {
        id: crate::store::EventId::new().to_string(),
        key: key.to_string(),
        source: "call".into(),
        content_type: "application/json".into(),
        headers,
        payload,
        attempt: 1,
        correlation_id: "call".into(),
        received_at_ms: crate::store::now_ms(),
    }
}

/// Run `plugin` once on `input`: what it returned, as JSON (`events` with
/// each one's key, headers and payload; `receipt`; or a poll's `events`,
/// `next_cursor` and `more`), and what the call cost.
pub(super) async fn run_plugin(
    sandbox: &Sandbox,
    plugin: &crate::sandbox::Plugin,
    config_json: &str,
    input: Input,
) -> (Result<serde_json::Value, CallError>, CallCost) {
    let ctx = CallContext::background("call", &plugin.name);
    match input {
        Input::Poll(cursor) => {
            let (result, cost) = sandbox
                .poll_once(plugin, config_json, ctx, cursor.as_deref())
                .await;
            let value = result.map(|b| {
                serde_json::json!({
                    "events": b.events.iter().map(|(k, p)| serde_json::json!({
                        "key": k,
                        "payload": payload_value(p),
                    })).collect::<Vec<_>>(),
                    "next_cursor": b.next_cursor,
                    "more": b.more,
                })
            });
            (value, cost)
        }
        Input::Event(event) if plugin.world == crate::sandbox::World::Transform => {
            let (result, cost) = sandbox.transform(plugin, config_json, ctx, &event).await;
            let value = result.map(|events| {
                serde_json::json!({ "events": events.iter().map(|e| serde_json::json!({
                    "key": e.key,
                    "headers": e.headers,
                    "payload": payload_value(&e.payload),
                })).collect::<Vec<_>>() })
            });
            (value, cost)
        }
        Input::Event(event) => {
            let (result, cost) = sandbox.deliver(plugin, config_json, ctx, &event).await;
            (result.map(|r| serde_json::json!({ "receipt": r })), cost)
        }
    }
}

fn payload_value(p: &[u8]) -> serde_json::Value {
    serde_json::from_slice(p)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(p).into_owned()))
}

fn cost_json(cost: &CallCost) -> serde_json::Value {
    serde_json::json!({
        "duration_us": cost.duration_us,
        "fuel": cost.fuel,
        "memory_bytes": cost.memory_bytes,
    })
}
