//! Plugin key-value state in the `kv` tree: `v` + namespace + key holds a
//! value, `u` + namespace the bytes the namespace uses against its quota.
//! With [`SEALED_FLAG`] present every value is sealed (see
//! [`crate::store::seal`]); quotas count the plaintext.

use crate::store::{Keyring, KvError};

/// Present in the `kv` tree when its values are sealed.
pub(super) const SEALED_FLAG: &[u8] = b"#sealed";

/// How values are written and read: sealed under `keys` or plain.
#[derive(Clone, Copy)]
pub(super) struct Codec<'a> {
    pub keys: &'a Keyring,
    pub sealed: bool,
}

impl Codec<'_> {
    fn open(&self, at: &[u8], stored: &[u8]) -> Result<Vec<u8>, KvError> {
        if self.sealed {
            self.keys.open(at, stored).map_err(KvError::Unavailable)
        } else {
            Ok(stored.to_vec())
        }
    }

    fn seal(&self, at: &[u8], plain: &[u8]) -> Vec<u8> {
        match self.sealed.then(|| self.keys.seal(at, plain)).flatten() {
            Some(sealed) => sealed,
            None => plain.to_vec(),
        }
    }
}

/// Seal every plain value of the tree and set the flag, in one batch:
/// done once, when encryption is first turned on. Returns how many.
pub(super) fn seal_all(tree: &sled::Tree, keys: &Keyring) -> Result<usize, String> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for item in tree.scan_prefix(b"v") {
        let (k, v) = item.map_err(|e| e.to_string())?;
        if let Some(sealed) = keys.seal(&k, &v) {
            batch.insert(k, sealed);
            n += 1;
        }
    }
    batch.insert(SEALED_FLAG, &[1u8][..]);
    tree.apply_batch(batch).map_err(|e| e.to_string())?;
    tree.flush().map_err(|e| e.to_string())?;
    Ok(n)
}

/// Seal again, under the current key, each value under another key;
/// a value written meanwhile is left (it is already current). Returns
/// how many were sealed again.
pub(super) fn reseal(tree: &sled::Tree, keys: &Keyring) -> Result<usize, String> {
    let mut n = 0;
    for item in tree.scan_prefix(b"v") {
        let (k, v) = item.map_err(|e| e.to_string())?;
        if !keys.stale(crate::store::seal::sealed_id(&v)) {
            continue;
        }
        let plain = keys.open(&k, &v)?;
        let Some(sealed) = keys.seal(&k, &plain) else {
            continue;
        };
        if let Ok(Ok(())) = tree.compare_and_swap(&k, Some(&v), Some(sealed)) {
            n += 1;
        }
    }
    Ok(n)
}

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

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

pub(super) fn get(
    tree: &sled::Tree,
    codec: Codec<'_>,
    ns: &[u8],
    key: &str,
) -> Result<Option<Vec<u8>>, KvError> {
    let at = value_key(ns, key);
    match tree.get(&at).map_err(unavailable)? {
        Some(v) => codec.open(&at, &v).map(Some),
        None => Ok(None),
    }
}

/// Replace (or, with `None`, remove) a key if its current value is
/// `expected` (when given), keeping the namespace's usage within quota.
pub(super) fn swap(
    tree: &sled::Tree,
    codec: Codec<'_>,
    ns: &[u8],
    key: &str,
    expected: Option<Option<&[u8]>>,
    new: Option<&[u8]>,
    quota: u64,
) -> Result<bool, KvError> {
    let vkey = value_key(ns, key);
    let ukey = usage_key(ns);
    let result = tree.transaction(|tx| {
        use sled::transaction::ConflictableTransactionError::Abort;
        let old = match tx.get(&vkey)? {
            Some(stored) => Some(
                codec
                    .open(&vkey, &stored)
                    .map_err(sled::transaction::ConflictableTransactionError::Abort)?,
            ),
            None => None,
        };
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
            return Err(Abort(KvError::QuotaExceeded(format!(
                "writing {key:?} would use {next} bytes of the {quota}-byte kv quota"
            ))));
        }
        match new {
            Some(v) => tx.insert(vkey.as_slice(), codec.seal(&vkey, v))?,
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

pub(super) fn list(
    tree: &sled::Tree,
    ns: &[u8],
    prefix: &str,
    limit: usize,
) -> Result<Vec<String>, KvError> {
    let start = value_key(ns, prefix);
    let skip = ns.len() + 1;
    let mut out = Vec::new();
    for item in tree.scan_prefix(&start).keys().take(limit) {
        let k = item.map_err(unavailable)?;
        out.push(String::from_utf8_lossy(&k[skip..]).into_owned());
    }
    Ok(out)
}

/// Every value: (namespace, key, value), opened. A namespace ends with the
/// second of its two NUL separators (pipeline, NUL, plugin, NUL).
pub(super) fn export(
    tree: &sled::Tree,
    codec: Codec<'_>,
) -> Result<Vec<crate::store::KvEntry>, KvError> {
    let mut out = Vec::new();
    for item in tree.scan_prefix(b"v") {
        let (k, v) = item.map_err(unavailable)?;
        let rest = &k[1..];
        let Some(split) = rest
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == 0)
            .nth(1)
            .map(|(i, _)| i + 1)
        else {
            continue;
        };
        out.push((
            rest[..split].to_vec(),
            String::from_utf8_lossy(&rest[split..]).into_owned(),
            codec.open(&k, &v)?,
        ));
    }
    Ok(out)
}
