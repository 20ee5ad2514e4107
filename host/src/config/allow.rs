//! Address allowlists: `allow_from = ["203.0.113.0/24", "2001:db8::/32",
//! "198.51.100.7"]`, parsed once as they are read.

use serde::{Deserialize, Deserializer};
use std::net::IpAddr;

/// CIDR blocks (a bare address is a block of one), never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowlist {
    nets: Vec<ipnet::IpNet>,
}

impl Allowlist {
    /// Parse a list; the error names the entry and the fix.
    pub fn parse(list: &[String]) -> Result<Allowlist, String> {
        if list.is_empty() {
            return Err(
                "the list is empty, which would refuse every address; leave it out to allow all"
                    .into(),
            );
        }
        let nets = list
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        format!(
                            "{s:?} is not an address or a CIDR block; write it like \"203.0.113.0/24\", \"2001:db8::/32\" or \"198.51.100.7\""
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Allowlist { nets })
    }

    /// Whether `ip` is in one of the blocks (an IPv4 address written as
    /// IPv6, `::ffff:a.b.c.d`, as the IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

impl<'de> Deserialize<'de> for Allowlist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        Allowlist::parse(&list).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Result<Allowlist, String> {
        Allowlist::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn blocks_single_addresses_and_both_families() {
        let a = list(&["10.0.0.0/8", "198.51.100.7", "2001:db8::/32"]).unwrap();
        for ok in ["10.1.2.3", "198.51.100.7", "2001:db8::1", "::ffff:10.9.9.9"] {
            assert!(a.contains(ok.parse().unwrap()), "{ok}");
        }
        for no in ["11.0.0.1", "198.51.100.8", "2001:db9::1", "127.0.0.1"] {
            assert!(!a.contains(no.parse().unwrap()), "{no}");
        }
        assert!(list(&[]).unwrap_err().contains("empty"));
        assert!(
            list(&["10.0.0.0/33"])
                .unwrap_err()
                .contains("\"10.0.0.0/33\"")
        );
        assert!(list(&["example.com"]).unwrap_err().contains("CIDR"));
    }
}
