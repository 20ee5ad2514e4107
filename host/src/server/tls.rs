//! TLS on the public listener: rustls, the certificate chain and key read
//! from PEM files and read again when they change (looked at no more than
//! once a second; a new pair that does not load leaves the old one in force
//! and says why), and with `client_ca`, client certificates verified
//! against it (mTLS): required of every client, or optional and then
//! required by the pipelines that ask for them.

use crate::config::{ClientAuth, TlsConfig};
use crate::perimeter::ClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A listener's TLS: its files and the server config they make.
pub struct Tls {
    files: TlsConfig,
    loaded: Mutex<Loaded>,
}

/// The config in force, and the files' stamps it was made from.
struct Loaded {
    stamps: Vec<Option<(SystemTime, u64)>>,
    checked: Instant,
    config: Arc<rustls::ServerConfig>,
}

/// How long the files are trusted not to have changed.
const RECHECK: Duration = Duration::from_secs(1);

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the {what} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

impl TlsConfig {
    fn paths(&self) -> Vec<&PathBuf> {
        [&self.cert, &self.key]
            .into_iter()
            .chain(self.client_ca.as_ref())
            .collect()
    }

    /// Build the rustls config from the files as they are now.
    fn build(&self) -> Result<rustls::ServerConfig, String> {
        let chain = certs(&self.cert, "server.tls.cert")?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            format!(
                "server.tls.key {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
                self.key.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca, "server.tls.client_ca")? {
                    roots
                        .add(c)
                        .map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let verifier = match self.client_auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|e| format!("server.tls.client_ca {}: {e}", ca.display()))?,
                )
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            format!(
                "server.tls.cert {} and server.tls.key {} do not make a pair: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl Tls {
    /// Load the files; the error names the file and what is wrong.
    pub fn load(files: &TlsConfig) -> Result<Tls, String> {
        let config = Arc::new(files.build()?);
        Ok(Tls {
            loaded: Mutex::new(Loaded {
                stamps: files.paths().into_iter().map(|p| stamp(p)).collect(),
                checked: Instant::now(),
                config,
            }),
            files: files.clone(),
        })
    }

    /// The server config for a new connection: the files' current one.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.checked.elapsed() >= RECHECK {
            loaded.checked = Instant::now();
            let stamps: Vec<_> = self.files.paths().into_iter().map(|p| stamp(p)).collect();
            if stamps != loaded.stamps {
                loaded.stamps = stamps;
                match self.files.build() {
                    Ok(config) => {
                        tracing::info!("TLS certificate files changed: new connections use them");
                        loaded.config = Arc::new(config);
                    }
                    Err(e) => tracing::error!(
                        "TLS certificate files changed but do not load ({e}); the previous ones stay in force"
                    ),
                }
            }
        }
        loaded.config.clone()
    }
}

/// The verified client certificate of a connection, if it showed one.
pub fn client_cert(conn: &rustls::ServerConnection) -> Option<ClientCert> {
    use sha2::Digest;
    let leaf = conn.peer_certificates()?.first()?;
    Some(ClientCert(hex::encode(sha2::Sha256::digest(leaf.as_ref()))))
}
