//! One call path for every world: a fresh store with limits, instantiate,
//! configure, call, stop at the time limit, and a typed outcome with what
//! the call cost.

use super::bindings::transform::weft::plugin::types::PluginInfo;
use super::bindings::{WitError, WitEvent};
use super::deny::Denier;
use super::host::egress::{EgressHooks, traceparent_for};
use super::outcome::{check_output, finish};
use super::plugin::{Plugin, Pre};
use super::runtime::{EPOCH_TICK, Sandbox};
use super::state::{HostState, KvAccess, Limiter};
use super::types::{CallContext, CallCost, CallError, PollBatch, TransformOutput};
use crate::store::ErrorKind;
use std::sync::Arc;
use wasmtime::StoreLimitsBuilder;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

/// A call's result and what it cost.
pub type Called<T> = (Result<T, CallError>, CallCost);

/// What a call asks of a plugin, after it is configured.
#[derive(Clone, Copy)]
enum Ask<'a> {
    /// Its name, version and config schema (not configured first).
    Describe,
    /// Nothing more: configuring it was the point.
    Configure,
    /// Transform one event.
    Transform(&'a WitEvent),
    /// Deliver one event.
    Deliver(&'a WitEvent),
    /// Deliver several events: in one call when the sink exports
    /// `batch-deliverer`, else one after another on the same instance.
    DeliverBatch(&'a [WitEvent]),
    /// Poll once from a cursor.
    Poll(Option<&'a str>),
}

/// What a plugin gave back.
enum Reply {
    Described(PluginInfo),
    Configured,
    Events(TransformOutput),
    Receipt(String),
    Receipts(Vec<Result<String, WitError>>),
    Batch(PollBatch),
}

impl Reply {
    /// Bytes the plugin returned, against its output cap.
    fn size(&self) -> usize {
        match self {
            Reply::Described(_) | Reply::Configured => 0,
            Reply::Events(events) => events
                .iter()
                .map(|e| {
                    e.payload.len()
                        + e.key.len()
                        + e.headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>()
                })
                .sum(),
            Reply::Receipt(r) => r.len(),
            Reply::Receipts(rs) => rs
                .iter()
                .map(|r| match r {
                    Ok(r) => r.len(),
                    Err(e) => CallError::from(e.clone()).message.len(),
                })
                .sum(),
            Reply::Batch(b) => {
                b.events
                    .iter()
                    .map(|(k, p)| k.len() + p.len())
                    .sum::<usize>()
                    + b.next_cursor.as_ref().map_or(0, String::len)
            }
        }
    }
}

/// Instantiate, configure (unless only describing) and ask, on one world's
/// bindings; `$api` names its interface with `describe` and `configure`, and
/// the call body sees the instance as `$i`.
macro_rules! ask_world {
    ($pre:expr, $store:expr, $config:expr, $ask:expr, $api:ident, |$i:ident| $call:expr) => {{
        let $i = $pre.instantiate_async(&mut *$store).await?;
        if let Ask::Describe = $ask {
            return Ok(Ok(Reply::Described(
                $i.$api().call_describe(&mut *$store).await?,
            )));
        }
        if let Err(e) = $i.$api().call_configure(&mut *$store, $config).await? {
            return Ok(Err(e));
        }
        if let Ask::Configure = $ask {
            return Ok(Ok(Reply::Configured));
        }
        $call
    }};
}

async fn ask(
    pre: &Pre,
    store: &mut wasmtime::Store<HostState>,
    config: &str,
    what: Ask<'_>,
) -> wasmtime::Result<Result<Reply, WitError>> {
    match pre {
        Pre::Transform(pre) => ask_world!(pre, store, config, what, weft_plugin_transformer, |i| {
            let Ask::Transform(event) = what else {
                return Ok(Err(unreachable_ask()));
            };
            Ok(i.weft_plugin_transformer()
                .call_transform(&mut *store, event)
                .await?
                .map(Reply::Events))
        }),
        Pre::Sink(pre) => ask_world!(pre, store, config, what, weft_plugin_deliverer, |i| {
            let api = i.weft_plugin_deliverer();
            match what {
                Ask::Deliver(event) => Ok(api
                    .call_deliver(&mut *store, event)
                    .await?
                    .map(|r| Reply::Receipt(r.detail))),
                Ask::DeliverBatch(events) => {
                    let mut out = Vec::with_capacity(events.len());
                    for event in events {
                        out.push(
                            api.call_deliver(&mut *store, event)
                                .await?
                                .map(|r| r.detail),
                        );
                    }
                    Ok(Ok(Reply::Receipts(out)))
                }
                _ => Ok(Err(unreachable_ask())),
            }
        }),
        Pre::BatchSink(pre) => ask_world!(pre, store, config, what, weft_plugin_deliverer, |i| {
            match what {
                Ask::Deliver(event) => Ok(i
                    .weft_plugin_deliverer()
                    .call_deliver(&mut *store, event)
                    .await?
                    .map(|r| Reply::Receipt(r.detail))),
                Ask::DeliverBatch(events) => {
                    let out = i
                        .weft_plugin_batch_deliverer()
                        .call_deliver_batch(&mut *store, events)
                        .await?;
                    Ok(Ok(Reply::Receipts(
                        out.into_iter().map(|r| r.map(|r| r.detail)).collect(),
                    )))
                }
                _ => Ok(Err(unreachable_ask())),
            }
        }),
        Pre::Source(pre) => ask_world!(pre, store, config, what, weft_plugin_poller, |i| {
            let Ask::Poll(cursor) = what else {
                return Ok(Err(unreachable_ask()));
            };
            Ok(i.weft_plugin_poller()
                .call_poll(&mut *store, cursor)
                .await?
                .map(|b| {
                    Reply::Batch(PollBatch {
                        events: b.events.into_iter().map(|e| (e.key, e.payload)).collect(),
                        next_cursor: b.next_cursor,
                        more: b.more,
                    })
                }))
        }),
    }
}

/// The public calls check the world first, so a mismatch never gets here.
fn unreachable_ask() -> WitError {
    WitError::Fatal("the host asked a plugin for a call of another world".into())
}

impl Sandbox {
    /// The one call path: a fresh store, instantiate, configure, ask, with
    /// the plugin's time limit, output cap and cost accounting.
    async fn invoke(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        what: Ask<'_>,
    ) -> Called<Reply> {
        let mut store = self.new_store(plugin, Arc::new(ctx));
        let mut limit = plugin.limits.timeout;
        if let (Ask::DeliverBatch(events), Pre::Sink(_)) = (what, &plugin.pre) {
            // One call per event on this instance: each has the plugin's time.
            let calls = events.len().max(1) as u32;
            limit *= calls;
            if self.options.guards {
                store.set_epoch_deadline(epoch_ticks(plugin.limits.timeout) * u64::from(calls));
            }
        }
        let result = tokio::time::timeout(limit, ask(&plugin.pre, &mut store, config, what)).await;
        let result = finish(plugin, &mut store, result)
            .and_then(|reply| check_output(plugin, &store, reply.size()).map(|()| reply));
        (result, store.data().cost)
    }

    /// Run a transform step on one event.
    pub async fn transform(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        event: &WitEvent,
    ) -> Called<TransformOutput> {
        if !matches!(plugin.pre, Pre::Transform(_)) {
            return (
                Err(wrong_world(plugin, "a transform step")),
                CallCost::default(),
            );
        }
        match self
            .invoke(plugin, config, ctx, Ask::Transform(event))
            .await
        {
            (Ok(Reply::Events(events)), cost)
                if events.len() > plugin.limits.grant.max_events_out as usize =>
            {
                let message = format!(
                    "plugin {} returned {} events for one, more than its grant's max_events_out = {}; raise grants.{0}.max_events_out if the split is meant",
                    plugin.name,
                    events.len(),
                    plugin.limits.grant.max_events_out
                );
                (
                    Err(CallError::new(
                        crate::store::ErrorKind::InvalidInput,
                        message,
                    )),
                    cost,
                )
            }
            (Ok(Reply::Events(events)), cost) => (Ok(events), cost),
            (other, cost) => (other.and_then(unexpected), cost),
        }
    }

    /// Deliver one event through a sink; the receipt comes back masked.
    pub async fn deliver(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        event: &WitEvent,
    ) -> Called<String> {
        if !matches!(plugin.pre, Pre::Sink(_) | Pre::BatchSink(_)) {
            return (Err(wrong_world(plugin, "a sink")), CallCost::default());
        }
        match self.invoke(plugin, config, ctx, Ask::Deliver(event)).await {
            (Ok(Reply::Receipt(r)), cost) => (Ok(crate::redact::mask(&r).into_owned()), cost),
            (other, cost) => (other.and_then(unexpected), cost),
        }
    }

    /// Deliver several events through a sink, with one result per event in
    /// their order (receipts masked). A sink that exports `batch-deliverer`
    /// gets them in one call; any other sink gets them one after another on
    /// one instance, each call with the plugin's own time limit. When the
    /// call as a whole fails (a trap, a broken limit, the time limit), each
    /// event is delivered alone on a fresh instance, so one poison event
    /// never fails its neighbours; the cost is then the sum of those calls.
    pub async fn deliver_batch(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        events: &[WitEvent],
    ) -> (Vec<Result<String, CallError>>, CallCost) {
        if !matches!(plugin.pre, Pre::Sink(_) | Pre::BatchSink(_)) {
            let e = wrong_world(plugin, "a sink");
            return (vec![Err(e); events.len()], CallCost::default());
        }
        let masked = |r: String| crate::redact::mask(&r).into_owned();
        let (whole, mut cost) = self
            .invoke(plugin, config, ctx.clone(), Ask::DeliverBatch(events))
            .await;
        let failed = match whole {
            Ok(Reply::Receipts(results)) if results.len() == events.len() => {
                let results = results
                    .into_iter()
                    .map(|r| {
                        r.map(masked).map_err(|e| {
                            let mut e = CallError::from(e);
                            e.message = super::outcome::bounded_message(&e.message);
                            e
                        })
                    })
                    .collect();
                return (results, cost);
            }
            Ok(Reply::Receipts(results)) => CallError::new(
                ErrorKind::Fatal,
                format!(
                    "plugin {} returned {} results for a batch of {} events; deliver-batch must return one result per event, in order",
                    plugin.name,
                    results.len(),
                    events.len()
                ),
            ),
            Ok(_) => CallError::new(
                ErrorKind::Fatal,
                "the plugin answered a call of another world".into(),
            ),
            Err(e) => e,
        };
        // A trap or a broken limit (fatal) may be one event's doing; a time
        // limit or a refusal of the whole call concerns every event alike.
        if events.len() == 1 || failed.kind != ErrorKind::Fatal {
            return (vec![Err(failed); events.len()], cost);
        }
        tracing::warn!(plugin = %plugin.name, events = events.len(),
            "a batch call failed as a whole ({}); delivering its events one by one", failed.message);
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let (result, one) = self.deliver(plugin, config, ctx.clone(), event).await;
            cost.duration_us += one.duration_us;
            cost.fuel += one.fuel;
            cost.memory_bytes = cost.memory_bytes.max(one.memory_bytes);
            results.push(result);
        }
        (results, cost)
    }

    /// Poll a source once from `cursor`.
    pub async fn poll(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        cursor: Option<&str>,
    ) -> Result<PollBatch, CallError> {
        self.poll_once(plugin, config, ctx, cursor).await.0
    }

    /// [`Sandbox::poll`], with what the call cost.
    pub async fn poll_once(
        &self,
        plugin: &Plugin,
        config: &str,
        ctx: CallContext,
        cursor: Option<&str>,
    ) -> Called<PollBatch> {
        if !matches!(plugin.pre, Pre::Source(_)) {
            return (
                Err(wrong_world(plugin, "a poll trigger")),
                CallCost::default(),
            );
        }
        match self.invoke(plugin, config, ctx, Ask::Poll(cursor)).await {
            (Ok(Reply::Batch(batch)), cost) => (Ok(batch), cost),
            (other, cost) => (other.and_then(unexpected), cost),
        }
    }

    /// Ask a plugin for its name, version and config schema.
    pub async fn describe(&self, plugin: &Plugin) -> Result<(String, String, String), CallError> {
        let ctx = CallContext::background("-", &plugin.name);
        match self.invoke(plugin, "", ctx, Ask::Describe).await.0 {
            Ok(Reply::Described(i)) => Ok((i.name, i.version, i.config_schema)),
            other => other.and_then(unexpected),
        }
    }

    /// Instantiate and configure once, to check a step's config at start-up.
    pub async fn check_config(
        &self,
        plugin: &Plugin,
        config: &str,
        pipeline: &str,
    ) -> Result<(), CallError> {
        let ctx = CallContext::background(pipeline, &plugin.name);
        self.invoke(plugin, config, ctx, Ask::Configure)
            .await
            .0
            .map(|_| ())
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
}

/// Epoch ticks of a time limit (one more, so a call never stops early).
fn epoch_ticks(limit: std::time::Duration) -> u64 {
    (limit.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

/// A reply of another kind than the call asked for.
fn unexpected<T>(_: Reply) -> Result<T, CallError> {
    Err(CallError::new(
        ErrorKind::Fatal,
        "the plugin answered a call of another world".into(),
    ))
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

impl Sandbox {
    /// A fresh store for one call of `plugin`: WASI without files, sockets
    /// or environment, the egress hooks of its grant, its memory cap, its
    /// epoch deadline and, when metered, its fuel.
    pub(super) fn new_store(
        &self,
        plugin: &Plugin,
        ctx: Arc<CallContext>,
    ) -> wasmtime::Store<HostState> {
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
            // Versions of one plugin share its state.
            namespace.extend_from_slice(crate::config::version::base(&ctx.plugin).as_bytes());
            namespace.push(0);
            KvAccess {
                store: self.store.clone(),
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
                traceparent: traceparent_for(&ctx.correlation_id),
                guarded: guards,
                secrets: self.secrets.clone(),
                oauth: self.oauth.clone(),
                attachments: Default::default(),
                grant: limits.grant.clone(),
                response_cap: limits.response_bytes,
                tape: self.tape.clone(),
                brokers: self.brokers.clone(),
            },
            limits: Limiter {
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
            store.set_epoch_deadline(epoch_ticks(limits.timeout));
            store.epoch_deadline_trap();
        }
        if self.options.fuel {
            let _ = store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
        store
    }
}
