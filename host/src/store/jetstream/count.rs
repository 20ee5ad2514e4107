//! What the store holds, counted from a scan of its buckets and kept for
//! a moment: the counts and usage the admin API, metrics and quotas read.

use super::scan::scan;
use super::{JetStreamStore, Place};
use crate::store::{StoreCounts, StoreError, StoreUsage};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long read results (counts, usage) are reused while this host has
/// written nothing since; other hosts' writes show within this.
const SNAPSHOT_FOR: Duration = Duration::from_secs(2);

/// What a scan of the events bucket found, for the reads that count.
#[derive(Default, Clone)]
pub(super) struct Snapshot {
    pub counts: StoreCounts,
    pub usage: StoreUsage,
    pub dead_by_pipeline: BTreeMap<String, u64>,
}

impl JetStreamStore {
    pub(super) fn snapshot(&self) -> Snapshot {
        let mut held = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        let writes = self.s.writes.load(Ordering::SeqCst);
        if let Some((at, seen, snap)) = held.as_ref()
            && *seen == writes
            && at.elapsed() < SNAPSHOT_FOR
        {
            return snap.clone();
        }
        let s = self.s.clone();
        let found = self.call.wait(async move {
            let events = s.scan_all().await?;
            let dedup = scan(&s.js, &s.names.dedup, ">", s.timeout)
                .await
                .map_err(StoreError::Read)?;
            let kv = scan(&s.js, &s.names.kv, ">", s.timeout)
                .await
                .map_err(StoreError::Read)?;
            Ok::<_, StoreError>((
                events,
                dedup.len(),
                kv.iter()
                    .map(|f| (f.key.len() / 2 + f.value.len()) as u64)
                    .sum::<u64>(),
            ))
        });
        let mut snap = Snapshot::default();
        match found {
            Ok((events, dedup_keys, kv_bytes)) => {
                snap.counts.events = events.len();
                snap.counts.dedup_keys = dedup_keys;
                snap.usage.kv_bytes = kv_bytes;
                for (s, r, _) in &events {
                    snap.usage.disk_bytes += (s.record.len() + s.payload.len()) as u64;
                    match s.place {
                        Place::Queued { .. } => snap.counts.queued += 1,
                        Place::Finished { .. } => {
                            snap.counts.finished += 1;
                            snap.usage.history_events += 1;
                            snap.usage.history_bytes += r.payload.len() as u64;
                        }
                        Place::Dead { .. } => {
                            snap.counts.dead_letters += 1;
                            snap.usage.dead_letter_events += 1;
                            snap.usage.dead_letter_bytes += r.payload.len() as u64;
                            *snap.dead_by_pipeline.entry(r.pipeline.clone()).or_default() += 1;
                        }
                    }
                }
                snap.usage.disk_bytes += kv_bytes;
            }
            Err(e) => tracing::warn!("could not count what the store holds: {e}"),
        }
        *held = Some((Instant::now(), writes, snap.clone()));
        snap
    }
}
