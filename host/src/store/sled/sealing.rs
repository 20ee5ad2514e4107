//! Encryption at rest in the sled store: how records and credential state
//! are sealed and opened, and which keys the store's values are sealed
//! under: checked against the configured keys before the store is
//! touched, and moved to the current key by `weft store reencrypt` while
//! the host serves.
//!
//! The `meta` tree's [`KEYS_IN_USE`] lists the ids of every key a value
//! may be sealed under. A key is added before the first value is sealed
//! under it, and the others are dropped only after a pass left no value
//! under them, so the list never misses a key the store needs.

use super::committer::Write;
use super::keys::event_key;
use super::keys::{BODY, CREDENTIAL, EVENT};
use super::shelf::Trees;
use super::{SledStore, kv, payloads};
use crate::store::seal::{KeyId, sealed_id, show_id};
use crate::store::{
    Committed, Encryption, EventId, EventRecord, Keyring, Reencrypted, Store, StoreError,
};

/// `meta` key: the ids of the keys values may be sealed under.
const KEYS_IN_USE: &[u8] = b"sealed-keys";
/// `meta` key: the index key (idempotency keys are hashed under it),
/// sealed under the store key.
const INDEX_KEY: &[u8] = b"index-key";

/// The index key: read (opened) from `meta`, or made and kept there when
/// the store is first encrypted, when the dedup index's plain idempotency
/// keys are hashed under it in one batch.
fn index_key(trees: &Trees, keys: &Keyring) -> Result<[u8; 32], String> {
    if let Some(sealed) = trees.meta.get(INDEX_KEY).map_err(|e| e.to_string())? {
        let plain = keys
            .open(INDEX_KEY, &sealed)
            .map_err(|why| format!("the store's index key: {why}"))?;
        return plain
            .try_into()
            .map_err(|_| "the store's index key is damaged".to_string());
    }
    let key: [u8; 32] = rand::random();
    let mut batch = sled::Batch::default();
    let mut rehashed = 0;
    for item in trees.events.scan_prefix([super::keys::DEDUP]) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        if let Some(hashed) = super::keys::rehash_dedup_key(&k, &key) {
            batch.remove(k);
            batch.insert(hashed, v);
            rehashed += 1;
        }
    }
    trees.events.apply_batch(batch).map_err(|e| e.to_string())?;
    trees
        .meta
        .insert(INDEX_KEY, keys.seal(INDEX_KEY, &key).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    trees.db.flush().map_err(|e| e.to_string())?;
    if rehashed > 0 {
        tracing::info!(
            keys = rehashed,
            "idempotency keys in the dedup index hashed under the store's index key"
        );
    }
    Ok(key)
}

fn recorded(trees: &Trees) -> Result<Vec<KeyId>, String> {
    let value = trees
        .meta
        .get(KEYS_IN_USE)
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    Ok(value
        .chunks_exact(8)
        .filter_map(|c| c.try_into().ok())
        .collect())
}

fn record(trees: &Trees, ids: &[KeyId]) -> Result<(), String> {
    trees
        .meta
        .insert(KEYS_IN_USE, ids.concat())
        .map_err(|e| e.to_string())?;
    trees.db.flush().map_err(|e| e.to_string())?;
    Ok(())
}

fn listed(ids: &[KeyId]) -> String {
    ids.iter().map(show_id).collect::<Vec<_>>().join(", ")
}

