//! Names the config gives to things and what makes them valid, and the
//! default values more than one section shares.

/// Whether `name` is a usable credential name (`MARKETING_TOKEN`): read
/// from `WEFT_SECRET_<NAME>` or the secrets file.
pub fn valid_credential_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Whether `name` is a usable pipeline name (it is part of a URL).
pub fn valid_pipeline_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `{}`: the default config of a plugin.
pub(super) fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}
