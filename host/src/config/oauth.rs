//! `[oauth.NAME]`: a credential that is an OAuth 2.0 client. The host
//! gets, caches and refreshes its access tokens; a grant names it in
//! `credentials` like any other, and a plugin attaches it without ever
//! seeing a token.
//!
//! ```toml
//! [oauth.CRM]
//! token_url = "https://auth.crm.example.com/oauth/token"
//! grant = "client_credentials"          # or "refresh_token"
//! client_id = "weft-prod"
//! client_secret = "CRM_CLIENT_SECRET"   # a credential name, like every secret
//! scopes = ["contacts.read", "contacts.write"]
//! audience = "https://api.crm.example.com"
//! ```

use crate::origin::Origin;
use serde::Deserialize;

/// How the host gets tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthGrant {
    /// The client's own credentials (RFC 6749 §4.4).
    ClientCredentials,
    /// A refresh token an operator obtained once (RFC 6749 §6); a new
    /// one the server rotates in is kept in the store.
    RefreshToken,
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (`client_secret_basic`).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Body,
}

/// `[oauth.NAME]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// The token endpoint (https, or http to a loopback address).
    pub token_url: String,
    /// `client_credentials` or `refresh_token`.
    pub grant: OAuthGrant,
    /// The client id (not a secret).
    pub client_id: String,
    /// The credential holding the client secret (none for a public client).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The credential holding the first refresh token (`refresh_token`).
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Scopes to ask for.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The `audience` parameter some servers want.
    #[serde(default)]
    pub audience: Option<String>,
    /// `basic` (default) or `body`.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Seconds before its expiry a token is refreshed (default 60).
    #[serde(default = "default_refresh_before")]
    pub refresh_before_s: u64,
}

fn default_refresh_before() -> u64 {
    60
}

