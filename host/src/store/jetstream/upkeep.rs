//! The store's upkeep over the shared buckets: leases, the retention
//! sweep and re-encryption. Any host may run each; every change names the
//! revision it read, so none undoes a newer write.

use super::scan::scan;
use super::*;

/// Take, keep or find taken the lease at `key`: held by this host until
/// `ttl` from now unless another host holds one that has not run out.
pub(super) async fn take_lease(s: &Shared, key: String, ttl: Duration) -> Result<bool, StoreError> {
    let value = format!("{} {}", s.host, now_ms() + ttl.as_millis() as u64);
    match s.state_get(key.clone()).await? {
        None => match s.state.create(&key, value.into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(write_err(e)),
        },
        Some((held, rev)) => {
            let held = String::from_utf8_lossy(&held).into_owned();
            let (holder, until) = held.split_once(' ').unwrap_or((&held, "0"));
            let until: u64 = until.parse().unwrap_or(0);
            if holder != s.host && until > now_ms() {
                return Ok(false);
            }
            match s.state.update(&key, value.into(), rev).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(write_err(e)),
            }
        }
    }
}

/// The retention sweep over the shared buckets: every host may run it;
/// each removal names the revision it saw, so none undoes a newer write.
pub(super) async fn sweep(s: &Shared, retention: Retention) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    let events = s.scan_events().await?;
    let mut finished: Vec<(u64, &EventRecord, u64)> = events
        .iter()
        .filter_map(|(st, r, rev)| match st.place {
            Place::Finished { at_ms } => Some((at_ms, r, *rev)),
            _ => None,
        })
        .collect();
    finished.sort_by_key(|(at, r, _)| (*at, r.id));
    let mut over = retention
        .keep_events
        .map_or(0, |k| finished.len().saturating_sub(k));
    for (at, r, rev) in &finished {
        let by_count = over > 0;
        if by_count {
            over -= 1;
        }
        if by_count || *at < retention.history_before_ms {
            if s.events
                .purge_expect_revision(r.id.to_string(), Some(*rev))
                .await
                .is_ok()
            {
                swept.events += 1;
            }
            continue;
        }
        let before = retention
            .by_pipeline
            .get(&r.pipeline)
            .and_then(|p| p.payloads_before_ms);
        if before.is_some_and(|b| *at < b) && r.payload != crate::store::EXPIRED_PAYLOAD {
            let mut dropped = (*r).clone();
            dropped.payload = crate::store::EXPIRED_PAYLOAD.to_vec();
            let value = s.stored(&dropped, Place::Finished { at_ms: *at }, "");
            if s.events.update(r.id.to_string(), value, *rev).await.is_ok() {
                swept.payloads += 1;
            }
        }
    }
    // Moves a crash left half done finish first; then the dead letters'
    // own retention.
    let live: std::collections::HashSet<EventId> = events.iter().map(|(st, _, _)| st.id).collect();
    for (st, _, _) in &events {
        if matches!(st.place, Place::Dead { .. }) {
            s.settle_or_warn(&st.id).await;
        }
    }
    for (st, r, rev) in s.scan_bucket(&s.names.dead).await? {
        if live.contains(&st.id) {
            s.settle_or_warn(&st.id).await;
            continue;
        }
        let Place::Dead { at_ms } = st.place else {
            continue;
        };
        let before = retention
            .by_pipeline
            .get(&r.pipeline)
            .and_then(|p| p.dead_before_ms)
            .max(retention.dead_before_ms);
        if before.is_some_and(|b| at_ms < b)
            && s.dead
                .purge_expect_revision(r.id.to_string(), Some(rev))
                .await
                .is_ok()
        {
            *swept.dead_letters.entry(r.pipeline.clone()).or_default() += 1;
        }
    }
    for f in scan(&s.js, &s.names.dedup, ">", s.timeout)
        .await
        .map_err(StoreError::Read)?
    {
        if parse_dedup(&f.value).is_some_and(|(_, at)| at < retention.dedup_before_ms)
            && s.dedup
                .purge_expect_revision(&f.key, Some(f.revision))
                .await
                .is_ok()
        {
            swept.dedup_keys += 1;
        }
    }
    Ok(swept)
}

/// Seal every event not under the current key again under it.
pub(super) async fn reencrypt(s: &Shared) -> Result<Reencrypted, StoreError> {
    let mut done = Reencrypted::default();
    let current = s.keys.current_id();
    let events = s.scan_events().await?.into_iter().map(|e| (&s.events, e));
    let dead = s.scan_bucket(&s.names.dead).await?;
    for (bucket, (st, r, rev)) in events.chain(dead.into_iter().map(|e| (&s.dead, e))) {
        let under = st
            .sealed
            .then(|| crate::store::seal::sealed_id(&st.record))
            .flatten();
        if !s.keys.stale(under) || current.is_none() {
            continue;
        }
        let value = s.encode_stored(&r, st.place, &st.owner, st.order_seq, st.key_window_ms);
        match bucket.update(r.id.to_string(), value, rev).await {
            Ok(new) => {
                done.records += 1;
                done.payloads += 1;
                let mut owned = s.owned.lock().unwrap_or_else(|p| p.into_inner());
                if owned.contains_key(&r.id) {
                    owned.insert(r.id, new);
                }
            }
            Err(e) if is_conflict(&e) => done.changed_meanwhile += 1,
            Err(e) => return Err(write_err(e)),
        }
    }
    Ok(done)
}
