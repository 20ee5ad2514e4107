//! The wasmtime engine, the linker, and plugin loading through the
//! authenticated cache of compiled code.

use super::bindings::{self, sink::SinkPre, transform::TransformPre};
use super::cache::{CodeCache, Rejected};
use super::host::egress::HttpClient;
use super::plugin::{Limits, Plugin, Pre, World};
use super::state::HostState;
use crate::config::Grant;
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; per-call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How the engine is built.
#[derive(Debug, Clone, Copy)]
pub struct SandboxOptions {
    /// Live instances the pool has room for.
    pub max_instances: u32,
    /// Largest memory cap of any plugin, in MiB.
    pub max_memory_mib: u32,
    /// Count fuel (needed when any grant sets `fuel`; costs some speed).
    pub fuel: bool,
    /// Enforce the memory cap, the time limit and the egress checks. Only
    /// benchmarks turn this off, to measure what the guards cost.
    pub guards: bool,
}

impl SandboxOptions {
    /// Guards on, no fuel.
    pub fn new(max_instances: u32, max_memory_mib: u32) -> Self {
        SandboxOptions {
            max_instances,
            max_memory_mib,
            fuel: false,
            guards: true,
        }
    }
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine could not be set up.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The plugin file could not be read.
    #[error("cannot read plugin {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not a valid component, or not a weft plugin.
    #[error("plugin {path} is not usable: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
    /// A valid plugin that its grant does not allow to load.
    #[error("plugin {path} is refused: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },
}

/// Stops the epoch ticker thread when dropped.
struct EpochTicker(Arc<AtomicBool>);

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The engine, linker and shared clients; one per host.
pub struct Sandbox {
    pub(super) engine: Engine,
    linker: Linker<HostState>,
    pub(super) client: HttpClient,
    pub(super) store: Arc<dyn Store>,
    pub(super) upstreams: Arc<crate::limit::UpstreamLimits>,
    pub(super) secrets: Arc<crate::secrets::Secrets>,
    /// OAuth clients whose tokens the host attaches.
    pub(super) oauth: Arc<crate::sandbox::oauth::OAuthClients>,
    pub(super) denials: Arc<super::deny::Denials>,
    pub(super) options: SandboxOptions,
    /// Record or replay plugins' outbound HTTP (`weft plugin test`).
    pub(super) tape: Option<Arc<super::host::tape::Tape>>,
    /// The message brokers plugins publish through.
    pub(super) brokers: Arc<crate::messaging::Brokers>,
    _ticker: EpochTicker,
}

impl Sandbox {
    /// Build the engine with room for `max_instances` live plugin instances
    /// of at most `max_memory_mib` each.
    pub fn new(
        store: Arc<dyn Store>,
        max_instances: u32,
        max_memory_mib: u32,
    ) -> Result<Self, SandboxError> {
        Self::with_options(store, SandboxOptions::new(max_instances, max_memory_mib))
    }

    /// Build the engine as `options` say.
    pub fn with_options(
        store: Arc<dyn Store>,
        options: SandboxOptions,
    ) -> Result<Self, SandboxError> {
        let engine = build_engine(&options)
            .or_else(|e| {
                tracing::warn!("pooling allocator unavailable ({e}); using on-demand allocation");
                let mut config = base_config(&options);
                config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(|e| e.to_string())
            })
            .map_err(SandboxError::Engine)?;
        let mut linker = Linker::new(&engine);
        let engine_err = |e: wasmtime::Error| SandboxError::Engine(e.to_string());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(engine_err)?;
        bindings::transform::weft::plugin::log::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        bindings::transform::weft::plugin::kv::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        bindings::sink::weft::plugin::credentials::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        bindings::sink::weft::plugin::messaging::add_to_linker::<_, HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, ticker_stop) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("weft-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .map_err(|e| SandboxError::Engine(e.to_string()))?;
        Ok(Sandbox {
            engine,
            linker,
            client: HttpClient::new(),
            denials: Arc::new(super::deny::Denials::new(store.clone())),
            store,
            upstreams: Arc::default(),
            secrets: Arc::default(),
            oauth: Arc::default(),
            options,
            tape: None,
            brokers: Arc::default(),
            _ticker: EpochTicker(stop),
        })
    }

    /// Share these per-origin rate limits with every plugin call.
    pub fn with_upstreams(mut self, upstreams: Arc<crate::limit::UpstreamLimits>) -> Self {
        self.upstreams = upstreams;
        self
    }

    /// Make outbound TLS trust (and show) what `trust` says, per origin.
    pub fn with_trust(mut self, trust: Arc<super::OutboundTls>) -> Self {
        self.client = HttpClient::with_trust(trust);
        self
    }

