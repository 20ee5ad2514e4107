//! Write weft plugins in Rust.
//!
//! A plugin is a WebAssembly component built for `wasm32-wasip2`. Add this
//! crate, implement [`Transform`] or [`Sink`] for a type, and call the matching
//! export macro once. The host hands the plugin its configuration (parsed
//! into your `Config` type with serde) once per instance, then events.
//!
//! # A transform
//!
//! ```
//! use serde::Deserialize;
//! use weft_sdk::{Event, PluginInfo, Result, Transform};
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
//! impl Transform for Tagger {
//!     type Config = Config;
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("tagger", "0.1.0")
//!     }
//!     fn new(config: Config) -> Result<Self> {
//!         Ok(Tagger(config))
//!     }
//!     fn transform(&mut self, mut event: Event) -> Result<Vec<Event>> {
//!         let mut body = event.json()?;
//!         body["tag"] = self.0.tag.clone().into();
//!         event.set_json(&body)?;
//!         Ok(vec![event])
//!     }
//! }
//!
//! weft_sdk::export_transform!(Tagger);
//! ```
//!
//! # A sink
//!
//! ```
//! use serde::Deserialize;
//! use weft_sdk::{http, Error, Event, PluginInfo, Receipt, Result, Sink};
//!
//! #[derive(Deserialize)]
//! pub struct Config {
//!     url: String,
//! }
//!
//! pub struct Poster(Config);
//!
//! impl Sink for Poster {
//!     type Config = Config;
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("poster", "0.1.0")
//!     }
//!     fn new(config: Config) -> Result<Self> {
//!         Ok(Poster(config))
//!     }
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
//! weft_sdk::export_sink!(Poster);
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

/// A transform plugin: one event in, zero (filter), one (map) or many (split) out.
pub trait Transform: Sized + 'static {
    /// The step's `config` table from `weft.toml`, deserialised with serde.
    type Config: DeserializeOwned;
    /// Name, version and config schema.
    fn describe() -> PluginInfo;
    /// Build the plugin from its configuration; an error here is `fatal`.
    fn new(config: Self::Config) -> Result<Self>;
    /// Handle one event.
    fn transform(&mut self, event: Event) -> Result<Vec<Event>>;
}

/// A sink plugin: delivers one event to an outside system.
pub trait Sink: Sized + 'static {
    /// The sink's `config` table from `weft.toml`, deserialised with serde.
    type Config: DeserializeOwned;
    /// Name, version and config schema.
    fn describe() -> PluginInfo;
    /// Build the plugin from its configuration; an error here is `fatal`.
    fn new(config: Self::Config) -> Result<Self>;
    /// Deliver one event.
    fn deliver(&mut self, event: &Event) -> Result<Receipt>;
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
pub trait Source: Sized + 'static {
    /// The trigger's `config` table from `weft.toml`, deserialised with serde.
    type Config: DeserializeOwned;
    /// Name, version and config schema.
    fn describe() -> PluginInfo;
    /// Build the plugin from its configuration; an error here is `fatal`.
    fn new(config: Self::Config) -> Result<Self>;
    /// Fetch what is new since `cursor` (`None` on the very first poll).
    fn poll(&mut self, cursor: Option<String>) -> Result<Batch>;
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
    pub use crate::bindings::sink::exports::weft::plugin::deliverer::Guest as SinkGuest;
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

    pub fn configure_transform<T: Transform>(
        slot: &RefCell<Option<T>>,
        config: String,
    ) -> std::result::Result<(), WitError> {
        let config = parse_config(&T::describe().name, &config)?;
        *slot.borrow_mut() = Some(T::new(config)?);
        Ok(())
    }

    pub fn run_transform<T: Transform>(
        slot: &RefCell<Option<T>>,
        event: WitEvent,
    ) -> std::result::Result<Vec<WitEvent>, WitError> {
        let mut slot = slot.borrow_mut();
        let plugin = slot.as_mut().ok_or_else(not_configured)?;
        let out = plugin.transform(event.into())?;
        Ok(out.into_iter().map(Into::into).collect())
    }

    pub fn configure_sink<T: Sink>(
        slot: &RefCell<Option<T>>,
        config: String,
    ) -> std::result::Result<(), WitError> {
        let config = parse_config(&T::describe().name, &config)?;
        *slot.borrow_mut() = Some(T::new(config)?);
        Ok(())
    }

    pub fn configure_source<T: Source>(
        slot: &RefCell<Option<T>>,
        config: String,
    ) -> std::result::Result<(), WitError> {
        let config = parse_config(&T::describe().name, &config)?;
        *slot.borrow_mut() = Some(T::new(config)?);
        Ok(())
    }

    pub fn run_source<T: Source>(
        slot: &RefCell<Option<T>>,
        cursor: Option<String>,
    ) -> std::result::Result<WitBatch, WitError> {
        let mut slot = slot.borrow_mut();
        let plugin = slot.as_mut().ok_or_else(not_configured)?;
        let batch = plugin.poll(cursor)?;
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

    pub fn run_sink<T: Sink>(
        slot: &RefCell<Option<T>>,
        event: WitEvent,
    ) -> std::result::Result<WitReceipt, WitError> {
        let mut slot = slot.borrow_mut();
        let plugin = slot.as_mut().ok_or_else(not_configured)?;
        let receipt = plugin.deliver(&event.into())?;
        Ok(WitReceipt {
            detail: receipt.detail,
        })
    }
}

