//! Plugin state in the `PREFIX-kv` bucket: one key per value, named by
//! the namespace and the key in hex; swaps are compare-and-set, and a
//! write that grows a namespace is checked against its quota first.

use super::scan::scan;
use super::*;

impl JetStreamStore {
    fn kv_key(namespace: &[u8], key: &str) -> String {
        format!("{}.{}", hexname(namespace), hexname(key.as_bytes()))
    }

    fn kv_call<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, KvError>> + Send + 'static,
    ) -> Result<T, KvError> {
        self.call.wait(fut)
    }

    pub(super) fn plugin_get(
        &self,
        namespace: &[u8],
        key: &str,
    ) -> Result<Option<Vec<u8>>, KvError> {
        let (s, k) = (self.s.clone(), Self::kv_key(namespace, key));
        self.kv_call(async move {
            match s.kv.entry(k).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put => Ok(Some(e.value.to_vec())),
                Ok(_) => Ok(None),
                Err(e) => Err(KvError::Unavailable(format!("plugin state: {e}"))),
            }
        })
    }

    pub(super) fn plugin_swap(
        &self,
        namespace: &[u8],
        key: &str,
        expected: Option<Option<&[u8]>>,
        new: Option<&[u8]>,
        quota_bytes: u64,
    ) -> Result<bool, KvError> {
        let s = self.s.clone();
        let ns = hexname(namespace);
        let k = Self::kv_key(namespace, key);
        let expected = expected.map(|e| e.map(<[u8]>::to_vec));
        let new = new.map(<[u8]>::to_vec);
        let key_len = key.len() as u64;
        self.kv_call(async move {
            let down =
                |e: &dyn std::fmt::Display| KvError::Unavailable(format!("plugin state: {e}"));
            loop {
                let current = match s.kv.entry(k.clone()).await.map_err(|e| down(&e))? {
                    Some(e) if e.operation == kv::Operation::Put => {
                        Some((e.value.to_vec(), e.revision))
                    }
                    Some(e) => {
                        // Deleted: a create must name its revision.
                        let _ = e;
                        None
                    }
                    None => None,
                };
                if let Some(exp) = &expected
                    && current.as_ref().map(|(v, _)| v) != exp.as_ref()
                {
                    return Ok(false);
                }
                let old_size = current
                    .as_ref()
                    .map_or(0, |(v, _)| key_len + v.len() as u64);
                let new_size = new.as_ref().map_or(0, |v| key_len + v.len() as u64);
                if new_size > old_size {
                    let used: u64 = scan(&s.js, &s.names.kv, &format!("{ns}.>"), s.timeout)
                        .await
                        .map_err(|e| down(&e))?
                        .iter()
                        .map(|f| (f.key.len() - ns.len() - 1) as u64 / 2 + f.value.len() as u64)
                        .sum();
                    if used - old_size.min(used) + new_size > quota_bytes {
                        return Err(KvError::QuotaExceeded(format!(
                            "plugin state would hold {} bytes, over its quota of {quota_bytes}",
                            used - old_size.min(used) + new_size
                        )));
                    }
                }
                let r = match (&new, &current) {
                    (Some(v), Some((_, rev))) => {
                        s.kv.update(&k, v.clone().into(), *rev).await.map(|_| ())
                    }
                    (Some(v), None) => match s.kv.create(&k, v.clone().into()).await {
                        Ok(_) => Ok(()),
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(down(&e)),
                    },
                    (None, Some((_, rev))) => {
                        match s.kv.purge_expect_revision(&k, Some(*rev)).await {
                            Ok(()) => Ok(()),
                            Err(e) if super::is_purge_conflict(&e) => continue,
                            Err(e) => return Err(down(&e)),
                        }
                    }
                    (None, None) => Ok(()),
                };
                match r {
                    Ok(()) => return Ok(true),
                    Err(e) if is_conflict(&e) => continue,
                    Err(e) => return Err(down(&e)),
                }
            }
        })
    }

    pub(super) fn plugin_list(
        &self,
        namespace: &[u8],
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, KvError> {
        let s = self.s.clone();
        let ns = hexname(namespace);
        let prefix = prefix.to_string();
        self.kv_call(async move {
            let found = scan(&s.js, &s.names.kv, &format!("{ns}.>"), s.timeout)
                .await
                .map_err(KvError::Unavailable)?;
            let mut keys: Vec<String> = found
                .iter()
                .filter_map(|f| {
                    f.key
                        .strip_prefix(&format!("{ns}."))
                        .and_then(|h| hex::decode(h).ok())
                })
                .filter_map(|k| String::from_utf8(k).ok())
                .filter(|k| k.starts_with(&prefix))
                .collect();
            keys.sort();
            keys.truncate(limit);
            Ok(keys)
        })
    }
}
