//! A plugin's config checked against the JSON Schema the plugin describes
//! itself with, with errors that name the `weft.toml` key.

use crate::sandbox::{Plugin, Sandbox};

/// The JSON pointer `pointer` inside the config, as a TOML key path:
/// `/auth/0/scheme` under `config` is `config.auth[0].scheme`.
pub fn toml_path(base: &str, pointer: &str) -> String {
    let mut out = base.to_string();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else if token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && !token.is_empty()
        {
            out.push('.');
            out.push_str(&token);
        } else {
            out.push_str(&format!(".{token:?}"));
        }
    }
    out
}

/// Check `config` against `schema` (the text a plugin describes itself
/// with): `Ok` when it holds, or when the plugin gives no usable schema;
/// else every violation, each naming its key under `base`.
pub fn check(schema: &str, config: &serde_json::Value, base: &str) -> Result<(), String> {
    let schema = schema.trim();
    if schema.is_empty() {
        return Ok(());
    }
    let Ok(schema) = serde_json::from_str::<serde_json::Value>(schema) else {
        tracing::debug!(
            "a plugin's config schema is not JSON; its config is not checked against it"
        );
        return Ok(());
    };
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!("a plugin's config schema is not a JSON Schema ({e}); not checked");
            return Ok(());
        }
    };
    let problems: Vec<String> = validator
        .iter_errors(config)
        .take(10)
        .map(|e| {
            let path = e.instance_path().to_string();
            format!("{}: {e}", toml_path(base, &path))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Check a step's config against its plugin's own schema; `base` is the
/// config's key in `weft.toml` (e.g. `steps[1].config`).
pub async fn check_plugin_config(
    sandbox: &Sandbox,
    plugin: &Plugin,
    config: &serde_json::Value,
    base: &str,
) -> Result<(), String> {
    let schema = sandbox
        .config_schema(plugin)
        .await
        .map_err(|e| format!("describe() failed: {}", e.message))?;
    check(&schema, config, base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCHEMA: &str = r#"{
        "type": "object", "required": ["url"], "additionalProperties": false,
        "properties": {
            "url": { "type": "string", "pattern": "^https?://" },
            "auth": { "type": "array", "items": { "type": "object",
                "properties": { "scheme": { "enum": ["bearer", "basic"] } } } }
        }
    }"#;

    #[test]
    fn violations_name_the_toml_key() {
        assert_eq!(
            check(SCHEMA, &json!({"url": "https://x"}), "config"),
            Ok(())
        );
        let err = check(
            SCHEMA,
            &json!({"url": "ftp://x", "auth": [{"scheme": "digest"}]}),
            "pipeline.leads.sink.config",
        )
        .unwrap_err();
        assert!(err.contains("pipeline.leads.sink.config.url: "), "{err}");
        assert!(
            err.contains("pipeline.leads.sink.config.auth[0].scheme: "),
            "{err}"
        );
        let err = check(SCHEMA, &json!({"uri": "https://x"}), "config").unwrap_err();
        assert!(err.contains("url"), "{err}");
    }

    #[test]
    fn no_schema_or_a_broken_one_checks_nothing() {
        assert_eq!(check("", &json!({"a": 1}), "config"), Ok(()));
        assert_eq!(check("not json", &json!({"a": 1}), "config"), Ok(()));
        assert_eq!(check(r#"{"type": 12}"#, &json!({"a": 1}), "config"), Ok(()));
    }
}
