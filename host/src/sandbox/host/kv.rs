//! The host side of `weft:plugin/kv`: each plugin's own namespace per
//! pipeline, with a quota, written durably.

use crate::sandbox::bindings::transform::weft::plugin::kv;
use crate::sandbox::state::{HostState, KvAccess};

/// Longest kv key, in bytes.
pub const MAX_KV_KEY: usize = 512;

fn usage_key(ns: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + 1);
    k.push(b'u');
    k.extend_from_slice(ns);
    k
}

fn value_key(ns: &[u8], key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ns.len() + key.len() + 1);
    k.push(b'v');
    k.extend_from_slice(ns);
    k.extend_from_slice(key.as_bytes());
    k
}

fn check_key(key: &str) -> Result<(), kv::KvError> {
    if key.is_empty() || key.len() > MAX_KV_KEY {
        return Err(kv::KvError::Invalid(format!(
            "kv keys must be 1 to {MAX_KV_KEY} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

impl HostState {
    /// The plugin's kv namespace, after checking the key; a key with a NUL
    /// byte (the namespace separator) is a denial.
    fn kv_for(&self, key: Option<&str>) -> Result<&KvAccess, kv::KvError> {
        let Some(kv) = &self.kv else {
            let m = self.hooks.denier.deny("kv", "the plugin has no kv grant");
            return Err(kv::KvError::Invalid(m));
        };
        if let Some(key) = key {
            if key.contains('\0') {
                let m = self.hooks.denier.deny(
                    "kv",
                    &format!("kv key {key:?} holds a NUL byte, which would reach outside the plugin's own namespace"),
                );
                return Err(kv::KvError::Invalid(m));
            }
            check_key(key)?;
        }
        Ok(kv)
    }
}

fn unavailable(e: impl std::fmt::Display) -> kv::KvError {
    kv::KvError::Unavailable(e.to_string())
}

impl KvAccess {
    /// Replace (or, with `None`, remove) a key if its current value is
    /// `expected` (when given), keeping the namespace's usage within quota.
    fn swap(
        &self,
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
    ) -> Result<bool, kv::KvError> {
        check_key(key)?;
        let vkey = value_key(&self.namespace, key);
        let ukey = usage_key(&self.namespace);
        let quota = self.quota_bytes;
        let result = self.tree.transaction(|tx| {
            use sled::transaction::ConflictableTransactionError::Abort;
            let old = tx.get(&vkey)?;
            if let Some(want) = expected
                && old.as_deref() != want
            {
                return Ok(false);
            }
            let used = tx
                .get(&ukey)?
                .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                .unwrap_or(0);
            let old_len = old.as_ref().map_or(0, |v| (v.len() + key.len()) as u64);
            let new_len = new.map_or(0, |v| (v.len() + key.len()) as u64);
            let next = used.saturating_sub(old_len) + new_len;
            if next > quota && new_len > old_len {
                return Err(Abort(kv::KvError::QuotaExceeded(format!(
                    "writing {key:?} would use {next} bytes of the {quota}-byte kv quota"
                ))));
            }
            match new {
                Some(v) => tx.insert(vkey.as_slice(), v)?,
                None => tx.remove(vkey.as_slice())?,
            };
            tx.insert(ukey.as_slice(), &next.to_be_bytes())?;
            Ok(true)
        });
        match result {
            Ok(swapped) => Ok(swapped),
            Err(sled::transaction::TransactionError::Abort(e)) => Err(e),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(unavailable(e)),
        }
    }

    async fn flush(&self) -> Result<(), kv::KvError> {
        self.db.flush_async().await.map(|_| ()).map_err(unavailable)
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        kv.tree
            .get(value_key(&kv.namespace, &key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(unavailable)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        kv.swap(&key, None, Some(&value))?;
        kv.flush().await
    }

    async fn delete(&mut self, key: String) -> Result<(), kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        kv.swap(&key, None, None)?;
        kv.flush().await
    }

    async fn cas(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        let swapped = kv.swap(&key, Some(expected.as_deref()), new.as_deref())?;
        if swapped {
            kv.flush().await?;
        }
        Ok(swapped)
    }

    async fn list_keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, kv::KvError> {
        let kv = self.kv_for(None)?;
        if prefix.contains('\0') {
            return Err(kv::KvError::Invalid(self.hooks.denier.deny(
                "kv",
                &format!("kv prefix {prefix:?} holds a NUL byte, which would reach outside the plugin's own namespace"),
            )));
        }
        let start = value_key(&kv.namespace, &prefix);
        let skip = kv.namespace.len() + 1;
        let mut out = Vec::new();
        for item in kv.tree.scan_prefix(&start).keys().take(limit as usize) {
            let k = item.map_err(unavailable)?;
            out.push(String::from_utf8_lossy(&k[skip..]).into_owned());
        }
        Ok(out)
    }
}
