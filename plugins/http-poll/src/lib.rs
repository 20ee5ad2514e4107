//! http-poll: ask a REST endpoint for what changed since the cursor, page by
//! page, and emit each item keyed by `id:cursor-value`.
//!
//! `GET {url}?{cursor_param}={since}&{page_param}={token}`; the items are the
//! array at `items`, each with an id at `id_field` and a change marker (an
//! `updated_at` time, a version) at `cursor_field`. While a response names a
//! next page the host polls again at once; after the last page the cursor
//! moves to the largest change marker seen. Credentials go on the request
//! through the host.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_sdk::credentials::Placement;
use weft_sdk::{Batch, Emitted, Error, Plugin, PluginInfo, Result, Source, http};

/// The trigger's `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The endpoint, `http://` or `https://`, without the cursor parameters.
    pub url: String,
    /// JSON pointer to the array of items in a response (default `/items`).
    #[serde(default = "default_items")]
    pub items: String,
    /// JSON pointer to an item's id (default `/id`).
    #[serde(default = "default_id")]
    pub id_field: String,
    /// JSON pointer to an item's change marker (default `/updated_at`).
    #[serde(default = "default_cursor_field")]
    pub cursor_field: String,
    /// Query parameter carrying the cursor (default `updated_since`).
    #[serde(default = "default_cursor_param")]
    pub cursor_param: String,
    /// JSON pointer to the next page's token in a response (default `/next_page_token`).
    #[serde(default = "default_page_field")]
    pub page_token_field: String,
    /// Query parameter carrying the page token (default `page_token`).
    #[serde(default = "default_page_param")]
    pub page_param: String,
    /// Cursor of the very first poll (default: none, everything).
    #[serde(default)]
    pub initial_cursor: Option<String>,
    /// Credential sent as a bearer token.
    #[serde(default)]
    pub bearer_credential: Option<String>,
    /// Time to wait for a response, in ms.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn default_items() -> String {
    "/items".into()
}
fn default_id() -> String {
    "/id".into()
}
fn default_cursor_field() -> String {
    "/updated_at".into()
}
fn default_cursor_param() -> String {
    "updated_since".into()
}
fn default_page_field() -> String {
    "/next_page_token".into()
}
fn default_page_param() -> String {
    "page_token".into()
}

/// What the host keeps between polls.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// Change marker the current run of pages started from.
    pub since: Option<Value>,
    /// Next page of the current run.
    pub page: Option<String>,
    /// Largest change marker seen in the current run.
    pub max: Option<Value>,
}

/// The plugin.
pub struct HttpPoll(Config);

/// Text of an id or marker: strings as they are, other JSON as written.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The larger of two change markers: numbers by value, anything else as text
/// (ISO 8601 times sort as text).
fn later(a: Option<Value>, b: &Value) -> Value {
    match a {
        None => b.clone(),
        Some(a) => {
            let b_is_later = match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => y > x,
                _ => text(b) > text(&a),
            };
            if b_is_later { b.clone() } else { a }
        }
    }
}

fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl HttpPoll {
    /// The request URL for a cursor.
    pub fn url(&self, cursor: &Cursor) -> String {
        let c = &self.0;
        let mut params = Vec::new();
        if let Some(since) = &cursor.since {
            params.push(format!("{}={}", c.cursor_param, encode(&text(since))));
        }
        if let Some(page) = &cursor.page {
            params.push(format!("{}={}", c.page_param, encode(page)));
        }
        if params.is_empty() {
            return c.url.clone();
        }
        let sep = if c.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{}", c.url, params.join("&"))
    }

    /// Turn one response body into a batch, given the cursor it answered.
    pub fn batch(&self, cursor: Cursor, body: &[u8]) -> Result<Batch> {
        let c = &self.0;
        let doc: Value = serde_json::from_slice(body)
            .map_err(|e| Error::transient(format!("the response is not JSON: {e}")))?;
        let items = doc
            .pointer(&c.items)
            .and_then(Value::as_array)
            .ok_or_else(|| Error::fatal(format!("the response has no array at {}", c.items)))?;
        let mut events = Vec::with_capacity(items.len());
        let mut max = cursor.max.clone();
        for item in items {
            let id = item
                .pointer(&c.id_field)
                .map(text)
                .filter(|s| !s.is_empty());
            let marker = item.pointer(&c.cursor_field);
            let (Some(id), Some(marker)) = (id, marker) else {
                return Err(Error::fatal(format!(
                    "an item lacks {} or {}: {}",
                    c.id_field,
                    c.cursor_field,
                    item.to_string().chars().take(200).collect::<String>()
                )));
            };
            max = Some(later(max, marker));
            events.push(Emitted {
                key: format!("{id}:{}", text(marker)),
                payload: item.to_string().into_bytes(),
            });
        }
        let token = doc
            .pointer(&c.page_token_field)
            .map(text)
            .filter(|t| !t.is_empty() && t != "null");
        let (next, more) = match token {
            Some(page) => (
                Cursor {
                    since: cursor.since,
                    page: Some(page),
                    max,
                },
                true,
            ),
            None => (
                Cursor {
                    since: max.or(cursor.since),
                    page: None,
                    max: None,
                },
                false,
            ),
        };
        Ok(Batch {
            events,
            next_cursor: Some(serde_json::to_string(&next).unwrap_or_default()),
            more,
        })
    }
}

