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

/// Shortest run of a secret (in any of its forms) that is masked: a cut
/// prefix this long still gives the secret away.
pub const MIN_MASKED_RUN: usize = 8;

/// The forms a secret takes in what the host itself writes: as it is,
/// JSON-escaped, base64 (standard and URL-safe, padded or not), hex (either
/// case) and percent-encoded.
fn forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let mut forms = vec![value.to_string()];
    if let Ok(json) = serde_json::to_string(value) {
        forms.push(json[1..json.len() - 1].to_string());
    }
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        forms.push(engine.encode(value));
    }
    forms.push(hex::encode(value));
    forms.push(hex::encode_upper(value));
    forms.push(crate::percent::encode(value));
    forms.sort();
    forms.dedup();
    forms
}

/// Mask `value`, in every form the host writes it and by any prefix of at
/// least [`MIN_MASKED_RUN`] bytes, from now on.
pub fn register(value: &str) {
    if value.is_empty() {
        return;
    }
    let forms = forms(value);
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

/// Stop masking a value no longer in use (an access token long replaced),
/// so a host that refreshes tokens for months does not mask ever more.
pub fn forget(value: &str) {
    if value.is_empty() {
        return;
    }
    let forms = forms(value);
    VALUES
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|v| !forms.contains(v));
}

/// `text` with every run of a registered form replaced by [`MASK`]: the
/// whole form, or any prefix of it at least [`MIN_MASKED_RUN`] bytes long
/// (a secret cut short is still masked).
pub fn mask(text: &str) -> Cow<'_, str> {
    let values = VALUES.read().unwrap_or_else(|e| e.into_inner());
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for v in values.iter() {
        runs(text, v, &mut spans);
    }
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    // Overlapping runs of different forms (a prefix of one, the rest of
    // another) are masked as one.
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut i = 0;
    while i < spans.len() {
        let (start, mut end) = spans[i];
        while i + 1 < spans.len() && spans[i + 1].0 <= end {
            i += 1;
            end = end.max(spans[i].1);
        }
        out.push_str(&text[pos..start.max(pos)]);
        out.push_str(MASK);
        pos = end.max(pos);
        i += 1;
    }
    out.push_str(&text[pos..]);
    Cow::Owned(out)
}

/// The byte ranges of `text` that hold `form` whole, or a prefix of it at
/// least [`MIN_MASKED_RUN`] bytes long.
fn runs(text: &str, form: &str, spans: &mut Vec<(usize, usize)>) {
    let mut cut = form.len().min(MIN_MASKED_RUN);
    while !form.is_char_boundary(cut) {
        cut += 1;
    }
    let anchor = &form[..cut];
    if anchor.is_empty() {
        return;
    }
    let (t, f) = (text.as_bytes(), form.as_bytes());
    let mut pos = 0;
    while let Some(found) = text[pos..].find(anchor) {
        let start = pos + found;
        let mut end = start + anchor.len();
        while end < t.len() && end - start < f.len() && t[end] == f[end - start] {
            end += 1;
        }
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        spans.push((start, end));
        pos = start + anchor.len();
    }
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

/// What must not be shown of one event: the values of its redacted fields
/// (strings and numbers, the leaves of objects and arrays, long enough to
/// mask safely). When the pipeline redacts fields and the payload cannot be
/// read as JSON, nothing about those fields is known, so the mask fails
/// closed: every text it is applied to is withheld whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldMask {
    values: Vec<String>,
    opaque: bool,
}

/// What replaces a text that may hold redacted fields that could not be found.
pub const WITHHELD: &str = "[redacted] (withheld whole: the event has redacted fields and its payload could not be read to find them)";