/// Check that `keys` open every value the store may hold, before anything
/// is changed; then record the current key and seal plugin state if this
/// is the first open with encryption. Returns whether plugin state is
/// sealed, and the index key of an encrypted store.
pub(super) fn check(trees: &Trees, keys: &Keyring) -> Result<(bool, Option<[u8; 32]>), String> {
    let in_use = recorded(trees)?;
    let kv_sealed = trees
        .kv
        .contains_key(kv::SEALED_FLAG)
        .map_err(|e| e.to_string())?;
    if keys.is_opaque() {
        return Ok((kv_sealed, None));
    }
    let known = keys.ids();
    let missing: Vec<KeyId> = in_use
        .iter()
        .filter(|id| !known.contains(id))
        .copied()
        .collect();
    if !missing.is_empty() {
        return Err(match keys.current_id() {
            None => format!(
                "the store is encrypted (values are sealed under key {}) and server.encryption is not set; set it to the key the store was written with. Nothing was changed",
                listed(&missing)
            ),
            Some(current) => format!(
                "the store holds values sealed under key {}, which is not among the configured keys ({}); give the key it was written with as server.encryption.key, or in previous while moving to a new key. Nothing was changed",
                listed(&missing),
                listed(&known).replacen(
                    &show_id(&current),
                    &format!("{} (key)", show_id(&current)),
                    1
                )
            ),
        });
    }
    let Some(current) = keys.current_id() else {
        return Ok((kv_sealed, None));
    };
    if !in_use.contains(&current) {
        let mut ids = in_use;
        ids.push(current);
        record(trees, &ids)?;
    }
    if !kv_sealed {
        let sealed = kv::seal_all(&trees.kv, keys)?;
        if sealed > 0 {
            tracing::info!(values = sealed, "plugin state sealed under the store key");
        }
    }
    Ok((true, Some(index_key(trees, keys)?)))
}

/// The store's encryption as recorded.
pub(super) fn status(store: &SledStore) -> Encryption {
    let in_use = store
        .trees()
        .ok()
        .and_then(|t| recorded(&t).ok())
        .unwrap_or_default();
    Encryption {
        current_key: store.keys.current_id().map(|id| show_id(&id)),
        keys_in_use: in_use.iter().map(show_id).collect(),
    }
}

/// First byte of a credential's state kept unsealed.
const PLAIN_STATE: u8 = 0;

/// How the store's values are sealed on the way to disk and opened on the
/// way back.
impl SledStore {
    /// A record as stored: sealed under the store's keys when they seal.
    pub(super) fn encode(&self, record: &EventRecord) -> Vec<u8> {
        self.keys
            .seal_or_keep(&event_key(&record.id), record.encode())
    }

    /// The record stored under `key` as `value` (opened if sealed), and
    /// whether its payload is kept apart.
    pub(super) fn decode(
        &self,
        key: &[u8],
        value: &[u8],
    ) -> Result<(EventRecord, bool), StoreError> {
        let opened;
        let plain = if crate::store::seal::sealed_id(value).is_some() {
            opened = self.keys.open(key, value).map_err(|why| {
                let id = EventId::from_slice(&key[1..]).map_or_else(String::new, |i| i.to_string());
                StoreError::Read(format!("event record {id}: {why}"))
            })?;
            opened.as_slice()
        } else {
            value
        };
        let record = EventRecord::decode(plain).map_err(StoreError::Read)?;
        Ok((record, EventRecord::payload_apart(plain)))
    }

    /// A credential's state as stored: sealed, or `PLAIN_STATE` and the
    /// value when the store does not seal.
    pub(super) fn seal_credential(&self, key: &[u8], value: &[u8]) -> Vec<u8> {
        self.keys.seal(key, value).unwrap_or_else(|| {
            let mut v = vec![PLAIN_STATE];
            v.extend_from_slice(value);
            v
        })
    }

    pub(super) fn open_credential(&self, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
        match stored.split_first() {
            Some((&PLAIN_STATE, rest)) => Ok(rest.to_vec()),
            _ => self.keys.open(key, stored).map_err(|why| {
                StoreError::Read(format!(
                    "the state of credential {}: {why}",
                    String::from_utf8_lossy(&key[1..])
                ))
            }),
        }
    }
}

/// How many writes a pass keeps in flight.
const IN_FLIGHT: usize = 256;

