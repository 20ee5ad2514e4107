//! One entry of a grant's `credentials`: which credential, the origins it
//! may be sent to and the headers it may be placed in.
//!
//! ```toml
//! credentials = ["CRM_TOKEN"]   # when the grant has one http origin
//! credentials = [{ name = "CRM_TOKEN", origins = ["https://api.crm.example.com"], headers = ["x-crm-key"] }]
//! ```

use super::pattern::OriginPattern;
use serde::Deserialize;

/// Headers any credential may be placed in: the ones APIs use for keys and
/// signatures. A credential's `headers` adds more.
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "apikey",
    "x-auth-token",
    "x-access-token",
    "x-signature",
    "x-hub-signature-256",
    "signature",
];

/// Headers no credential is ever placed in: they are logged, echoed,
/// forwarded or change how the request is framed or routed.
const NEVER: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "cookie",
    "referer",
    "user-agent",
    "origin",
    "location",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "via",
    "traceparent",
    "tracestate",
    "content-type",
    "accept",
    "weft-credential",
];

/// A credential a plugin may have attached.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialGrant {
    /// The credential (`WEFT_SECRET_<name>`).
    pub name: String,
    /// Where it may be sent; empty: the grant's one http origin.
    pub origins: Vec<OriginPattern>,
    /// Headers it may go in besides [`CREDENTIAL_HEADERS`].
    pub headers: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Name(String),
    Table(Table),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    name: String,
    #[serde(default)]
    origins: Vec<OriginPattern>,
    #[serde(default)]
    headers: Vec<String>,
}

impl<'de> Deserialize<'de> for CredentialGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Written::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "a credential is a name (\"CRM_TOKEN\") or { name = \"CRM_TOKEN\", origins = [\"https://api.example.com\"], headers = [\"x-key\"] }",
            )
        })? {
            Written::Name(name) => CredentialGrant {
                name,
                origins: Vec::new(),
                headers: Vec::new(),
            },
            Written::Table(t) => CredentialGrant {
                name: t.name,
                origins: t.origins,
                headers: t.headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            },
        })
    }
}

impl From<&str> for CredentialGrant {
    /// A bare name: it may go to the grant's one http origin.
    fn from(name: &str) -> Self {
        CredentialGrant {
            name: name.to_string(),
            origins: Vec::new(),
            headers: Vec::new(),
        }
    }
}

impl CredentialGrant {
    /// The origins it may be sent to, given the grant's http origins.
    pub fn origins<'a>(&'a self, http: &'a [OriginPattern]) -> &'a [OriginPattern] {
        if self.origins.is_empty() {
            http
        } else {
            &self.origins
        }
    }

    /// Whether it may be sent in a request to `uri`.
    pub fn may_go_to(&self, http: &[OriginPattern], uri: &http::Uri) -> bool {
        self.origins(http)
            .iter()
            .any(|o| o.origin().is_ok_and(|o| o.allows_uri(uri)))
    }

    /// Whether it may be placed in header `name` (any case).
    pub fn may_place_in(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        !NEVER.contains(&lower.as_str())
            && (CREDENTIAL_HEADERS.contains(&lower.as_str()) || self.headers.contains(&lower))
    }

    /// The headers it may go in, for messages.
    pub fn placements(&self) -> String {
        CREDENTIAL_HEADERS
            .iter()
            .copied()
            .chain(self.headers.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn validate(&self, grant: &str, http: &[OriginPattern]) -> Result<(), String> {
        let at = format!("grants.{grant}.credentials ({})", self.name);
        if !super::valid_credential_name(&self.name) {
            return Err(format!(
                "grants.{grant}.credentials: {:?} is not a credential name; use upper-case letters, digits and '_' (it is read from WEFT_SECRET_{0})",
                self.name
            ));
        }
        for o in &self.origins {
            o.origin().map_err(|e| format!("{at}: {e}"))?;
            if !http.iter().any(|h| h.as_str() == o.as_str()) {
                return Err(format!(
                    "{at}: {o} is not in grants.{grant}.http; a credential goes only where the plugin may send requests, so add it there too"
                ));
            }
        }
        if self.origins.is_empty() && http.len() > 1 {
            return Err(format!(
                "{at}: the grant has {} http origins and the credential could be sent to any of them; tie it to the ones it is for: credentials = [{{ name = \"{}\", origins = [\"{}\"] }}]",
                http.len(),
                self.name,
                http[0]
            ));
        }
        for h in &self.headers {
            if http::HeaderName::try_from(h.as_str()).is_err() || NEVER.contains(&h.as_str()) {
                return Err(format!(
                    "{at}: {h:?} cannot carry a credential (it is not a header name, or it is logged, echoed or forwarded); use a header such as \"x-api-key\""
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(toml_text: &str) -> Result<Vec<CredentialGrant>, String> {
        #[derive(Deserialize)]
        struct G {
            http: Vec<OriginPattern>,
            credentials: Vec<CredentialGrant>,
        }
        let g: G = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        for c in &g.credentials {
            c.validate("p", &g.http)?;
        }
        Ok(g.credentials)
    }

    #[test]
    fn credentials_are_tied_to_origins_and_headers() {
        let one = grant("http = [\"https://api.example.com\"]\ncredentials = [\"T\"]").unwrap();
        let http: Vec<OriginPattern> = vec!["https://api.example.com".into()];
        let uri = |u: &str| u.parse::<http::Uri>().unwrap();
        assert!(one[0].may_go_to(&http, &uri("https://api.example.com/x")));
        assert!(!one[0].may_go_to(&http, &uri("https://evil.example.com/x")));

        let two = "http = [\"https://a.example.com\", \"https://b.example.com\"]\n";
        let err = grant(&format!("{two}credentials = [\"T\"]")).unwrap_err();
        assert!(err.contains("tie it"), "{err}");
        let tied = grant(&format!(
            "{two}credentials = [{{ name = \"T\", origins = [\"https://a.example.com\"], headers = [\"X-Crm-Key\"] }}]"
        ))
        .unwrap();
        let http: Vec<OriginPattern> = vec![
            "https://a.example.com".into(),
            "https://b.example.com".into(),
        ];
        assert!(tied[0].may_go_to(&http, &uri("https://a.example.com/")));
        assert!(!tied[0].may_go_to(&http, &uri("https://b.example.com/")));
        assert!(tied[0].may_place_in("x-crm-key"));
        assert!(tied[0].may_place_in("Authorization"));
        for never in [
            "cookie",
            "user-agent",
            "referer",
            "x-forwarded-for",
            "x-other",
        ] {
            assert!(!tied[0].may_place_in(never), "{never}");
        }

        let outside = grant(&format!(
            "{two}credentials = [{{ name = \"T\", origins = [\"https://c.example.com\"] }}]"
        ))
        .unwrap_err();
        assert!(outside.contains("not in grants.p.http"), "{outside}");
        let cookie = grant(&format!(
            "{two}credentials = [{{ name = \"T\", origins = [\"https://a.example.com\"], headers = [\"cookie\"] }}]"
        ))
        .unwrap_err();
        assert!(cookie.contains("cannot carry"), "{cookie}");
        let typo = grant(&format!("{two}credentials = [{{ nam = \"T\" }}]")).unwrap_err();
        assert!(typo.contains("a credential is a name"), "{typo}");
    }
}
