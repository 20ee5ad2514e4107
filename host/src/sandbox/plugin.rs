//! A loaded plugin: compiled, pre-linked, with its world and its grant.

use super::bindings::{sink::SinkPre, transform::TransformPre};
use super::state::HostState;
use crate::config::Grant;
use crate::origin::Origin;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Which world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    /// `weft:plugin/transform@0.1.0`
    Transform,
    /// `weft:plugin/sink@0.1.0`
    Sink,
    /// `weft:plugin/source@0.1.0`
    Source,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            World::Transform => "weft:plugin/transform@0.1.0",
            World::Sink => "weft:plugin/sink@0.1.0",
            World::Source => "weft:plugin/source@0.1.0",
        })
    }
}

pub(super) enum Pre {
    Transform(TransformPre<HostState>),
    Sink(SinkPre<HostState>),
    /// A sink that also exports `batch-deliverer`.
    BatchSink(super::bindings::batch_sink::BatchSinkPre<HostState>),
    Source(super::bindings::source::SourcePre<HostState>),
}

/// Limits and permissions a plugin runs with.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub origins: Arc<Vec<Origin>>,
    pub memory_bytes: usize,
    pub timeout: Duration,
    /// `None`: no kv grant.
    pub kv_quota_bytes: Option<u64>,
    pub fuel: Option<u64>,
    pub output_bytes: usize,
    pub log_bytes: usize,
    pub response_bytes: usize,
    pub grant: Arc<Grant>,
}

/// What a plugin's calls cost, since start-up.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that failed (an error, a trap or a broken limit).
    pub failures: AtomicU64,
    /// Wall time per call.
    pub duration: crate::histogram::Histogram,
    /// Fuel used by all calls (only when fuel is metered).
    pub fuel: AtomicU64,
    /// The largest linear memory any call asked for, in bytes.
    pub memory_peak: AtomicU64,
}

/// Plugins by name.
pub type Plugins = std::collections::BTreeMap<String, Arc<Plugin>>;
/// Why a plugin file failed to load, by plugin name.
pub type LoadFailures = std::collections::BTreeMap<String, String>;

/// A plugin ready to instantiate.
pub struct Plugin {
    /// Name (the file stem: `json-map`, or `json-map@1.3.0` for a file
    /// that carries its version).
    pub name: String,
    /// Its version: from the file name, else as its `describe()` gives it.
    pub version: Option<String>,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// Its world.
    pub world: World,
    /// Interfaces it imports, e.g. `wasi:http/outgoing-handler@0.2.12`.
    pub imports: Vec<String>,
    /// Interfaces it exports.
    pub exports: Vec<String>,
    /// File size in bytes.
    pub size: u64,
    /// Differences between its imports and its grant that do not stop it
    /// loading (granted but not used).
    pub mismatches: Vec<super::caps::Mismatch>,
    pub(super) pre: Pre,
    pub(super) limits: Limits,
    /// Call counts, durations, fuel and memory.
    pub stats: PluginStats,
    /// Its config schema, asked of it once (see [`Sandbox::config_schema`](super::Sandbox::config_schema)).
    pub(super) schema: std::sync::OnceLock<String>,
}

impl Plugin {
    /// The grant the plugin was loaded with.
    pub fn grant(&self) -> &Grant {
        &self.limits.grant
    }

    /// Whether it is a sink that takes a batch in one call (exports
    /// `batch-deliverer`); other sinks are handed a batch one event at a time.
    pub fn delivers_batches(&self) -> bool {
        matches!(self.pre, Pre::BatchSink(_))
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}
