//! Masking of secret values in everything weft writes: log lines, error
//! messages kept in the store, and API answers.
//!
//! Every credential value the host loads is registered here (with the forms
//! it takes on the wire, such as the base64 of basic auth); [`mask`] replaces
//! each occurrence with [`MASK`].

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::RwLock;

/// What a secret value is replaced with.
pub const MASK: &str = "[redacted]";

static VALUES: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Mask `value` (and its JSON-escaped form) from now on.
pub fn register(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut forms = vec![value.to_string()];
    if let Ok(json) = serde_json::to_string(value) {
        let inner = json[1..json.len() - 1].to_string();
        if inner != value {
            forms.push(inner);
        }
    }
    // Most calls repeat a known value (basic auth on every request): check
    // under the read lock before taking the write lock.
    if forms
        .iter()
        .all(|f| VALUES.read().unwrap_or_else(|e| e.into_inner()).contains(f))
    {
        return;
    }
    let mut values = VALUES.write().unwrap_or_else(|e| e.into_inner());
    for f in forms {
        if !values.contains(&f) {
            values.push(f);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// `text` with every registered secret replaced by [`MASK`].
pub fn mask(text: &str) -> Cow<'_, str> {
    let values = VALUES.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for v in values.iter() {
        if out.contains(v.as_str()) {
            out = Cow::Owned(out.replace(v.as_str(), MASK));
        }
    }
    out
}

/// Whether any secret is registered (masking costs nothing otherwise).
pub fn active() -> bool {
    !VALUES.read().unwrap_or_else(|e| e.into_inner()).is_empty()
}

/// Fields of event payloads that must not be shown: JSON pointers per
/// pipeline (`redact = ["/email", "/card/number"]`). Payloads keep them (the
/// sink needs them); views replace them, and their values are masked in
/// error messages and plugin log lines of the event.
#[derive(Debug, Clone, Default)]
pub struct FieldRedaction {
    by_pipeline: std::collections::HashMap<String, Vec<String>>,
}

/// Shortest field value masked in text: shorter ones would mask ordinary words.
pub const MIN_FIELD_LEN: usize = 4;

impl FieldRedaction {
    /// The `redact` lists of the pipelines: (pipeline, pointers).
    pub fn new<'a>(lists: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Self {
        FieldRedaction {
            by_pipeline: lists
                .into_iter()
                .filter(|(_, pointers)| !pointers.is_empty())
                .map(|(name, pointers)| (name.to_string(), pointers.to_vec()))
                .collect(),
        }
    }

    /// The pointers of one pipeline.
    pub fn pointers(&self, pipeline: &str) -> &[String] {
        self.by_pipeline.get(pipeline).map_or(&[], Vec::as_slice)
    }
}

/// The values at `pointers` in a JSON payload (strings and numbers, the
/// leaves of objects and arrays), long enough to mask safely.
pub fn field_values(payload: &[u8], pointers: &[String]) -> Vec<String> {
    fn leaves(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Number(n) => out.push(n.to_string()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| leaves(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| leaves(v, out)),
            _ => {}
        }
    }
    if pointers.is_empty() {
        return Vec::new();
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(payload) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in pointers {
        if let Some(v) = doc.pointer(p) {
            leaves(v, &mut out);
        }
    }
    out.retain(|v| v.len() >= MIN_FIELD_LEN);
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out.dedup();
    out
}

/// `text` with each of `values` (and its JSON-escaped form) replaced by [`MASK`].
pub fn mask_values<'a>(text: &'a str, values: &[String]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for v in values {
        if out.contains(v.as_str()) {
            out = Cow::Owned(out.replace(v.as_str(), MASK));
        }
        if let Ok(json) = serde_json::to_string(v) {
            let inner = &json[1..json.len() - 1];
            if inner != v && out.contains(inner) {
                out = Cow::Owned(out.replace(inner, MASK));
            }
        }
    }
    out
}

/// A writer that masks secrets in what passes through it. The log formatter
/// writes each line with one call, so a secret is never split across writes.
pub struct MaskingWriter<W>(pub W);

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !active() {
            return self.0.write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(mask(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Log writer for `tracing_subscriber`: standard error, masked.
pub fn stderr() -> MaskingWriter<io::Stderr> {
    MaskingWriter(io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_fields_are_hidden_in_views_and_messages() {
        let payload = br#"{"email":"ada@example.com","card":{"number":"4111111111111111"},"n":7,"name":"Ada"}"#;
        let values = field_values(payload, &["/email".into(), "/card".into(), "/n".into()]);
        assert_eq!(values, ["4111111111111111", "ada@example.com"]);
        assert_eq!(
            mask_values("bad email \"ada@example.com\" in 4111111111111111", &values),
            format!("bad email \"{MASK}\" in {MASK}")
        );
    }

    #[test]
    fn registered_values_are_masked_in_text_and_writers() {
        register("s3cr3t-\"quoted\"-value");
        register("plain-canary-0042");
        assert_eq!(
            mask("token=plain-canary-0042 end"),
            format!("token={MASK} end")
        );
        let json = serde_json::json!({ "m": "x s3cr3t-\"quoted\"-value y" }).to_string();
        assert!(!mask(&json).contains("s3cr3t"), "{}", mask(&json));
        let mut out = MaskingWriter(Vec::new());
        out.write_all(b"a plain-canary-0042 b\n").unwrap();
        assert_eq!(String::from_utf8(out.0).unwrap(), format!("a {MASK} b\n"));
        assert!(matches!(mask("nothing here"), Cow::Borrowed(_)));
    }
}
