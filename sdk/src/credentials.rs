//! Credentials held by the host.
//!
//! A plugin never sees a secret: it names a credential from its grant and
//! says where it goes; the host puts it on the request as the request leaves.
//! Use [`crate::http::Request::credential`]; [`reveal`] exists for the rare
//! protocol that needs the raw value and works only for credentials the
//! operator listed under `reveal`.
//!
//! ```
//! use weft_sdk::credentials::Placement;
//! use weft_sdk::http::{self, fake};
//!
//! // The operator's grant lists CRM_TOKEN for https://crm.example.com;
//! // the plugin names it and says where it goes.
//! fake::respond(204, "");
//! http::Request::post("https://crm.example.com/v1/contacts")
//!     .credential("CRM_TOKEN", Placement::Header("x-api-key".into()))
//!     .json_body(b"{}".to_vec())
//!     .send()
//!     .unwrap();
//! assert_eq!(
//!     fake::sent()[0].credentials,
//!     vec![("CRM_TOKEN".to_string(), Placement::Header("x-api-key".into()))]
//! );
//! ```

use std::fmt;

/// Where the host puts a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// `authorization: Bearer <secret>`
    Bearer,
    /// `authorization: Basic base64(<user>:<secret>)`
    Basic {
        /// The user name.
        user: String,
    },
    /// `<header>: <secret>`
    Header(String),
    /// `<header>: sha256=<hex HMAC-SHA256 of the request body keyed with the secret>`
    HmacSha256(String),
}

/// Why a credential call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    /// The plugin's grant does not list the credential.
    NotGranted(String),
    /// The placement is not usable, or the credential is not loaded.
    Invalid(String),
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialError::NotGranted(m) => write!(f, "credential not granted: {m}"),
            CredentialError::Invalid(m) => write!(f, "credential unusable: {m}"),
        }
    }
}

impl std::error::Error for CredentialError {}

impl From<CredentialError> for crate::Error {
    fn from(e: CredentialError) -> Self {
        crate::Error::Fatal(e.to_string())
    }
}

/// Ask the host for credential `name` in `placement`; returns the header
/// (name, opaque token) to put on the request.
pub fn attach(name: &str, placement: &Placement) -> Result<(String, String), CredentialError> {
    backend::attach(name, placement)
}

/// The raw value of credential `name`; only for credentials in the grant's
/// `reveal` list. Prefer [`attach`]: a revealed secret is in plugin memory.
pub fn reveal(name: &str) -> Result<String, CredentialError> {
    backend::reveal(name)
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::{CredentialError, Placement};
    use crate::bindings::sink::weft::plugin::credentials as wit;

    fn map(e: wit::CredentialError) -> CredentialError {
        match e {
            wit::CredentialError::NotGranted(m) => CredentialError::NotGranted(m),
            wit::CredentialError::Invalid(m) => CredentialError::Invalid(m),
        }
    }

    pub fn attach(name: &str, p: &Placement) -> Result<(String, String), CredentialError> {
        let how = match p {
            Placement::Bearer => wit::Placement::Bearer,
            Placement::Basic { user } => wit::Placement::Basic(user.clone()),
            Placement::Header(h) => wit::Placement::Header(h.clone()),
            Placement::HmacSha256(h) => wit::Placement::HmacSha256(h.clone()),
        };
        wit::attach(name, &how).map_err(map)
    }

    pub fn reveal(name: &str) -> Result<String, CredentialError> {
        wit::reveal(name).map_err(map)
    }
}

/// Outside wasm (a plugin's unit tests) attach hands out a readable marker
/// and reveal reads `WEFT_SECRET_<NAME>`.
#[cfg(not(target_arch = "wasm32"))]
mod backend {
    use super::{CredentialError, Placement};

    pub fn attach(name: &str, p: &Placement) -> Result<(String, String), CredentialError> {
        Ok(("weft-credential".into(), format!("{name}:{p:?}")))
    }

    pub fn reveal(name: &str) -> Result<String, CredentialError> {
        std::env::var(format!("WEFT_SECRET_{name}"))
            .map_err(|_| CredentialError::NotGranted(format!("WEFT_SECRET_{name} is not set")))
    }
}
