//! Origins in HTTP grants: `scheme://host[:port][/path-prefix]`, with an
//! optional `*.` wildcard for subdomains.

use std::fmt;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    https: bool,
    host: HostPattern,
    port: u16,
    path_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any subdomain of `example.com`, not the bare domain.
    Subdomains(String),
}

impl Origin {
    /// Parse a grant entry.
    pub fn parse(s: &str) -> Result<Origin, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "{s:?} must start with http:// or https:// (e.g. \"https://api.example.com\")"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(format!(
                "{s:?}: a grant may hold a path prefix but no query or fragment"
            ));
        }
        let (host, port) = split_host_port(authority, https)
            .ok_or_else(|| format!("{s:?}: cannot read the host and port"))?;
        if host.is_empty() || host.contains('@') {
            return Err(format!("{s:?}: the host is missing or holds user info"));
        }
        let host = host.to_ascii_lowercase();
        let host = match host.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                HostPattern::Subdomains(domain.to_string())
            }
            _ if host.contains('*') => {
                return Err(format!(
                    "{s:?}: a wildcard is only allowed as a leading \"*.\""
                ));
            }
            _ => HostPattern::Exact(host),
        };
        Ok(Origin {
            https,
            host,
            port,
            path_prefix: path.to_string(),
        })
    }

    /// Whether a request to this scheme, host, port and path is inside the grant.
    pub fn allows(&self, https: bool, host: &str, port: u16, path: &str) -> bool {
        if https != self.https || port != self.port {
            return false;
        }
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Exact(h) => *h == host,
            // A wildcard names domains: never an IP literal.
            HostPattern::Subdomains(_) if host.parse::<std::net::IpAddr>().is_ok() => false,
            HostPattern::Subdomains(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        };
        host_ok && path_within(&self.path_prefix, path)
    }

    /// Whether a URI (absolute, as `wasi:http` hands it over) is inside the grant.
    pub fn allows_uri(&self, uri: &http::Uri) -> bool {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return false,
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        self.allows(https, host, port, uri.path())
    }
}

/// A path prefix matches at a segment boundary: `/hooks/` allows `/hooks/x`,
/// `/hooks` allows `/hooks` and `/hooks/x` but not `/hooksy`.
fn path_within(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    // What a server may read differently from this check is refused: dot
    // segments (they climb out once normalised), encoded separators and dots,
    // double encoding, backslashes and `;` parameters (`..;/`).
    let lower = path.to_ascii_lowercase();
    if lower.split('/').any(|seg| matches!(seg, "." | ".."))
        || ["%2e", "%2f", "%5c", "%25", "\\", ";"]
            .iter()
            .any(|bad| lower.contains(bad))
    {
        return false;
    }
    let Some(rest) = path.strip_prefix(prefix) else {
        return false;
    };
    prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/')
}

fn split_host_port(authority: &str, https: bool) -> Option<(&str, u16)> {
    let default = if https { 443 } else { 80 };
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, p.parse().ok()?)),
            None if after.is_empty() => Some((host, default)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok()?)),
        None => Some((authority, default)),
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let host = match &self.host {
            HostPattern::Exact(h) if h.contains(':') => format!("[{h}]"),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Subdomains(d) => format!("*.{d}"),
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(grant: &str, url: &str) -> bool {
        Origin::parse(grant)
            .unwrap()
            .allows_uri(&url.parse().unwrap())
    }

    #[test]
    fn scheme_host_port_and_path_must_match() {
        assert!(allows(
            "http://127.0.0.1:9090",
            "http://127.0.0.1:9090/leads"
        ));
        assert!(!allows(
            "http://127.0.0.1:9090",
            "http://127.0.0.1:9091/leads"
        ));
        assert!(!allows(
            "http://127.0.0.1:9090",
            "https://127.0.0.1:9090/leads"
        ));
        assert!(!allows("http://127.0.0.1:9090", "http://127.0.0.2:9090/"));
        assert!(allows(
            "https://API.example.com",
            "https://api.example.com:443/v1"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com.evil.io/"
        ));
        assert!(allows("http://h:1/hooks/", "http://h:1/hooks/a"));
        assert!(!allows("http://h:1/hooks/", "http://h:1/hook"));
        assert!(allows("http://h:1/hooks", "http://h:1/hooks"));
        assert!(!allows("http://h:1/hooks", "http://h:1/hooksy"));
        assert!(allows("http://[::1]:8080", "http://[::1]:8080/x"));
    }

    #[test]
    fn wildcards_cover_subdomains_only() {
        assert!(allows("https://*.example.com", "https://a.example.com/"));
        assert!(allows("https://*.example.com", "https://a.b.example.com/"));
        assert!(!allows("https://*.example.com", "https://example.com/"));
        assert!(!allows("https://*.example.com", "https://badexample.com/"));
    }

    #[test]
    fn bad_grants_are_explained() {
        assert!(
            Origin::parse("ftp://x")
                .unwrap_err()
                .contains("must start with http://")
        );
        assert!(
            Origin::parse("http://a*b.com")
                .unwrap_err()
                .contains("wildcard")
        );
        assert!(
            Origin::parse("http://h:port")
                .unwrap_err()
                .contains("host and port")
        );
        assert!(
            Origin::parse("http://h/x?y")
                .unwrap_err()
                .contains("no query")
        );
        assert_eq!(
            Origin::parse("http://h").unwrap().to_string(),
            "http://h:80"
        );
    }

    #[test]
    fn a_path_prefix_cannot_be_left_by_any_spelling() {
        let o = Origin::parse("https://api.example.com/v1/").unwrap();
        let ok = |p: &str| o.allows(true, "api.example.com", 443, p);
        assert!(ok("/v1/items"));
        for escape in [
            "/v1/../admin",
            "/v1/..%2fadmin",
            "/v1/..%2Fadmin",
            "/v1/%2e%2e/admin",
            "/v1/..;/admin",
            "/v1/..\\admin",
            "/v1/%252e%252e/admin",
            "/v1/%5c../admin",
            "/v1/items;jsessionid=x",
        ] {
            assert!(!ok(escape), "{escape} is refused");
        }
    }

    #[test]
    fn wildcards_never_match_ip_literals() {
        let o = Origin::parse("http://*.0.0.1").unwrap();
        assert!(!o.allows(false, "127.0.0.1", 80, "/"));
        let o = Origin::parse("http://*.example.com").unwrap();
        assert!(o.allows(false, "a.example.com", 80, "/"));
    }
}
