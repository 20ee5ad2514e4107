//! Log output: text or JSON lines on stderr, secrets masked, and the fields a
//! plugin logs with a line written as fields of that line.

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

/// The target of every line a plugin logs.
pub const PLUGIN_TARGET: &str = "weft::plugin";
/// The field that carries a plugin's own fields, as a JSON object.
pub const PLUGIN_FIELDS: &str = "plugin_fields";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the global subscriber: `RUST_LOG` filter (default `info`),
/// colours only on a terminal, every line through the secret masker.
pub fn init(format: LogFormat, plugin_log: Option<tracing::Level>) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if let Some(level) = plugin_log
        && let Ok(directive) = format!("{PLUGIN_TARGET}={level}").parse()
    {
        filter = filter.add_directive(directive);
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(crate::redact::stderr);
    match format {
        LogFormat::Text => builder
            .fmt_fields(format::debug_fn(text_field).delimited(" "))
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .map_event_format(PluginFieldsJson)
            .init(),
    }
}

/// The JSON object of a plugin's fields, for [`PLUGIN_FIELDS`]. Keys are
/// kept to a safe alphabet; values are strings.
pub fn encode_plugin_fields(fields: &[(String, String)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (safe_key(k), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn safe_key(key: &str) -> String {
    let key: String = key
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() { "_".into() } else { key }
}

/// One field of a text line: the message bare, a plugin's fields as
/// `key=value` pairs of the line, everything else `name=value`.
fn text_field(
    w: &mut Writer<'_>,
    field: &tracing::field::Field,
    value: &dyn fmt::Debug,
) -> fmt::Result {
    match field.name() {
        "message" => write!(w, "{value:?}"),
        PLUGIN_FIELDS => {
            let text = format!("{value:?}");
            let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) else {
                return write!(w, "{PLUGIN_FIELDS}={text}");
            };
            let mut first = true;
            for (k, v) in map {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                if !first {
                    w.write_char(' ')?;
                }
                first = false;
                if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
                    write!(w, "{k}={v:?}")?;
                } else {
                    write!(w, "{k}={v}")?;
                }
            }
            Ok(())
        }
        name => write!(w, "{name}={value:?}"),
    }
}

/// The JSON event format, with a plugin's fields lifted out of
/// [`PLUGIN_FIELDS`] into fields of the line. A plugin field never replaces
/// one the host wrote (pipeline, plugin, event, level, …): it is kept as
/// `plugin.KEY` instead.
struct PluginFieldsJson<F>(F);

impl<S, N, F> FormatEvent<S, N> for PluginFieldsJson<F>
where
    F: FormatEvent<S, N>,
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != PLUGIN_TARGET {
            return self.0.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&lift_plugin_fields(&line))
    }
}

/// Rewrite one JSON log line so that the object in its [`PLUGIN_FIELDS`]
/// string becomes fields of the line.
fn lift_plugin_fields(line: &str) -> String {
    let Ok(serde_json::Value::Object(mut top)) = serde_json::from_str(line.trim_end()) else {
        return line.to_string();
    };
    let Some(serde_json::Value::String(inner)) = top.remove(PLUGIN_FIELDS) else {
        return line.to_string();
    };
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(&inner) {
        for (k, v) in fields {
            let key = if top.contains_key(&k) {
                format!("plugin.{k}")
            } else {
                k
            };
            top.entry(key).or_insert(v);
        }
    }
    let mut out = serde_json::Value::Object(top).to_string();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_fields_become_fields_of_the_line_and_never_replace_the_hosts() {
        let fields = encode_plugin_fields(&[
            ("order".into(), "42".into()),
            ("plugin".into(), "spoofed".into()),
            ("bad key\"".into(), "v".into()),
        ]);
        let line = serde_json::json!({
            "level": "INFO", "plugin": "json-map", "message": "hi", PLUGIN_FIELDS: fields,
        })
        .to_string();
        let out: serde_json::Value = serde_json::from_str(&lift_plugin_fields(&line)).unwrap();
        assert_eq!(out["order"], "42");
        assert_eq!(out["plugin"], "json-map");
        assert_eq!(out["plugin.plugin"], "spoofed");
        assert_eq!(out["bad_key_"], "v");
        assert!(out.get(PLUGIN_FIELDS).is_none());
    }
}
