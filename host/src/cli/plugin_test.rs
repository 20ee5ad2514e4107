//! `weft plugin test`: the cases in a plugin crate's `fixtures/*.test.toml`
//! run through the built plugin in the real sandbox, each against its
//! expectations, with outbound HTTP live (within the case's grant),
//! recorded to a cassette beside the case, or replayed from it.

use super::call::{Input, Ready, event, pairs, show_cost, show_error};
use crate::config::Grant;
use crate::sandbox::tape::{Cassette, Tape};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub(super) struct TestArgs {
    /// The plugin crate (default: the current directory).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The plugin file (default: what `weft plugin build` made).
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// Make real requests (within each case's grant) and write what was
    /// said to `fixtures/CASE.cassette.json`.
    #[arg(long, conflicts_with = "replay")]
    record: bool,
    /// Answer every request from the case's cassette, and fail on any
    /// request it does not hold (the default when a cassette exists).
    #[arg(long)]
    replay: bool,
    /// Only the cases whose name holds this.
    #[arg(long)]
    case: Option<String>,
    /// A credential's value (`NAME=VALUE`, repeatable), for recording.
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
}

/// One case, as its file says.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// The plugin's config.
    #[serde(default = "empty_object")]
    config: serde_json::Value,
    /// The event's body (a transform or a sink).
    event: Option<serde_json::Value>,
    /// The event's key.
    #[serde(default = "default_key")]
    key: String,
    /// The event's metadata headers.
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// Poll once instead (a source), from this cursor.
    poll: Option<Poll>,
    /// The grant it runs under.
    #[serde(default)]
    grant: Grant,
    /// What must come out.
    expect: Expect,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Poll {
    cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// A transform's output payloads, in order (or a poll's items).
    events: Option<Vec<serde_json::Value>>,
    /// The keys of what came out, in order.
    keys: Option<Vec<String>>,
    /// A sink's receipt.
    receipt: Option<String>,
    /// A poll's next cursor.
    next_cursor: Option<String>,
    /// The error kind: transient, rate-limited, invalid-input or fatal.
    error: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

fn default_key() -> String {
    "test-1".into()
}

/// How one case's outbound HTTP goes.
enum Mode {
    Live,
    Record,
    Replay(Cassette),
}

impl TestArgs {
    pub(super) async fn run(self) -> Result<()> {
        let fixtures = self.dir.join("fixtures");
        let mut cases: Vec<PathBuf> = std::fs::read_dir(&fixtures)
            .with_context(|| format!("reading {}", fixtures.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".test.toml"))
            .filter(|p| {
                self.case.as_deref().is_none_or(|c| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains(c))
                })
            })
            .collect();
        cases.sort();
        if cases.is_empty() {
            bail!(
                "no cases in {}{}: a case is a NAME.test.toml file with config, event (or poll) and [expect]",
                fixtures.display(),
                self.case
                    .as_deref()
                    .map(|c| format!(" matching {c:?}"))
                    .unwrap_or_default()
            );
        }
        let wasm = match &self.wasm {
            Some(w) => w.clone(),
            None => super::author::built_plugin(&self.dir)?,
        };
        let name = wasm
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Compiled once, for every case.
        let cache_dir = tempfile::tempdir()?;
        let cache = crate::sandbox::cache::CodeCache::open(
            &cache_dir.path().join("compiled"),
            &cache_dir.path().join("cache.key"),
        )?;
        let secrets = pairs(&self.secrets, "--secret")?;
        let mut failed = Vec::new();
        for path in &cases {
            let case_name = path
                .file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .trim_end_matches(".test.toml")
                        .to_string()
                })
                .unwrap_or_default();
            let cassette = fixtures.join(format!("{case_name}.cassette.json"));
            let mode = if self.record {
                Mode::Record
            } else if cassette.exists() {
                let text = std::fs::read_to_string(&cassette)
                    .with_context(|| format!("reading {}", cassette.display()))?;
                Mode::Replay(
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not a cassette", cassette.display()))?,
                )
            } else if self.replay {
                Mode::Replay(Cassette::default())
            } else {
                Mode::Live
            };
            let how = match &mode {
                Mode::Live => "live",
                Mode::Record => "recorded",
                Mode::Replay(_) => "replayed",
            };
            let outcome = run_case(&wasm, &name, path, mode, &secrets, &cache, &cassette).await;
            match outcome {
                Ok(cost) => println!("ok    {case_name} ({how}; {cost})"),
                Err(e) => {
                    println!("FAIL  {case_name} ({how}): {e:#}");
                    failed.push(case_name);
                }
            }
        }
        if !failed.is_empty() {
            bail!(
                "{} of {} cases failed: {}",
                failed.len(),
                cases.len(),
                failed.join(", ")
            );
        }
        println!("{} cases passed", cases.len());
        Ok(())
    }
}