impl FieldMask {
    /// The mask of `payload` under the pipeline's `pointers`.
    pub fn of(payload: &[u8], pointers: &[String]) -> FieldMask {
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
            return FieldMask::default();
        }
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return FieldMask {
                values: Vec::new(),
                opaque: true,
            };
        };
        let mut values = Vec::new();
        for p in pointers {
            if let Some(v) = doc.pointer(p) {
                leaves(v, &mut values);
            }
        }
        values.retain(|v| v.len() >= MIN_FIELD_LEN);
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        FieldMask {
            values,
            opaque: false,
        }
    }

    /// One mask for several events' texts together (a batch): every value
    /// of each, opaque when any of them is.
    pub fn union<'a>(masks: impl IntoIterator<Item = &'a FieldMask>) -> FieldMask {
        let mut out = FieldMask::default();
        for m in masks {
            out.opaque |= m.opaque;
            out.values.extend(m.values.iter().cloned());
        }
        out.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        out.values.dedup();
        out
    }

    /// Whether it masks nothing.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && !self.opaque
    }

    /// `text` with each value (and its JSON-escaped form) replaced by
    /// [`MASK`]; all of it replaced by [`WITHHELD`] when the mask is opaque.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.opaque {
            return Cow::Borrowed(WITHHELD);
        }
        let mut out = Cow::Borrowed(text);
        for v in &self.values {
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

    /// A payload fit to show: redacted fields replaced by [`MASK`]; a
    /// payload that cannot be read is replaced whole.
    pub fn payload(&self, payload: &[u8], pointers: &[String]) -> Vec<u8> {
        if pointers.is_empty() {
            return payload.to_vec();
        }
        match serde_json::from_slice::<serde_json::Value>(payload) {
            Ok(mut doc) => {
                for p in pointers {
                    if let Some(v) = doc.pointer_mut(p) {
                        *v = serde_json::Value::String(MASK.into());
                    }
                }
                doc.to_string().into_bytes()
            }
            Err(_) => serde_json::Value::String(WITHHELD.into())
                .to_string()
                .into_bytes(),
        }
    }
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
        let pointers: Vec<String> = vec!["/email".into(), "/card".into(), "/n".into()];
        let mask = FieldMask::of(payload, &pointers);
        assert_eq!(mask.values, ["4111111111111111", "ada@example.com"]);
        assert_eq!(
            mask.apply("bad email \"ada@example.com\" in 4111111111111111"),
            format!("bad email \"{MASK}\" in {MASK}")
        );
        let shown = String::from_utf8(mask.payload(payload, &pointers)).unwrap();
        assert!(
            !shown.contains("ada@") && shown.contains("\"name\":\"Ada\""),
            "{shown}"
        );
        // Nothing to redact: nothing masked, whatever the payload.
        assert!(FieldMask::of(b"not json", &[]).is_empty());
    }

    #[test]
    fn a_payload_that_cannot_be_read_is_withheld_whole() {
        let pointers: Vec<String> = vec!["/email".into()];
        let broken = br#"{"email":"ada@example.com", "#;
        let mask = FieldMask::of(broken, &pointers);
        assert!(!mask.is_empty());
        assert_eq!(mask.apply("error near ada@example.com"), WITHHELD);
        let shown = String::from_utf8(mask.payload(broken, &pointers)).unwrap();
        assert!(!shown.contains("ada@"), "{shown}");
        assert!(shown.contains("withheld"), "{shown}");
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

    #[test]
    fn a_secret_is_masked_in_every_encoding_and_cut_at_any_length() {
        use base64::Engine as _;
        let secret = "canary-Zq81/x+Lm-secret-0042";
        register(secret);
        let b64 = base64::engine::general_purpose::STANDARD;
        let url_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let shown = [
            secret.to_string(),
            b64.encode(secret),
            url_b64.encode(secret),
            hex::encode(secret),
            hex::encode_upper(secret),
            "canary-Zq81%2Fx%2BLm-secret-0042".to_string(),
            serde_json::to_string(secret).unwrap(),
        ];
        for form in &shown {
            let text = format!("upstream said: {form}!");
            let masked = mask(&text);
            assert!(
                !masked.contains(&form[..form.len().min(12)]),
                "{form} -> {masked}"
            );
        }
        // Cut by a plugin at any length of 8 bytes or more: still masked.
        for len in MIN_MASKED_RUN..secret.len() {
            let text = format!("error: {}… (cut)", &secret[..len]);
            assert_eq!(mask(&text), format!("error: {MASK}… (cut)"), "cut at {len}");
        }
        // Shorter than that is an ordinary word.
        assert_eq!(mask("a canary- word"), "a canary- word");
    }
}
