//! Write weft plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. Every
//! plugin implements [`Plugin`] (its config type, what it says about itself,
//! and how it is built from its config) and one world trait: [`Transform`]
//! (events in, events out), [`Sink`] (deliver an event) or [`Source`] (poll
//! for new items). Then [`export!`] it, once per crate. The host hands the
//! plugin its configuration (parsed into your `Config` type with serde) once
//! per instance, then events.
//!
//! # A transform
//!
//! ```
//! use serde::Deserialize;
//! use weft_sdk::{Event, Plugin, PluginInfo, Result, Transform};
//!
//! #[derive(Deserialize)]
//! #[serde(deny_unknown_fields)]
//! pub struct Config {
//!     /// Field to stamp on every event.
//!     tag: String,
//! }
//!
//! pub struct Tagger(Config);
//!
//! impl Plugin for Tagger {
//!     type Config = Config;
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("tagger", "0.1.0")
//!     }
//!     fn new(config: Config) -> Result<Self> {
//!         Ok(Tagger(config))
//!     }
//! }
//!
//! impl Transform for Tagger {
//!     fn transform(&mut self, mut event: Event) -> Result<Vec<Event>> {
//!         let mut body = event.json()?;
//!         body["tag"] = self.0.tag.clone().into();
//!         event.set_json(&body)?;
//!         Ok(vec![event])
//!     }
//! }
//!
//! weft_sdk::export!(transform: Tagger);
//! ```
//!
//! # A sink
//!
//! ```
//! use serde::Deserialize;
//! use weft_sdk::{http, Error, Event, Plugin, PluginInfo, Receipt, Result, Sink};
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     url: String,
//! }
//!
//! pub struct Poster(Config);
//!
//! impl Plugin for Poster {
//!     type Config = Config;
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("poster", "0.1.0")
//!     }
//!     fn new(config: Config) -> Result<Self> {
//!         Ok(Poster(config))
//!     }
//! }
//!
//! impl Sink for Poster {
//!     fn deliver(&mut self, event: &Event) -> Result<Receipt> {
//!         let resp = http::Request::post(&self.0.url)
//!             .header("idempotency-key", &event.key)
//!             .json_body(event.payload.clone())
//!             .send()?;
//!         match resp.status {
//!             200..=299 => Ok(Receipt::new(format!("HTTP {}", resp.status))),
//!             500..=599 => Err(Error::transient(format!("HTTP {}", resp.status))),
//!             s => Err(Error::fatal(format!("HTTP {s}"))),
//!         }
//!     }
//! }
//!
//! weft_sdk::export!(sink: Poster);
//! ```
//!
//! # A source
//!
//! ```
//! use serde::Deserialize;
//! use weft_sdk::{http, Batch, Emitted, Plugin, PluginInfo, Result, Source};
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     url: String,
//! }
//!
//! pub struct Feed(Config);
//!
//! impl Plugin for Feed {
//!     type Config = Config;
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("feed", "0.1.0")
//!     }
//!     fn new(config: Config) -> Result<Self> {
//!         Ok(Feed(config))
//!     }
//! }
//!
//! impl Source for Feed {
//!     fn poll(&mut self, cursor: Option<String>) -> Result<Batch> {
//!         let since = cursor.unwrap_or_default();
//!         let resp = http::Request::get(format!("{}?since={since}", self.0.url)).send()?;
//!         let items: Vec<serde_json::Value> =
//!             serde_json::from_slice(&resp.body).unwrap_or_default();
//!         let next = items.last().and_then(|i| i["id"].as_str()).map(str::to_string);
//!         Ok(Batch {
//!             events: items
//!                 .iter()
//!                 .map(|i| Emitted {
//!                     key: i["id"].to_string(),
//!                     payload: i.to_string().into_bytes(),
//!                 })
//!                 .collect(),
//!             next_cursor: next,
//!             more: false,
//!         })
//!     }
//! }
//!
//! weft_sdk::export!(source: Feed);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` and copy the
//! `.wasm` file into the host's plugin directory. Outside wasm the log and kv
//! helpers work against stderr and an in-memory map, so plugin logic can be
//! unit-tested with a plain `cargo test`.

