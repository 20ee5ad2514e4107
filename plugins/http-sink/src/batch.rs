//! Batches as one request: the body, the keys header, and how the answer
//! maps back to each event.

use crate::outcome::classify;
use serde_json::Value;
use std::time::SystemTime;
use weft_sdk::{Error, Event, Receipt};

/// How a batch is written in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON array of the events' payloads (`application/json`).
    #[default]
    Json,
    /// One payload per line (`application/x-ndjson`).
    Ndjson,
}

impl Format {
    /// The request's content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// Whether a payload can go into a batch body: JSON events only (others
/// are sent alone, as they are).
pub fn batchable(event: &Event) -> bool {
    let ct = event.content_type.to_ascii_lowercase();
    (ct.is_empty() || ct.starts_with("application/json") || ct.contains("+json"))
        && serde_json::from_slice::<serde::de::IgnoredAny>(&event.payload).is_ok()
}

/// The body of a batch of (batchable) events.
pub fn body(format: Format, events: &[&Event]) -> Vec<u8> {
    let size = events.iter().map(|e| e.payload.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(size);
    match format {
        Format::Json => {
            out.push(b'[');
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&e.payload);
            }
            out.push(b']');
        }
        Format::Ndjson => {
            for e in events {
                if e.payload.contains(&b'\n') || e.payload.contains(&b'\r') {
                    // A pretty-printed payload: one line of it.
                    match serde_json::from_slice::<Value>(&e.payload) {
                        Ok(v) => out.extend_from_slice(v.to_string().as_bytes()),
                        Err(_) => out.extend_from_slice(&e.payload),
                    }
                } else {
                    out.extend_from_slice(&e.payload);
                }
                out.push(b'\n');
            }
        }
    }
    out
}

