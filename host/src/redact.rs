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