impl OAuthConfig {
    /// The credentials it reads from the secrets source.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.client_secret
            .iter()
            .chain(&self.refresh_token)
            .map(String::as_str)
    }

    /// The token endpoint's origin.
    pub fn token_origin(&self) -> Result<Origin, String> {
        let uri: http::Uri = self
            .token_url
            .parse()
            .map_err(|e| format!("token_url {:?} is not a URL: {e}", self.token_url))?;
        let origin = match (uri.scheme_str(), uri.authority()) {
            (Some(s @ ("http" | "https")), Some(a)) => format!("{s}://{a}"),
            _ => {
                return Err(format!(
                    "token_url {:?} must be an http(s) URL",
                    self.token_url
                ));
            }
        };
        Origin::parse(&origin)
    }

    pub(super) fn validate(&self, name: &str, encrypted_store: bool) -> Result<(), String> {
        let at = format!("oauth.{name}");
        if !super::valid_credential_name(name) {
            return Err(format!(
                "[{at}]: {name:?} is not a credential name; use upper-case letters, digits and '_' (grants name it in credentials)"
            ));
        }
        let origin = self.token_origin().map_err(|e| format!("{at}: {e}"))?;
        let uri: http::Uri = self.token_url.parse().map_err(|e| format!("{at}: {e}"))?;
        let loopback = matches!(uri.host(), Some("localhost"))
            || uri
                .host()
                .map(|h| h.trim_matches(|c| c == '[' || c == ']'))
                .and_then(|h| h.parse::<std::net::IpAddr>().ok())
                .is_some_and(|ip| ip.is_loopback());
        if uri.scheme_str() != Some("https") && !loopback {
            return Err(format!(
                "{at}.token_url: {origin} sends the client secret in the clear; use https (http only to a loopback address)"
            ));
        }
        if uri.query().is_some() {
            return Err(format!(
                "{at}.token_url: a query string is not allowed (put parameters in scopes or audience)"
            ));
        }
        if self.client_id.is_empty() {
            return Err(format!("{at}.client_id is empty"));
        }
        for s in self.secret_names() {
            if !super::valid_credential_name(s) {
                return Err(format!(
                    "{at}: {s:?} is not a credential name; write the NAME whose value is in WEFT_SECRET_NAME or the secrets file"
                ));
            }
        }
        match self.grant {
            OAuthGrant::ClientCredentials if self.client_secret.is_none() => {
                return Err(format!(
                    "{at}: grant = \"client_credentials\" needs client_secret (the credential holding it)"
                ));
            }
            OAuthGrant::ClientCredentials if self.refresh_token.is_some() => {
                return Err(format!(
                    "{at}: refresh_token is for grant = \"refresh_token\""
                ));
            }
            OAuthGrant::RefreshToken if self.refresh_token.is_none() => {
                return Err(format!(
                    "{at}: grant = \"refresh_token\" needs refresh_token: the credential holding the first refresh token"
                ));
            }
            OAuthGrant::RefreshToken if self.client_secret.is_none() && !encrypted_store => {
                return Err(format!(
                    "{at}: a public client (no client_secret) keeps its rotated refresh token sealed under the store key; set server.encryption first"
                ));
            }
            _ => {}
        }
        if let Some(bad) = self
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '"'))
        {
            return Err(format!(
                "{at}.scopes: {bad:?} is not a scope (no spaces or quotes; list each scope on its own)"
            ));
        }
        if self.refresh_before_s > 3600 {
            return Err(format!(
                "{at}.refresh_before_s = {} is more than an hour; tokens would be refreshed on nearly every use",
                self.refresh_before_s
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn config(oauth: &str, server: &str, grant: &str) -> Result<Config, String> {
        Config::parse(&format!(
            r#"
[server]
listen = "127.0.0.1:8080"
data_dir = "./weft-data"
{server}

[plugins]
dir = "./plugins.d"

[grants.http-sink]
http = ["https://api.crm.example.com"]
credentials = ["CRM"]
{grant}

[oauth.CRM]
client_id = "weft-prod"
{oauth}

[[pipeline]]
name = "p"
sink = {{ plugin = "http-sink", config = {{ url = "https://api.crm.example.com/x" }} }}
"#
        ))
    }

    #[test]
    fn oauth_clients_are_checked_where_they_are_written() {
        let good = "token_url = \"https://auth.crm.example.com/oauth/token\"\ngrant = \"client_credentials\"\nclient_secret = \"CRM_SECRET\"\nscopes = [\"contacts.read\"]";
        let c = config(good, "", "").unwrap();
        let uses = c.credential_uses();
        assert!(
            uses.contains(&("CRM_SECRET", "an OAuth client")),
            "{uses:?}"
        );
        assert!(
            !uses.iter().any(|(n, _)| *n == "CRM"),
            "the OAuth credential itself is no secret to load"
        );
        let cases = [
            (
                good.replace("https://auth", "http://auth"),
                "",
                "",
                "in the clear",
            ),
            (good.replace("\nclient_secret = \"CRM_SECRET\"", ""), "", "", "needs client_secret"),
            (
                "token_url = \"https://a.example.com/t\"\ngrant = \"refresh_token\"\nrefresh_token = \"CRM_RT\"".into(),
                "",
                "",
                "set server.encryption",
            ),
            (good.replace("contacts.read", "a b"), "", "", "is not a scope"),
            (good.to_string(), "", "reveal = [\"CRM\"]", "never see its tokens"),
            (
                good.replace("oauth/token", "oauth/token?x=1"),
                "",
                "",
                "query string",
            ),
        ];
        for (oauth, server, grant, wanted) in cases {
            let err = config(&oauth, server, grant).unwrap_err();
            assert!(err.contains(wanted), "{wanted}: {err}");
        }
        // A public client is fine when the store seals its refresh token;
        // http to loopback is fine (a token endpoint beside the host).
        config(
            "token_url = \"http://127.0.0.1:9000/t\"\ngrant = \"refresh_token\"\nrefresh_token = \"CRM_RT\"",
            "encryption = { key = \"STORE_KEY\" }",
            "",
        )
        .unwrap();
    }
}
