//! http-sink: deliver each event as JSON over HTTP.
//!
//! Sends the event's idempotency key as `Idempotency-Key` and its correlation
//! id as `X-Correlation-Id`, so a receiver can drop duplicates that retries
//! cause. 2xx is delivered; 408, 429, 5xx and network errors are retried (429
//! and 503 honour `Retry-After`); other statuses are permanent failures.
//!
//! With `batch` set on the sink, the host hands it several events at once
//! and they go as one request: a JSON array (or NDJSON) of the payloads,
//! each event's key in the `Idempotency-Keys` header, and each event's
//! outcome read from the answer (see [`batch::outcomes`]).

pub mod batch;
pub mod outcome;

use serde::Deserialize;
use std::collections::BTreeMap;
use weft_sdk::credentials::Placement;
use weft_sdk::{Error, Event, Plugin, PluginInfo, Receipt, Result, Sink, http};

/// The `config` table of an http-sink.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to send events (`http://` or `https://`).
    pub url: String,
    /// `POST` (default) or `PUT`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Header that carries the idempotency key.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Header that carries the correlation id.
    #[serde(default = "default_correlation_header")]
    pub correlation_header: String,
    /// Time to wait for the response, in milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Credentials the host attaches to every request (each must be in the
    /// plugin's grant); the secret never enters the plugin.
    #[serde(default)]
    pub auth: Vec<Auth>,
    /// `"gzip"`: compress request bodies of at least `compress_min_bytes`
    /// and send them with `Content-Encoding: gzip`.
    #[serde(default)]
    pub compress: Option<String>,
    /// Smallest body that is compressed (default 1024 bytes): smaller ones
    /// gain too little to be worth it.
    #[serde(default = "default_compress_min_bytes")]
    pub compress_min_bytes: usize,
    /// How a batch is written: `"json"` (default, a JSON array of the
    /// payloads) or `"ndjson"` (one payload per line).
    #[serde(default)]
    pub batch_format: batch::Format,
    /// Header that carries a batch's idempotency keys, in order, comma-separated.
    #[serde(default = "default_batch_keys_header")]
    pub batch_keys_header: String,
}

fn default_batch_keys_header() -> String {
    "Idempotency-Keys".into()
}

fn default_compress_min_bytes() -> usize {
    1024
}

/// `body` gzipped at the default level.
pub fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// `{ credential = "CRM_TOKEN", scheme = "bearer" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// Credential name from the grant.
    pub credential: String,
    /// `bearer` (default), `basic` (needs `user`), `header` or `hmac-sha256` (need `header`).
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// User name for `basic`.
    #[serde(default)]
    pub user: Option<String>,
    /// Header name for `header` and `hmac-sha256`.
    #[serde(default)]
    pub header: Option<String>,
}

fn default_scheme() -> String {
    "bearer".into()
}

impl Auth {
    fn placement(&self) -> Result<Placement> {
        let need = |what: &Option<String>, key: &str| {
            what.clone().ok_or_else(|| {
                Error::fatal(format!(
                    "invalid config for plugin http-sink: auth scheme {:?} needs `{key}`",
                    self.scheme
                ))
            })
        };
        Ok(match self.scheme.as_str() {
            "bearer" => Placement::Bearer,
            "basic" => Placement::Basic {
                user: need(&self.user, "user")?,
            },
            "header" => Placement::Header(need(&self.header, "header")?),
            "hmac-sha256" => Placement::HmacSha256(need(&self.header, "header")?),
            other => {
                return Err(Error::fatal(format!(
                    "invalid config for plugin http-sink: auth scheme {other:?} is not one of bearer, basic, header, hmac-sha256"
                )));
            }
        })
    }
}

fn default_method() -> String {
    "POST".into()
}
fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}
fn default_correlation_header() -> String {
    "X-Correlation-Id".into()
}

/// The plugin.
pub struct HttpSink {
    config: Config,
    method: http::Method,
    auth: Vec<(String, Placement)>,
}

impl Plugin for HttpSink {
    type Config = Config;

    fn describe() -> PluginInfo {
        PluginInfo::new("http-sink", env!("CARGO_PKG_VERSION"))
            .config_schema(include_str!("../schema.json"))
    }

