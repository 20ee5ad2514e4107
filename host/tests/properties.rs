//! Property-based suites over what an attacker controls: webhook
//! verification, origin and path matching in HTTP grants, and config
//! parsing. Each input is generated; the verdict must never panic and must
//! equal a small reference model written from the documented rules.

use hmac::Mac;
use hyper::HeaderMap;
use proptest::prelude::*;
use weft_host::config::{Config, Preset};
use weft_host::origin::Origin;
use weft_host::trigger::webhook::verify::Verifier;

const TOLERANCE_S: u64 = 300;
const NOW_S: u64 = 1_800_000_000;

fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        m.update(p);
    }
    hex::encode(m.finalize().into_bytes())
}

/// How a test delivery is made.
#[derive(Debug, Clone)]
enum Signing {
    /// Signed with the pipeline's key, hex in lower or upper case.
    Right { upper: bool },
    /// Signed with another key.
    OtherKey(Vec<u8>),
    /// Signed, then one body byte changed.
    Tampered(usize),
    /// Any text in the signature header.
    Garbage(String),
}

fn signing() -> impl Strategy<Value = Signing> {
    prop_oneof![
        any::<bool>().prop_map(|upper| Signing::Right { upper }),
        proptest::collection::vec(any::<u8>(), 1..40).prop_map(Signing::OtherKey),
        any::<usize>().prop_map(Signing::Tampered),
        ".{0,80}".prop_map(Signing::Garbage),
    ]
}

fn preset() -> impl Strategy<Value = Preset> {
    prop_oneof![
        Just(Preset::Github),
        Just(Preset::Stripe),
        Just(Preset::Slack),
        Just(Preset::HmacSha256),
    ]
}

/// The headers of a delivery of `body` signed as `preset` with `key` at `ts`.
fn signed(preset: Preset, key: &[u8], body: &[u8], ts: u64, sig: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    let ts_s = ts.to_string();
    let mac = |parts: &[&[u8]]| hmac_hex(key, parts);
    match preset {
        Preset::Github => put(
            "x-hub-signature-256",
            format!("sha256={}", sig_or(sig, || mac(&[body]))),
        ),
        Preset::Stripe => put(
            "stripe-signature",
            format!(
                "t={ts},v1={}",
                sig_or(sig, || mac(&[ts_s.as_bytes(), b".", body]))
            ),
        ),
        Preset::Slack => {
            put("x-slack-request-timestamp", ts_s.clone());
            put(
                "x-slack-signature",
                format!(
                    "v0={}",
                    sig_or(sig, || mac(&[b"v0:", ts_s.as_bytes(), b":", body]))
                ),
            );
        }
        _ => put(
            "x-signature",
            format!("sha256={}", sig_or(sig, || mac(&[body]))),
        ),
    }
    h
}

