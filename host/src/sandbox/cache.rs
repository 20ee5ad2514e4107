//! The compiled-code cache: native code that this host compiled, kept on
//! disk so a restart does not compile every plugin again, and trusted only
//! after it is authenticated.
//!
//! Each entry `SHA256-ENGINE.cwasm` has a sidecar `.mac`: an HMAC-SHA256,
//! under a key kept outside the cache directory (`cache.key` beside it,
//! mode 0600), over the wasm file's sha256, the engine's compatibility hash
//! and the code. An entry that is missing its MAC, fails it, is a symlink or
//! cannot be read is never deserialised: the plugin is compiled again from
//! its `.wasm` (whose digest was checked) and the bad entry replaced.

use hmac::Mac;
use std::path::{Path, PathBuf};

/// The cache directory and the key that authenticates its entries.
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; crate::private::KEY_LEN],
    /// Most bytes its entries may take together.
    max_bytes: u64,
}

/// Why an entry was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// No entry yet.
    Missing,
    /// The entry is not what this host wrote: never run.
    Tampered(String),
}

impl CodeCache {
    /// The cache in `dir`, with its key in `key_file` (made, mode 0600, if
    /// it does not exist). Both directories are made mode 0700.
    pub fn open(dir: &Path, key_file: &Path) -> std::io::Result<CodeCache> {
        crate::private::dir(dir)?;
        // A missing or short key is replaced by a new one: entries made
        // under the old one no longer verify, and are compiled again.
        let key = crate::private::key(key_file)?;
        Ok(CodeCache {
            dir: dir.to_path_buf(),
            key,
            max_bytes: u64::MAX,
        })
    }

    /// The cache in `dir` with the key in `key_file`, without making
    /// anything (for audits); `None` when there is no key yet.
    pub fn existing(dir: &Path, key_file: &Path) -> Option<CodeCache> {
        let key = crate::private::read_key(key_file)?;
        Some(CodeCache {
            dir: dir.to_path_buf(),
            key,
            max_bytes: u64::MAX,
        })
    }

    /// The same cache, holding at most `max_bytes`.
    pub fn with_budget(mut self, max_bytes: u64) -> CodeCache {
        self.max_bytes = max_bytes;
        self
    }

    /// The cache of a host whose data directory is `data_dir`, made if new.
    pub fn in_data_dir(data_dir: &Path) -> std::io::Result<CodeCache> {
        CodeCache::open(&data_dir.join("compiled"), &data_dir.join("cache.key"))
    }

    /// The cache of a host whose data directory is `data_dir`, if it has
    /// one; nothing is made (for audits).
    pub fn existing_in(data_dir: &Path) -> Option<CodeCache> {
        CodeCache::existing(&data_dir.join("compiled"), &data_dir.join("cache.key"))
    }

    fn paths(&self, sha256: &str, engine_hash: u64) -> (PathBuf, PathBuf) {
        let stem = format!("{sha256}-{engine_hash:016x}");
        (
            self.dir.join(format!("{stem}.cwasm")),
            self.dir.join(format!("{stem}.mac")),
        )
    }

    fn mac(&self, sha256: &str, engine_hash: u64, code: &[u8]) -> Vec<u8> {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        m.update(sha256.as_bytes());
        m.update(&engine_hash.to_be_bytes());
        m.update(code);
        m.finalize().into_bytes().to_vec()
    }

