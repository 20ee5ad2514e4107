//! One plugin call: a fresh store with limits, instantiate, configure, run,
//! and a typed outcome the engine can act on.

use super::bindings::transform::weft::plugin::types as wit;
use super::bindings::{WitError, WitEvent};
use super::deny::Denier;
use super::egress::EgressHooks;
use super::plugin::{Plugin, Pre};
use super::runtime::{EPOCH_TICK, Sandbox};
use super::state::{HostState, KvAccess};
use crate::store::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimitsBuilder, Trap};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

/// Who is calling: used in every log line the plugin causes.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Pipeline name.
    pub pipeline: Arc<str>,
    /// Plugin name.
    pub plugin: Arc<str>,
    /// Event id.
    pub event_id: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Values of the event's redacted fields: masked in the plugin's log lines.
    pub redact: Arc<[String]>,
}

/// A failed call, classified for the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// What the engine does about it.
    pub kind: ErrorKind,
    /// What went wrong.
    pub message: String,
    /// For `rate-limited`: how long to wait.
    pub retry_after_ms: Option<u64>,
}

impl CallContext {
    /// A call made for no event (a config check, a describe, a poll).
    pub fn background(pipeline: &str, plugin: &str) -> Self {
        CallContext {
            pipeline: pipeline.into(),
            plugin: plugin.into(),
            event_id: "-".into(),
            correlation_id: "-".into(),
            ..Default::default()
        }
    }
}

impl CallError {
    fn new(kind: ErrorKind, message: String) -> Self {
        CallError {
            kind,
            message,
            retry_after_ms: None,
        }
    }
}

impl From<WitError> for CallError {
    fn from(e: WitError) -> Self {
        match e {
            wit::Error::Transient(m) => CallError::new(ErrorKind::Transient, m),
            wit::Error::RateLimited(r) => CallError {
                kind: ErrorKind::RateLimited,
                message: r.message,
                retry_after_ms: Some(r.retry_after_ms),
            },
            wit::Error::InvalidInput(m) => CallError::new(ErrorKind::InvalidInput, m),
            wit::Error::Fatal(m) => CallError::new(ErrorKind::Fatal, m),
        }
    }
}

/// What a transform returned.
pub type TransformOutput = Vec<WitEvent>;

/// What a poll found: (key, payload) per item, the next cursor, and
/// whether more is waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollBatch {
    /// Items, in order.
    pub events: Vec<(String, Vec<u8>)>,
    /// Where the next poll starts; `None` keeps the current cursor.
    pub next_cursor: Option<String>,
    /// Poll again at once.
    pub more: bool,
}

/// What one call cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallCost {
    /// Wall time, in microseconds.
    pub duration_us: u64,
    /// Fuel used (0 when fuel is not metered).
    pub fuel: u64,
    /// Largest linear memory the call asked for, in bytes.
    pub memory_bytes: u64,
}

