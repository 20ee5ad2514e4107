//! Durable key-value state, private to this plugin within its pipeline.
//!
//! Inside the host the data lives in the host's store and counts against the
//! plugin's kv quota. Outside wasm (in a plugin's unit tests) an in-memory map
//! stands in, so kv logic can be tested natively.
//!
//! ```
//! use weft_sdk::kv;
//!
//! // Remember the last id seen; take a lock-free step with compare-and-swap.
//! kv::set("last-id", b"41").unwrap();
//! assert_eq!(kv::get("last-id").unwrap().as_deref(), Some(&b"41"[..]));
//! assert!(kv::cas("last-id", Some(b"41"), Some(b"42")).unwrap());
//! assert!(!kv::cas("last-id", Some(b"41"), Some(b"43")).unwrap(), "someone moved it");
//! assert_eq!(kv::list_keys("last-", 10).unwrap(), vec!["last-id".to_string()]);
//! kv::delete("last-id").unwrap();
//! assert_eq!(kv::get("last-id").unwrap(), None);
//! ```

use std::fmt;

/// Why a kv call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The write would pass the plugin's kv quota.
    QuotaExceeded(String),
    /// The key or value is not acceptable.
    Invalid(String),
    /// The store failed; retrying later may help.
    Unavailable(String),
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::QuotaExceeded(m) => write!(f, "kv quota exceeded: {m}"),
            KvError::Invalid(m) => write!(f, "kv request invalid: {m}"),
            KvError::Unavailable(m) => write!(f, "kv unavailable: {m}"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<KvError> for crate::Error {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Unavailable(_) => crate::Error::Transient(e.to_string()),
            _ => crate::Error::Fatal(e.to_string()),
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod backend {
    use super::KvError;
    use crate::bindings::transform::weft::plugin::kv as wit;

    fn map(e: wit::KvError) -> KvError {
        match e {
            wit::KvError::QuotaExceeded(m) => KvError::QuotaExceeded(m),
            wit::KvError::Invalid(m) => KvError::Invalid(m),
            wit::KvError::Unavailable(m) => KvError::Unavailable(m),
        }
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        wit::get(key).map_err(map)
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        wit::set(key, value).map_err(map)
    }
    pub fn delete(key: &str) -> Result<(), KvError> {
        wit::delete(key).map_err(map)
    }
    pub fn cas(key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, KvError> {
        wit::cas(key, expected, new).map_err(map)
    }
    pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        wit::list_keys(prefix, limit).map_err(map)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod backend {
    use super::KvError;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static MAP: RefCell<BTreeMap<String, Vec<u8>>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(MAP.with(|m| m.borrow().get(key).cloned()))
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::Invalid("empty key".into()));
        }
        MAP.with(|m| m.borrow_mut().insert(key.to_string(), value.to_vec()));
        Ok(())
    }
    pub fn delete(key: &str) -> Result<(), KvError> {
        MAP.with(|m| m.borrow_mut().remove(key));
        Ok(())
    }
    pub fn cas(key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, KvError> {
        MAP.with(|m| {
            let mut m = m.borrow_mut();
            if m.get(key).map(Vec::as_slice) != expected {
                return Ok(false);
            }
            match new {
                Some(v) => m.insert(key.to_string(), v.to_vec()),
                None => m.remove(key),
            };
            Ok(true)
        })
    }
    pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
        Ok(MAP.with(|m| {
            m.borrow()
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .take(limit as usize)
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }
}

/// Read a value.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    backend::get(key)
}

/// Write a value.
pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
    backend::set(key, value)
}

/// Remove a value; a missing key is not an error.
pub fn delete(key: &str) -> Result<(), KvError> {
    backend::delete(key)
}

/// Write `new` (or delete, when `None`) only if the current value equals
/// `expected` (or is absent, when `None`). Returns whether it swapped.
pub fn cas(key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, KvError> {
    backend::cas(key, expected, new)
}

/// Keys that start with `prefix`, in byte order, at most `limit` of them.
pub fn list_keys(prefix: &str, limit: u32) -> Result<Vec<String>, KvError> {
    backend::list_keys(prefix, limit)
}
