//! A sink that attacks the host in the way its config names. The hostile
//! test suite loads copies of it under several names, each with its own
//! grant, and checks that every attack is contained.
//!
//! With `attack = "none"` it behaves: it posts the event to `url`.

use serde::Deserialize;
use std::hint::black_box;
use weft_sdk::credentials::{self, Placement};
use weft_sdk::{Error, Event, Plugin, PluginInfo, Receipt, Result, Sink, http, kv, log};

/// The `config` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What to do: `none`, `loop`, `memory`, `recursion`, `http`, `http-post`, `credential`,
    /// `reveal`, `kv-other`, `output`, `echo`, `leak`, `log-flood`, `stdout-flood`, `panic`,
    /// `panic-on-poison` (behaves as `none` unless the payload holds
    /// `"poison"`); or, to behave, `echo-source` (the event's source as its
    /// receipt) and `log-fields` (a line with fields).
    pub attack: String,
    /// Target of `http` and `none`.
    #[serde(default)]
    pub url: String,
    /// Credential for `credential` and `reveal`.
    #[serde(default)]
    pub credential: String,
}

/// The plugin.
pub struct Hostile(Config);

fn recurse(depth: u64) -> u64 {
    let local = [depth; 64];
    black_box(&local);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)) + black_box(local[3])
}

impl Plugin for Hostile {
    type Config = Config;

    fn describe() -> PluginInfo {
        PluginInfo::new("hostile", env!("CARGO_PKG_VERSION"))
    }

    fn new(config: Config) -> Result<Self> {
        Ok(Hostile(config))
    }
}

impl Sink for Hostile {
    fn deliver(&mut self, event: &Event) -> Result<Receipt> {
        let c = &self.0;
        let poisoned = event.payload.windows(8).any(|w| w == b"\"poison\"");
        match c.attack.as_str() {
            "panic-on-poison" if poisoned => panic!("hostile plugin swallowed a poison event"),
            "none" | "panic-on-poison" => {
                let resp = http::Request::post(&c.url)
                    .header("idempotency-key", &event.key)
                    .json_body(event.payload.clone())
                    .send()?;
                Ok(Receipt::new(format!("HTTP {}", resp.status)))
            }
            "loop" => {
                let mut n = 0u64;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![0xAB; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "recursion" => Ok(Receipt::new(recurse(0).to_string())),
            "http" => {
                let resp = http::Request::get(&c.url).send()?;
                Ok(Receipt::new(format!(
                    "reached {}: HTTP {}",
                    c.url, resp.status
                )))
            }
            "http-post" => {
                // A request with a body, so the refusal meets a body still
                // being written.
                let resp = http::Request::post(&c.url)
                    .json_body(vec![b'x'; 256 * 1024])
                    .send()?;
                Ok(Receipt::new(format!(
                    "reached {}: HTTP {}",
                    c.url, resp.status
                )))
            }
            "credential" => {
                let resp = http::Request::get(&c.url)
                    .credential(&c.credential, Placement::Bearer)
                    .send()?;
                Ok(Receipt::new(format!("HTTP {}", resp.status)))
            }
            "reveal" => {
                let secret = credentials::reveal(&c.credential)?;
                Ok(Receipt::new(format!("got {} bytes", secret.len())))
            }
            "kv-other" => {
                // Its own state works…
                kv::set("mine", b"1")?;
                let own = kv::list_keys("", 100)?;
                if own != ["mine"] {
                    return Err(Error::fatal(format!("saw keys of others: {own:?}")));
                }
                // …but another plugin's namespace is out of reach.
                let other = kv::get("\0json-map\0secret")?;
                Ok(Receipt::new(format!("read another namespace: {other:?}")))
            }
            "output" => Ok(Receipt::new("x".repeat(8 << 20))),
            "echo" => {
                // Writes the whole payload to its log and its error.
                let body = String::from_utf8_lossy(&event.payload);
                log::info(&format!("payload: {body}"));
                Err(Error::fatal(format!("cannot deliver {body}")))
            }
            "leak" => {
                // A plugin granted the raw value tries to leak it every way it can.
                let secret = credentials::reveal(&c.credential)?;
                log::info(&format!("the secret is {secret}"));
                println!("stdout: {secret}");
                Err(Error::fatal(format!("leaking {secret} in an error")))
            }
            "log-flood" => {
                for i in 0..1_000_000u32 {
                    log::info(&format!("flood line {i} {}", "z".repeat(200)));
                }
                Ok(Receipt::new("flooded"))
            }
            "stdout-flood" => {
                for i in 0..1_000_000u32 {
                    println!("stdout flood {i} {}", "y".repeat(200));
                }
                Ok(Receipt::new("flooded"))
            }
            // Not attacks: a log line with fields, and what the host told it
            // about the event.
            "log-fields" => {
                log::write(
                    log::Level::Info,
                    "shipping order",
                    &[
                        ("order_id", "42"),
                        ("stage", "ready to ship"),
                        ("plugin", "spoofed"),
                    ],
                );
                Ok(Receipt::new("logged"))
            }
            "echo-source" => Ok(Receipt::new(format!("source={}", event.source))),
            "panic" => panic!("hostile plugin panics on purpose"),
            other => Err(Error::fatal(format!("unknown attack {other:?}"))),
        }
    }
}

weft_sdk::export!(sink: Hostile);
