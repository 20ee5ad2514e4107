//! Generated bindings for the `weft:plugin` worlds; plugin authors use the
//! hand-written types in the crate root instead.

/// The `transform` world: also the home of the shared `types`, `log` and `kv` bindings.
pub mod transform {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weft:plugin/transform@0.1.0",
        runtime_path: "::weft_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__weft_export_transform_world",
        default_bindings_module: "::weft_sdk::__private::bindings::transform",
        disable_custom_section_link_helpers: true,
    });
}

/// The `sink` world; it reuses the shared bindings of the `transform` module.
pub mod sink {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weft:plugin/sink@0.1.0",
        runtime_path: "::weft_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__weft_export_sink_world",
        default_bindings_module: "::weft_sdk::__private::bindings::sink",
        disable_custom_section_link_helpers: true,
        with: {
            "weft:plugin/types@0.1.0": crate::bindings::transform::weft::plugin::types,
            "weft:plugin/log@0.1.0": crate::bindings::transform::weft::plugin::log,
            "weft:plugin/kv@0.1.0": crate::bindings::transform::weft::plugin::kv,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        },
    });
}

/// The `sink-batches` world: what `batch-sink` adds to `sink`. Its bindings
/// go beside the `sink` ones in a component that takes batches.
pub mod sink_batches {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weft:plugin/sink-batches@0.1.0",
        runtime_path: "::weft_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__weft_export_sink_batches_world",
        default_bindings_module: "::weft_sdk::__private::bindings::sink_batches",
        disable_custom_section_link_helpers: true,
        with: {
            "weft:plugin/types@0.1.0": crate::bindings::transform::weft::plugin::types,
        },
    });
}

/// The `plans` world: the optional `planner` export, whose bindings go
/// beside those of any world.
pub mod plans {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weft:plugin/plans@0.1.0",
        runtime_path: "::weft_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__weft_export_plans_world",
        default_bindings_module: "::weft_sdk::__private::bindings::plans",
        disable_custom_section_link_helpers: true,
    });
}

/// The `source` world; it reuses the shared bindings and the sink's credentials.
pub mod source {
    wit_bindgen::generate!({
        path: "../wit",
        world: "weft:plugin/source@0.1.0",
        runtime_path: "::weft_sdk::__private::wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__weft_export_source_world",
        default_bindings_module: "::weft_sdk::__private::bindings::source",
        disable_custom_section_link_helpers: true,
        with: {
            "weft:plugin/types@0.1.0": crate::bindings::transform::weft::plugin::types,
            "weft:plugin/log@0.1.0": crate::bindings::transform::weft::plugin::log,
            "weft:plugin/kv@0.1.0": crate::bindings::transform::weft::plugin::kv,
            "weft:plugin/credentials@0.1.0": crate::bindings::sink::weft::plugin::credentials,
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:http/outgoing-handler@0.2.12": wasip2::http::outgoing_handler,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
        },
    });
}

use crate::{Error, Event, PluginInfo};
use transform::weft::plugin::types as wit;

impl From<wit::Event> for Event {
    fn from(e: wit::Event) -> Self {
        Event {
            id: e.id,
            key: e.key,
            source: e.source,
            content_type: e.content_type,
            headers: e.headers,
            payload: e.payload,
            attempt: e.attempt,
            correlation_id: e.correlation_id,
            received_at_ms: e.received_at_ms,
        }
    }
}

impl From<Event> for wit::Event {
    fn from(e: Event) -> Self {
        wit::Event {
            id: e.id,
            key: e.key,
            source: e.source,
            content_type: e.content_type,
            headers: e.headers,
            payload: e.payload,
            attempt: e.attempt,
            correlation_id: e.correlation_id,
            received_at_ms: e.received_at_ms,
        }
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Transient(m) => wit::Error::Transient(m),
            Error::RateLimited {
                retry_after_ms,
                message,
            } => wit::Error::RateLimited(wit::RateLimit {
                retry_after_ms,
                message,
            }),
            Error::InvalidInput(m) => wit::Error::InvalidInput(m),
            Error::Fatal(m) => wit::Error::Fatal(m),
        }
    }
}

impl From<PluginInfo> for wit::PluginInfo {
    fn from(i: PluginInfo) -> Self {
        wit::PluginInfo {
            name: i.name,
            version: i.version,
            config_schema: i.config_schema,
        }
    }
}
