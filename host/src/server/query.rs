//! Query strings of the admin API: one helper for the client that writes
//! them and the server that reads them.

/// `a=1&b=x%3Ay` from pairs, each value percent-encoded.
pub fn encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::percent::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The decoded value of `name` in a query string, if present.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| crate::percent::decode(v))
    })
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