impl Sandbox {
    fn new_store(&self, plugin: &Plugin, ctx: Arc<CallContext>) -> wasmtime::Store<HostState> {
        let limits = &plugin.limits;
        let guards = self.options.guards;
        let stdout = MemoryOutputPipe::new(limits.log_bytes);
        let stderr = MemoryOutputPipe::new(limits.log_bytes);
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        let kv = limits.kv_quota_bytes.map(|quota_bytes| {
            let mut namespace = Vec::with_capacity(ctx.pipeline.len() + ctx.plugin.len() + 2);
            namespace.extend_from_slice(ctx.pipeline.as_bytes());
            namespace.push(0);
            namespace.extend_from_slice(ctx.plugin.as_bytes());
            namespace.push(0);
            KvAccess {
                tree: self.store.kv_tree().clone(),
                db: self.store.db().clone(),
                namespace,
                quota_bytes,
            }
        });
        let memory = if guards {
            limits.memory_bytes
        } else {
            usize::MAX
        };
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: EgressHooks {
                origins: limits.origins.clone(),
                client: self.client.clone(),
                timeout: limits.timeout,
                denier: Denier {
                    ctx: ctx.clone(),
                    denials: self.denials.clone(),
                },
                upstreams: self.upstreams.clone(),
                traceparent: super::egress::traceparent_for(&ctx.correlation_id),
                guarded: guards,
                secrets: self.secrets.clone(),
                attachments: Default::default(),
                response_cap: limits.response_bytes,
            },
            limits: super::state::Limiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(memory)
                    .trap_on_grow_failure(true)
                    .build(),
                peak: 0,
            },
            ctx,
            grant: limits.grant.clone(),
            kv,
            log_left: limits.log_bytes,
            log_budget: limits.log_bytes,
            stdout,
            stderr,
            last_stderr: None,
            started: std::time::Instant::now(),
            cost: CallCost::default(),
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        if guards {
            let ticks = (limits.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
            store.set_epoch_deadline(ticks);
            store.epoch_deadline_trap();
        }
        if self.options.fuel {
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        store
    }

    /// Run a transform step on one event.
    pub async fn transform(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        event: &WitEvent,
    ) -> Result<TransformOutput, CallError> {
        self.transform_costed(plugin, config, ctx, event).await.0
    }

    /// [`Sandbox::transform`], with what the call cost.
    pub async fn transform_costed(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        event: &WitEvent,
    ) -> (Result<TransformOutput, CallError>, CallCost) {
        let Pre::Transform(pre) = &plugin.pre else {
            return (
                Err(wrong_world(plugin, "a transform step")),
                CallCost::default(),
            );
        };
        let mut store = self.new_store(plugin, Arc::new(ctx));
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let api = instance.weft_plugin_transformer();
            if let Err(e) = api.call_configure(&mut store, config).await? {
                return Ok(Err(e));
            }
            api.call_transform(&mut store, event).await
        };
        let result = tokio::time::timeout(plugin.limits.timeout, run).await;
        let result = finish(plugin, &mut store, result).and_then(|events| {
            let size: usize = events
                .iter()
                .map(|e| {
                    e.payload.len()
                        + e.key.len()
                        + e.headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>()
                })
                .sum();
            check_output(plugin, &store, size).map(|()| events)
        });
        (result, store.data().cost)
    }

    /// Deliver one event through a sink.
    pub async fn deliver(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        event: &WitEvent,
    ) -> Result<String, CallError> {
        self.deliver_costed(plugin, config, ctx, event).await.0
    }

