//! Moving an installation between stores (`weft store migrate`): queued
//! events, dead letters, the history, idempotency keys, poll cursors,
//! schedule times, pauses and plugin state, copied through [`Store`] so any
//! backend moves to any other.

use super::{Imported, Store, StoreError};
use std::collections::HashSet;

/// What a migration copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Queued events (with their due time and attempt).
    pub queued: u64,
    /// Dead letters.
    pub dead_letters: u64,
    /// Finished events of the run history.
    pub history: u64,
    /// Poll cursors, schedule times and pauses.
    pub trigger_state: u64,
    /// Plugin state values.
    pub kv_values: u64,
}

/// When an event's last attempt ended (its acceptance, without one).
fn ended_ms(r: &super::EventRecord) -> u64 {
    r.attempts
        .last()
        .map(|a| a.started_at_ms + a.duration_us / 1000)
        .unwrap_or(r.received_at_ms)
}

/// Copy everything `from` holds into `to`, for the pipelines named in
/// `pipelines` (their trigger state; events of every pipeline are copied).
/// Copying again replaces what an earlier run copied. Runs on a
/// multi-threaded runtime.
pub async fn copy(
    from: &dyn Store,
    to: &dyn Store,
    pipelines: &[String],
) -> Result<Migrated, StoreError> {
    let mut done = Migrated::default();
    let queued: std::collections::HashMap<_, _> = from
        .queue()?
        .into_iter()
        .map(|e| (e.id, (e.due_ms, e.attempt)))
        .collect();
    let mut keys = HashSet::new();
    let mut tickets = Vec::new();
    let mut failed = None;
    // Newest first: the newest event of a key keeps the key.
    from.each_event(&mut |_| true, &mut |record| {
        let place = if let Some((due_ms, attempt)) = queued.get(&record.id) {
            done.queued += 1;
            Imported::Queued {
                due_ms: *due_ms,
                attempt: *attempt,
            }
        } else if record.state == super::EventState::DeadLettered {
            done.dead_letters += 1;
            Imported::Dead {
                at_ms: ended_ms(&record),
            }
        } else if record.state == super::EventState::Queued {
            // Queued without a queue entry: nothing would attempt it.
            return true;
        } else {
            done.history += 1;
            Imported::Finished {
                at_ms: ended_ms(&record),
            }
        };
        let take_key =
            !record.key.is_empty() && keys.insert((record.pipeline.clone(), record.key.clone()));
        tickets.push(to.import(&record, place, take_key));
        // Bounded: wait for the writes so far every thousand (the visit
        // cannot await; this thread waits while the runtime goes on).
        if tickets.len() >= 1000 {
            let batch = std::mem::take(&mut tickets);
            let waited = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    for t in batch {
                        t.await?;
                    }
                    Ok::<_, StoreError>(())
                })
            });
            if let Err(e) = waited {
                failed = Some(e);
                return false;
            }
        }
        true
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    for t in tickets {
        t.await?;
    }
    for p in pipelines {
        if let Some(c) = from.cursor(p) {
            to.accept_polled(p, Vec::new(), Some(&c)).await?;
            done.trigger_state += 1;
        }
        if let Some(at) = from.schedule_last(p) {
            to.set_schedule_last(p, at).await?;
            done.trigger_state += 1;
        }
        if let Some(reason) = from.pause_reason(p) {
            to.set_paused(p, Some(&reason)).await?;
            done.trigger_state += 1;
        }
    }
    for (ns, key, value) in from.kv_export()? {
        to.kv_swap(&ns, &key, None, Some(&value), u64::MAX)
            .map_err(|e| StoreError::Write(e.to_string()))?;
        done.kv_values += 1;
    }
    to.flush().await?;
    Ok(done)
}
