//! Views the API answers with that are built here rather than by the
//! engine or the store: the same types the CLI reads back.

use crate::sandbox::Plugin;
use std::collections::BTreeMap;

/// One loaded plugin file, as `GET /api/v1/plugins` and `weft plugin list`
/// show it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct PluginView {
    /// Its name: the file stem (`json-map`, `json-map@2.0.0`).
    pub name: String,
    /// Its version, from the file name or its `describe()`.
    pub version: Option<String>,
    /// The pipelines that run it (as a step, the sink or a canary candidate).
    pub used_by: Vec<String>,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Its world: transform, sink or source.
    pub world: String,
    /// The interfaces it imports: what it asks for.
    pub imports: Vec<String>,
    /// The grant it runs under: what it may do.
    pub grant: serde_json::Value,
    /// Differences between what it asks for and what it is granted.
    pub mismatches: serde_json::Value,
    /// Calls since start.
    pub calls: u64,
    /// Failed calls since start.
    pub failures: u64,
    /// Calls refused because they went outside the grant, by capability.
    pub denials: BTreeMap<String, u64>,
}

impl PluginView {
    /// The view of `p`, run by `used_by`, with `denials` by capability.
    pub fn of(p: &Plugin, used_by: Vec<String>, denials: BTreeMap<String, u64>) -> PluginView {
        use std::sync::atomic::Ordering::Relaxed;
        PluginView {
            name: p.name.clone(),
            version: p.version.clone(),
            used_by,
            sha256: p.sha256.clone(),
            world: p.world.to_string(),
            imports: p.imports.clone(),
            grant: serde_json::to_value(p.grant()).unwrap_or_default(),
            mismatches: serde_json::to_value(&p.mismatches).unwrap_or_default(),
            calls: p.stats.calls.load(Relaxed),
            failures: p.stats.failures.load(Relaxed),
            denials,
        }
    }
}
