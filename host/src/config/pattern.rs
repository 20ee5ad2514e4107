//! An origin as an HTTP grant or a credential writes it, parsed once.

use crate::origin::Origin;
use serde::Deserialize;

/// An origin a grant allows, as written, parsed once as it is read; a bad
/// one is reported by validation with the grant it is in.
#[derive(Debug, Clone)]
pub struct OriginPattern {
    raw: String,
    parsed: Result<Origin, String>,
}

impl OriginPattern {
    /// The origin as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The parsed origin (an error only in a config that did not validate).
    pub fn origin(&self) -> Result<&Origin, &str> {
        self.parsed.as_ref().map_err(String::as_str)
    }
}

impl From<String> for OriginPattern {
    fn from(raw: String) -> Self {
        OriginPattern {
            parsed: Origin::parse(&raw),
            raw,
        }
    }
}

impl From<&str> for OriginPattern {
    fn from(raw: &str) -> Self {
        OriginPattern::from(raw.to_string())
    }
}

impl<'de> Deserialize<'de> for OriginPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(OriginPattern::from)
    }
}

impl serde::Serialize for OriginPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

impl PartialEq<&str> for OriginPattern {
    fn eq(&self, other: &&str) -> bool {
        self.raw == *other
    }
}
