//! Key layout of the `events` tree; nothing outside the sled store sees it.

use crate::store::EventId;

/// Prefix of event records.
pub(super) const EVENT: u8 = b'e';
/// Prefix of event payloads, written once beside their record.
pub(super) const BODY: u8 = b'b';
/// Prefix of queue entries.
pub(super) const QUEUE: u8 = b'q';
/// Prefix of the dead-letter index.
pub(super) const DEAD: u8 = b'd';
/// Prefix of the history retention index.
pub(super) const DONE: u8 = b't';
/// Prefix of the ingress dedup records.
pub(super) const DEDUP: u8 = b'k';
/// Prefix of paused-pipeline markers.
pub(super) const PAUSED: u8 = b'p';
/// How many group commits the store has made (see the anchor file).
pub(super) const COMMITS_KEY: &[u8] = b"#commits";
/// Prefix of source cursors.
pub(super) const CURSOR: u8 = b'c';
/// Prefix of pipelines' lifetime counters.
pub(super) const TOTALS: u8 = b'l';

/// Prefix of what the host keeps for a credential (sealed).
pub(super) const CREDENTIAL: u8 = b'o';

/// `o` + credential name.
pub(super) fn credential_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(CREDENTIAL);
    k.extend_from_slice(name.as_bytes());
    k
}

/// Prefix of canary states.
pub(super) const CANARY: u8 = b'n';

/// `n` + canary key: a canary's state.
pub(super) fn canary_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(CANARY);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `l` + pipeline: its lifetime counters.
pub(super) fn totals_key(pipeline: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + pipeline.len());
    k.push(TOTALS);
    k.extend_from_slice(pipeline.as_bytes());
    k
}

/// `c` + pipeline: where a pipeline's source polls next.
pub(super) fn cursor_key(pipeline: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + pipeline.len());
    k.push(CURSOR);
    k.extend_from_slice(pipeline.as_bytes());
    k
}

/// `p` + pipeline
pub(super) fn paused_key(pipeline: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + pipeline.len());
    k.push(PAUSED);
    k.extend_from_slice(pipeline.as_bytes());
    k
}

/// `e` + id
pub(super) fn event_key(id: &EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(EVENT);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `b` + id
pub(super) fn body_key(id: &EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(BODY);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `q` + due (big-endian ms) + id: a prefix scan yields work in due order.
pub(super) fn queue_key(due_ms: u64, id: &EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(QUEUE);
    k.extend_from_slice(&due_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// Split a queue key into due time and id.
pub(super) fn parse_queue_key(k: &[u8]) -> Option<(u64, EventId)> {
    if k.len() != 25 || k[0] != QUEUE {
        return None;
    }
    let due = u64::from_be_bytes(k[1..9].try_into().ok()?);
    Some((due, EventId::from_slice(&k[9..])?))
}

/// `d` + id
pub(super) fn dead_key(id: &EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(DEAD);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `t` + finish ms + id
pub(super) fn done_key(at_ms: u64, id: &EventId) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(DONE);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// `k` + pipeline + 0 + idempotency key; in an encrypted store, the key's
/// keyed hash under the store's index key instead (see [`hashed_key`]).
pub(super) fn dedup_key(pipeline: &str, key: &str, index: Option<&[u8; 32]>) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + pipeline.len() + key.len());
    k.push(DEDUP);
    k.extend_from_slice(pipeline.as_bytes());
    k.push(0);
    match index {
        Some(index) => k.extend_from_slice(&hashed_key(index, key.as_bytes())),
        None => k.extend_from_slice(key.as_bytes()),
    }
    k
}

/// First byte of an idempotency key kept as a keyed hash.
const HASHED: u8 = 0xE5;

/// An idempotency key as an encrypted store keeps it in its index:
/// [`HASHED`] and HMAC-SHA256 under the index key.
pub(super) fn hashed_key(index: &[u8; 32], key: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(index).expect("any key length");
    mac.update(key);
    let mut out = vec![HASHED];
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// A dedup record's key with its idempotency key hashed under `index`
/// (one written before the store was encrypted), or `None` when it is
/// hashed already.
pub(super) fn rehash_dedup_key(k: &[u8], index: &[u8; 32]) -> Option<Vec<u8>> {
    let at = k.iter().skip(1).position(|b| *b == 0)? + 2;
    let key = &k[at..];
    if key.len() == 33 && key[0] == HASHED {
        return None;
    }
    let mut out = k[..at].to_vec();
    out.extend_from_slice(&hashed_key(index, key));
    Some(out)
}

/// Value of a dedup record: first event id + accept time.
pub(super) fn dedup_value(id: &EventId, at_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(&at_ms.to_be_bytes());
    v
}

/// Parse a dedup value.
pub(super) fn parse_dedup_value(v: &[u8]) -> Option<(EventId, u64)> {
    if v.len() != 24 {
        return None;
    }
    Some((
        EventId::from_slice(&v[..16])?,
        u64::from_be_bytes(v[16..].try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_sort_by_due_time_and_round_trip() {
        let a = EventId::new();
        let b = EventId::new();
        assert!(queue_key(5, &b) < queue_key(6, &a));
        assert_eq!(parse_queue_key(&queue_key(7, &a)), Some((7, a)));
        assert_eq!(parse_dedup_value(&dedup_value(&b, 9)), Some((b, 9)));
    }
}