extern crate self as weft_sdk;

#[doc(hidden)]
pub mod bindings;
pub mod credentials;
mod error;
mod event;
pub mod http;
pub mod kv;
pub mod log;
pub mod messaging;

pub use error::{Error, Result};
pub use event::Event;

use serde::de::DeserializeOwned;

/// What a plugin says about itself: name, version and config schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Short name, e.g. `json-map`.
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    /// JSON Schema of the configuration, as a JSON document.
    pub config_schema: String,
}

impl PluginInfo {
    /// Name and version, with a permissive config schema.
    pub fn new(name: &str, version: &str) -> Self {
        PluginInfo {
            name: name.to_string(),
            version: version.to_string(),
            config_schema: "{}".to_string(),
        }
    }
    /// Attach the JSON Schema of the configuration.
    pub fn config_schema(mut self, schema: &str) -> Self {
        self.config_schema = schema.to_string();
        self
    }
}

/// Proof of a delivery, kept in the event's run history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Human-readable outcome, e.g. `HTTP 201`.
    pub detail: String,
}

impl Receipt {
    /// A receipt with the given detail.
    pub fn new(detail: impl Into<String>) -> Self {
        Receipt {
            detail: detail.into(),
        }
    }
}

/// What every plugin is, whatever its world: a config type, a
/// self-description, and a constructor from the config. The world traits
/// ([`Transform`], [`Sink`], [`Source`]) add what it does with events.
pub trait Plugin: Sized + 'static {
    /// Its `config` table from `weft.toml`, deserialised with serde.
    type Config: DeserializeOwned;
    /// Name, version and config schema.
    fn describe() -> PluginInfo;
    /// Build the plugin from its configuration; an error here is `fatal`.
    fn new(config: Self::Config) -> Result<Self>;
}

/// A transform plugin: one event in, zero (filter), one (map) or many (split) out.
pub trait Transform: Plugin {
    /// Handle one event.
    fn transform(&mut self, event: Event) -> Result<Vec<Event>>;
}

/// A sink plugin: delivers one event to an outside system.
pub trait Sink: Plugin {
    /// Deliver one event.
    fn deliver(&mut self, event: &Event) -> Result<Receipt>;

    /// Deliver several events together (when the operator sets `batch` on
    /// the sink and the plugin is exported with `export!(batch_sink: …)`):
    /// one result per event, in order, so one refused event never fails
    /// its neighbours. By default each event is delivered alone; override
    /// it to send one request to a bulk API.
    fn deliver_batch(&mut self, events: &[Event]) -> Vec<Result<Receipt>> {
        events.iter().map(|e| self.deliver(e)).collect()
    }
}

/// One item a source found: its idempotency key and its JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// The same key is accepted only once (e.g. `id:updated_at`).
    pub key: String,
    /// The event body.
    pub payload: Vec<u8>,
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// Items, in order.
    pub events: Vec<Emitted>,
    /// Where the next poll starts; `None` keeps the current cursor. The host
    /// stores it together with the events, in one transaction.
    pub next_cursor: Option<String>,
    /// More is waiting (a next page): the host polls again at once.
    pub more: bool,
}

/// A source plugin: pulls new items from a system that has no webhooks.
pub trait Source: Plugin {
    /// Fetch what is new since `cursor` (`None` on the very first poll).
    fn poll(&mut self, cursor: Option<String>) -> Result<Batch>;
}

/// A plugin that says, before it runs, which URLs a config will make it
/// call: exported with `export!(plan: …)` after its world's `export!`,
/// `weft check`, `weft audit` and the host's start hold them against the
/// plugin's grant, so a URL outside it is found before any event is lost
/// to a denied request.
pub trait Plan: Plugin {
    /// The URLs (or `scheme://host[:port]` origins) this config will make
    /// the plugin call.
    fn plan(config: &Self::Config) -> Vec<String>;
}

/// Parse a plugin's JSON configuration, with an error that names the plugin.
pub fn parse_config<C: DeserializeOwned>(plugin: &str, config: &str) -> Result<C> {
    serde_json::from_str(config)
        .map_err(|e| Error::Fatal(format!("invalid config for plugin {plugin}: {e}")))
}

