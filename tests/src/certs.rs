//! Certificates made for a test: a CA, and certificates it issues.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA that issues certificates.
pub struct Ca {
    /// Its certificate.
    pub cert: CertificateDer<'static>,
    /// The same, PEM.
    pub pem: String,
    /// What signs the certificates it issues.
    pub issuer: Issuer<'static, KeyPair>,
}

/// A certificate with its key.
pub struct Leaf {
    /// The certificate (the chain, leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The key, PEM.
    pub key_pem: String,
}

/// A new CA named `name`.
pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        cert: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names` (DNS names or IP addresses) issued by `by`.
pub fn leaf(by: &Ca, names: &[&str]) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &by.issuer).unwrap();
    Leaf {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}
