//! The mapping: a validated configuration and its application to one JSON value.

use crate::pointer::{self, kind};
use chrono::format::{Item, StrftimeItems};
use chrono::{NaiveDate, NaiveDateTime};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The `config` table of a json-map step. Operations run in the order of the
/// fields below; every path is a JSON pointer into the event payload.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Move a field: `{ "/old" = "/new" }`.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Remove fields.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Set a field when it is missing or null: `{ "/country" = "US" }`.
    #[serde(default)]
    pub defaults: BTreeMap<String, Value>,
    /// Strip leading and trailing white space.
    #[serde(default)]
    pub trim: Vec<String>,
    /// Lower-case a string.
    #[serde(default)]
    pub lowercase: Vec<String>,
    /// Upper-case a string.
    #[serde(default)]
    pub uppercase: Vec<String>,
    /// Capitalise each word, lower-case the rest (`jANE doe-SMITH` → `Jane Doe-Smith`).
    #[serde(default)]
    pub title_case: Vec<String>,
    /// Reformat dates with strftime patterns.
    #[serde(default)]
    pub date: Vec<DateRule>,
    /// Integer cents to a decimal string (`1999` → `"19.99"`).
    #[serde(default)]
    pub cents_to_decimal: Vec<String>,
    /// Map categorical codes through a table.
    #[serde(default)]
    pub map: Vec<CodeMap>,
}

/// Reformat one date field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRule {
    /// Pointer to the field.
    pub field: String,
    /// strftime pattern of the input, e.g. `%m/%d/%Y`.
    pub from: String,
    /// strftime pattern of the output, e.g. `%Y-%m-%d`.
    pub to: String,
}

/// Map one field's codes through a table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeMap {
    /// Pointer to the field.
    pub field: String,
    /// Code → replacement.
    pub table: BTreeMap<String, Value>,
    /// Replacement for codes not in the table; without it an unknown code is invalid input.
    #[serde(default)]
    pub default: Option<Value>,
}

impl Config {
    /// Check pointers and date patterns; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (from, to) in &self.rename {
            pointer::validate("rename", from)?;
            pointer::validate("rename", to)?;
        }
        for (key, list) in [
            ("drop", &self.drop),
            ("trim", &self.trim),
            ("lowercase", &self.lowercase),
            ("uppercase", &self.uppercase),
            ("title_case", &self.title_case),
            ("cents_to_decimal", &self.cents_to_decimal),
        ] {
            for p in list {
                pointer::validate(key, p)?;
            }
        }
        for p in self.defaults.keys() {
            pointer::validate("defaults", p)?;
        }
        for rule in &self.date {
            pointer::validate("date.field", &rule.field)?;
            check_pattern("date.from", &rule.from)?;
            check_pattern("date.to", &rule.to)?;
        }
        for m in &self.map {
            pointer::validate("map.field", &m.field)?;
        }
        Ok(())
    }

    /// Apply every operation to `doc`; the error names the field.
    pub fn apply(&self, doc: &mut Value) -> Result<(), String> {
        if !doc.is_object() {
            return Err(format!(
                "payload must be a JSON object, found {}",
                kind(doc)
            ));
        }
        for (from, to) in &self.rename {
            if let Some(v) = pointer::remove(doc, from) {
                pointer::set(doc, to, v)?;
            }
        }
        for p in &self.drop {
            pointer::remove(doc, p);
        }
        for (p, v) in &self.defaults {
            if pointer::get(doc, p).is_none() {
                pointer::set(doc, p, v.clone())?;
            }
        }
        edit_strings(doc, &self.trim, |s| s.trim().to_string())?;
        edit_strings(doc, &self.lowercase, |s| s.to_lowercase())?;
        edit_strings(doc, &self.uppercase, |s| s.to_uppercase())?;
        edit_strings(doc, &self.title_case, title_case)?;
        for rule in &self.date {
            if let Some(Value::String(s)) = pointer::get(doc, &rule.field) {
                let out = reformat_date(s, &rule.from, &rule.to)
                    .map_err(|e| format!("field {}: {e}", rule.field))?;
                pointer::set(doc, &rule.field, Value::String(out))?;
            } else if let Some(other) = pointer::get(doc, &rule.field) {
                return Err(format!(
                    "field {}: expected a date string, found {}",
                    rule.field,
                    kind(other)
                ));
            }
        }
        for p in &self.cents_to_decimal {
            if let Some(v) = pointer::get(doc, p) {
                let cents = as_cents(v).map_err(|e| format!("field {p}: {e}"))?;
                pointer::set(doc, p, Value::String(cents_to_decimal(cents)))?;
            }
        }
        for m in &self.map {
            if let Some(v) = pointer::get(doc, &m.field) {
                let code = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(format!(
                            "field {}: expected a code, found {}",
                            m.field,
                            kind(other)
                        ));
                    }
                };
                let out = match (m.table.get(&code), &m.default) {
                    (Some(v), _) | (None, Some(v)) => v.clone(),
                    (None, None) => {
                        return Err(format!(
                            "field {}: code {code:?} is not in the map table and no default is set",
                            m.field
                        ));
                    }
                };
                pointer::set(doc, &m.field, out)?;
            }
        }
        Ok(())
    }
}

