//! `weft audit` and `weft plugin inspect`: what each plugin file is, what it
//! asks for, what its grant gives it, and every difference between the two.

use crate::config::{Config, Grant};
use crate::sandbox::Sandbox;
use crate::sandbox::caps::{self, Capability, Mismatch};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One imported interface.
#[derive(Debug, Clone, Serialize)]
pub struct Import {
    /// e.g. `wasi:http/outgoing-handler@0.2.12`
    pub interface: String,
    /// `http`, `kv`, `credentials`, `never`, `baseline` or `unknown`.
    pub capability: &'static str,
    /// What the host lets the plugin do with it.
    pub allows: &'static str,
}

/// The report on one plugin file.
#[derive(Debug, Clone, Serialize)]
pub struct PluginReport {
    /// Plugin name (the file stem).
    pub name: String,
    /// The file, as found.
    pub file: String,
    /// Hex sha256 of the file.
    pub sha256: Option<String>,
    /// Size in bytes.
    pub size_bytes: Option<u64>,
    /// World and version, e.g. `weft:plugin/sink@0.1.0`.
    pub world: Option<String>,
    /// What the plugin says about itself: `name version`.
    pub describes_itself_as: Option<String>,
    /// The JSON Schema of its config, as it describes it.
    pub config_schema: Option<serde_json::Value>,
    /// Every import.
    pub imports: Vec<Import>,
    /// Every export.
    pub exports: Vec<String>,
    /// The grant (absent for `plugin inspect`).
    pub grant: Option<Grant>,
    /// What the plugin may do, one line per permission.
    pub effective: Vec<String>,
    /// Differences between imports and grant, and pin or secret problems.
    pub mismatches: Vec<Mismatch>,
    /// `loads`, or why the host refuses it.
    pub status: String,
    /// The pipelines that name it (for `audit`; empty: no pipeline uses it,
    /// and a refusal stops nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_by: Option<Vec<String>>,
}

impl PluginReport {
    /// A report with nothing read from a file yet.
    fn bare(name: String, file: String, grant: Option<Grant>, status: &str) -> Self {
        PluginReport {
            name,
            file,
            sha256: None,
            size_bytes: None,
            world: None,
            describes_itself_as: None,
            config_schema: None,
            imports: Vec::new(),
            exports: Vec::new(),
            grant,
            effective: Vec::new(),
            mismatches: Vec::new(),
            status: status.into(),
            used_by: None,
        }
    }

    /// Whether the host would refuse this plugin.
    pub fn refused(&self) -> bool {
        self.status.starts_with("refused")
    }

    /// Whether no pipeline names it (known only for `audit`).
    pub fn unused(&self) -> bool {
        self.used_by.as_ref().is_some_and(Vec::is_empty)
    }
}

fn capability_name(c: Capability) -> &'static str {
    match c {
        Capability::Http => "http",
        Capability::Kv => "kv",
        Capability::Credentials => "credentials",
        Capability::Messaging => "messaging",
        Capability::Never => "never",
        Capability::Baseline => "baseline",
        Capability::Unknown => "unknown",
    }
}

