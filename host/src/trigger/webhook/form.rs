//! Form-encoded webhook bodies (Slack's slash commands and interactive
//! payloads, GitHub's default content type): after the signature over the
//! raw bytes has been checked, the fields become one JSON object (GitHub:
//! its `payload` field is the event), so what is stored and what plugins
//! see is JSON like every other event.

/// Whether a content type is `application/x-www-form-urlencoded`.
pub fn is_form(content_type: &str) -> bool {
    crate::reply::media_type(content_type) == "application/x-www-form-urlencoded"
}

/// The fields of a form body as a JSON object: each field a string, a
/// field sent more than once an array of them, and a `payload` field that
/// holds a JSON object or array (Slack's interactive messages) that value.
pub fn to_json(body: &[u8]) -> Result<Vec<u8>, String> {
    let text =
        std::str::from_utf8(body).map_err(|_| "the form body is not UTF-8 text".to_string())?;
    let mut fields = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (crate::percent::decode(name), crate::percent::decode(value));
        let value = match serde_json::from_str::<serde_json::Value>(&value) {
            Ok(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_)))
                if name == "payload" =>
            {
                v
            }
            _ => serde_json::Value::String(value),
        };
        match fields.get_mut(&name) {
            None => {
                fields.insert(name, value);
            }
            Some(serde_json::Value::Array(many)) if name != "payload" => many.push(value),
            Some(first) => {
                let first = first.take();
                fields.insert(name, serde_json::Value::Array(vec![first, value]));
            }
        }
    }
    serde_json::to_vec(&fields).map_err(|e| e.to_string())
}

/// A form-encoded GitHub delivery's event: its `payload` field, the same
/// JSON GitHub sends as `application/json`.
pub fn github_payload(body: &[u8]) -> Result<Vec<u8>, String> {
    let fields: serde_json::Value =
        serde_json::from_slice(&to_json(body)?).map_err(|e| e.to_string())?;
    match fields.get("payload") {
        Some(v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_))) => {
            serde_json::to_vec(v).map_err(|e| e.to_string())
        }
        _ => Err(
            "a form-encoded GitHub delivery carries its JSON in a payload field, and this one has none (or it is not JSON)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_become_a_json_object() {
        assert!(is_form("application/x-www-form-urlencoded; charset=utf-8"));
        assert!(!is_form("application/json"));
        let json = to_json(
            b"command=%2Fdeploy&text=api+now&user_id=U1&channel=a&channel=b&payload=%7B%22type%22%3A%22block_actions%22%7D",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["command"], "/deploy");
        assert_eq!(v["text"], "api now");
        assert_eq!(v["channel"], serde_json::json!(["a", "b"]));
        assert_eq!(v["payload"]["type"], "block_actions");
        assert!(to_json(b"a=\xff").is_err());
        assert_eq!(to_json(b"").unwrap(), b"{}");
    }
}
