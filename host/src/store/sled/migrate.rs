//! Store format upgrades at open: records written by an earlier weft with
//! their payload inline are rewritten with the payload apart.

use super::keys::{EVENT, body_key};
use super::payloads::{self, Payloads};
use crate::store::{EventId, EventRecord};

/// Rewrite records that still hold their payload inline (written by an
/// earlier weft) as a record and a payload apart, in batches, before the
/// store takes writes. A crash part-way leaves the rest for the next open;
/// a rewritten record's payload is in the same batch as the record.
pub(super) fn keep_payloads_apart(
    db: &sled::Db,
    events: &sled::Tree,
    payloads: &Payloads,
    keys: &crate::store::Keyring,
) -> Result<usize, String> {
    const BATCH: usize = 256;
    let mut moved = 0;
    let mut batch = sled::Batch::default();
    let mut files = Vec::new();
    let mut in_batch = 0;
    let commit = |batch: sled::Batch, files: &mut Vec<(EventId, Vec<u8>)>| {
        payloads.write(files).map_err(|e| e.to_string())?;
        files.clear();
        events.apply_batch(batch).map_err(|e| e.to_string())
    };
    for item in events.scan_prefix([EVENT]) {
        let (k, v) = item.map_err(|e| e.to_string())?;
        // Sealed records were written with their payload apart.
        if EventRecord::payload_apart(&v) || crate::store::seal::sealed_id(&v).is_some() {
            continue;
        }
        // A record this weft cannot read stays as it is; reading it names it.
        let Ok(record) = EventRecord::decode(&v) else {
            continue;
        };
        let stored = payloads::store(record.id, &record.payload, keys);
        files.extend(stored.file);
        batch.insert(body_key(&record.id), stored.value);
        let encoded = keys.seal_or_keep(&k, record.encode());
        batch.insert(k, encoded);
        in_batch += 1;
        if in_batch == BATCH {
            commit(std::mem::take(&mut batch), &mut files)?;
            moved += in_batch;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        commit(batch, &mut files)?;
        moved += in_batch;
    }
    if moved > 0 {
        db.flush().map_err(|e| e.to_string())?;
    }
    Ok(moved)
}
