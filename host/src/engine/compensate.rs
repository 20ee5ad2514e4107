//! Compensations: when an event of a pipeline with `compensate` is
//! dead-lettered after its sink was called, the sink may have applied part
//! of it; the host queues a compensation — the event, its failure and the
//! id of the event it undoes — in the pipeline `NAME.compensate`, whose
//! sink is the `compensate` plugin. It is stored in the same durable write
//! as the dead letter, under the key `compensate:KEY` (so one event key is
//! compensated once), and is retried, dead-lettered and kept in the history
//! like any event. The dead letter names its compensation in
//! `x-weft-compensation`; the compensation names its event in
//! `x-weft-compensates` and the failure in `x-weft-failure`.

use super::dead_letters::ReplayOutcome;
use super::handle::Engine;
use super::pipeline::Pipeline;
use crate::config::{COMPENSATE, route_pipeline};
use crate::store::{
    COMPENSATES_HEADER, COMPENSATION_HEADER, Committed, EventId, EventRecord, EventState,
    FAILURE_HEADER, Lineage, Polled, StoreError,
};
use std::sync::Arc;

/// Longest failure message a compensation carries.
const MAX_FAILURE: usize = 1024;

/// The idempotency key of the compensation of an event with key `key`.
pub fn compensation_key(key: &str) -> String {
    format!("{COMPENSATE}:{key}")
}

/// Whether `record`'s sink was called in any of its attempts.
fn reached_sink(record: &EventRecord) -> bool {
    record
        .attempts
        .iter()
        .any(|a| a.steps.iter().any(|s| s.step.starts_with("sink")))
}

/// The compensation of `record`, about to be dead-lettered, if it needs
/// one: its pipeline compensates, its sink was called, and it has none
/// yet. `record` is marked with the compensation's id; the compensation
/// is queued once the write that holds both is durable.
pub(super) fn plan(
    engine: &Engine,
    pipeline: &Pipeline,
    record: &mut EventRecord,
) -> Option<Polled> {
    pipeline.config.compensate.as_ref()?;
    if !reached_sink(record) {
        return None;
    }
    compensation_of(engine, record)
}

/// The compensation of a dead letter, whatever reached its sink (by hand:
/// `weft dlq compensate ID`), or `None` when it has one already or its
/// pipeline has no `compensate`.
pub(super) fn compensation_of(engine: &Engine, record: &mut EventRecord) -> Option<Polled> {
    if record.headers.iter().any(|(k, _)| k == COMPENSATION_HEADER) {
        return None;
    }
    let target = route_pipeline(&record.pipeline, COMPENSATE);
    engine.inner.pipelines.get(&target)?;
    let failure: String = record
        .last_error()
        .map(|(step, kind, message)| format!("{step}: {}: {message}", kind.as_str()))
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FAILURE)
        .collect();
    let key = compensation_key(&record.key);
    let dedup = engine.dedup(&target, &key);
    // Compensated once per key: an event whose key already was names
    // that compensation.
    if let Some(earlier) = engine.store().dedup_taken(&dedup) {
        record
            .headers
            .push((COMPENSATION_HEADER.into(), earlier.to_string()));
        return None;
    }
    let mut headers: Vec<(String, String)> = record
        .headers
        .iter()
        .filter(|(k, _)| k != FAILURE_HEADER && k != COMPENSATES_HEADER)
        .cloned()
        .collect();
    headers.push((COMPENSATES_HEADER.into(), record.id.to_string()));
    headers.push((FAILURE_HEADER.into(), failure));
    let compensation = Arc::new(EventRecord {
        correlation_id: record.correlation_id.clone(),
        content_type: record.content_type.clone(),
        headers,
        order_key: record.order_key.clone(),
        lineage: Lineage {
            parent: Some(record.id),
            first_step: 0,
            children: Vec::new(),
        },
        ..EventRecord::queued(EventId::new(), &target, &key, record.payload.clone())
    });
    record
        .headers
        .push((COMPENSATION_HEADER.into(), compensation.id.to_string()));
    Some(Polled {
        dedup,
        after: Some(engine.on_accepted(compensation.clone())),
        record: compensation,
    })
}

impl Engine {
    /// Compensate dead letters by hand (`weft dlq compensate`): each one of
    /// a pipeline with `compensate` that has no compensation yet gets one,
    /// whether or not its sink was called.
    pub async fn compensate(&self, ids: &[EventId]) -> Result<Vec<ReplayOutcome>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let result = match self.store().event(id)? {
                None => "not-found",
                Some(r) if r.state != EventState::DeadLettered => "not-dead-lettered",
                Some(r)
                    if self
                        .inner
                        .pipelines
                        .get(&r.pipeline)
                        .is_none_or(|p| p.config.compensate.is_none()) =>
                {
                    "no-compensate"
                }
                Some(mut r) => match compensation_of(self, &mut r) {
                    None => "already-compensated",
                    Some(c) => match self.store().compensate(&r, c).await? {
                        Committed::Written => "compensation-queued",
                        Committed::Duplicate(_) => "already-compensated",
                        Committed::Gone => "not-dead-lettered",
                    },
                },
            };
            out.push(ReplayOutcome {
                id: id.to_string(),
                result: result.into(),
            });
        }
        Ok(out)
    }
}