fn sig_or(sig: &str, mac: impl FnOnce() -> String) -> String {
    if sig.is_empty() {
        mac()
    } else {
        sig.to_string()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The model: a delivery verifies exactly when it carries a signature
    /// made with the key over the body as sent (in either hex case) and,
    /// for presets that sign a timestamp, that timestamp is within the
    /// tolerance. The same delivery always yields the same key.
    #[test]
    fn webhook_verification_agrees_with_the_model(
        preset in preset(),
        key in proptest::collection::vec(any::<u8>(), 1..40),
        body in proptest::collection::vec(any::<u8>(), 0..200),
        skew in -2 * TOLERANCE_S as i64..2 * TOLERANCE_S as i64,
        how in signing(),
    ) {
        let v = Verifier {
            preset,
            keys: vec![key.clone()],
            tolerance_s: TOLERANCE_S,
            header: "x-signature".into(),
        };
        let ts = (NOW_S as i64 + skew) as u64;
        let (sent_body, headers, signed_right) = match &how {
            Signing::Right { upper } => {
                let mut h = signed(preset, &key, &body, ts, "");
                if *upper {
                    for (_, value) in h.iter_mut() {
                        let up = value.to_str().unwrap().to_uppercase()
                            .replace("SHA256=", "sha256=").replace("V0=", "v0=")
                            .replace("T=", "t=").replace("V1=", "v1=");
                        *value = hyper::header::HeaderValue::from_str(&up).unwrap();
                    }
                }
                (body.clone(), h, true)
            }
            Signing::OtherKey(other) => {
                (body.clone(), signed(preset, other, &body, ts, ""), *other == key)
            }
            Signing::Tampered(at) => {
                let h = signed(preset, &key, &body, ts, "");
                let mut changed = body.clone();
                if changed.is_empty() {
                    changed.push(b'x');
                } else {
                    let i = at % changed.len();
                    changed[i] ^= 0x01;
                }
                (changed, h, false)
            }
            Signing::Garbage(text) => {
                (body.clone(), signed(preset, &key, &body, ts, &format!("g{text}")), false)
            }
        };
        let timed = matches!(preset, Preset::Stripe | Preset::Slack);
        let in_time = !timed || skew.unsigned_abs() <= TOLERANCE_S;
        let verdict = v.verify(&headers, &sent_body, NOW_S);
        prop_assert_eq!(verdict.is_ok(), signed_right && in_time, "{:?}", verdict);
        if let Ok(k) = verdict {
            // The key is made of signed material only: the same delivery
            // signed in the other hex case names the same delivery.
            let again = signed(preset, &key, &body, ts, "");
            prop_assert_eq!(v.verify(&again, &body, NOW_S), Ok(k));
        }
    }

    /// Arbitrary header values never panic the verifier.
    #[test]
    fn webhook_verification_never_panics(
        preset in preset(),
        values in proptest::collection::vec("[ -~]{0,60}", 4),
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let v = Verifier { preset, keys: vec![b"k".to_vec()], tolerance_s: TOLERANCE_S, header: "x-signature".into() };
        let mut h = HeaderMap::new();
        for (name, value) in ["x-hub-signature-256", "stripe-signature", "x-slack-signature", "x-slack-request-timestamp"]
            .iter()
            .zip(&values)
        {
            if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
                h.insert(*name, v);
            }
        }
        h.insert("x-signature", hyper::header::HeaderValue::from_str(&values[0]).unwrap());
        let _ = v.verify(&h, &body, NOW_S);
    }
}

/// A host as a grant names it, and its model.
#[derive(Debug, Clone)]
enum GrantHost {
    Exact(&'static str),
    Wildcard(&'static str),
}

fn grant_host() -> impl Strategy<Value = GrantHost> {
    prop_oneof![
        prop::sample::select(vec!["api.example.com", "example.com", "10.0.0.1"])
            .prop_map(GrantHost::Exact),
        prop::sample::select(vec!["example.com", "api.example.com"]).prop_map(GrantHost::Wildcard),
    ]
}

fn request_host() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "api.example.com",
        "API.Example.COM",
        "example.com",
        "x.api.example.com",
        "a.b.example.com",
        "example.com.evil.net",
        "evilexample.com",
        "10.0.0.1",
        "10.0.0.2",
    ])
}

/// Path segments: ordinary, encoded in harmless ways, and the tricks a
/// server may read differently from the check.
fn segment() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "hooks", "hooksy", "v2", "a", "%41", "..", ".", "%2e%2e", "%2E", "%2f", "%5C", "%252e",
        "a\\b", "..;", "x;y", "",
    ])
}