    /// Attach these credentials for plugins whose grant names them.
    pub fn with_secrets(mut self, secrets: Arc<crate::secrets::Secrets>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Attach the tokens of these OAuth clients for plugins whose grant
    /// names them.
    pub fn with_oauth(mut self, oauth: Arc<crate::sandbox::oauth::OAuthClients>) -> Self {
        self.oauth = oauth;
        self
    }

    /// Publish through these brokers for plugins granted `messaging`.
    pub fn with_brokers(mut self, brokers: Arc<crate::messaging::Brokers>) -> Self {
        self.brokers = brokers;
        self
    }

    /// The message brokers (queue triggers consume through them too).
    pub fn brokers(&self) -> &Arc<crate::messaging::Brokers> {
        &self.brokers
    }

    /// The pooled outbound clients, for requests the host makes itself.
    pub fn http_client(&self) -> HttpClient {
        self.client.clone()
    }

    /// The OAuth clients.
    pub fn oauth(&self) -> &Arc<crate::sandbox::oauth::OAuthClients> {
        &self.oauth
    }

    /// Whether egress checks apply.
    pub fn guarded(&self) -> bool {
        self.options.guards
    }

    /// Record or replay every plugin call's outbound HTTP on `tape`.
    pub fn with_tape(mut self, tape: Arc<super::host::tape::Tape>) -> Self {
        self.tape = Some(tape);
        self
    }

    /// The credentials the host holds.
    pub fn secrets(&self) -> &Arc<crate::secrets::Secrets> {
        &self.secrets
    }

    /// Capability denials so far, by (plugin, capability).
    pub fn denial_counts(&self) -> std::collections::BTreeMap<(String, &'static str), u64> {
        self.denials.counts()
    }

    /// The per-origin rate limits.
    pub fn upstreams(&self) -> &Arc<crate::limit::UpstreamLimits> {
        &self.upstreams
    }

    /// Load one plugin file under `name` with `grant`, using (and filling)
    /// the compiled-code cache.
    pub fn load(
        &self,
        path: &Path,
        name: &str,
        grant: &Grant,
        cache: Option<&CodeCache>,
    ) -> Result<Plugin, SandboxError> {
        self.load_inner(path, name, grant, cache, true)
    }

    /// Load a plugin for inspection: like [`Sandbox::load`], but a sha256
    /// pin or an import the grant does not cover is not an error (the
    /// plugin's `mismatches` list them). Never run events through it.
    pub fn load_for_audit(
        &self,
        path: &Path,
        name: &str,
        grant: &Grant,
    ) -> Result<Plugin, SandboxError> {
        self.load_inner(path, name, grant, None, false)
    }

    fn load_inner(
        &self,
        path: &Path,
        name: &str,
        grant: &Grant,
        cache: Option<&CodeCache>,
        enforce: bool,
    ) -> Result<Plugin, SandboxError> {
        let bytes = std::fs::read(path).map_err(|e| SandboxError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let invalid = |reason: String| SandboxError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let refused = |reason: String| SandboxError::Refused {
            path: path.to_path_buf(),
            reason,
        };
        if enforce
            && let Some(pin) = &grant.sha256
            && !pin.eq_ignore_ascii_case(&sha256)
        {
            return Err(refused(format!(
                "its sha256 is {sha256} but grants.{name}.sha256 pins {pin}; if this file is the version you meant to deploy, update the pin"
            )));
        }
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
            return Err(invalid(
                "it is a core WebAssembly module, not a component; build it with `cargo build --target wasm32-wasip2`".into(),
            ));
        }
        let component = self
            .compile_cached(&bytes, &sha256, name, cache)
            .map_err(|e| invalid(format!("not a valid WebAssembly component: {e}")))?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let world = if exports.iter().any(|e| e == bindings::TRANSFORM_EXPORT) {
            World::Transform
        } else if exports.iter().any(|e| e == bindings::SINK_EXPORT) {
            World::Sink
        } else if exports.iter().any(|e| e == bindings::SOURCE_EXPORT) {
            World::Source
        } else if let Some(other) = exports.iter().find(|e| e.starts_with("weft:plugin/")) {
            return Err(invalid(format!(
                "it exports {other}, a weft:plugin version this host does not support (it supports 0.1.0); rebuild it against a matching weft-sdk"
            )));
        } else {
            return Err(invalid(format!(
                "it is not a weft plugin: it exports neither {} nor {} (exports: {})",
                bindings::TRANSFORM_EXPORT,
                bindings::SINK_EXPORT,
                if exports.is_empty() {
                    "none".to_string()
                } else {
                    exports.join(", ")
                }
            )));
        };
        let mismatches = super::caps::compare(name, &imports, grant);
        let missing: Vec<&str> = mismatches
            .iter()
            .filter(|m| m.kind == "requested-not-granted")
            .map(|m| m.message.as_str())
            .collect();
        if enforce && !missing.is_empty() {
            return Err(refused(missing.join("; ")));
        }
        if let Some(unknown) = imports
            .iter()
            .find(|i| super::caps::classify(i).0 == super::caps::Capability::Unknown)
        {
            return Err(invalid(format!(
                "it imports {unknown}, which weft does not provide; build it against weft-sdk for this host's weft:plugin version (0.1.0) and WASI 0.2"
            )));
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            invalid(format!(
                "it imports something the host does not provide: {e}"
            ))
        })?;
        let pre = match world {
            World::Transform => {
                Pre::Transform(TransformPre::new(instance_pre).map_err(|e| invalid(e.to_string()))?)
            }
            World::Source => Pre::Source(
                bindings::source::SourcePre::new(instance_pre)
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            World::Sink if exports.iter().any(|e| e == bindings::BATCH_SINK_EXPORT) => {
                Pre::BatchSink(
                    bindings::batch_sink::BatchSinkPre::new(instance_pre)
                        .map_err(|e| invalid(e.to_string()))?,
                )
            }
            World::Sink => {
                Pre::Sink(SinkPre::new(instance_pre).map_err(|e| invalid(e.to_string()))?)
            }
        };
        let origins = grant
            .http
            .iter()
            .map(|o| o.origin().cloned())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("bad http grant: {e}")))?;
        Ok(Plugin {
            name: name.to_string(),
            version: crate::config::version::version_part(name).map(str::to_string),
            path: path.to_path_buf(),
            sha256,
            world,
            imports,
            exports,
            size: bytes.len() as u64,
            mismatches,
            pre,
            limits: Limits {
                origins: Arc::new(origins),
                memory_bytes: grant.memory_mib as usize * 1024 * 1024,
                timeout: Duration::from_millis(grant.timeout_ms),
                kv_quota_bytes: grant.kv.map(|k| k.quota_kib * 1024),
                fuel: grant.fuel,
                output_bytes: grant.output_kib as usize * 1024,
                log_bytes: grant.log_kib as usize * 1024,
                response_bytes: grant.response_kib as usize * 1024,
                grant: Arc::new(grant.clone()),
            },
            stats: Default::default(),
            schema: std::sync::OnceLock::new(),
        })
    }

    /// The engine's compatibility hash: compiled code is cached under it,
    /// and code under another one is of no use to this host.
    pub fn code_hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.finish()
    }

    fn compile_cached(
        &self,
        bytes: &[u8],
        sha256: &str,
        name: &str,
        cache: Option<&CodeCache>,
    ) -> wasmtime::Result<Component> {
        let Some(cache) = cache else {
            return Component::new(&self.engine, bytes);
        };
        let engine_hash = self.code_hash();
        match cache.get(sha256, engine_hash) {
            Ok(code) => {
                // SAFETY: the code was compiled by this host from a .wasm with
                // this digest, and the entry's MAC (under a key outside the
                // cache) proves it was not changed since; wasmtime re-checks
                // the header.
                #[expect(unsafe_code, reason = "loading authenticated compiled code")]
                match unsafe { Component::deserialize(&self.engine, &code) } {
                    Ok(c) => return Ok(c),
                    Err(e) => tracing::warn!(
                        plugin = name,
                        "compiled-code cache entry could not be loaded ({e}); compiling again"
                    ),
                }
            }
            Err(Rejected::Missing) => {}
            Err(Rejected::Tampered(why)) => {
                tracing::error!(
                    plugin = name,
                    "compiled-code cache entry failed authentication and was not run: {why}; compiling again from the .wasm"
                );
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if let Ok(code) = component.serialize()
            && let Err(e) = cache.put(sha256, engine_hash, &code)
        {
            tracing::warn!(plugin = name, "could not cache compiled plugin code: {e}");
        }
        Ok(component)
    }
}

fn base_config(options: &SandboxOptions) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(options.guards);
    config.consume_fuel(options.fuel);
    config.max_wasm_stack(512 * 1024);
    config.async_stack_size(2 * 1024 * 1024);
    // A trap names source lines when the plugin carries debug info.
    config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    config
}

fn build_engine(options: &SandboxOptions) -> Result<Engine, String> {
    let mut pool = PoolingAllocationConfig::default();
    let instances = options.max_instances.max(8);
    pool.total_component_instances(instances);
    pool.total_core_instances(instances * 8);
    pool.max_core_instances_per_component(16);
    pool.total_memories(instances * 2);
    pool.max_memories_per_component(4);
    pool.total_tables(instances * 8);
    pool.max_tables_per_component(16);
    pool.total_stacks(instances);
    pool.max_memory_size(options.max_memory_mib as usize * 1024 * 1024);
    // Reset a slot by rewriting only the pages a call dirtied (found with
    // PAGEMAP_SCAN where the kernel has it) and keep up to 1 MiB of them
    // resident: a small call then costs no page faults, and a slot that grew
    // for one large event gives the rest back. (4 MiB measured no faster on
    // the lead workload and kept about 3.5 MiB per warm slot after large
    // events.)
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    pool.linear_memory_keep_resident(1024 * 1024);
    pool.table_keep_resident(64 * 1024);
    pool.decommit_batch_size(32);
    let mut config = base_config(options);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| e.to_string())
}