fn edit_strings(
    doc: &mut Value,
    fields: &[String],
    f: impl Fn(&str) -> String,
) -> Result<(), String> {
    for p in fields {
        match doc.pointer_mut(p) {
            Some(Value::String(s)) => *s = f(s),
            Some(Value::Null) | None => {}
            Some(other) => {
                return Err(format!(
                    "field {p}: expected a string, found {}",
                    kind(other)
                ));
            }
        }
    }
    Ok(())
}

fn check_pattern(key: &str, pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err(format!("{key}: the date pattern is empty"));
    }
    if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "{key}: {pattern:?} is not a valid strftime pattern (e.g. \"%m/%d/%Y\")"
        ));
    }
    Ok(())
}

/// Capitalise the first letter of each word (split at spaces and hyphens).
pub fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        start = c.is_whitespace() || c == '-';
    }
    out
}

/// Parse `s` with `from` (date-time or date only) and print it with `to`.
pub fn reformat_date(s: &str, from: &str, to: &str) -> Result<String, String> {
    let mut out = String::new();
    let printed = if let Ok(dt) = NaiveDateTime::parse_from_str(s, from) {
        write!(out, "{}", dt.format(to))
    } else {
        let d = NaiveDate::parse_from_str(s, from)
            .map_err(|e| format!("{s:?} does not match the date pattern {from:?} ({e})"))?;
        write!(out, "{}", d.format(to))
    };
    printed.map_err(|_| format!("pattern {to:?} asks for a time but {s:?} has only a date"))?;
    Ok(out)
}

fn as_cents(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("expected integer cents, found {n}")),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("expected integer cents, found {s:?}")),
        other => Err(format!("expected integer cents, found {}", kind(other))),
    }
}