    /// [`Sandbox::deliver`], with what the call cost.
    pub async fn deliver_costed(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        event: &WitEvent,
    ) -> (Result<String, CallError>, CallCost) {
        let Pre::Sink(pre) = &plugin.pre else {
            return (Err(wrong_world(plugin, "a sink")), CallCost::default());
        };
        let mut store = self.new_store(plugin, Arc::new(ctx));
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let api = instance.weft_plugin_deliverer();
            if let Err(e) = api.call_configure(&mut store, config).await? {
                return Ok(Err(e));
            }
            api.call_deliver(&mut store, event)
                .await
                .map(|r| r.map(|receipt| receipt.detail))
        };
        let result = tokio::time::timeout(plugin.limits.timeout, run).await;
        let result = finish(plugin, &mut store, result).and_then(|receipt| {
            check_output(plugin, &store, receipt.len())?;
            Ok(crate::redact::mask(&receipt).into_owned())
        });
        (result, store.data().cost)
    }

    /// Poll a source once from `cursor`.
    pub async fn poll(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        cursor: Option<&str>,
    ) -> Result<PollBatch, CallError> {
        let Pre::Source(pre) = &plugin.pre else {
            return Err(wrong_world(plugin, "a poll trigger"));
        };
        let mut store = self.new_store(plugin, Arc::new(ctx));
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let api = instance.weft_plugin_poller();
            if let Err(e) = api.call_configure(&mut store, config).await? {
                return Ok(Err(e));
            }
            api.call_poll(&mut store, cursor).await
        };
        let result = tokio::time::timeout(plugin.limits.timeout, run).await;
        let batch = finish(plugin, &mut store, result)?;
        let size: usize = batch
            .events
            .iter()
            .map(|e| e.key.len() + e.payload.len())
            .sum::<usize>()
            + batch.next_cursor.as_ref().map_or(0, String::len);
        check_output(plugin, &store, size)?;
        Ok(PollBatch {
            events: batch
                .events
                .into_iter()
                .map(|e| (e.key, e.payload))
                .collect(),
            next_cursor: batch.next_cursor,
            more: batch.more,
        })
    }

    /// Configure one instance and run `calls` transforms on it; returns the
    /// mean time per transform. For benchmarks: it measures the plugin's own
    /// code without the cost of a fresh instance.
    pub async fn time_warm_transform(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        event: &WitEvent,
        calls: u32,
    ) -> Result<std::time::Duration, CallError> {
        let Pre::Transform(pre) = &plugin.pre else {
            return Err(wrong_world(plugin, "a transform step"));
        };
        let mut store = self.new_store(plugin, Arc::new(ctx));
        // A long deadline: this runs many calls on one instance.
        store.set_epoch_deadline(u64::MAX / 2);
        let run = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let api = instance.weft_plugin_transformer();
            if let Err(e) = api.call_configure(&mut store, config).await? {
                return Ok(Err(e));
            }
            let started = std::time::Instant::now();
            for _ in 0..calls {
                if let Err(e) = api.call_transform(&mut store, event).await? {
                    return Ok(Err(e));
                }
            }
            Ok(Ok(started.elapsed() / calls.max(1)))
        };
        let result = run.await;
        finish(plugin, &mut store, Ok(result))
    }

    /// Ask a plugin for its name, version and config schema.
    pub async fn describe(&self, plugin: &Plugin) -> Result<(String, String, String), CallError> {
        let ctx = CallContext::background("-", &plugin.name);
        let mut store = self.new_store(plugin, Arc::new(ctx));
        let run = async {
            let info = match &plugin.pre {
                Pre::Transform(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance
                        .weft_plugin_transformer()
                        .call_describe(&mut store)
                        .await?
                }
                Pre::Sink(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance
                        .weft_plugin_deliverer()
                        .call_describe(&mut store)
                        .await?
                }
                Pre::Source(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance
                        .weft_plugin_poller()
                        .call_describe(&mut store)
                        .await?
                }
            };
            Ok(Ok((info.name, info.version, info.config_schema)))
        };
        let result = tokio::time::timeout(plugin.limits.timeout, run).await;
        finish(plugin, &mut store, result)
    }

    /// Instantiate and configure once, to check a step's config at start-up.
    pub async fn check_config(
        &self,
        plugin: &Plugin,
        config: &str,
        pipeline: &str,
    ) -> Result<(), CallError> {
        let ctx = CallContext::background(pipeline, &plugin.name);
        let mut store = self.new_store(plugin, Arc::new(ctx));
        let run = async {
            match &plugin.pre {
                Pre::Transform(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance
                        .weft_plugin_transformer()
                        .call_configure(&mut store, config)
                        .await
                }
                Pre::Sink(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance
                        .weft_plugin_deliverer()
                        .call_configure(&mut store, config)
                        .await
                }
                Pre::Source(pre) => {
                    let instance = pre.instantiate_async(&mut store).await?;
                    instance
                        .weft_plugin_poller()
                        .call_configure(&mut store, config)
                        .await
                }
            }
        };
        let result = tokio::time::timeout(plugin.limits.timeout, run).await;
        finish(plugin, &mut store, result)
    }
}

fn wrong_world(plugin: &Plugin, role: &str) -> CallError {
    CallError::new(
        ErrorKind::Fatal,
        format!(
            "plugin {} implements {} and cannot be used as {role}",
            plugin.name, plugin.world
        ),
    )
}

type Timed<T> = Result<wasmtime::Result<Result<T, WitError>>, tokio::time::error::Elapsed>;

fn finish<T>(
    plugin: &Plugin,
    store: &mut wasmtime::Store<HostState>,
    result: Timed<T>,
) -> Result<T, CallError> {
    let outcome = finish_inner(plugin, store, result);
    let stats = &plugin.stats;
    stats.calls.fetch_add(1, Relaxed);
    if outcome.is_err() {
        stats.failures.fetch_add(1, Relaxed);
    }
    let elapsed = store.data().started.elapsed();
    stats.duration.observe(elapsed);
    let memory = store.data().limits.peak as u64;
    stats.memory_peak.fetch_max(memory, Relaxed);
    let fuel = match store.get_fuel() {
        Ok(left) => plugin.limits.fuel.unwrap_or(u64::MAX).saturating_sub(left),
        Err(_) => 0,
    };
    stats.fuel.fetch_add(fuel, Relaxed);
    store.data_mut().cost = CallCost {
        duration_us: elapsed.as_micros() as u64,
        fuel,
        memory_bytes: memory,
    };
    outcome
}

