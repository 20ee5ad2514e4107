//! Structured logs that land in the host's log with the plugin, pipeline and
//! event ids attached, under the log target `weft::plugin` (`weft run
//! --plugin-log debug` shows a plugin's debug lines alone). Outside wasm (in
//! a plugin's unit tests) they go to stderr.
//!
//! ```
//! use weft_sdk::log;
//!
//! log::info("polled");
//! log::write(log::Level::Debug, "converted", &[("field", "/amount"), ("rate", "0.92")]);
//! ```

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// Something failed.
    Error,
}

/// Write one log line with key-value fields.
pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::bindings::transform::weft::plugin::log as wit;
        let level = match level {
            Level::Trace => wit::Level::Trace,
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wit::write(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("{level:?} {message} {fields:?}");
}

/// Log at `debug`.
pub fn debug(message: &str) {
    write(Level::Debug, message, &[]);
}

/// Log at `info`.
pub fn info(message: &str) {
    write(Level::Info, message, &[]);
}

/// Log at `warn`.
pub fn warn(message: &str) {
    write(Level::Warn, message, &[]);
}

/// Log at `error`.
pub fn error(message: &str) {
    write(Level::Error, message, &[]);
}
