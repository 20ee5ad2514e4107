//! The host side of `weft:plugin/credentials`: a plugin names a credential
//! and gets an opaque token; the egress hook swaps it for the secret.

use super::egress::CREDENTIAL_HEADER;
use crate::sandbox::bindings::sink::weft::plugin::credentials;
use crate::sandbox::state::HostState;

impl credentials::Host for HostState {
    async fn attach(
        &mut self,
        name: String,
        how: credentials::Placement,
    ) -> Result<(String, String), credentials::CredentialError> {
        let Some(granted_as) = self.grant.attachable(&name) else {
            let granted = self.grant.credential_names().join(", ");
            return Err(credentials::CredentialError::NotGranted(
                self.hooks.denier.deny(
                    "credential",
                    &format!(
                        "credential {name:?} is not in the plugin's grant (granted: {})",
                        if granted.is_empty() { "none" } else { &granted }
                    ),
                ),
            ));
        };
        match &how {
            credentials::Placement::Header(h) | credentials::Placement::HmacSha256(h)
                if !granted_as.may_place_in(h) =>
            {
                return Err(credentials::CredentialError::NotGranted(
                    self.hooks.denier.deny(
                        "credential",
                        &format!(
                            "credential {name:?} may not be placed in header {h:?}; it may go in: {} (more with headers = [...] in its grant)",
                            granted_as.placements()
                        ),
                    ),
                ));
            }
            credentials::Placement::Basic(user) if user.contains(':') => {
                return Err(credentials::CredentialError::Invalid(
                    "a basic-auth user name cannot hold ':'".into(),
                ));
            }
            _ => {}
        }
        if self.hooks.oauth.get(&name).is_some() {
            if matches!(
                how,
                credentials::Placement::Basic(_) | credentials::Placement::HmacSha256(_)
            ) {
                return Err(credentials::CredentialError::Invalid(format!(
                    "credential {name} is an OAuth client: attach it as bearer, or in a header; the host puts its access token there"
                )));
            }
        } else if self.hooks.secrets.get(&name).is_none() && !self.hooks.replaying() {
            // A replay sends nothing: the value is not needed, only the grant.
            return Err(credentials::CredentialError::Invalid(format!(
                "credential {name} is not loaded on this host"
            )));
        }
        let token = format!("{:032x}", rand::random::<u128>());
        self.hooks
            .attachments
            .insert(token.clone(), (granted_as, how));
        Ok((CREDENTIAL_HEADER.to_string(), token))
    }

    async fn reveal(&mut self, name: String) -> Result<String, credentials::CredentialError> {
        if !self.grant.reveal.contains(&name) {
            return Err(credentials::CredentialError::NotGranted(
                self.hooks.denier.deny(
                    "reveal",
                    &format!(
                        "the raw value of credential {name:?} is not in the plugin's reveal grant"
                    ),
                ),
            ));
        }
        self.hooks
            .secrets
            .get(&name)
            .map(str::to_string)
            .ok_or_else(|| {
                credentials::CredentialError::Invalid(format!(
                    "credential {name} is not loaded on this host"
                ))
            })
    }
}
