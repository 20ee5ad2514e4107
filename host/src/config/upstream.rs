//! Limits per upstream origin and the rate-limit shape they share with
//! pipelines' sinks.

use serde::Deserialize;

/// `[upstreams."ORIGIN"]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Requests per second to this origin, from all plugins together.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// PEM file of CA certificates this origin's certificate may chain to,
    /// besides the public web roots (a company CA).
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// Trust the operating system's roots too (Debian's
    /// `/etc/ssl/certs`), for this origin.
    #[serde(default)]
    pub system_roots: bool,
    /// A client certificate the host shows this origin (mTLS): `{ cert =
    /// "client.pem", key = "CLIENT_KEY" }`, the key a credential holding
    /// the PEM private key; plugins never see it.
    #[serde(default)]
    pub client_cert: Option<ClientCertConfig>,
}

/// An outbound client certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertConfig {
    /// PEM file of the certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// The credential (`WEFT_SECRET_<NAME>` or the secrets file) holding
    /// its PEM private key.
    pub key: String,
}

/// `rate_limit = { per_second = 50, burst = 10 }`: a token bucket (GCRA).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained rate.
    pub per_second: u32,
    /// How many calls may go at once after a quiet period (default: `per_second`).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A rate limit's numbers must be at least 1; `at` names it.
pub(super) fn check_rate(at: &str, r: &RateLimitConfig) -> Result<(), String> {
    if r.per_second == 0 || r.burst == Some(0) {
        return Err(format!("{at}: per_second and burst must be at least 1"));
    }
    Ok(())
}
