//! The perimeter: who may reach a listener or a pipeline's webhook, by
//! address. The client's address is the peer's, or, behind a proxy listed
//! in `server.trusted_proxies`, the nearest address in `X-Forwarded-For`
//! that is not one of those proxies. A refused source gets 403; each
//! refusal is counted, and written to the audit log at most once a minute
//! per place and source.

use crate::config::Allowlist;
use crate::limit::RecordBudget;
use crate::store::{AuditEntry, Store};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// The address a request came from: put in its extensions by the
/// listener that took the connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

/// A client certificate the TLS handshake verified, as the SHA-256 (hex)
/// of its DER encoding: the identity pipelines and rules see. Put in a
/// request's extensions by the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert(pub String);

/// The address a request comes from.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, proxies: Option<&Allowlist>) -> IpAddr {
    let peer = peer.to_canonical();
    let (Some(proxies), Some(chain)) = (proxies, forwarded_for) else {
        return peer;
    };
    if !proxies.contains(peer) {
        // Anyone may write the header: only a trusted proxy's counts.
        return peer;
    }
    let mut nearest = peer;
    for hop in chain.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A hop that is no address: trust nothing beyond it.
            return nearest;
        };
        let ip = ip.to_canonical();
        if !proxies.contains(ip) {
            return ip;
        }
        nearest = ip;
    }
    nearest
}

/// One place's allowlist (a pipeline's webhook, the admin listener) with
/// the count and the audit records of its refusals.
pub struct Gate {
    /// Where: `admin` or the pipeline's name, for the audit log.
    place: String,
    allow: Option<Allowlist>,
    proxies: Option<Allowlist>,
    refused: AtomicU64,
    records: RecordBudget<IpAddr>,
}

/// Sources tracked for the audit log's rate limit.
const TRACKED_SOURCES: usize = 4096;

impl Gate {
    /// The gate of `place`: `allow` (none: every address), with clients
    /// behind `proxies`.
    pub fn new(place: &str, allow: Option<Allowlist>, proxies: Option<Allowlist>) -> Gate {
        Gate {
            place: place.to_string(),
            allow,
            proxies,
            refused: AtomicU64::new(0),
            records: RecordBudget::new(1, TRACKED_SOURCES),
        }
    }

    /// The client's address if it may pass; otherwise the refusal is
    /// counted and (rate-limited) audited, and `Err` carries the address.
    pub fn admit(
        &self,
        peer: IpAddr,
        forwarded_for: Option<&str>,
        store: &dyn Store,
    ) -> Result<IpAddr, IpAddr> {
        let ip = client_ip(peer, forwarded_for, self.proxies.as_ref());
        match &self.allow {
            Some(allow) if !allow.contains(ip) => {}
            _ => return Ok(ip),
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        let detail = format!("a request from {ip} was refused: not in the allowlist");
        if let Some(detail) = self.records.admit(ip, detail, crate::store::now_ms()) {
            tracing::warn!(place = %self.place, source = %ip, "{detail}");
            let pipeline = if self.place == "admin" {
                ""
            } else {
                &self.place
            };
            if let Err(e) = store.audit().append(AuditEntry {
                kind: "address",
                actor: ip.to_string(),
                pipeline: pipeline.to_string(),
                action: format!("refused at {}", self.place),
                detail,
            }) {
                tracing::error!("could not write a refused address to the audit log: {e}");
            }
        }
        Err(ip)
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Allowlist {
        Allowlist::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxies = list(&["10.0.0.0/24"]);
        let chain = Some("203.0.113.9, 198.51.100.1, 10.0.0.7");
        // Straight from a client: the header is the client's own word.
        assert_eq!(
            client_ip(ip("192.0.2.1"), chain, Some(&proxies)),
            ip("192.0.2.1")
        );
        // Through two trusted proxies: the first untrusted hop from the right.
        assert_eq!(
            client_ip(ip("10.0.0.5"), chain, Some(&proxies)),
            ip("198.51.100.1")
        );
        // No trusted proxies configured: the peer, whatever the header says.
        assert_eq!(client_ip(ip("10.0.0.5"), chain, None), ip("10.0.0.5"));
        // A forged garbage hop stops the walk at the last trusted one.
        assert_eq!(
            client_ip(
                ip("10.0.0.5"),
                Some("203.0.113.9, nonsense"),
                Some(&proxies)
            ),
            ip("10.0.0.5")
        );
        // Every hop a proxy: the farthest of them.
        assert_eq!(
            client_ip(ip("10.0.0.5"), Some("10.0.0.1,10.0.0.2"), Some(&proxies)),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("::ffff:192.0.2.1"), None, None),
            ip("192.0.2.1"),
            "an IPv4 client on a dual-stack socket"
        );
    }
}