#[doc(hidden)]
pub mod __private {
    //! Glue used by the export macros; not part of the API.
    use super::*;
    use crate::bindings::transform::weft::plugin::types as wit;
    use std::cell::RefCell;

    pub use crate::bindings;
    pub use crate::bindings::plans::exports::weft::plugin::planner::Guest as PlanGuest;
    pub use crate::bindings::sink::exports::weft::plugin::deliverer::Guest as SinkGuest;
    pub use crate::bindings::sink_batches::exports::weft::plugin::batch_deliverer::Guest as BatchSinkGuest;
    pub use crate::bindings::source::exports::weft::plugin::poller::{
        Batch as WitBatch, Emitted as WitEmitted, Guest as SourceGuest,
    };
    pub use crate::bindings::transform::exports::weft::plugin::transformer::Guest as TransformGuest;
    pub use wit::{
        Error as WitError, Event as WitEvent, PluginInfo as WitPluginInfo, Receipt as WitReceipt,
    };
    pub use wit_bindgen;

    fn not_configured() -> WitError {
        WitError::Fatal("the host called the plugin before `configure`".to_string())
    }

    /// The one plugin instance of this component.
    pub type Slot<T> = std::thread::LocalKey<RefCell<Option<T>>>;

    /// `planner.plan`: the config parsed as the plugin parses it, then planned.
    pub fn plan<T: Plan>(config: String) -> Result<Vec<String>, String> {
        parse_config::<T::Config>(&T::describe().name, &config)
            .map(|c| T::plan(&c))
            .map_err(|e| match e {
                Error::Fatal(m) | Error::Transient(m) | Error::InvalidInput(m) => m,
                Error::RateLimited { message, .. } => message,
            })
    }

    /// Build the plugin from the host's config text.
    pub fn configure<T: Plugin>(slot: &'static Slot<T>, config: String) -> Result<(), WitError> {
        let config = parse_config(&T::describe().name, &config)?;
        let plugin = T::new(config)?;
        slot.with(|s| *s.borrow_mut() = Some(plugin));
        Ok(())
    }

    /// Run `f` on the configured plugin.
    pub fn with_plugin<T, R>(
        slot: &'static Slot<T>,
        f: impl FnOnce(&mut T) -> Result<R, WitError>,
    ) -> Result<R, WitError> {
        slot.with(|s| {
            let mut s = s.borrow_mut();
            f(s.as_mut().ok_or_else(not_configured)?)
        })
    }

    /// `transformer.transform`
    pub fn transform<T: Transform>(p: &mut T, event: WitEvent) -> Result<Vec<WitEvent>, WitError> {
        let out = p.transform(event.into())?;
        Ok(out.into_iter().map(Into::into).collect())
    }

    /// `deliverer.deliver`
    pub fn deliver<T: Sink>(p: &mut T, event: WitEvent) -> Result<WitReceipt, WitError> {
        let receipt = p.deliver(&event.into())?;
        Ok(WitReceipt {
            detail: receipt.detail,
        })
    }

    /// `batch-deliverer.deliver-batch`
    pub fn deliver_batch<T: Sink>(
        p: &mut T,
        events: Vec<WitEvent>,
    ) -> Vec<Result<WitReceipt, WitError>> {
        let events: Vec<Event> = events.into_iter().map(Into::into).collect();
        p.deliver_batch(&events)
            .into_iter()
            .map(|r| {
                r.map(|r| WitReceipt { detail: r.detail })
                    .map_err(Into::into)
            })
            .collect()
    }

    /// A batch call before `configure`: every event fails alike.
    pub fn unconfigured_batch(events: usize) -> Vec<Result<WitReceipt, WitError>> {
        (0..events).map(|_| Err(not_configured())).collect()
    }

    /// `poller.poll`
    pub fn poll<T: Source>(p: &mut T, cursor: Option<String>) -> Result<WitBatch, WitError> {
        let batch = p.poll(cursor)?;
        Ok(WitBatch {
            events: batch
                .events
                .into_iter()
                .map(|e| WitEmitted {
                    key: e.key,
                    payload: e.payload,
                })
                .collect(),
            next_cursor: batch.next_cursor,
            more: batch.more,
        })
    }
}