/// Move every value to the current key.
pub(super) async fn reencrypt(store: &SledStore) -> Result<Reencrypted, StoreError> {
    let keys = store.keys.clone();
    if !keys.seals() {
        return Err(StoreError::Write(
            "the store is not encrypted: set server.encryption.key (see `weft store keygen`) and restart first".into(),
        ));
    }
    let trees = store.trees()?;
    let read = |e: sled::Error| StoreError::Read(e.to_string());
    if let Some(index) = &store.index_key {
        let sealed = keys.seal(INDEX_KEY, index).unwrap_or_default();
        trees
            .meta
            .insert(INDEX_KEY, sealed)
            .map_err(|e| StoreError::Write(e.to_string()))?;
    }
    let mut done = Reencrypted::default();
    let mut tickets: Vec<(bool, crate::store::Ticket)> = Vec::new();
    async fn settle(
        tickets: &mut Vec<(bool, crate::store::Ticket)>,
        done: &mut Reencrypted,
    ) -> Result<(), StoreError> {
        for (record, t) in tickets.drain(..) {
            match t.await? {
                Committed::Written if record => done.records += 1,
                Committed::Written => done.payloads += 1,
                _ => done.changed_meanwhile += 1,
            }
        }
        Ok(())
    }
    for item in trees.events.scan_prefix([EVENT]) {
        let (k, v) = item.map_err(read)?;
        if !keys.stale(sealed_id(&v)) {
            continue;
        }
        let (record, apart) = store.decode(&k, &v)?;
        // Records holding their payload inline were moved apart at open;
        // one that could not be read then is left as it is.
        if !apart {
            continue;
        }
        let mut write = Write {
            unchanged: Some((k.to_vec(), v.to_vec())),
            ..Write::default()
        };
        write.put(k.to_vec(), store.encode(&record));
        tickets.push((true, store.submit(write)));
        if tickets.len() >= IN_FLIGHT {
            settle(&mut tickets, &mut done).await?;
        }
    }
    for item in trees.events.scan_prefix([BODY]) {
        let (k, v) = item.map_err(read)?;
        let Some(id) = EventId::from_slice(&k[1..]) else {
            continue;
        };
        if !keys.stale(payloads::sealed_under(&store.payloads, &id, &v)) {
            continue;
        }
        let payload = store.payloads.read(&id, &v, &keys)?;
        let stored = payloads::store(id, &payload, &keys);
        let mut write = Write {
            unchanged: Some((k.to_vec(), v.to_vec())),
            files: stored.file.into_iter().collect(),
            ..Write::default()
        };
        write.remove(k.to_vec());
        write.put(k.to_vec(), stored.value);
        tickets.push((false, store.submit(write)));
        if tickets.len() >= IN_FLIGHT {
            settle(&mut tickets, &mut done).await?;
        }
    }
    for item in trees.events.scan_prefix([CREDENTIAL]) {
        let (k, v) = item.map_err(read)?;
        if !keys.stale(sealed_id(&v)) {
            continue;
        }
        let plain = store.open_credential(&k, &v)?;
        let mut write = Write {
            unchanged: Some((k.to_vec(), v.to_vec())),
            ..Write::default()
        };
        write.put(k.to_vec(), store.seal_credential(&k, &plain));
        tickets.push((true, store.submit(write)));
    }
    settle(&mut tickets, &mut done).await?;
    done.kv_values = kv::reseal(&trees.kv, &keys).map_err(StoreError::Write)? as u64;
    store.flush().await?;
    // Whatever the host wrote meanwhile is under the current key; check
    // that nothing is left under another before forgetting those keys.
    let left = left_behind(store, &trees, &keys)?;
    let current = keys.current_id().into_iter().collect::<Vec<_>>();
    if left == 0 {
        record(&trees, &current).map_err(StoreError::Write)?;
    } else {
        tracing::warn!(
            values = left,
            "values are still sealed under an earlier key; run `weft store reencrypt` again"
        );
    }
    done.encryption = status(store);
    Ok(done)
}

/// How many values are not under the current key.
fn left_behind(store: &SledStore, trees: &Trees, keys: &Keyring) -> Result<u64, StoreError> {
    let read = |e: sled::Error| StoreError::Read(e.to_string());
    let mut left = 0;
    for item in trees.events.scan_prefix([EVENT]) {
        let (_, v) = item.map_err(read)?;
        left += u64::from(keys.stale(sealed_id(&v)));
    }
    for item in trees.events.scan_prefix([BODY]) {
        let (k, v) = item.map_err(read)?;
        if let Some(id) = EventId::from_slice(&k[1..]) {
            left += u64::from(keys.stale(payloads::sealed_under(&store.payloads, &id, &v)));
        }
    }
    let index = trees.meta.get(INDEX_KEY).map_err(read)?;
    let index = index.into_iter().map(|v| Ok((sled::IVec::default(), v)));
    for item in trees
        .kv
        .scan_prefix(b"v")
        .chain(trees.events.scan_prefix([CREDENTIAL]))
        .chain(index)
    {
        let (_, v) = item.map_err(read)?;
        left += u64::from(keys.stale(sealed_id(&v)));
    }
    Ok(left)
}