/// Each event's idempotency key, in order, separated by commas; `%`, `,`
/// and anything but visible ASCII are percent-encoded, so a key never
/// breaks the list or the header.
pub fn keys_header(events: &[&Event]) -> String {
    let mut out = String::new();
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for b in e.key.bytes() {
            if b.is_ascii_graphic() && b != b'%' && b != b',' {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// The per-event outcomes of a batch request's answer.
///
/// A status outside 2xx applies to every event (classified as for one
/// event). A 2xx answer whose JSON body lists one result per event (a
/// top-level array, or an `items` or `results` array) gives each event its
/// own status: `status` on the item, or on the one object inside it (the
/// bulk-API style `{"index": {"status": 201}}`), with `error` as the
/// message. A list of another length cannot be matched to the events: it
/// is a transient failure of them all (redelivery carries the same keys).
/// Any other 2xx answer delivers every event.
pub fn outcomes(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    n: usize,
    now: SystemTime,
) -> Vec<Result<Receipt, Error>> {
    let whole = classify(status, retry_after, body, now);
    let items = match &whole {
        Ok(_) => match per_item(body, n) {
            Listed::Each(items) => Some(items),
            Listed::Nothing => None,
            Listed::Other(len) => {
                let e = Error::transient(format!(
                    "HTTP {status}: the answer lists {len} results for a batch of {n} events, so they cannot be told apart; the batch is sent again"
                ));
                return vec![Err(e); n];
            }
        },
        Err(_) => None,
    };
    let Some(items) = items else {
        return (0..n)
            .map(|_| match &whole {
                Ok(_) => Ok(Receipt::new(format!("HTTP {status}, batch of {n}"))),
                Err(e) => Err(e.clone()),
            })
            .collect();
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, (item_status, error))| match item_status {
            None => Ok(Receipt::new(format!("HTTP {status}, batch of {n}"))),
            Some(s) => match classify(s, None, error.as_bytes(), now) {
                Ok(_) => Ok(Receipt::new(format!(
                    "HTTP {status}, batch of {n}, item {}: {s}",
                    i + 1
                ))),
                Err(e) => Err(e.with_message(|m| {
                    format!("item {} of a batch of {n} (HTTP {status}): {m}", i + 1)
                })),
            },
        })
        .collect()
}

/// What an answer's body lists.
enum Listed {
    /// Each event's status (when given) and error text.
    Each(Vec<(Option<u16>, String)>),
    /// No list of results.
    Nothing,
    /// A list of this many results, not one per event.
    Other(usize),
}

/// Each item's status and error text, when the body lists them.
fn per_item(body: &[u8], n: usize) -> Listed {
    let Ok(doc) = serde_json::from_slice::<Value>(body) else {
        return Listed::Nothing;
    };
    let list = match &doc {
        Value::Array(a) => a,
        Value::Object(o) => match o
            .get("items")
            .or_else(|| o.get("results"))
            .and_then(Value::as_array)
        {
            Some(list) => list,
            None => return Listed::Nothing,
        },
        _ => return Listed::Nothing,
    };
    if list.len() != n {
        return Listed::Other(list.len());
    }
    let status_of = |v: &Value| {
        v.get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
    };
    let error_of = |v: &Value| match v.get("error") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    Listed::Each(
        list.iter()
            .map(|item| {
                if let Some(s) = status_of(item) {
                    return (Some(s), error_of(item));
                }
                // `{"index": {"status": 201, "error": …}}`
                match item.as_object() {
                    Some(o) if o.len() == 1 => {
                        let inner = o.values().next().unwrap_or(&Value::Null);
                        (status_of(inner), error_of(inner))
                    }
                    _ => (None, String::new()),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, payload: &str) -> Event {
        Event {
            key: key.into(),
            content_type: "application/json".into(),
            payload: payload.as_bytes().to_vec(),
            ..Event::default()
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn bodies_in_both_formats() {
        let a = event("a", r#"{"x":1}"#);
        let b = event("b", "{\n  \"y\": 2\n}");
        assert_eq!(
            body(Format::Json, &[&a, &b]),
            b"[{\"x\":1},{\n  \"y\": 2\n}]"
        );
        let nd = String::from_utf8(body(Format::Ndjson, &[&a, &b])).unwrap();
        assert_eq!(nd, "{\"x\":1}\n{\"y\":2}\n");
        let parsed: Value = serde_json::from_slice(&body(Format::Json, &[&a, &b])).unwrap();
        assert_eq!(parsed[1]["y"], 2);
    }

    #[test]
    fn only_json_payloads_are_batched() {
        assert!(batchable(&event("a", "[1,2]")));
        assert!(!batchable(&event("a", "not json")));
        let mut text = event("a", "\"hi\"");
        text.content_type = "text/plain".into();
        assert!(!batchable(&text));
    }

    #[test]
    fn keys_cannot_break_the_header() {
        let a = event("order-1", "{}");
        let b = event("a,b%c d\u{e9}", "{}");
        assert_eq!(keys_header(&[&a, &b]), "order-1,a%2Cb%25c%20d%C3%A9");
    }

    #[test]
    fn a_failed_request_fails_every_event_alike() {
        let out = outcomes(503, Some("3"), b"busy", 3, now());
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|r| matches!(
            r,
            Err(Error::RateLimited {
                retry_after_ms: 3000,
                ..
            })
        )));
        let out = outcomes(400, None, b"bad", 2, now());
        assert!(out.iter().all(|r| matches!(r, Err(Error::Fatal(_)))));
    }

    #[test]
    fn per_item_statuses_map_to_their_events() {
        let body = br#"{"items":[{"status":201},{"status":500,"error":"db down"},{"status":422,"error":{"field":"email"}}]}"#;
        let out = outcomes(207, None, body, 3, now());
        assert_eq!(
            out[0].as_ref().unwrap().detail,
            "HTTP 207, batch of 3, item 1: 201"
        );
        assert!(
            matches!(&out[1], Err(Error::Transient(m)) if m.contains("item 2 of a batch of 3") && m.contains("db down")),
            "{:?}",
            out[1]
        );
        assert!(
            matches!(&out[2], Err(Error::Fatal(m)) if m.contains("email")),
            "{:?}",
            out[2]
        );
        // The bulk-API style, and a top-level array.
        let bulk = br#"{"errors":true,"items":[{"index":{"status":200}},{"index":{"status":429,"error":"slow down"}}]}"#;
        let out = outcomes(200, None, bulk, 2, now());
        assert!(out[0].is_ok());
        assert!(matches!(&out[1], Err(Error::Transient(_))));
        let out = outcomes(200, None, br#"[{"status":200},{"status":404}]"#, 2, now());
        assert!(out[0].is_ok() && matches!(&out[1], Err(Error::Fatal(_))));
    }

    #[test]
    fn answers_without_a_list_deliver_all() {
        for body in [&b""[..], b"ok", br#"{"id":7}"#, br#"{"items":"none"}"#] {
            let out = outcomes(200, None, body, 2, now());
            assert!(out.iter().all(Result::is_ok), "{body:?}");
            assert_eq!(out[0].as_ref().unwrap().detail, "HTTP 200, batch of 2");
        }
    }

    #[test]
    fn a_list_of_another_length_retries_them_all() {
        let out = outcomes(200, None, br#"{"items":[{"status":200}]}"#, 2, now());
        assert!(
            out.iter()
                .all(|r| matches!(r, Err(Error::Transient(m)) if m.contains("lists 1 results for a batch of 2")))
        );
    }
}
