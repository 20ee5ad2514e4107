//! Credentials held by the host: read from `WEFT_SECRET_<NAME>` or the
//! secrets file, never from `weft.toml`, and registered for masking.

use crate::config::Config;
pub use crate::config::valid_credential_name as valid_name;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Shortest secret weft accepts: shorter values cannot be masked in logs
/// without masking ordinary words.
pub const MIN_SECRET_LEN: usize = 8;

/// Compare secret values without leaking where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The environment variable that holds credential `name`.
pub fn env_var(name: &str) -> String {
    format!("WEFT_SECRET_{name}")
}

/// Secret values by credential name. `Debug` never shows a value.
#[derive(Default, Clone)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl Secrets {
    /// Secrets given one by one (`weft plugin call --secret`), registered
    /// for masking like any other.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Secrets {
        let values: BTreeMap<String, String> = pairs.into_iter().collect();
        for v in values.values() {
            crate::redact::register(v);
        }
        Secrets { values }
    }

    /// Load every credential the config uses. Fails, naming each missing or
    /// unusable one, so a host never starts with a grant it cannot honour.
    pub fn load(config: &Config) -> Result<Secrets, String> {
        Secrets::load_uses(config, config.credential_uses())
    }

    /// Load the credentials the store names (its encryption keys, and on
    /// JetStream its connection's and audit key), and no other: what a
    /// command that only opens the store needs.
    pub fn load_store_keys(config: &Config) -> Result<Secrets, String> {
        let mut wanted = config.store.credentials();
        if let Some(e) = &config.server.encryption {
            wanted.extend(e.names().map(|n| (n, "the store's encryption")));
        }
        if wanted.is_empty() {
            return Ok(Secrets::default());
        }
        Secrets::load_uses(config, wanted)
    }

    /// Load the credentials in `wanted`: (name, who uses it).
    fn load_uses(config: &Config, mut wanted: Vec<(&str, &str)>) -> Result<Secrets, String> {
        let file = match &config.server.secrets_file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        wanted.sort_unstable();
        let mut values = BTreeMap::new();
        let mut problems = Vec::new();
        for (name, plugin) in wanted {
            if values.contains_key(name) {
                continue;
            }
            let value = std::env::var(env_var(name))
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| file.get(name).cloned());
            match value {
                None => problems.push(format!(
                    "credential {name} (used by {plugin}) is not set: export {} or add {name} to server.secrets_file",
                    env_var(name)
                )),
                Some(v) if v.len() < MIN_SECRET_LEN => problems.push(format!(
                    "credential {name} is {} bytes long; secrets shorter than {MIN_SECRET_LEN} bytes cannot be masked in logs reliably",
                    v.len()
                )),
                Some(v) => {
                    crate::redact::register(&v);
                    values.insert(name.to_string(), v);
                }
            }
        }
        if problems.is_empty() {
            Ok(Secrets { values })
        } else {
            Err(problems.join("\n"))
        }
    }

    /// Names of the credentials available to a host started with `config`
    /// (from the environment or the secrets file), without keeping values.
    pub fn available(config: &Config) -> Result<std::collections::BTreeSet<String>, String> {
        let mut names: std::collections::BTreeSet<String> = match &config.server.secrets_file {
            Some(path) => read_file(path)?.into_keys().collect(),
            None => Default::default(),
        };
        for (c, _) in config.credential_uses() {
            if std::env::var(env_var(c)).is_ok_and(|v| !v.is_empty()) {
                names.insert(c.to_string());
            }
        }
        // An OAuth credential is there when its client's secrets are.
        for (name, o) in &config.oauth {
            if o.secret_names().all(|s| names.contains(s)) {
                names.insert(name.clone());
            }
        }
        Ok(names)
    }

    /// The value of credential `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Names of the loaded credentials.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "cannot read the secrets file {} ({e}); create it or fix server.secrets_file",
            path.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the secrets file {} has mode {mode:04o}, so other users can read it; run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the secrets file {}: {e}", path.display()))?;
    let table: BTreeMap<String, String> = toml::from_str(&text).map_err(|e| {
        // The parser's message may quote the offending line, which may hold a
        // secret: keep only its position.
        let at = e
            .span()
            .map(|s| format!(" at byte {}", s.start))
            .unwrap_or_default();
        format!(
            "the secrets file {} is not a table of NAME = \"value\" lines (error{at})",
            path.display()
        )
    })?;
    for name in table.keys() {
        if !valid_name(name) {
            return Err(format!(
                "the secrets file {} holds {name:?}, which is not a credential name (upper-case letters, digits, '_')",
                path.display()
            ));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, extra: &str) -> Config {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\nsecrets_file = \"{}\"\n[plugins]\ndir = \"p\"\n{extra}\n[[pipeline]]\nname = \"a\"\nsink = {{ plugin = \"s\" }}\n",
            dir.join("secrets.toml").display()
        );
        Config::parse(&text).unwrap()
    }

    #[test]
    fn secrets_come_from_a_private_file_or_the_environment() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "FILE_TOKEN_T1 = \"from-the-file-123\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = config(dir.path(), "[grants.s]\ncredentials = [\"FILE_TOKEN_T1\"]");
        let err = Secrets::load(&c).unwrap_err();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let s = Secrets::load(&c).unwrap();
        assert_eq!(s.get("FILE_TOKEN_T1"), Some("from-the-file-123"));
        assert_eq!(format!("{s:?}"), "{\"FILE_TOKEN_T1\"}");
        assert_eq!(crate::redact::mask("x from-the-file-123"), "x [redacted]");

        let c = config(dir.path(), "[grants.s]\nreveal = [\"ABSENT_T1\"]");
        let err = Secrets::load(&c).unwrap_err();
        assert!(err.contains("WEFT_SECRET_ABSENT_T1"), "{err}");

        std::fs::write(&file, "SHORT_T1 = \"abc\"\nBAD = \"x\" y\n").unwrap();
        let err = Secrets::load(&config(dir.path(), "")).unwrap_err();
        assert!(err.contains("not a table"), "{err}");
        assert!(!err.contains("abc"), "{err}");
        std::fs::write(&file, "SHORT_T1 = \"abc\"\n").unwrap();
        let err = Secrets::load(&config(
            dir.path(),
            "[grants.s]\ncredentials = [\"SHORT_T1\"]",
        ))
        .unwrap_err();
        assert!(err.contains("3 bytes long"), "{err}");
    }
}
