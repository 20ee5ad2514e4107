//! The connect-time half of the egress check: which resolved addresses a
//! plugin request may reach.
//!
//! A grant is checked against the URL first (see [`crate::origin`]). A URL
//! whose host is an IP literal connects to exactly that address, which the
//! grant then names. A host name is resolved here, and only public addresses
//! are kept: a name that resolves to a loopback, private, link-local,
//! metadata or other special address is refused (`localhost` may reach
//! loopback, and nothing else). This stops DNS rebinding and names that point
//! inside the network.

use hyper_util::client::legacy::connect::dns::Name;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why an address is not public, or `None` when it is.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => restricted_v4(v4),
            None => restricted_v6(v6),
        },
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("cloud metadata")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else if ip.is_documentation() || (a == 198 && (b == 18 || b == 19)) || (a == 192 && b == 0) {
        Some("reserved")
    } else {
        None
    }
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let first = s[0];
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[..2] == [0x64, 0xff9b] && s[2..6] == [0; 4] {
        // NAT64 (well-known prefix): the IPv4 address it reaches.
        return restricted_v4(embedded(s[6], s[7])).map(|_| "NAT64 of an internal IPv4 address");
    }
    if first == 0x2002 {
        // 6to4: the IPv4 address it tunnels to.
        return restricted_v4(embedded(s[1], s[2])).map(|_| "6to4 of an internal IPv4 address");
    }
    if s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        // IPv4-compatible (deprecated ::a.b.c.d).
        return restricted_v4(embedded(s[6], s[7]))
            .map(|_| "IPv4-compatible form of an internal IPv4 address");
    }
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) {
        Some("cloud metadata")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xffc0 == 0xfec0 {
        Some("site-local")
    } else if s[..2] == [0x64, 0xff9b] {
        Some("NAT64 (local use)")
    } else if s[..2] == [0x2001, 0] {
        Some("Teredo tunnel")
    } else if s[..2] == [0x2001, 0xdb8] || (first == 0x100 && s[1..4] == [0; 3]) {
        Some("documentation or discard")
    } else if ip.is_multicast() {
        Some("multicast or reserved")
    } else {
        None
    }
}

/// A host name resolved only to addresses a plugin may not reach.
#[derive(Debug)]
pub struct Prohibited {
    /// The name.
    pub host: String,
    /// What it resolved to, with the reason for each.
    pub addresses: Vec<(IpAddr, &'static str)>,
}

impl fmt::Display for Prohibited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .addresses
            .iter()
            .map(|(ip, why)| format!("{ip} ({why})"))
            .collect();
        write!(
            f,
            "{} resolves only to addresses plugins may not reach: {}; grant the address itself (e.g. http://10.0.0.5:8080) to allow it",
            self.host,
            list.join(", ")
        )
    }
}

impl std::error::Error for Prohibited {}

/// Resolve `host` and keep the addresses a plugin may reach.
pub async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        // An IP literal already passed the URL check: the grant names it.
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let all: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let local_name =
        host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost");
    let (allowed, refused): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|a| match restricted(a.ip()) {
            None => !local_name,
            Some("loopback") => local_name,
            Some(_) => false,
        });
    if allowed.is_empty() {
        return Err(std::io::Error::other(Prohibited {
            host: host.to_string(),
            addresses: refused
                .iter()
                .map(|a| {
                    (
                        a.ip(),
                        restricted(a.ip()).unwrap_or("public, but not for localhost"),
                    )
                })
                .collect(),
        }));
    }
    Ok(allowed)
}

/// The resolver of the pooled plain-HTTP client.
#[derive(Clone, Default)]
pub struct GuardedResolver;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(async move { resolve(name.as_str(), 0).await.map(Vec::into_iter) })
    }
}

/// The [`Prohibited`] error somewhere in an error's chain of sources.
pub fn find_prohibited<'a>(mut e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Prohibited> {
    loop {
        if let Some(p) = e.downcast_ref::<Prohibited>() {
            return Some(p);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(p) = io.get_ref().and_then(|i| i.downcast_ref::<Prohibited>())
        {
            return Some(p);
        }
        e = e.source()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnels_and_translations_of_internal_addresses_are_restricted() {
        for (ip, restricted_as) in [
            ("64:ff9b::7f00:1", Some("NAT64 of an internal IPv4 address")),
            (
                "64:ff9b::a9fe:a9fe",
                Some("NAT64 of an internal IPv4 address"),
            ),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::1", Some("NAT64 (local use)")),
            ("2002:7f00:1::", Some("6to4 of an internal IPv4 address")),
            ("2002:0a00:1::1", Some("6to4 of an internal IPv4 address")),
            ("2002:808:808::1", None),
            (
                "::7f00:1",
                Some("IPv4-compatible form of an internal IPv4 address"),
            ),
            ("2001:0:4136:e378::1", Some("Teredo tunnel")),
            ("fec0::1", Some("site-local")),
            ("2001:db8::1", Some("documentation or discard")),
            ("100::1", Some("documentation or discard")),
            ("2606:4700::1111", None),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(restricted(ip), restricted_as, "{ip}");
        }
    }

    #[test]
    fn special_ranges_are_restricted() {
        for (ip, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.10.1", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("fd00:ec2::254", "cloud metadata"),
        ] {
            assert_eq!(restricted(ip.parse().unwrap()), Some(why), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert_eq!(restricted(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn names_reach_public_addresses_only_and_localhost_only_loopback() {
        let ok = resolve("localhost", 80).await.unwrap();
        assert!(ok.iter().all(|a| a.ip().is_loopback()));
        let lit = resolve("169.254.169.254", 80).await.unwrap();
        assert_eq!(lit.len(), 1, "literals are the grant's business");
    }
}