fn tricky(seg: &str) -> bool {
    let lower = seg.to_ascii_lowercase();
    seg == "."
        || seg == ".."
        || ["%2e", "%2f", "%5c", "%25", "\\", ";"]
            .iter()
            .any(|b| lower.contains(b))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// The model: scheme and port equal; the host equal (any case) or, for
    /// `*.domain`, a name with at least one label before `.domain` and
    /// never an IP literal; and, under a path prefix, a path whose segments
    /// begin with the prefix's and that holds no dot segment, encoded
    /// separator or dot, double encoding, backslash or `;`.
    #[test]
    fn origin_matching_agrees_with_the_model(
        grant_https in any::<bool>(),
        host in grant_host(),
        grant_port in prop::option::of(prop::sample::select(vec![443u16, 80, 8443])),
        prefix in proptest::collection::vec(prop::sample::select(vec!["hooks", "v2", "a"]), 0..3),
        other_scheme in prop::bool::weighted(0.15),
        req_host in request_host(),
        other_port in prop::option::weighted(0.15, prop::sample::select(vec![443u16, 80, 8443])),
        under_prefix in prop::bool::weighted(0.8),
        rest in proptest::collection::vec(segment(), 0..4),
    ) {
        // Most requests share the grant's scheme and port and start under
        // its prefix, so that the host and path rules decide.
        let https = grant_https != other_scheme;
        let port = other_port.unwrap_or(grant_port.unwrap_or(if https { 443 } else { 80 }));
        let path: Vec<&str> = if under_prefix {
            prefix.iter().copied().chain(rest).collect()
        } else {
            rest
        };
        let scheme = if grant_https { "https" } else { "http" };
        let host_text = match &host {
            GrantHost::Exact(h) => h.to_string(),
            GrantHost::Wildcard(d) => format!("*.{d}"),
        };
        let port_text = grant_port.map_or(String::new(), |p| format!(":{p}"));
        let prefix_text: String = prefix.iter().map(|s| format!("/{s}")).collect();
        let origin = Origin::parse(&format!("{scheme}://{host_text}{port_text}{prefix_text}")).unwrap();
        let path_text = format!("/{}", path.join("/"));

        let default_port = if grant_https { 443 } else { 80 };
        let host_ok = match &host {
            GrantHost::Exact(h) => req_host.eq_ignore_ascii_case(h),
            GrantHost::Wildcard(d) => {
                let lower = req_host.to_ascii_lowercase();
                req_host.parse::<std::net::IpAddr>().is_err()
                    && lower.strip_suffix(&format!(".{d}")).is_some_and(|l| !l.is_empty())
            }
        };
        let path_ok = prefix.is_empty()
            || (!path.iter().any(|s| tricky(s)) && path.len() >= prefix.len()
                && path.iter().zip(&prefix).all(|(a, b)| a == b));
        let expected = https == grant_https
            && port == grant_port.unwrap_or(default_port)
            && host_ok
            && path_ok;
        prop_assert_eq!(origin.allows(https, req_host, port, &path_text), expected,
            "{} {} {} {}", origin, req_host, port, path_text);
    }

    /// Any text as a grant entry parses or is refused, never panics; one
    /// that parses never allows an IP literal through a wildcard.
    #[test]
    fn any_origin_text_is_parsed_or_refused(text in "[a-z:/.*\\[\\]0-9@?#%;-]{0,40}", ip in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}") {
        if let Ok(o) = Origin::parse(&text)
            && text.contains("*.")
        {
            prop_assert!(!o.allows(text.starts_with("https"), &ip, 443, "/"));
        }
    }
}

const BASE: &str =
    "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = \"./d\"\n\n[plugins]\ndir = \"./p\"\n\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The model: a pipeline name is non-empty letters, digits, `-` and
    /// `_`; its limits are at least 1; a grant's origin is
    /// `http(s)://host[:port][/prefix]`; a credential name is upper case.
    #[test]
    fn config_validation_agrees_with_the_model(
        name in "[a-zA-Z0-9_ ./-]{0,12}",
        max_queue in 0u64..3,
        max_queue_bytes in 0u64..3,
        ingress in 0u64..3,
        origin in prop::sample::select(vec![
            "https://api.example.com", "http://127.0.0.1:9090/hooks/", "https://*.example.com",
            "ftp://example.com", "https://", "https://a.example.com/x?q=1", "https://user@example.com",
        ]),
        credential in prop::sample::select(vec!["CRM_TOKEN", "crm_token", "", "T1"]),
    ) {
        let text = format!(
            "{BASE}[grants.http-sink]\nhttp = [{origin:?}]\ncredentials = [{credential:?}]\n\n[[pipeline]]\nname = {name:?}\nmax_queue = {max_queue}\nmax_queue_bytes = {max_queue_bytes}\nmax_ingress_bytes_per_sec = {ingress}\nsink = {{ plugin = \"http-sink\" }}\n"
        );
        let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let origin_ok = Origin::parse(origin).is_ok();
        let credential_ok = credential.starts_with(|c: char| c.is_ascii_uppercase())
            && credential.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        let expected = name_ok && max_queue >= 1 && max_queue_bytes >= 1 && ingress >= 1 && origin_ok && credential_ok;
        let verdict = Config::parse(&text);
        prop_assert_eq!(verdict.is_ok(), expected, "{:?}\n{}", verdict.err(), text);
    }

    /// Any text, and any damage to a valid config, is parsed or refused
    /// with a message, never a panic.
    #[test]
    fn damaged_configs_are_refused_not_panicked_on(
        cut in 0usize..400,
        junk in "[ -~\n]{0,40}",
    ) {
        let valid = format!("{BASE}[[pipeline]]\nname = \"p\"\nsink = {{ plugin = \"http-sink\", config = {{ url = \"http://127.0.0.1:1\" }} }}\n");
        prop_assert!(Config::parse(&valid).is_ok());
        let mut damaged = valid.clone();
        let at = cut.min(damaged.len());
        damaged.insert_str(at, &junk);
        if let Err(e) = Config::parse(&damaged) {
            prop_assert!(!e.trim().is_empty());
        }
        let _ = Config::parse(&junk);
    }
}
