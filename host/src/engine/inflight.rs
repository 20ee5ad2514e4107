//! The process-wide budget of event bytes held in memory: bodies being
//! received and accepted, and payloads of events in an attempt. Intake asks
//! for room before it reads a body and is refused (429) past the budget;
//! attempts always get theirs (they are already accepted), so a busy
//! delivery side slows intake instead of the process growing.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes in flight against `server.max_inflight_bytes`.
#[derive(Debug)]
pub struct Inflight {
    held: AtomicU64,
    max: u64,
    peak: AtomicU64,
}

/// Bytes held until dropped.
#[derive(Debug)]
pub struct Held<'a> {
    budget: &'a Inflight,
    bytes: u64,
}

impl Inflight {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Inflight {
        Inflight {
            held: AtomicU64::new(0),
            max,
            peak: AtomicU64::new(0),
        }
    }

    /// Take `bytes` if they fit under the budget. One request larger than
    /// the whole budget is let through when nothing else is held, so a
    /// budget smaller than `max_body_bytes` slows intake without refusing
    /// that body forever.
    pub fn try_hold(&self, bytes: u64) -> Option<Held<'_>> {
        let mut now = self.held.load(Ordering::Relaxed);
        loop {
            let after = now.saturating_add(bytes);
            if after > self.max && now > 0 {
                return None;
            }
            match self
                .held
                .compare_exchange_weak(now, after, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.peak.fetch_max(after, Ordering::Relaxed);
                    return Some(Held {
                        budget: self,
                        bytes,
                    });
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Take `bytes` whatever the budget says (an accepted event's attempt).
    pub fn hold(&self, bytes: u64) -> Held<'_> {
        let after = self.held.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.peak.fetch_max(after, Ordering::Relaxed);
        Held {
            budget: self,
            bytes,
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// The most bytes held at once since start-up.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// The budget.
    pub fn max(&self) -> u64 {
        self.max
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_given_under_the_budget_and_back_when_dropped() {
        let budget = Inflight::new(100);
        let a = budget.try_hold(60).expect("fits");
        assert!(budget.try_hold(50).is_none(), "60 + 50 is past 100");
        let b = budget.try_hold(40).expect("60 + 40 fits exactly");
        assert_eq!(budget.bytes(), 100);
        drop(a);
        assert_eq!(budget.bytes(), 40);
        // An attempt holds its bytes whatever the budget says...
        let c = budget.hold(200);
        assert_eq!(budget.bytes(), 240);
        // ...and intake waits until they are given back.
        assert!(budget.try_hold(1).is_none());
        drop((b, c));
        assert_eq!(budget.bytes(), 0);
        assert_eq!(budget.peak(), 240);
        // A body larger than the whole budget goes through alone.
        let big = budget.try_hold(500).expect("alone, it passes");
        assert!(budget.try_hold(1).is_none());
        drop(big);
    }
}