    /// The authenticated code of the plugin with this digest, compiled by an
    /// engine with this compatibility hash.
    pub fn get(&self, sha256: &str, engine_hash: u64) -> Result<Vec<u8>, Rejected> {
        let (code_file, mac_file) = self.paths(sha256, engine_hash);
        match std::fs::symlink_metadata(&code_file) {
            Err(_) => return Err(Rejected::Missing),
            Ok(m) if !m.file_type().is_file() => {
                return Err(Rejected::Tampered(format!(
                    "{} is not a regular file (a symlink?)",
                    code_file.display()
                )));
            }
            Ok(_) => {}
        }
        let tampered = |why: &str| Rejected::Tampered(format!("{}: {why}", code_file.display()));
        let code = std::fs::read(&code_file).map_err(|e| tampered(&e.to_string()))?;
        let mac = match std::fs::symlink_metadata(&mac_file) {
            Ok(m) if m.file_type().is_file() => std::fs::read(&mac_file)
                .ok()
                .and_then(|t| hex::decode(String::from_utf8_lossy(&t).trim()).ok()),
            _ => None,
        };
        let Some(mac) = mac else {
            return Err(tampered("it has no valid MAC beside it"));
        };
        if !crate::secrets::constant_time_eq(&mac, &self.mac(sha256, engine_hash, &code)) {
            return Err(tampered(
                "its MAC does not match (changed, swapped with another plugin's, or written by someone else)",
            ));
        }
        Ok(code)
    }

    /// Store freshly compiled code: written to new files (never through a
    /// link), then renamed into place, MAC last.
    pub fn put(&self, sha256: &str, engine_hash: u64, code: &[u8]) -> std::io::Result<()> {
        let (code_file, mac_file) = self.paths(sha256, engine_hash);
        let replaced = std::fs::metadata(&code_file).map_or(0, |m| m.len());
        let after = (self.size().1 - replaced).saturating_add(code.len() as u64 + 64);
        if after > self.max_bytes {
            return Err(std::io::Error::other(format!(
                "the cache in {} would take {after} bytes, over its budget of {} (plugins.cache_max_bytes); the plugin is compiled at each start instead",
                self.dir.display(),
                self.max_bytes
            )));
        }
        let mac = hex::encode(self.mac(sha256, engine_hash, code));
        crate::private::replace(&code_file, code)?;
        crate::private::replace(&mac_file, mac.as_bytes())
    }

