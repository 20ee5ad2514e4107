//! Retention: drop finished events past the history window (or over the
//! count limit, oldest first) and dedup records past the dedup window, in
//! bounded batches through the committer.

use super::SledStore;
use super::committer::Write;
use super::keys::{DEDUP, DONE, event_key, parse_dedup_value};
use crate::store::{EventId, StoreError, Swept};

/// Most keys removed per sweep batch.
const SWEEP_BATCH: usize = 1000;

pub(super) async fn sweep(
    store: &SledStore,
    history_before_ms: u64,
    keep_events: Option<usize>,
    dedup_before_ms: u64,
) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    // Over the count limit, the oldest finished events go first, whatever their age.
    let mut over = keep_events.map_or(0, |keep| store.count(DONE).saturating_sub(keep));
    loop {
        let keys: Vec<Vec<u8>> = store
            .events
            .scan_prefix([DONE])
            .keys()
            .take(SWEEP_BATCH)
            .filter_map(Result::ok)
            .map(|k| k.to_vec())
            .collect();
        let expired: Vec<_> = keys
            .into_iter()
            .filter(|k| {
                if k.len() != 25 {
                    return false;
                }
                if over > 0 {
                    over -= 1;
                    return true;
                }
                u64::from_be_bytes(k[1..9].try_into().unwrap_or([0xff; 8])) < history_before_ms
            })
            .collect();
        if expired.is_empty() {
            break;
        }
        let n = expired.len();
        let mut w = Write::default();
        for k in expired {
            if let Some(id) = EventId::from_slice(&k[9..]) {
                w.remove(event_key(&id));
            }
            w.remove(k);
        }
        store.submit(w).await?;
        swept.events += n;
        if n < SWEEP_BATCH {
            break;
        }
    }
    let stale: Vec<Vec<u8>> = store
        .events
        .scan_prefix([DEDUP])
        .filter_map(Result::ok)
        .filter_map(|(k, v)| parse_dedup_value(&v).map(|(_, at)| (k.to_vec(), at)))
        .filter(|(_, at)| *at < dedup_before_ms)
        .map(|(k, _)| k)
        .collect();
    for chunk in stale.chunks(SWEEP_BATCH) {
        let mut w = Write::default();
        for k in chunk {
            w.remove(k.clone());
        }
        store.submit(w).await?;
        swept.dedup_keys += chunk.len();
    }
    Ok(swept)
}