/// Export a plugin as its world, once per plugin crate:
/// `weft_sdk::export!(transform: MyTransform)`, `export!(sink: MySink)`,
/// `export!(batch_sink: MySink)` (a sink that also takes batches in one
/// call, through [`Sink::deliver_batch`]) or `export!(source: MySource)`;
/// then, optionally, `export!(plan: MyPlugin)` for a plugin that
/// implements [`Plan`].
#[macro_export]
macro_rules! export {
    (transform: $plugin:ty) => {
        $crate::__export_world!(
            $plugin,
            TransformGuest,
            transform,
            __weft_export_transform_world,
            fn transform(
                event: $crate::__private::WitEvent,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::__private::WitEvent>,
                $crate::__private::WitError,
            > {
                $crate::__private::with_plugin(&__WEFT_PLUGIN, |p: &mut $plugin| {
                    $crate::__private::transform(p, event)
                })
            }
        );
    };
    (sink: $plugin:ty) => {
        $crate::__export_world!(
            $plugin,
            SinkGuest,
            sink,
            __weft_export_sink_world,
            fn deliver(
                event: $crate::__private::WitEvent,
            ) -> ::core::result::Result<$crate::__private::WitReceipt, $crate::__private::WitError>
            {
                $crate::__private::with_plugin(&__WEFT_PLUGIN, |p: &mut $plugin| {
                    $crate::__private::deliver(p, event)
                })
            }
        );
    };
    (batch_sink: $plugin:ty) => {
        $crate::export!(sink: $plugin);

        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::sink_batches::__weft_export_sink_batches_world!(__WeftExport);

        impl $crate::__private::BatchSinkGuest for __WeftExport {
            fn deliver_batch(
                events: ::std::vec::Vec<$crate::__private::WitEvent>,
            ) -> ::std::vec::Vec<
                ::core::result::Result<$crate::__private::WitReceipt, $crate::__private::WitError>,
            > {
                let n = events.len();
                __WEFT_PLUGIN.with(|s| match s.borrow_mut().as_mut() {
                    ::core::option::Option::Some(p) => {
                        $crate::__private::deliver_batch::<$plugin>(p, events)
                    }
                    ::core::option::Option::None => $crate::__private::unconfigured_batch(n),
                })
            }
        }
    };
    (plan: $plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::plans::__weft_export_plans_world!(__WeftExport);

        impl $crate::__private::PlanGuest for __WeftExport {
            fn plan(
                config: ::std::string::String,
            ) -> ::core::result::Result<
                ::std::vec::Vec<::std::string::String>,
                ::std::string::String,
            > {
                $crate::__private::plan::<$plugin>(config)
            }
        }
    };
    (source: $plugin:ty) => {
        $crate::__export_world!(
            $plugin,
            SourceGuest,
            source,
            __weft_export_source_world,
            fn poll(
                cursor: ::core::option::Option<::std::string::String>,
            ) -> ::core::result::Result<$crate::__private::WitBatch, $crate::__private::WitError>
            {
                $crate::__private::with_plugin(&__WEFT_PLUGIN, |p: &mut $plugin| {
                    $crate::__private::poll(p, cursor)
                })
            }
        );
    };
}

/// What every world's export shares: the plugin's slot, `describe`,
/// `configure`, and the world's own call.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_world {
    ($plugin:ty, $guest:ident, $world:ident, $export:ident, $($call:tt)*) => {
        #[doc(hidden)]
        pub struct __WeftExport;

        ::std::thread_local! {
            static __WEFT_PLUGIN: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        impl $crate::__private::$guest for __WeftExport {
            fn describe() -> $crate::__private::WitPluginInfo {
                <$plugin as $crate::Plugin>::describe().into()
            }
            fn configure(
                config: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                $crate::__private::configure::<$plugin>(&__WEFT_PLUGIN, config)
            }
            $($call)*
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::$world::$export!(__WeftExport);
    };
}