/// Export a [`Transform`] implementation as the plugin's `transform` world.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __WeftTransformExport;

        ::std::thread_local! {
            static __WEFT_TRANSFORM: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        impl $crate::__private::TransformGuest for __WeftTransformExport {
            fn describe() -> $crate::__private::WitPluginInfo {
                <$plugin as $crate::Transform>::describe().into()
            }
            fn configure(
                config: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                __WEFT_TRANSFORM
                    .with(|slot| $crate::__private::configure_transform::<$plugin>(slot, config))
            }
            fn transform(
                event: $crate::__private::WitEvent,
            ) -> ::core::result::Result<
                ::std::vec::Vec<$crate::__private::WitEvent>,
                $crate::__private::WitError,
            > {
                __WEFT_TRANSFORM
                    .with(|slot| $crate::__private::run_transform::<$plugin>(slot, event))
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::transform::__weft_export_transform_world!(
            __WeftTransformExport
        );
    };
}

/// Export a [`Sink`] implementation as the plugin's `sink` world.
#[macro_export]
macro_rules! export_sink {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __WeftSinkExport;

        ::std::thread_local! {
            static __WEFT_SINK: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        impl $crate::__private::SinkGuest for __WeftSinkExport {
            fn describe() -> $crate::__private::WitPluginInfo {
                <$plugin as $crate::Sink>::describe().into()
            }
            fn configure(
                config: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                __WEFT_SINK.with(|slot| $crate::__private::configure_sink::<$plugin>(slot, config))
            }
            fn deliver(
                event: $crate::__private::WitEvent,
            ) -> ::core::result::Result<$crate::__private::WitReceipt, $crate::__private::WitError>
            {
                __WEFT_SINK.with(|slot| $crate::__private::run_sink::<$plugin>(slot, event))
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::sink::__weft_export_sink_world!(__WeftSinkExport);
    };
}

/// Export a [`Source`] implementation as the plugin's `source` world.
#[macro_export]
macro_rules! export_source {
    ($plugin:ty) => {
        #[doc(hidden)]
        pub struct __WeftSourceExport;

        ::std::thread_local! {
            static __WEFT_SOURCE: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        impl $crate::__private::SourceGuest for __WeftSourceExport {
            fn describe() -> $crate::__private::WitPluginInfo {
                <$plugin as $crate::Source>::describe().into()
            }
            fn configure(
                config: ::std::string::String,
            ) -> ::core::result::Result<(), $crate::__private::WitError> {
                __WEFT_SOURCE
                    .with(|slot| $crate::__private::configure_source::<$plugin>(slot, config))
            }
            fn poll(
                cursor: ::core::option::Option<::std::string::String>,
            ) -> ::core::result::Result<$crate::__private::WitBatch, $crate::__private::WitError>
            {
                __WEFT_SOURCE.with(|slot| $crate::__private::run_source::<$plugin>(slot, cursor))
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::source::__weft_export_source_world!(__WeftSourceExport);
    };
}
