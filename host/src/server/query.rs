//! Query strings of the admin API: one helper for the client that writes
//! them and the server that reads them.

/// `a=1&b=x%3Ay` from pairs, each value percent-encoded.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The decoded value of `name` in a query string, if present.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| unescape(v))
    })
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(v: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' if i + 2 < bytes.len() => hex(bytes[i + 1]).zip(hex(bytes[i + 2])),
            _ => None,
        };
        match (decoded, bytes[i]) {
            (Some((hi, lo)), _) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_client_writes_the_server_reads() {
        let since = "2026-11-22T10:00:00+01:00";
        let q = encode(&[
            ("pipeline", "leads"),
            ("since", since),
            ("state", "dead lettered"),
        ]);
        assert!(!q.contains(':') && !q.contains('+'), "{q}");
        assert_eq!(param(Some(&q), "since").as_deref(), Some(since));
        assert_eq!(param(Some(&q), "pipeline").as_deref(), Some("leads"));
        assert_eq!(param(Some(&q), "state").as_deref(), Some("dead lettered"));
        assert_eq!(param(Some(&q), "limit"), None);
        assert_eq!(param(None, "limit"), None);
        assert_eq!(param(Some("a=%zz%4"), "a").as_deref(), Some("%zz%4"));
        assert_eq!(param(Some("a=%C3%A9%é"), "a").as_deref(), Some("é%é"));
    }
}
