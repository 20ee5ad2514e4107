//! Plugin names with versions: a file may carry its version in its name
//! (`json-map@1.3.0.wasm`) and a step may ask for one (`json-map@1`,
//! `json-map@1.3`, `json-map@1.3.0`, or `json-map` for the newest).

/// The plugin name without its version: `json-map@1.3.0` → `json-map`.
pub fn base(name: &str) -> &str {
    name.split_once('@').map_or(name, |(b, _)| b)
}

/// The version part of a name, if any: `json-map@1.3.0` → `1.3.0`.
pub fn version_part(name: &str) -> Option<&str> {
    name.split_once('@').map(|(_, v)| v)
}

/// Check the version part of a name; `partial` allows `1` and `1.3` (what
/// a step asks for), else a full version is needed (a file's).
pub fn check(v: &str, partial: bool) -> Result<(), String> {
    let parts: Vec<&str> = v.split('.').collect();
    if partial && parts.len() < 3 {
        return if parts.iter().all(|p| p.parse::<u64>().is_ok()) {
            Ok(())
        } else {
            Err(format!(
                "{v:?} is not a version: write 1, 1.3 or 1.3.0 after the @"
            ))
        };
    }
    semver::Version::parse(v)
        .map(|_| ())
        .map_err(|e| format!("{v:?} is not a version ({e}): write it like 1.3.0"))
}

/// A version as a comparable value (`0.0.0` for none, or one that does not
/// parse).
pub fn parse(v: Option<&str>) -> semver::Version {
    v.and_then(|v| semver::Version::parse(v).ok())
        .unwrap_or(semver::Version::new(0, 0, 0))
}

/// Whether `v` is what `wanted` (`1`, `1.3`, `1.3.0`) asks for.
pub fn fits(v: &semver::Version, wanted: &str) -> bool {
    let parts: Vec<&str> = wanted.split('.').collect();
    match parts.as_slice() {
        [major] => major.parse() == Ok(v.major),
        [major, minor] => major.parse() == Ok(v.major) && minor.parse() == Ok(v.minor),
        _ => semver::Version::parse(wanted).is_ok_and(|w| &w == v),
    }
}

/// Whether a step naming `spec` may run the plugin file `stem` (judged by
/// names alone: a file without a version in its name may be any version).
pub fn may_name(spec: &str, stem: &str) -> bool {
    base(spec) == base(stem)
        && match (version_part(spec), version_part(stem)) {
            (Some(wanted), Some(v)) => semver::Version::parse(v).is_ok_and(|v| fits(&v, wanted)),
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert_eq!(base("json-map@1.3.0"), "json-map");
        assert_eq!(base("json-map"), "json-map");
        assert_eq!(version_part("json-map@1.3.0"), Some("1.3.0"));
        assert!(check("1", true).is_ok() && check("1.3", true).is_ok());
        assert!(check("1", false).is_err() && check("x.y", true).is_err());
        assert!(check("2.0.0-rc.1", false).is_ok());
        let v = semver::Version::new(1, 3, 2);
        assert!(fits(&v, "1") && fits(&v, "1.3") && fits(&v, "1.3.2"));
        assert!(!fits(&v, "2") && !fits(&v, "1.4") && !fits(&v, "1.3.0"));
        assert!(may_name("json-map", "json-map@2.0.0"));
        assert!(may_name("json-map@1", "json-map"));
        assert!(!may_name("json-map@1", "json-map@2.0.0"));
        assert!(!may_name("json-map", "json-mapper"));
    }
}