/// `1999` → `"19.99"`, `-5` → `"-0.05"`.
pub fn cents_to_decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: Value) -> Config {
        let c: Config = serde_json::from_value(v).unwrap();
        c.validate().unwrap();
        c
    }

    #[test]
    fn normalises_a_lead_as_the_quickstart_configures_it() {
        let c = config(json!({
            "lowercase": ["/email"],
            "title_case": ["/name"],
            "date": [{"field": "/created", "from": "%m/%d/%Y", "to": "%Y-%m-%d"}],
            "cents_to_decimal": ["/amount_cents"],
        }));
        let mut doc = json!({
            "id": "L1", "email": "Ann.Lee@Example.COM", "name": "aNN o'brien-lee",
            "created": "03/11/2026", "amount_cents": 123456
        });
        c.apply(&mut doc).unwrap();
        assert_eq!(
            doc,
            json!({
                "id": "L1", "email": "ann.lee@example.com", "name": "Ann O'brien-Lee",
                "created": "2026-03-11", "amount_cents": "1234.56"
            })
        );
    }

    #[test]
    fn rename_drop_defaults_trim_and_codes() {
        let c = config(json!({
            "rename": {"/fname": "/name/first"},
            "drop": ["/internal"],
            "defaults": {"/country": "US", "/tags": []},
            "trim": ["/name/first"],
            "uppercase": ["/country"],
            "map": [{"field": "/status", "table": {"A": "active", "1": "one"}, "default": "unknown"}],
        }));
        let mut doc = json!({"fname": "  Bo ", "internal": 1, "country": null, "status": "A"});
        c.apply(&mut doc).unwrap();
        assert_eq!(
            doc,
            json!({"name": {"first": "Bo"}, "country": "US", "tags": [], "status": "active"})
        );
        let mut doc = json!({"status": 1, "country": "de"});
        c.apply(&mut doc).unwrap();
        assert_eq!(doc["status"], "one");
        assert_eq!(doc["country"], "DE");
        let mut doc = json!({"status": "zz"});
        c.apply(&mut doc).unwrap();
        assert_eq!(doc["status"], "unknown");
    }

    #[test]
    fn missing_fields_are_left_alone() {
        let c = config(json!({"lowercase": ["/email"], "cents_to_decimal": ["/c"],
            "date": [{"field": "/d", "from": "%Y", "to": "%Y"}]}));
        let mut doc = json!({"other": 1});
        c.apply(&mut doc).unwrap();
        assert_eq!(doc, json!({"other": 1}));
    }

    #[test]
    fn bad_input_names_the_field() {
        let c = config(json!({"lowercase": ["/email"]}));
        let err = c.apply(&mut json!({"email": 5})).unwrap_err();
        assert_eq!(err, "field /email: expected a string, found a number");

        let c =
            config(json!({"date": [{"field": "/created", "from": "%m/%d/%Y", "to": "%Y-%m-%d"}]}));
        let err = c.apply(&mut json!({"created": "2026-03-11"})).unwrap_err();
        assert!(
            err.starts_with("field /created: \"2026-03-11\" does not match"),
            "{err}"
        );

        let c = config(json!({"cents_to_decimal": ["/amount"]}));
        let err = c.apply(&mut json!({"amount": 12.5})).unwrap_err();
        assert_eq!(err, "field /amount: expected integer cents, found 12.5");

        let c = config(json!({"map": [{"field": "/s", "table": {"a": 1}}]}));
        let err = c.apply(&mut json!({"s": "b"})).unwrap_err();
        assert!(
            err.contains("field /s: code \"b\" is not in the map table"),
            "{err}"
        );

        let err = c.apply(&mut json!([1, 2])).unwrap_err();
        assert_eq!(err, "payload must be a JSON object, found an array");
    }

    #[test]
    fn bad_config_names_the_key() {
        let bad: Result<Config, _> = serde_json::from_value(json!({"lowercse": ["/a"]}));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("unknown field `lowercse`")
        );

        let c: Config = serde_json::from_value(json!({"trim": ["email"]})).unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("trim: \"email\" is not a JSON pointer")
        );

        let c: Config =
            serde_json::from_value(json!({"date": [{"field": "/d", "from": "%Q", "to": "%Y"}]}))
                .unwrap();
        assert!(
            c.validate()
                .unwrap_err()
                .starts_with("date.from: \"%Q\" is not a valid")
        );
    }

    #[test]
    fn dates_with_times_and_mismatched_patterns() {
        assert_eq!(
            reformat_date("2026-03-11 14:05", "%Y-%m-%d %H:%M", "%d.%m.%Y %H:%M").unwrap(),
            "11.03.2026 14:05"
        );
        let err = reformat_date("03/11/2026", "%m/%d/%Y", "%Y-%m-%dT%H:%M").unwrap_err();
        assert!(err.contains("asks for a time"), "{err}");
        assert!(reformat_date("02/30/2026", "%m/%d/%Y", "%Y").is_err());
    }

    #[test]
    fn cents() {
        assert_eq!(cents_to_decimal(0), "0.00");
        assert_eq!(cents_to_decimal(5), "0.05");
        assert_eq!(cents_to_decimal(-1999), "-19.99");
        assert_eq!(cents_to_decimal(i64::MIN), "-92233720368547758.08");
    }
}
