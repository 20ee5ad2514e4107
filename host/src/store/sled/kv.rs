//! Plugin key-value state in the `kv` tree: `v` + namespace + key holds a
//! value, `u` + namespace the bytes the namespace uses against its quota.

use crate::store::KvError;

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

pub(super) fn get(tree: &sled::Tree, ns: &[u8], key: &str) -> Result<Option<Vec<u8>>, KvError> {
    tree.get(value_key(ns, key))
        .map(|v| v.map(|v| v.to_vec()))
        .map_err(unavailable)
}

/// Replace (or, with `None`, remove) a key if its current value is
/// `expected` (when given), keeping the namespace's usage within quota.
pub(super) fn swap(
    tree: &sled::Tree,
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
            return Err(Abort(KvError::QuotaExceeded(format!(
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
