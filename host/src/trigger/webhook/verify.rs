//! Webhook signature presets: HMAC over the exact raw body as each provider
//! defines it, constant-time comparison, several signatures (key rotation),
//! a timestamp tolerance against replays, and the provider's delivery id as
//! the dedup key so a replayed delivery takes no effect.

pub use crate::config::Preset;
use hmac::Mac;
use hyper::HeaderMap;

/// A pipeline's verifier: the preset, its keys (current first), and limits.
#[derive(Clone)]
pub struct Verifier {
    /// The scheme.
    pub preset: Preset,
    /// HMAC keys; any of them may have signed (rotation).
    pub keys: Vec<Vec<u8>>,
    /// Largest age (either way) of a signed timestamp, in seconds.
    pub tolerance_s: u64,
    /// Header of the `hmac-sha256` preset.
    pub header: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("preset", &self.preset)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The key bytes of a secret value for `preset` (Standard Webhooks secrets
/// are `whsec_` and base64).
pub fn key_bytes(preset: Preset, secret: &str) -> Result<Vec<u8>, String> {
    if preset == Preset::StandardWebhooks {
        use base64::Engine as _;
        let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| {
                "a standard-webhooks secret must be whsec_ followed by base64".to_string()
            });
    }
    Ok(secret.as_bytes().to_vec())
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    let v = headers
        .get(name)
        .ok_or_else(|| format!("the {name} header is missing"))?;
    v.to_str()
        .map_err(|_| format!("the {name} header is not text"))
}

fn timestamp(value: &str, name: &str, now_s: u64, tolerance_s: u64) -> Result<(), String> {
    let ts: u64 = value
        .trim()
        .parse()
        .map_err(|_| format!("{name} is not a Unix timestamp in seconds"))?;
    if ts.abs_diff(now_s) > tolerance_s {
        return Err(format!(
            "{name} is {} s away from now, outside the {tolerance_s} s tolerance (a replay, or a clock far off)",
            ts.abs_diff(now_s)
        ));
    }
    Ok(())
}

/// Whether any candidate equals any expected MAC, in constant time per pair.
fn any_matches(candidates: &[Vec<u8>], expected: &[Vec<u8>]) -> bool {
    let mut ok = false;
    for c in candidates {
        for e in expected {
            ok |= crate::secrets::constant_time_eq(c, e);
        }
    }
    ok
}

fn hex_signatures<'a>(values: impl Iterator<Item = &'a str>) -> Vec<Vec<u8>> {
    values.filter_map(|v| hex::decode(v.trim()).ok()).collect()
}

/// `preset:` and the sha256 of what the signature covers.
fn signed_key(preset: &str, parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    format!("{preset}:{}", hex::encode(h.finalize()))
}

