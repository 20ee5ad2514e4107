//! Whom outbound TLS trusts, and what it shows: the public web roots for
//! every origin; for an origin in `[upstreams]`, its own CA file, the
//! system's roots and a client certificate (mTLS) as configured. One rustls
//! config per such origin, built once per configuration.

use crate::config::{Config, UpstreamConfig};
use crate::origin::Origin;
use crate::secrets::Secrets;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The TLS client configs of outbound requests.
#[derive(Clone)]
pub struct OutboundTls {
    default: Arc<rustls::ClientConfig>,
    by_origin: Vec<(Origin, String, Arc<rustls::ClientConfig>)>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn web_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    }
}

fn pem_certs(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {}: cannot read it: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{what} {}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

fn config(
    roots: rustls::RootCertStore,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<rustls::ClientConfig, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the client certificate and its key do not make a pair: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The config of one `[upstreams]` origin.
fn for_upstream(
    at: &str,
    u: &UpstreamConfig,
    secrets: &Secrets,
) -> Result<rustls::ClientConfig, String> {
    let mut roots = web_roots();
    if let Some(ca) = &u.ca {
        for c in pem_certs(ca, &format!("{at}.ca"))? {
            roots
                .add(c)
                .map_err(|e| format!("{at}.ca {}: {e}", ca.display()))?;
        }
    }
    if u.system_roots {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(format!(
                "{at}.system_roots: no certificate found in the system's store (install ca-certificates, or give ca = \"…\")"
            ));
        }
    }
    let client = match &u.client_cert {
        None => None,
        Some(c) => {
            let chain = pem_certs(&c.cert, &format!("{at}.client_cert.cert"))?;
            let pem = secrets.get(&c.key).ok_or_else(|| {
                format!(
                    "{at}.client_cert.key: the credential {} is not set ({} or the secrets file)",
                    c.key,
                    crate::secrets::env_var(&c.key)
                )
            })?;
            let key = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| {
                format!(
                    "{at}.client_cert.key: the credential {} holds no PEM private key",
                    c.key
                )
            })?;
            Some((chain, key))
        }
    };
    config(roots, client).map_err(|e| format!("{at}: {e}"))
}

impl OutboundTls {
    /// The public web roots for every origin.
    pub fn web() -> OutboundTls {
        OutboundTls {
            default: Arc::new(config(web_roots(), None).unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(web_roots())
                    .with_no_client_auth()
            })),
            by_origin: Vec::new(),
        }
    }

    /// The public web roots and the certificates of `pem` (a server's own
    /// certificate file: a self-signed certificate, or a chain that ends
    /// in its CA) for every origin: how the CLI trusts a host it was
    /// configured with.
    /// With `client` (certificate chain and key files), it shows that
    /// certificate to a listener that asks for one (mTLS).
    pub fn web_and(
        pem: &std::path::Path,
        client: Option<(&std::path::Path, &std::path::Path)>,
    ) -> Result<OutboundTls, String> {
        let mut roots = web_roots();
        for c in pem_certs(pem, "server.tls.cert")? {
            // A certificate that is no usable anchor is left out.
            let _ = roots.add(c);
        }
        let client = match client {
            Some((cert, key)) => {
                let chain = pem_certs(cert, "--client-cert")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "--client-key {}: no private key could be read from it: {e}",
                        key.display()
                    )
                })?;
                Some((chain, key))
            }
            None => None,
        };
        Ok(OutboundTls {
            default: Arc::new(config(roots, client)?),
            by_origin: Vec::new(),
        })
    }

    /// From `[upstreams]`; the error names the key and the file.
    pub fn build(config: &Config, secrets: &Secrets) -> Result<OutboundTls, String> {
        let mut out = OutboundTls::web();
        for (origin, u) in &config.upstreams {
            if u.ca.is_none() && !u.system_roots && u.client_cert.is_none() {
                continue;
            }
            let at = format!("upstreams.{origin:?}");
            let parsed = Origin::parse(origin).map_err(|e| format!("{at}: {e}"))?;
            let tls = for_upstream(&at, u, secrets)?;
            out.by_origin.push((parsed, origin.clone(), Arc::new(tls)));
        }
        Ok(out)
    }

    /// The config for a request to `uri`, and the `[upstreams]` origin it
    /// came from (none: the public web roots alone).
    pub fn for_uri(&self, uri: &http::Uri) -> (Arc<rustls::ClientConfig>, Option<&str>) {
        self.by_origin
            .iter()
            .find(|(o, _, _)| o.allows_uri(uri))
            .map_or((self.default.clone(), None), |(_, name, c)| {
                (c.clone(), Some(name.as_str()))
            })
    }
}