impl Plugin for HttpPoll {
    type Config = Config;

    fn describe() -> PluginInfo {
        PluginInfo::new("http-poll", env!("CARGO_PKG_VERSION"))
            .config_schema(include_str!("../schema.json"))
    }

    fn new(config: Config) -> Result<Self> {
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(Error::fatal(format!(
                "invalid config for plugin http-poll: url {:?} must start with http:// or https://",
                config.url
            )));
        }
        for (key, p) in [
            ("items", &config.items),
            ("id_field", &config.id_field),
            ("cursor_field", &config.cursor_field),
            ("page_token_field", &config.page_token_field),
        ] {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(Error::fatal(format!(
                    "invalid config for plugin http-poll: {key} {p:?} is not a JSON pointer; write it like \"/id\""
                )));
            }
        }
        Ok(HttpPoll(config))
    }
}

impl Source for HttpPoll {
    fn poll(&mut self, cursor: Option<String>) -> Result<Batch> {
        let cursor: Cursor = match cursor {
            Some(c) => serde_json::from_str(&c)
                .map_err(|e| Error::fatal(format!("the stored cursor is unreadable: {e}")))?,
            None => Cursor {
                since: self.0.initial_cursor.clone().map(Value::String),
                ..Cursor::default()
            },
        };
        let mut req = http::Request::get(self.url(&cursor)).header("accept", "application/json");
        if let Some(name) = &self.0.bearer_credential {
            req = req.credential(name, Placement::Bearer);
        }
        if let Some(ms) = self.0.timeout_ms {
            req = req.timeout_ms(ms);
        }
        let resp = req.send()?;
        match resp.status {
            200..=299 => self.batch(cursor, &resp.body),
            429 | 503 => {
                let wait = resp
                    .header("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(1);
                Err(Error::rate_limited(
                    wait * 1000,
                    format!("HTTP {}", resp.status),
                ))
            }
            s @ 500..=599 => Err(Error::transient(format!("HTTP {s}"))),
            s => Err(Error::fatal(format!(
                "HTTP {s}: {}",
                String::from_utf8_lossy(&resp.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))),
        }
    }
}

/// The one URL a config makes it call (its queries stay under its path).
impl weft_sdk::Plan for HttpPoll {
    fn plan(config: &Config) -> Vec<String> {
        vec![config.url.clone()]
    }
}

weft_sdk::export!(source: HttpPoll);
weft_sdk::export!(plan: HttpPoll);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin() -> HttpPoll {
        HttpPoll::new(serde_json::from_value(json!({"url": "http://api/contacts"})).unwrap())
            .ok()
            .unwrap()
    }

    #[test]
    fn pages_then_moves_the_cursor_to_the_latest_change() {
        let p = plugin();
        let start = Cursor::default();
        assert_eq!(p.url(&start), "http://api/contacts");
        let page1 = json!({"items": [{"id": 1, "updated_at": "2026-01-02T00:00:00Z"},
                                      {"id": "b", "updated_at": "2026-01-01T00:00:00Z"}],
                           "next_page_token": "p2"});
        let b = p.batch(start, page1.to_string().as_bytes()).ok().unwrap();
        assert!(b.more);
        assert_eq!(b.events[0].key, "1:2026-01-02T00:00:00Z");
        assert_eq!(b.events[1].key, "b:2026-01-01T00:00:00Z");
        let c: Cursor = serde_json::from_str(b.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(p.url(&c), "http://api/contacts?page_token=p2");
        let page2 = json!({"items": [{"id": 3, "updated_at": "2026-01-03T00:00:00Z"}]});
        let b = p.batch(c, page2.to_string().as_bytes()).ok().unwrap();
        assert!(!b.more);
        let c: Cursor = serde_json::from_str(b.next_cursor.as_deref().unwrap()).unwrap();
        assert_eq!(
            p.url(&c),
            "http://api/contacts?updated_since=2026-01-03T00%3A00%3A00Z"
        );
        // Numbers compare as numbers.
        assert_eq!(later(Some(json!(9)), &json!(10)), json!(10));
        let err = p
            .batch(Cursor::default(), br#"{"items": [{"name": "no id"}]}"#)
            .err()
            .unwrap();
        assert!(err.message().contains("lacks /id"), "{}", err.message());
    }
}
