//! The host side of `weft:plugin/kv`: each plugin's own namespace per
//! pipeline, with a quota, written durably through the store.

use crate::sandbox::bindings::transform::weft::plugin::kv;
use crate::sandbox::state::{HostState, KvAccess};

/// Longest kv key, in bytes.
pub const MAX_KV_KEY: usize = 512;

fn check_key(key: &str) -> Result<(), kv::KvError> {
    if key.is_empty() || key.len() > MAX_KV_KEY {
        return Err(kv::KvError::Invalid(format!(
            "kv keys must be 1 to {MAX_KV_KEY} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

impl From<crate::store::KvError> for kv::KvError {
    fn from(e: crate::store::KvError) -> Self {
        match e {
            crate::store::KvError::QuotaExceeded(m) => kv::KvError::QuotaExceeded(m),
            crate::store::KvError::Unavailable(m) => kv::KvError::Unavailable(m),
        }
    }
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

impl KvAccess {
    fn swap(
        &self,
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
    ) -> Result<bool, kv::KvError> {
        check_key(key)?;
        Ok(self
            .store
            .kv_swap(&self.namespace, key, expected, new, self.quota_bytes)?)
    }

    async fn flush(&self) -> Result<(), kv::KvError> {
        self.store
            .flush()
            .await
            .map(|_| ())
            .map_err(|e| kv::KvError::Unavailable(e.to_string()))
    }
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, kv::KvError> {
        let kv = self.kv_for(Some(&key))?;
        Ok(kv.store.kv_get(&kv.namespace, &key)?)
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
        Ok(kv.store.kv_list(&kv.namespace, &prefix, limit as usize)?)
    }
}
