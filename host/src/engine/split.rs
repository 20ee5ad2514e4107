//! Splits: a step that returns several events for one makes each of them a
//! child event of its own, stored and queued in the same durable write that
//! finishes the parent. From then on each child has its own attempts,
//! retries, dead letter and history, starting at the step after the split,
//! so a failure of one child never sends its siblings again.

use super::handle::Engine;
use super::job::Job;
use crate::sandbox::bindings::WitEvent;
use crate::store::{AfterCommit, EventId, EventRecord, HOST_HEADERS, Lineage};
use std::sync::Arc;

/// The children of `parent` split by step `step` (an index): keys
/// `PARENT_KEY#1`, `#2`, … in the order the step returned them, the
/// parent's correlation id, trigger and ordering key, and the rest of what
/// the step returned.
pub(super) fn children(
    parent: &EventRecord,
    step: usize,
    out: Vec<WitEvent>,
) -> Vec<Arc<EventRecord>> {
    out.into_iter()
        .enumerate()
        .map(|(i, e)| {
            let key = format!("{}#{}", parent.key, i + 1);
            child(parent, &parent.pipeline, &key, step as u32 + 1, e)
        })
        .collect()
}

/// The children of `parent` routed to the pipelines `routes`: one each,
/// with the parent's key (each sink sees the key the event came with) and
/// what the steps made of it.
pub(super) fn routed(parent: &EventRecord, routes: &[&str], e: WitEvent) -> Vec<Arc<EventRecord>> {
    // Accepted when the parent was: a route's latency runs from there.
    routes
        .iter()
        .map(|pipeline| {
            let mut c = child(parent, pipeline, &parent.key, 0, e.clone());
            if let Some(c) = Arc::get_mut(&mut c) {
                c.received_at_ms = parent.received_at_ms;
            }
            c
        })
        .collect()
}

/// One child of `parent` in `pipeline`, starting at step `first_step`.
fn child(
    parent: &EventRecord,
    pipeline: &str,
    key: &str,
    first_step: u32,
    e: WitEvent,
) -> Arc<EventRecord> {
    // Only the host names the trigger that brought an event, and marks it
    // synthetic: children keep the parent's marks, whatever the step said.
    let host_set = |k: &str| HOST_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h));
    let mut headers: Vec<(String, String)> = e
        .headers
        .into_iter()
        .filter(|(k, _)| !host_set(k))
        .collect();
    headers.extend(parent.headers.iter().filter(|(k, _)| host_set(k)).cloned());
    Arc::new(EventRecord {
        correlation_id: parent.correlation_id.clone(),
        content_type: e.content_type,
        headers,
        order_key: parent.order_key.clone(),
        lineage: Lineage {
            parent: Some(parent.id),
            first_step,
            children: Vec::new(),
        },
        ..EventRecord::queued(EventId::new(), pipeline, key, e.payload)
    })
}

/// Once the split is durable: queue every child (in order, so children of
/// one ordering key go one at a time in the order the step gave them), then
/// let the parent's key go.
pub(super) fn after_split(
    engine: &Engine,
    parent: &Job,
    children: &[Arc<EventRecord>],
    synthetic: bool,
) -> AfterCommit {
    let engine = engine.clone();
    let jobs: Vec<(Job, super::job::Weight)> = children
        .iter()
        .map(|c| {
            let job = Job {
                pipeline: c.pipeline.clone(),
                id: c.id,
                attempt: 1,
                due_ms: c.received_at_ms,
                order_key: c.order_key.clone(),
                record: Job::keep(c),
            };
            (job, super::job::Weight::of(c))
        })
        .collect();
    let (id, key, name) = (parent.id, parent.order_key.clone(), parent.pipeline.clone());
    Box::new(move || {
        for (job, weight) in jobs {
            engine.requeued(job, super::pipeline::Entry::Child, weight);
        }
        engine.finished(
            &name,
            key.as_deref(),
            id,
            super::queue::Left::Split,
            synthetic,
        );
    })
}