async fn run_case(
    wasm: &Path,
    name: &str,
    path: &Path,
    mode: Mode,
    secrets: &[(String, String)],
    cache: &crate::sandbox::cache::CodeCache,
    cassette: &Path,
) -> Result<String> {
    let text = std::fs::read_to_string(path)?;
    let case: Case = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let tape = match mode {
        Mode::Live => None,
        Mode::Record => Some(Tape::record()),
        Mode::Replay(c) => Some(Tape::replay(c)),
    };
    let secrets = crate::secrets::Secrets::from_pairs(secrets.iter().cloned());
    let ready = Ready::new(wasm, name, &case.grant, secrets, tape.clone(), Some(cache)).await?;
    ready.check(&case.config).await?;
    let input = match (&case.event, &case.poll) {
        (Some(body), None) => Input::Event(event(
            &case.key,
            case.headers.clone().into_iter().collect(),
            serde_json::to_vec(body)?,
        )),
        (None, Some(p)) => Input::Poll(p.cursor.clone()),
        (None, None) => Input::Poll(None),
        (Some(_), Some(_)) => bail!("a case has an event or a poll, not both"),
    };
    let config_json = case.config.to_string();
    let (result, cost) =
        super::call::run_plugin(&ready.sandbox, &ready.plugin, &config_json, input).await;
    if let Some(tape) = &tape {
        if matches!(**tape, Tape::Record(_)) {
            let recorded = tape.cassette();
            std::fs::write(cassette, serde_json::to_string_pretty(&recorded)? + "\n")
                .with_context(|| format!("writing {}", cassette.display()))?;
        }
        let (unexpected, unused) = tape.leftovers();
        if let Some(first) = unexpected.first() {
            bail!(
                "an unexpected request: {first} (record the cassette again with --record if the plugin changed on purpose)"
            );
        }
        if unused > 0 {
            bail!("the cassette holds {unused} more request(s) than the plugin made");
        }
    }
    check(&case.expect, result)?;
    Ok(show_cost(&cost))
}

/// Compare what came out with what the case expects.
fn check(
    expect: &Expect,
    result: Result<serde_json::Value, crate::sandbox::CallError>,
) -> Result<()> {
    let value = match (result, &expect.error) {
        (Err(e), Some(kind)) if e.kind.as_str() == kind => return Ok(()),
        (Err(e), _) => bail!("the plugin failed: {}", show_error(&e)),
        (Ok(v), Some(kind)) => bail!("expected a {kind} error, got {v}"),
        (Ok(v), None) => v,
    };
    let events = value["events"].as_array().cloned().unwrap_or_default();
    if let Some(want) = &expect.events {
        let got: Vec<&serde_json::Value> = events.iter().map(|e| &e["payload"]).collect();
        let want: Vec<&serde_json::Value> = want.iter().collect();
        if got != want {
            bail!(
                "the events differ:\n  expected {}\n  got      {}",
                serde_json::to_string(&want)?,
                serde_json::to_string(&got)?
            );
        }
    }
    if let Some(want) = &expect.keys {
        let got: Vec<&str> = events.iter().filter_map(|e| e["key"].as_str()).collect();
        if got != *want {
            bail!("the keys differ: expected {want:?}, got {got:?}");
        }
    }
    if let Some(want) = &expect.receipt
        && value["receipt"].as_str() != Some(want)
    {
        bail!("expected the receipt {want:?}, got {}", value["receipt"]);
    }
    if let Some(want) = &expect.next_cursor
        && value["next_cursor"].as_str() != Some(want)
    {
        bail!(
            "expected the next cursor {want:?}, got {}",
            value["next_cursor"]
        );
    }
    Ok(())
}