    /// Remove the entries of plugins whose digest is not in `in_use` (a
    /// plugin replaced or taken out of the directory leaves its code
    /// behind otherwise) and those compiled by another engine than the one
    /// whose hash is `engine_hash` (an upgrade leaves them behind); returns
    /// the files and bytes removed.
    pub fn prune(
        &self,
        in_use: &std::collections::HashSet<&str>,
        engine_hash: u64,
    ) -> (usize, u64) {
        let engine = format!("{engine_hash:016x}");
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        let (mut files, mut bytes) = (0, 0);
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((digest, rest)) = name.split_once('-') else {
                continue;
            };
            let current = rest.split('.').next() == Some(engine.as_str());
            if in_use.contains(digest) && current {
                continue;
            }
            let size = entry.metadata().map_or(0, |m| m.len());
            if std::fs::remove_file(entry.path()).is_ok() {
                files += 1;
                bytes += size;
            }
        }
        (files, bytes)
    }

    /// Entries (code files) and bytes the cache holds.
    pub fn size(&self) -> (usize, u64) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (0, 0);
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.file_name(), e.metadata().ok()?.len())))
            .fold((0, 0), |(n, b), (name, len)| {
                let code = name.to_string_lossy().ends_with(".cwasm");
                (n + usize::from(code), b + len)
            })
    }

    /// Every entry of the plugin with this digest, checked: (file, verdict).
    pub fn audit(&self, sha256: &str) -> Vec<(PathBuf, Result<(), String>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hash) = name
                .strip_prefix(sha256)
                .and_then(|rest| rest.strip_prefix('-'))
                .and_then(|rest| rest.strip_suffix(".cwasm"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            else {
                continue;
            };
            let verdict = match self.get(sha256, hash) {
                Ok(_) => Ok(()),
                Err(Rejected::Missing) => continue,
                Err(Rejected::Tampered(why)) => Err(why),
            };
            out.push((entry.path(), verdict));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_of_plugins_no_longer_loaded_is_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let cache =
            CodeCache::open(&dir.path().join("compiled"), &dir.path().join("cache.key")).unwrap();
        let (kept, gone) = ("a".repeat(64), "b".repeat(64));
        cache.put(&kept, 7, b"code of a").unwrap();
        cache.put(&kept, 6, b"a from an older engine").unwrap();
        cache.put(&gone, 7, b"code of b, which is longer").unwrap();
        cache.put(&gone, 8, b"b for another engine").unwrap();
        assert_eq!(cache.size().0, 4);
        let in_use = std::collections::HashSet::from([kept.as_str()]);
        let (files, bytes) = cache.prune(&in_use, 7);
        assert_eq!(files, 6, "three entries, each code and MAC");
        assert!(bytes > 40, "{bytes}");
        assert_eq!(cache.get(&kept, 7).unwrap(), b"code of a");
        assert_eq!(cache.get(&kept, 6), Err(Rejected::Missing));
        assert_eq!(cache.get(&gone, 7), Err(Rejected::Missing));
        assert_eq!(cache.size().0, 1);
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(&dir.path().join("compiled"), &dir.path().join("cache.key"))
            .unwrap()
            .with_budget(1000);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        cache.put(&a, 7, &[1; 600]).unwrap();
        // Replacing an entry counts only the new code.
        cache.put(&a, 7, &[2; 700]).unwrap();
        let err = cache.put(&b, 7, &[3; 400]).unwrap_err().to_string();
        assert!(err.contains("plugins.cache_max_bytes"), "{err}");
        assert_eq!(cache.get(&b, 7), Err(Rejected::Missing));
        assert!(cache.size().1 <= 1000, "{:?}", cache.size());
        assert_eq!(cache.get(&a, 7).unwrap(), vec![2; 700]);
    }

    #[test]
    fn only_what_this_host_wrote_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("compiled");
        let key = dir.path().join("cache.key");
        let cache = CodeCache::open(&cache_dir, &key).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        assert_eq!(cache.get(&a, 7), Err(Rejected::Missing));
        cache.put(&a, 7, b"code of a").unwrap();
        cache.put(&b, 7, b"code of b").unwrap();
        assert_eq!(cache.get(&a, 7).unwrap(), b"code of a");
        // Reopened with the same key, entries still verify.
        let cache = CodeCache::open(&cache_dir, &key).unwrap();
        assert_eq!(cache.get(&b, 7).unwrap(), b"code of b");
        // Another engine's hash names another entry.
        assert_eq!(cache.get(&a, 8), Err(Rejected::Missing));
        let (a_code, a_mac) = cache.paths(&a, 7);
        let (b_code, b_mac) = cache.paths(&b, 7);
        // b's entry (code and MAC) copied over a's: the MAC binds the digest.
        std::fs::copy(&b_code, &a_code).unwrap();
        std::fs::copy(&b_mac, &a_mac).unwrap();
        assert!(matches!(cache.get(&a, 7), Err(Rejected::Tampered(_))));
        // A changed byte.
        cache.put(&a, 7, b"code of a").unwrap();
        let mut code = std::fs::read(&a_code).unwrap();
        code[0] ^= 1;
        std::fs::write(&a_code, code).unwrap();
        assert!(matches!(cache.get(&a, 7), Err(Rejected::Tampered(_))));
        // A symlink in place of the code.
        std::fs::remove_file(&a_code).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&b_code, &a_code).unwrap();
            let err = cache.get(&a, 7).unwrap_err();
            assert!(
                matches!(&err, Rejected::Tampered(w) if w.contains("symlink")),
                "{err:?}"
            );
            // Writing does not follow the link either: it is replaced.
            cache.put(&a, 7, b"code of a").unwrap();
            assert_eq!(std::fs::read(&b_code).unwrap(), b"code of b");
            assert_eq!(cache.get(&a, 7).unwrap(), b"code of a");
        }
        // A missing MAC.
        std::fs::remove_file(&b_mac).unwrap();
        assert!(matches!(cache.get(&b, 7), Err(Rejected::Tampered(_))));
        // Another key (a key file replaced): nothing verifies.
        std::fs::remove_file(&key).unwrap();
        let other = CodeCache::open(&cache_dir, &key).unwrap();
        assert!(matches!(other.get(&a, 7), Err(Rejected::Tampered(_))));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        let audit = other.audit(&a);
        assert_eq!(audit.len(), 1);
        assert!(audit[0].1.is_err());
    }
}
