//! Ordering by key: events with the same key run one at a time, in the order
//! they were accepted; other keys are not held up.

use super::job::Job;
use crate::store::EventId;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

#[derive(Default)]
struct Lane {
    /// Events of this key in acceptance order; the front one may run.
    order: VecDeque<EventId>,
    /// Jobs that arrived before their turn.
    parked: HashMap<EventId, Job>,
}

/// The per-key lanes of one pipeline.
#[derive(Default)]
pub struct KeyGate {
    lanes: Mutex<HashMap<String, Lane>>,
}

impl KeyGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lane>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put an event at the back of its key's lane (at accept, recovery or replay).
    pub fn enter(&self, key: &str, id: EventId) {
        let mut lanes = self.lock();
        let lane = lanes.entry(key.to_string()).or_default();
        if !lane.order.contains(&id) {
            lane.order.push_back(id);
        }
    }

    /// Let a job run if it is its key's turn; otherwise keep it until it is.
    pub fn admit(&self, key: &str, job: Job) -> Option<Job> {
        let mut lanes = self.lock();
        let lane = lanes.entry(key.to_string()).or_default();
        if lane.order.is_empty() {
            lane.order.push_back(job.id);
        }
        if lane.order.front() == Some(&job.id) {
            Some(job)
        } else {
            if !lane.order.contains(&job.id) {
                lane.order.push_back(job.id);
            }
            lane.parked.insert(job.id, job);
            None
        }
    }

    /// The event is finished: the next one of its key may run, if it is waiting.
    pub fn leave(&self, key: &str, id: EventId) -> Option<Job> {
        let mut lanes = self.lock();
        let lane = lanes.get_mut(key)?;
        lane.order.retain(|x| *x != id);
        let next = lane.order.front().and_then(|n| lane.parked.remove(n));
        if lane.order.is_empty() {
            lanes.remove(key);
        }
        next
    }

    /// Keys with events waiting or running.
    pub fn keys(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: EventId) -> Job {
        Job {
            pipeline: "p".into(),
            id,
            attempt: 1,
            due_ms: 0,
            order_key: None,
            record: None,
        }
    }

    #[test]
    fn one_at_a_time_in_acceptance_order() {
        let gate = KeyGate::default();
        let (a, b, c) = (EventId::new(), EventId::new(), EventId::new());
        gate.enter("k", a);
        gate.enter("k", b);
        gate.enter("other", c);
        assert!(gate.admit("k", job(b)).is_none(), "b waits for a");
        assert!(
            gate.admit("other", job(c)).is_some(),
            "other keys are not held up"
        );
        assert!(gate.admit("k", job(a)).is_some());
        assert!(
            gate.admit("k", job(a)).is_some(),
            "a retry of the head runs"
        );
        let next = gate.leave("k", a).expect("b is released");
        assert_eq!(next.id, b);
        assert!(gate.leave("k", b).is_none());
        assert_eq!(gate.keys(), 1);
    }
}
