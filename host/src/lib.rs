//! The weft host: configuration, the durable store, the plugin sandbox, the
//! engine that moves events through pipelines, and the HTTP front door.
//!
//! Data flows one way: trigger → store (accepted) → engine → sandbox → sink.

pub mod cli;
pub mod config;
pub mod contract;
pub mod engine;
pub mod histogram;
pub mod host;
pub mod inspect;
pub mod limit;
pub mod logging;
pub mod messaging;
pub mod origin;
pub mod percent;
pub mod perimeter;
pub mod private;
pub mod redact;
pub mod reply;
pub mod sandbox;
pub mod schema;
pub mod secrets;
pub mod server;
pub mod store;
pub mod trigger;

pub use cli::client;

/// The allocator the `weft` binary (and the benchmark) run with: mimalloc,
/// which measured faster than the system allocator on weft's many small
/// per-event allocations, built without transparent huge pages (with them
/// an idle host kept about 80 MiB resident instead of about 32). Declare
/// it with
/// `#[global_allocator] static A: weft_host::Allocator = weft_host::Allocator;`.
pub use mimalloc::MiMalloc as Allocator;