impl Verifier {
    /// Check a delivery. `Ok` carries its idempotency key, made only of
    /// what the signature covers: Standard Webhooks' signed `webhook-id`,
    /// else a digest of the signed content. An unsigned header (GitHub's
    /// delivery id, a client's `Idempotency-Key`) never names a delivery, so
    /// a captured delivery replayed under a new id, or with its signature's
    /// hex in another case, is the same delivery. Errors never hold the
    /// expected value.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_s: u64) -> Result<String, String> {
        let expected =
            |parts: &[&[u8]]| -> Vec<Vec<u8>> { self.keys.iter().map(|k| mac(k, parts)).collect() };
        let mismatch = || {
            "no signature matches; check the secret, and that the body reaches weft unchanged"
                .to_string()
        };
        match self.preset {
            Preset::StandardWebhooks => {
                use base64::Engine as _;
                let id = header(headers, "webhook-id")?;
                let ts = header(headers, "webhook-timestamp")?;
                let sigs = header(headers, "webhook-signature")?;
                timestamp(ts, "webhook-timestamp", now_s, self.tolerance_s)?;
                let candidates: Vec<Vec<u8>> = sigs
                    .split(' ')
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .collect();
                if candidates.is_empty() {
                    return Err("webhook-signature holds no v1 signature".into());
                }
                let exp = expected(&[id.as_bytes(), b".", ts.trim().as_bytes(), b".", body]);
                if !any_matches(&candidates, &exp) {
                    return Err(mismatch());
                }
                Ok(id.to_string())
            }
            Preset::Github => {
                let sig = header(headers, "x-hub-signature-256")?;
                let hex = sig
                    .strip_prefix("sha256=")
                    .ok_or("x-hub-signature-256 must start with sha256=")?;
                let candidates = hex_signatures(std::iter::once(hex));
                if candidates.is_empty() {
                    return Err("x-hub-signature-256 is not hex".into());
                }
                if !any_matches(&candidates, &expected(&[body])) {
                    return Err(mismatch());
                }
                // The delivery id is not signed: replays are found by their
                // body, for the dedup window.
                Ok(signed_key("github", &[body]))
            }
            Preset::Stripe => {
                let sig = header(headers, "stripe-signature")?;
                let mut ts = None;
                let mut v1 = Vec::new();
                for part in sig.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", t)) => ts = Some(t),
                        Some(("v1", s)) => v1.push(s),
                        Some(_) => {}
                        None => return Err("stripe-signature is malformed".into()),
                    }
                }
                let ts = ts.ok_or("stripe-signature has no t= timestamp")?;
                timestamp(
                    ts,
                    "the stripe-signature timestamp",
                    now_s,
                    self.tolerance_s,
                )?;
                let candidates = hex_signatures(v1.into_iter());
                if candidates.is_empty() {
                    return Err("stripe-signature holds no v1 signature".into());
                }
                if !any_matches(&candidates, &expected(&[ts.as_bytes(), b".", body])) {
                    return Err(mismatch());
                }
                // Stripe retries a delivery with a fresh signature; the event
                // id in the body (the pipeline's idempotency_key) dedups it.
                Ok(signed_key("stripe", &[ts.as_bytes(), b".", body]))
            }
            Preset::Slack => {
                let sig = header(headers, "x-slack-signature")?;
                let ts = header(headers, "x-slack-request-timestamp")?;
                timestamp(ts, "x-slack-request-timestamp", now_s, self.tolerance_s)?;
                let hex = sig
                    .strip_prefix("v0=")
                    .ok_or("x-slack-signature must start with v0=")?;
                let candidates = hex_signatures(std::iter::once(hex));
                if candidates.is_empty() {
                    return Err("x-slack-signature is not hex".into());
                }
                if !any_matches(
                    &candidates,
                    &expected(&[b"v0:", ts.trim().as_bytes(), b":", body]),
                ) {
                    return Err(mismatch());
                }
                Ok(signed_key("slack", &[ts.trim().as_bytes(), b":", body]))
            }
            Preset::HmacSha256 => {
                let sig = header(headers, &self.header)?;
                let candidates = hex_signatures(
                    sig.split(',')
                        .map(|s| s.trim().trim_start_matches("sha256=")),
                );
                if candidates.is_empty() {
                    return Err(format!("{} holds no hex signature", self.header));
                }
                if !any_matches(&candidates, &expected(&[body])) {
                    return Err(mismatch());
                }
                Ok(signed_key("hmac", &[body]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn verifier(preset: Preset, secrets: &[&str]) -> Verifier {
        Verifier {
            preset,
            keys: secrets
                .iter()
                .map(|s| key_bytes(preset, s).unwrap())
                .collect(),
            tolerance_s: 300,
            header: "x-signature".into(),
        }
    }

    /// Every preset: the valid delivery passes; one changed body byte, a
    /// wrong secret, a missing header, a timestamp outside the tolerance and
    /// a malformed header all fail, with reasons that hold no expected value.
    fn refusals(v: &Verifier, good: &[(&str, &str)], body: &[u8], now: u64, has_timestamp: bool) {
        let h = headers(good);
        assert!(
            v.verify(&h, body, now).is_ok(),
            "{:?}",
            v.verify(&h, body, now)
        );
        let mut changed = body.to_vec();
        changed[0] ^= 1;
        let e = v.verify(&h, &changed, now).unwrap_err();
        assert!(e.contains("no signature matches"), "{e}");
        let wrong = Verifier {
            keys: vec![b"not-the-secret".to_vec()],
            ..v.clone()
        };
        assert!(wrong.verify(&h, body, now).is_err());
        for missing in good.iter().map(|(k, _)| *k) {
            let fewer: Vec<_> = good
                .iter()
                .filter(|(k, _)| *k != missing)
                .cloned()
                .collect();
            if v.verify(&headers(&fewer), body, now).is_ok() {
                assert_eq!(
                    missing, "x-github-delivery",
                    "only the delivery id is optional"
                );
            }
        }
        if has_timestamp {
            let tol = v.tolerance_s;
            assert!(v.verify(&h, body, now + tol).is_ok(), "at the edge");
            let e = v.verify(&h, body, now + tol + 1).unwrap_err();
            assert!(e.contains("tolerance"), "{e}");
            assert!(v.verify(&h, body, now - tol - 1).is_err());
        }
        let malformed: Vec<_> = good
            .iter()
            .map(|(k, val)| (*k, if k.contains("sign") { "garbage" } else { *val }))
            .collect();
        let e = v.verify(&headers(&malformed), body, now).unwrap_err();
        for (_, val) in good {
            if val.len() > 20 {
                assert!(!e.contains(val), "the reason leaks a value: {e}");
            }
        }
    }

    #[test]
    fn standard_webhooks_published_vector_and_rotation() {
        // The example in the Standard Webhooks specification.
        let v = verifier(
            Preset::StandardWebhooks,
            &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        );
        let body = br#"{"test": 2432232314}"#;
        let good = [
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        assert_eq!(
            v.verify(&headers(&good), body, 1614265330).unwrap(),
            "msg_p5jXN8AQM9LWM0D4loKWxJek"
        );
        refusals(&v, &good, body, 1614265330, true);
        // Rotation: an old signature next to the current one, and the old key.
        let rotated = [
            good[0],
            good[1],
            (
                "webhook-signature",
                "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ];
        assert!(v.verify(&headers(&rotated), body, 1614265330).is_ok());
        let two_keys = verifier(
            Preset::StandardWebhooks,
            &[
                "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ],
        );
        assert!(two_keys.verify(&headers(&good), body, 1614265330).is_ok());
    }

    #[test]
    fn github_published_vector() {
        // The example in GitHub's "Validating webhook deliveries".
        let v = verifier(Preset::Github, &["It's a Secret to Everybody"]);
        let good = [
            (
                "x-hub-signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ];
        let key = v.verify(&headers(&good), b"Hello, World!", 0).unwrap();
        assert_eq!(key, signed_key("github", &[b"Hello, World!"]));
        // The delivery id is not signed: a new one is the same delivery.
        let renamed = [
            good[0],
            ("x-github-delivery", "00000000-0000-0000-0000-000000000000"),
        ];
        assert_eq!(
            v.verify(&headers(&renamed), b"Hello, World!", 0).unwrap(),
            key
        );
        refusals(&v, &good, b"Hello, World!", 0, false);
    }

    #[test]
    fn slack_published_vector() {
        // The example in Slack's "Verifying requests from Slack".
        let v = verifier(Preset::Slack, &["8f742231b10e8888abcd99yyyzzz85a5"]);
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let good = [
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
            ("x-slack-request-timestamp", "1531420618"),
        ];
        refusals(&v, &good, body, 1531420618, true);
        // The same signature in upper case is the same delivery.
        let key = v.verify(&headers(&good), body, 1531420618).unwrap();
        let upper = good[0].1.to_ascii_uppercase().replacen("V0=", "v0=", 1);
        let shouted = [("x-slack-signature", upper.as_str()), good[1]];
        assert_eq!(v.verify(&headers(&shouted), body, 1531420618).unwrap(), key);
    }

    #[test]
    fn stripe_and_plain_hmac_with_rotation() {
        let key = "whsec_stripe_test_key_0001";
        let body = br#"{"id":"evt_1","type":"charge.succeeded"}"#;
        let sig = hex::encode(mac(key.as_bytes(), &[b"1700000000", b".", body]));
        let header_value = format!("t=1700000000,v1=00ff,v1={sig},v0=abc");
        let v = verifier(Preset::Stripe, &[key]);
        refusals(
            &v,
            &[("stripe-signature", &header_value)],
            body,
            1700000000,
            true,
        );
        let plain = verifier(Preset::HmacSha256, &["old-secret-1", "new-secret-2"]);
        let sig = hex::encode(mac(b"old-secret-1", &[body]));
        refusals(
            &plain,
            &[("x-signature", &format!("sha256={sig}"))],
            body,
            0,
            false,
        );
    }
}
