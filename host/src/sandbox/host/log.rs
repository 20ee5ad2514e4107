//! The host side of `weft:plugin/log`, and the plugin's stdout and stderr:
//! every line goes to the host's log with the call's ids, masked, within the
//! plugin's log budget.

use crate::sandbox::bindings::transform::weft::plugin::log;
use crate::sandbox::state::{HostState, LimitExceeded};

impl HostState {
    /// Log a line on the plugin's behalf, within its budget. Passing the
    /// budget is an error: the call is stopped.
    pub(in crate::sandbox) fn plugin_log(
        &mut self,
        level: tracing::Level,
        message: &str,
        fields: &[(String, String)],
    ) -> Result<(), LimitExceeded> {
        let cost = message.len() + fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        if cost > self.log_left {
            self.log_left = 0;
            return Err(LimitExceeded(format!(
                "plugin {} wrote more than its log cap of {} KiB in one call and was stopped",
                self.ctx.plugin,
                self.log_budget / 1024
            )));
        }
        self.log_left -= cost;
        let c = &self.ctx;
        let message = c.redact.apply(message);
        let masked: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.clone(), c.redact.apply(v).into_owned()))
            .collect();
        let fields = crate::logging::encode_plugin_fields(&masked);
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(
                    target: "weft::plugin", $lvl,
                    pipeline = %c.pipeline, plugin = %c.plugin, event = %c.event_id,
                    correlation_id = %c.correlation_id, plugin_fields = %fields, "{message}"
                )
            };
        }
        match level {
            tracing::Level::TRACE => emit!(tracing::Level::TRACE),
            tracing::Level::DEBUG => emit!(tracing::Level::DEBUG),
            tracing::Level::INFO => emit!(tracing::Level::INFO),
            tracing::Level::WARN => emit!(tracing::Level::WARN),
            _ => emit!(tracing::Level::ERROR),
        }
        Ok(())
    }

    /// Send what the plugin printed to stdout and stderr to the log. An
    /// error names the stream that passed the log cap.
    pub(in crate::sandbox) fn drain_stdio(&mut self) -> Result<(), LimitExceeded> {
        for (stream, pipe) in [
            ("stdout", self.stdout.clone()),
            ("stderr", self.stderr.clone()),
        ] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&bytes);
            if stream == "stderr" {
                self.last_stderr = text
                    .lines()
                    .rfind(|l| !l.trim().is_empty() && !l.starts_with("note: run with"))
                    .map(|l| l.chars().take(512).collect());
            }
            let fields = [("stream".to_string(), stream.to_string())];
            // Rust's advice to set RUST_BACKTRACE cannot work in the
            // sandbox; the host gives the wasm backtrace instead.
            for line in text.lines().filter(|l| {
                !l.trim().is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE")
            }) {
                if self
                    .plugin_log(tracing::Level::INFO, line, &fields)
                    .is_err()
                {
                    break;
                }
            }
            if bytes.len() >= self.log_budget || self.log_left == 0 {
                return Err(LimitExceeded(format!(
                    "plugin {} wrote more than its log cap of {} KiB to {stream} in one call and was stopped",
                    self.ctx.plugin,
                    self.log_budget / 1024
                )));
            }
        }
        Ok(())
    }
}

impl log::Host for HostState {
    async fn write(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        self.plugin_log(level, &message, &fields)
            .map_err(wasmtime::Error::new)
    }
}
