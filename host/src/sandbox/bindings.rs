//! Host bindings generated from `wit/` (the one bindgen site of the host).

/// The `transform` world; also home of the shared `types`, `log` and `kv` bindings.
#[allow(missing_docs, reason = "generated bindings")]
pub mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weft:plugin/transform",
        imports: { default: async, "weft:plugin/log.write": async | trappable },
        exports: { default: async },
    });
}

/// The `sink` world.
#[allow(missing_docs, reason = "generated bindings")]
pub mod sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weft:plugin/sink",
        imports: { default: async },
        exports: { default: async },
        with: {
            "weft:plugin/types": super::transform::weft::plugin::types,
            "weft:plugin/log": super::transform::weft::plugin::log,
            "weft:plugin/kv": super::transform::weft::plugin::kv,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `batch-sink` world: a sink that also delivers batches.
#[allow(missing_docs, reason = "generated bindings")]
pub mod batch_sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weft:plugin/batch-sink",
        imports: { default: async },
        exports: { default: async },
        with: {
            "weft:plugin/types": super::transform::weft::plugin::types,
            "weft:plugin/log": super::transform::weft::plugin::log,
            "weft:plugin/kv": super::transform::weft::plugin::kv,
            "weft:plugin/credentials": super::sink::weft::plugin::credentials,
            "weft:plugin/messaging": super::sink::weft::plugin::messaging,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

/// The `source` world.
#[allow(missing_docs, reason = "generated bindings")]
pub mod source {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "weft:plugin/source",
        imports: { default: async },
        exports: { default: async },
        with: {
            "weft:plugin/types": super::transform::weft::plugin::types,
            "weft:plugin/log": super::transform::weft::plugin::log,
            "weft:plugin/kv": super::transform::weft::plugin::kv,
            "weft:plugin/credentials": super::sink::weft::plugin::credentials,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}

pub use transform::weft::plugin::types::{Error as WitError, Event as WitEvent};

/// Interface names exported by each world, at the supported version.
pub const TRANSFORM_EXPORT: &str = "weft:plugin/transformer@0.1.0";
/// Interface exported by sinks.
pub const SINK_EXPORT: &str = "weft:plugin/deliverer@0.1.0";
/// Interface a sink may export besides [`SINK_EXPORT`], to take batches.
pub const BATCH_SINK_EXPORT: &str = "weft:plugin/batch-deliverer@0.1.0";
/// Interface exported by sources.
pub const SOURCE_EXPORT: &str = "weft:plugin/poller@0.1.0";
/// Interface any plugin may export to say which URLs a config will call.
pub const PLANNER_EXPORT: &str = "weft:plugin/planner@0.1.0";