    fn new(config: Config) -> Result<Self> {
        let method = match config.method.to_ascii_uppercase().as_str() {
            "POST" => http::Method::Post,
            "PUT" => http::Method::Put,
            other => {
                return Err(Error::fatal(format!(
                    "invalid config for plugin http-sink: method {other:?} is not supported; use \"POST\" or \"PUT\""
                )));
            }
        };
        if let Some(other) = config.compress.as_deref().filter(|c| *c != "gzip") {
            return Err(Error::fatal(format!(
                "invalid config for plugin http-sink: compress {other:?} is not supported; use \"gzip\" or leave it out"
            )));
        }
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(Error::fatal(format!(
                "invalid config for plugin http-sink: url {:?} must start with http:// or https://",
                config.url
            )));
        }
        let auth = config
            .auth
            .iter()
            .map(|a| Ok((a.credential.clone(), a.placement()?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(HttpSink {
            config,
            method,
            auth,
        })
    }
}

/// The header that marks a synthetic check's event (set by the host only).
const SYNTHETIC_HEADER: &str = "x-weft-synthetic";

impl HttpSink {
    /// A request with the body (compressed past the threshold), the
    /// configured headers, time limit and credentials.
    fn request(&self, content_type: &str, body: Vec<u8>) -> http::Request {
        let c = &self.config;
        let mut req = http::Request::new(self.method, &c.url)
            .header("content-type", content_type)
            .max_response_bytes(1024 * 1024);
        req = if c.compress.is_some() && body.len() >= c.compress_min_bytes {
            req.header("content-encoding", "gzip").body(gzip(&body))
        } else {
            req.body(body)
        };
        for (k, v) in &c.headers {
            req = req.header(k, v);
        }
        if let Some(ms) = c.timeout_ms {
            req = req.timeout_ms(ms);
        }
        for (name, placement) in &self.auth {
            req = req.credential(name, placement.clone());
        }
        req
    }
}

impl Sink for HttpSink {
    fn deliver(&mut self, event: &Event) -> Result<Receipt> {
        let c = &self.config;
        let content_type = if event.content_type.is_empty() {
            "application/json"
        } else {
            &event.content_type
        };
        let mut req = self
            .request(content_type, event.payload.clone())
            .header(&c.idempotency_header, &event.key)
            .header(&c.correlation_header, &event.correlation_id);
        // A synthetic check's run says so, so a receiver can keep it out
        // of its own books.
        if let Some((_, check)) = event
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(SYNTHETIC_HEADER))
        {
            req = req.header(SYNTHETIC_HEADER, check);
        }
        let resp = req.send()?;
        outcome::classify(
            resp.status,
            resp.header("retry-after"),
            &resp.body,
            std::time::SystemTime::now(),
        )
    }

    fn deliver_batch(&mut self, events: &[Event]) -> Vec<Result<Receipt>> {
        // Events that are not JSON cannot join the body: they go alone.
        let (together, alone): (Vec<_>, Vec<_>) =
            (0..events.len()).partition(|&i| batch::batchable(&events[i]));
        let mut out: Vec<Option<Result<Receipt>>> = vec![None; events.len()];
        for i in alone {
            out[i] = Some(self.deliver(&events[i]));
        }
        match together.len() {
            0 => {}
            1 => out[together[0]] = Some(self.deliver(&events[together[0]])),
            n => {
                let c = &self.config;
                let listed: Vec<&Event> = together.iter().map(|&i| &events[i]).collect();
                let sent = self
                    .request(
                        c.batch_format.content_type(),
                        batch::body(c.batch_format, &listed),
                    )
                    .header(&c.batch_keys_header, batch::keys_header(&listed))
                    .header(&c.correlation_header, &listed[0].correlation_id)
                    .send();
                let results = match sent {
                    Ok(resp) => batch::outcomes(
                        resp.status,
                        resp.header("retry-after"),
                        &resp.body,
                        n,
                        std::time::SystemTime::now(),
                    ),
                    Err(e) => vec![Err(Error::from(e)); n],
                };
                for (i, r) in together.into_iter().zip(results) {
                    out[i] = Some(r);
                }
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::fatal("no result for this event"))))
            .collect()
    }
}

/// The one URL a config makes it call (its queries stay under its path).
impl weft_sdk::Plan for HttpSink {
    fn plan(config: &Config) -> Vec<String> {
        vec![config.url.clone()]
    }
}

weft_sdk::export!(batch_sink: HttpSink);
weft_sdk::export!(plan: HttpSink);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_plan_is_the_configured_url() {
        use weft_sdk::Plan;
        let c: Config =
            serde_json::from_value(json!({"url": "https://api.example.com/v1/leads"})).unwrap();
        assert_eq!(HttpSink::plan(&c), vec!["https://api.example.com/v1/leads"]);
        // Through the export glue: a config it refuses is an error, not a plan.
        let err = weft_sdk::__private::plan::<HttpSink>(r#"{"uri": "x"}"#.into()).unwrap_err();
        assert!(err.contains("invalid config for plugin http-sink"), "{err}");
    }

    #[test]
    fn config_is_checked() {
        let cfg = |v| serde_json::from_value::<Config>(v).unwrap();
        assert!(HttpSink::new(cfg(json!({"url": "http://127.0.0.1:1/x"}))).is_ok());
        let err = HttpSink::new(cfg(json!({"url": "http://h", "method": "GET"})))
            .err()
            .unwrap();
        assert!(err.message().contains("method \"GET\" is not supported"));
        let err = HttpSink::new(cfg(json!({"url": "ftp://h"}))).err().unwrap();
        assert!(err.message().contains("must start with http://"));
        assert!(
            serde_json::from_value::<Config>(json!({"url": "http://h", "verb": "PUT"})).is_err()
        );
        let err = HttpSink::new(cfg(
            json!({"url": "http://h", "auth": [{"credential": "T", "scheme": "basic"}]}),
        ))
        .err()
        .unwrap();
        assert!(err.message().contains("needs `user`"), "{}", err.message());
        let ok = HttpSink::new(cfg(json!({"url": "http://h", "auth": [
            {"credential": "T"},
            {"credential": "S", "scheme": "hmac-sha256", "header": "x-signature"}
        ]})))
        .ok()
        .unwrap();
        assert_eq!(ok.auth[0].1, Placement::Bearer);
        assert_eq!(ok.auth[1].1, Placement::HmacSha256("x-signature".into()));
        let err = HttpSink::new(cfg(json!({"url": "http://h", "compress": "br"})))
            .err()
            .unwrap();
        assert!(
            err.message().contains("compress \"br\""),
            "{}",
            err.message()
        );
        assert!(HttpSink::new(cfg(json!({"url": "http://h", "compress": "gzip"}))).is_ok());
    }

    #[test]
    fn gzip_bodies_decode_to_the_payload() {
        use std::io::Read;
        let body = serde_json::to_vec(&json!({"pad": "x".repeat(5000)})).unwrap();
        let packed = gzip(&body);
        assert!(packed.len() < body.len() / 10);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(packed.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