/// Inspect one file against `grant` (`None`: no config, as `plugin inspect`);
/// `uses` are the (pipeline, config as JSON) of the steps that name it,
/// whose planned URLs are held against the grant.
pub async fn inspect(
    sandbox: &Sandbox,
    file: &Path,
    shown: String,
    grant: Option<(&Grant, &Secrets)>,
    uses: &[(String, String)],
) -> PluginReport {
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let default = Grant::default();
    let (grant, available) = match grant {
        Some((g, a)) => (Some(g), Some(a)),
        None => (None, None),
    };
    let g = grant.unwrap_or(&default);
    let mut report = PluginReport::bare(name.clone(), shown, grant.cloned(), "loads");
    let plugin = match sandbox.load_for_audit(file, &name, g) {
        Ok(p) => p,
        Err(e) => {
            report.status = format!("refused: {e}");
            return report;
        }
    };
    report.sha256 = Some(plugin.sha256.clone());
    report.size_bytes = Some(plugin.size);
    report.world = Some(if plugin.delivers_batches() {
        "weft:plugin/batch-sink@0.1.0".to_string()
    } else {
        plugin.world.to_string()
    });
    report.imports = plugin
        .imports
        .iter()
        .map(|i| {
            let (cap, allows) = caps::classify(i);
            Import {
                interface: i.clone(),
                capability: capability_name(cap),
                allows,
            }
        })
        .collect();
    report.exports = plugin.exports.clone();
    match sandbox.describe(&plugin).await {
        Ok((n, v, schema)) => {
            report.describes_itself_as = Some(format!("{n} {v}"));
            report.config_schema =
                Some(serde_json::from_str(&schema).unwrap_or(serde_json::Value::String(schema)));
        }
        Err(e) => report.describes_itself_as = Some(format!("(describe() failed: {})", e.message)),
    }
    let Some(grant) = grant else {
        report.effective = caps::effective(&plugin.imports, &default);
        report.mismatches = caps::compare(&name, &plugin.imports, &default)
            .into_iter()
            .filter(|m| m.kind == "requested-not-granted")
            .map(|mut m| {
                m.kind = "needs-grant";
                m
            })
            .collect();
        if !report.mismatches.is_empty() {
            report.status = "loads only with a grant for each capability it requests".into();
        }
        return report;
    };
    report.effective = caps::effective(&plugin.imports, grant);
    report.mismatches = caps::compare(&name, &plugin.imports, grant);
    if let Some(pin) = &grant.sha256
        && !pin.eq_ignore_ascii_case(&plugin.sha256)
    {
        report.mismatches.insert(
            0,
            Mismatch {
                kind: "sha256-mismatch",
                subject: "sha256".into(),
                message: format!("grants.{name}.sha256 pins {pin}, but the file's sha256 differs"),
            },
        );
    }
    for c in grant.credential_names() {
        match available {
            Some(Ok(names)) if names.contains(c) => {}
            Some(Err(e)) => report.mismatches.push(Mismatch {
                kind: "credential-unavailable",
                subject: c.to_string(),
                message: e.clone(),
            }),
            _ => report.mismatches.push(Mismatch {
                kind: "credential-unavailable",
                subject: c.to_string(),
                message: format!(
                    "credential {c} is set neither in {} nor in server.secrets_file, so the host will not start",
                    crate::secrets::env_var(c)
                ),
            }),
        }
    }
    for (pipeline, config) in uses {
        if let Err(e) = sandbox.check_plan(&plugin, config, pipeline).await {
            report.mismatches.push(Mismatch {
                kind: "url-outside-grant",
                subject: pipeline.clone(),
                message: format!("pipeline {pipeline}: {}", e.message),
            });
        }
    }
    let refusing: Vec<&str> = report
        .mismatches
        .iter()
        .filter(|m| matches!(m.kind, "requested-not-granted" | "sha256-mismatch"))
        .map(|m| m.message.as_str())
        .collect();
    if !refusing.is_empty() {
        report.status = format!("refused: {}", refusing.join("; "));
    }
    report
}

/// Which credentials are available, or why the secrets file is unusable.
type Secrets = Result<std::collections::BTreeSet<String>, String>;

/// Reports on every plugin file in the config's plugin directory, plus one
/// for each grant that names no file.
pub async fn audit(
    sandbox: &Sandbox,
    config: &Config,
    base: &Path,
) -> Result<Vec<PluginReport>, String> {
    let available = crate::secrets::Secrets::available(config);
    let dir = &config.plugins.dir;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the plugin directory {} ({e})", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    files.sort();
    let mut reports = Vec::new();
    for file in &files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let grant = config.grant(&name);
        let shown = file
            .strip_prefix(base)
            .unwrap_or(file)
            .display()
            .to_string();
        let uses = config.step_configs(&name);
        reports.push(inspect(sandbox, file, shown, Some((&grant, &available)), &uses).await);
    }
    check_cache(config, &mut reports);
    for r in &mut reports {
        // An OAuth credential: say where its tokens come from.
        for line in &mut r.effective {
            let Some(name) = line
                .strip_prefix("credential ")
                .and_then(|rest| rest.split(':').next())
            else {
                continue;
            };
            if let Some(o) = config.oauth.get(name) {
                *line = format!(
                    "credential {name}: OAuth 2.0 {} tokens from {} (scopes: {}), attached by the host; no token or secret enters the plugin",
                    match o.grant {
                        crate::config::OAuthGrant::ClientCredentials => "client_credentials",
                        crate::config::OAuthGrant::RefreshToken => "refresh_token",
                    },
                    o.token_url,
                    if o.scopes.is_empty() {
                        "none asked".to_string()
                    } else {
                        o.scopes.join(" ")
                    }
                );
            }
        }
        r.used_by = Some(
            config
                .pipelines_using(&r.name)
                .into_iter()
                .map(String::from)
                .collect(),
        );
    }
    for (name, grant) in &config.grants {
        if !reports.iter().any(|r| &r.name == name) {
            let file = format!(
                "(no {name}.wasm in {})",
                dir.strip_prefix(base).unwrap_or(dir).display()
            );
            let mut report = PluginReport::bare(name.clone(), file, Some(grant.clone()), "missing");
            report.mismatches.push(Mismatch {
                kind: "grant-without-plugin",
                subject: name.clone(),
                message: format!("grants.{name} names no plugin file; remove it or add the file"),
            });
            reports.push(report);
        }
    }
    Ok(reports)
}