fn finish_inner<T>(
    plugin: &Plugin,
    store: &mut wasmtime::Store<HostState>,
    result: Timed<T>,
) -> Result<T, CallError> {
    let stdio = store.data_mut().drain_stdio();
    let timeout_ms = plugin.limits.timeout.as_millis();
    let broke = |store: &wasmtime::Store<HostState>, e: CallError| {
        store.data().hooks.denier.limit(&e.message);
        Err(e)
    };
    if let Err(over) = stdio {
        return broke(store, CallError::new(ErrorKind::Fatal, over.0));
    }
    match result {
        Err(_) => broke(
            store,
            CallError::new(
                ErrorKind::Transient,
                format!(
                    "plugin {} did not finish within its {timeout_ms} ms time limit",
                    plugin.name
                ),
            ),
        ),
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(e))) => {
            let mut e = CallError::from(e);
            e.message = bounded_message(&e.message);
            Err(e)
        }
        Ok(Err(trap)) => {
            let (e, limit) = classify_trap(plugin, trap, store.data().last_stderr.as_deref());
            if limit { broke(store, e) } else { Err(e) }
        }
    }
}

/// Longest error message kept from a plugin, in bytes.
pub const MAX_ERROR_MESSAGE: usize = 4096;

/// A plugin's error message, masked and cut to [`MAX_ERROR_MESSAGE`].
fn bounded_message(m: &str) -> String {
    let mut m = crate::redact::mask(m).into_owned();
    if m.len() > MAX_ERROR_MESSAGE {
        let mut cut = MAX_ERROR_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str(" …(cut)");
    }
    m
}

fn check_output(
    plugin: &Plugin,
    store: &wasmtime::Store<HostState>,
    size: usize,
) -> Result<(), CallError> {
    if size > plugin.limits.output_bytes {
        let message = format!(
            "plugin {} returned {size} bytes, over its output cap of {} KiB; the output was dropped",
            plugin.name,
            plugin.limits.output_bytes / 1024
        );
        tracing::warn!(plugin = %plugin.name, "{message}");
        store.data().hooks.denier.limit(&message);
        return Err(CallError::new(ErrorKind::Fatal, message));
    }
    Ok(())
}

/// The error of a trapped call, and whether it broke one of the plugin's limits.
fn classify_trap(
    plugin: &Plugin,
    e: wasmtime::Error,
    last_stderr: Option<&str>,
) -> (CallError, bool) {
    let name = &plugin.name;
    let text = format!("{e:#}");
    if let Some(over) = e.downcast_ref::<super::state::LimitExceeded>() {
        return (CallError::new(ErrorKind::Fatal, over.0.clone()), true);
    }
    let limit = |e: CallError| (e, true);
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => limit(CallError::new(
            ErrorKind::Transient,
            format!(
                "plugin {name} ran past its {} ms time limit and was stopped",
                plugin.limits.timeout.as_millis()
            ),
        )),
        Some(Trap::OutOfFuel) => limit(CallError::new(
            ErrorKind::Fatal,
            format!(
                "plugin {name} used up its fuel budget of {} and was stopped",
                plugin.limits.fuel.unwrap_or(0)
            ),
        )),
        Some(Trap::StackOverflow) => limit(CallError::new(
            ErrorKind::Fatal,
            format!("plugin {name} overflowed its stack and was stopped"),
        )),
        // A Rust plugin keeps its stack in linear memory: deep recursion runs
        // off the bottom of it.
        Some(Trap::MemoryOutOfBounds) => limit(CallError::new(
            ErrorKind::Fatal,
            format!(
                "plugin {name} accessed memory out of bounds (usually a stack overflow from deep recursion) and was stopped"
            ),
        )),
        _ if text.contains("growing memory") => limit(CallError::new(
            ErrorKind::Fatal,
            format!(
                "plugin {name} tried to use more than its memory cap of {} MiB and was stopped",
                plugin.limits.memory_bytes / (1024 * 1024)
            ),
        )),
        _ => {
            let cause = e.root_cause().to_string();
            let said = last_stderr
                .map(|l| format!("; it said: {}", bounded_message(l)))
                .unwrap_or_default();
            (
                CallError::new(
                    ErrorKind::Fatal,
                    format!("plugin {name} crashed ({}){said}", bounded_message(&cause)),
                ),
                false,
            )
        }
    }
}
