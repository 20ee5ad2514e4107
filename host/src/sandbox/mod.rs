//! The plugin sandbox: wasmtime engine, plugin loading, per-call stores with
//! limits, and the host side of the WIT capabilities.
//!
//! Every plugin is compiled once and pre-linked (`InstancePre`); every call
//! gets a fresh store from the pooling allocator with a memory cap and an
//! epoch deadline, no filesystem, no environment, no sockets, and outbound
//! HTTP only to the origins its grant lists. Secrets stay in the host: a
//! plugin gets an opaque token that the host swaps for the credential as the
//! request leaves. Every denial is logged, counted and audited.

pub mod bindings;
pub mod cache;
pub mod caps;
mod deny;
mod host;
mod invoke;
mod outcome;
mod plan;
mod plugin;
mod runtime;
mod state;
mod types;
pub mod versions;

pub use host::egress::HttpClient;
pub use host::https::{HttpsConnector, find_tls_failure};
pub use host::net;
pub use host::oauth;
pub use host::tape;
pub use host::trust::OutboundTls;
pub use invoke::Called;
pub use plugin::{LoadFailures, Plugin, PluginStats, Plugins, World};
pub use runtime::{Sandbox, SandboxError, SandboxOptions};
pub use types::{CallContext, CallCost, CallError, PollBatch, TransformOutput};