/// Check the host's compiled-code cache: every entry of a plugin that fails
/// authentication is a `cache-tampered` mismatch of that plugin.
fn check_cache(config: &Config, reports: &mut [PluginReport]) {
    for r in reports.iter_mut() {
        let Some(sha) = r.sha256.clone() else {
            continue;
        };
        for (file, why) in tampered_cache_entries(config, &sha) {
            r.mismatches.push(Mismatch {
                kind: "cache-tampered",
                subject: file,
                message: format!(
                    "compiled-code cache entry failed authentication ({why}); the host compiles the plugin again instead of running it"
                ),
            });
        }
    }
}

/// The entries of the host's compiled-code cache for the plugin with this
/// digest that fail authentication: (file, why).
pub fn tampered_cache_entries(config: &Config, sha256: &str) -> Vec<(String, String)> {
    let Some(cache) = crate::sandbox::cache::CodeCache::existing_in(&config.server.data_dir) else {
        return Vec::new();
    };
    cache
        .audit(sha256)
        .into_iter()
        .filter_map(|(file, verdict)| verdict.err().map(|why| (file.display().to_string(), why)))
        .collect()
}

/// Whether a report found the compiled-code cache changed behind the host's back.
pub fn cache_tampered(r: &PluginReport) -> bool {
    r.mismatches.iter().any(|m| m.kind == "cache-tampered")
}

fn grant_line(g: &Grant) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    format!(
        "http: {}; credentials: {}; reveal: {}; messaging: {}; kv: {}; memory {} MiB; timeout {} ms; fuel {}; sha256 pin: {}",
        list(&g.http.iter().map(|o| o.to_string()).collect::<Vec<_>>()),
        list(
            &g.credentials
                .iter()
                .map(|c| {
                    let to: Vec<String> =
                        c.origins(&g.http).iter().map(|o| o.to_string()).collect();
                    format!("{} (to {})", c.name, to.join(" "))
                })
                .collect::<Vec<_>>()
        ),
        list(&g.reveal),
        list(
            &g.messaging
                .iter()
                .map(|m| format!("{} ({})", m.broker, m.publish.join(" ")))
                .collect::<Vec<_>>()
        ),
        g.kv.map_or("none".to_string(), |k| format!("{} KiB", k.quota_kib)),
        g.memory_mib,
        g.timeout_ms,
        g.fuel.map_or("none".to_string(), |f| f.to_string()),
        if g.sha256.is_some() { "yes" } else { "no" },
    )
}

/// The text form of a report.
pub fn render(r: &PluginReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plugin      {}", r.name);
    let _ = writeln!(out, "file        {}", r.file);
    if let Some(s) = &r.sha256 {
        let _ = writeln!(out, "sha256      {s}");
    }
    if let Some(w) = &r.world {
        let _ = writeln!(out, "world       {w}");
    }
    if let Some(d) = &r.describes_itself_as {
        let _ = writeln!(out, "describes   {d}");
    }
    let (caps, base): (Vec<&Import>, Vec<&Import>) =
        r.imports.iter().partition(|i| i.capability != "baseline");
    if !r.imports.is_empty() {
        let _ = writeln!(out, "requests");
        if caps.is_empty() {
            let _ = writeln!(out, "  (no capability interfaces)");
        }
        for i in caps {
            let _ = writeln!(out, "  {:<38} {}", i.interface, i.allows);
        }
        let _ = writeln!(
            out,
            "  + {} baseline interfaces (logs, clocks, random, stdio, streams)",
            base.len()
        );
    }
    if let Some(g) = &r.grant {
        let _ = writeln!(out, "grant       {}", grant_line(g));
    }
    if !r.effective.is_empty() {
        let _ = writeln!(out, "may");
        for e in &r.effective {
            let _ = writeln!(out, "  {e}");
        }
    }
    for m in &r.mismatches {
        let _ = writeln!(out, "mismatch    {}: {}", m.kind, m.message);
    }
    match &r.used_by {
        Some(used) if used.is_empty() => {
            let _ = writeln!(
                out,
                "used by     no pipeline (unused: nothing runs it, and a refusal stops nothing)"
            );
        }
        Some(used) => {
            let _ = writeln!(out, "used by     {}", used.join(", "));
        }
        None => {}
    }
    let _ = writeln!(out, "status      {}", r.status);
    out
}
