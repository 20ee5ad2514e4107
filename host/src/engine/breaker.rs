//! The circuit breaker of a pipeline's sink: opens when too many calls in a
//! rolling window fail, stays open for a cool-down, then lets probes through.

use crate::config::BreakerConfig;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls wait until the instant given.
    Open(Instant),
    /// A few probe calls go through; the rest wait.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half-open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open(_) => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// The answer to "may I call the sink now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Go,
    /// Go ahead as a half-open probe; report the result.
    Probe,
    /// Wait; try again after this long.
    Wait(Duration),
}

/// Calls counted over one tenth of the window.
struct Bucket {
    start: Instant,
    ok: u32,
    failed: u32,
}

/// Buckets per window: the window slides in steps of a tenth of its length,
/// and memory stays constant whatever the call rate.
const BUCKETS: u32 = 10;

struct Inner {
    state: BreakerState,
    window: VecDeque<Bucket>,
    probes_out: u32,
    probes_ok: u32,
}

/// A circuit breaker.
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Breaker {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                window: VecDeque::new(),
                probes_out: 0,
                probes_ok: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state now (an open breaker past its cool-down reads as half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        if let BreakerState::Open(until) = inner.state
            && Instant::now() >= until
        {
            inner.state = BreakerState::HalfOpen;
            inner.probes_out = 0;
            inner.probes_ok = 0;
        }
        inner.state
    }

    /// May a call go now?
    pub fn admit(&self) -> Admission {
        if !self.config.enabled {
            return Admission::Go;
        }
        let state = self.state();
        let mut inner = self.lock();
        match state {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open(until) => Admission::Wait(until - Instant::now()),
            BreakerState::HalfOpen if inner.probes_out < self.config.probes => {
                inner.probes_out += 1;
                Admission::Probe
            }
            BreakerState::HalfOpen => {
                Admission::Wait(Duration::from_millis(self.config.open_ms.min(1000)))
            }
        }
    }

    /// Another host sharing the store opened its breaker of the same sink
    /// for `left` more: a closed breaker here opens for as long (one that
    /// is open or probing already goes on as it is).
    pub fn follow_open(&self, left: Duration) -> bool {
        if !self.config.enabled || left.is_zero() {
            return false;
        }
        let mut inner = self.lock();
        if inner.state != BreakerState::Closed {
            return false;
        }
        inner.state = BreakerState::Open(Instant::now() + left);
        inner.window.clear();
        true
    }

    /// A probe was let through but never reached the sink: give it back.
    pub fn cancel_probe(&self) {
        let mut inner = self.lock();
        inner.probes_out = inner.probes_out.saturating_sub(1);
    }

    /// Record the result of a sink call. Returns the new state when it changed.
    pub fn record(&self, success: bool, probe: bool) -> Option<BreakerState> {
        if !self.config.enabled {
            return None;
        }
        let now = Instant::now();
        let mut inner = self.lock();
        let before = inner.state;
        match inner.state {
            BreakerState::HalfOpen if probe => {
                if success {
                    inner.probes_ok += 1;
                    if inner.probes_ok >= self.config.probes {
                        inner.state = BreakerState::Closed;
                        inner.window.clear();
                    }
                } else {
                    inner.state =
                        BreakerState::Open(now + Duration::from_millis(self.config.open_ms));
                }
            }
            BreakerState::Closed => {
                let horizon = Duration::from_millis(self.config.window_ms);
                let step = horizon / BUCKETS;
                while inner
                    .window
                    .front()
                    .is_some_and(|b| now - b.start > horizon)
                {
                    inner.window.pop_front();
                }
                if inner.window.back().is_none_or(|b| now - b.start >= step) {
                    inner.window.push_back(Bucket {
                        start: now,
                        ok: 0,
                        failed: 0,
                    });
                }
                if let Some(b) = inner.window.back_mut() {
                    if success {
                        b.ok += 1;
                    } else {
                        b.failed += 1;
                    }
                }
                let failed: u32 = inner.window.iter().map(|b| b.failed).sum();
                let total: u32 = failed + inner.window.iter().map(|b| b.ok).sum::<u32>();
                if total >= self.config.min_calls
                    && f64::from(failed) / f64::from(total) >= self.config.failure_ratio
                {
                    inner.state =
                        BreakerState::Open(now + Duration::from_millis(self.config.open_ms));
                    inner.window.clear();
                }
            }
            _ => {}
        }
        (inner.state != before).then_some(inner.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_ratio: 0.5,
            min_calls: 4,
            window_ms: 10_000,
            open_ms: 2_000,
            probes: 1,
            ..BreakerConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn another_host_s_open_breaker_holds_calls_here_for_what_is_left_of_it() {
        let b = breaker();
        assert!(b.follow_open(Duration::from_secs(3)));
        assert!(matches!(b.admit(), Admission::Wait(d) if d == Duration::from_secs(3)));
        assert!(
            !b.follow_open(Duration::from_secs(60)),
            "an open breaker goes on as it is"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            b.admit(),
            Admission::Probe,
            "then it probes as its own would"
        );
        assert!(
            !b.follow_open(Duration::ZERO),
            "nothing left: nothing to follow"
        );
        let off = Breaker::new(BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        });
        assert!(!off.follow_open(Duration::from_secs(3)));
        assert_eq!(off.admit(), Admission::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_on_failures_then_half_opens_and_closes_on_a_good_probe() {
        let b = breaker();
        assert_eq!(b.record(false, false), None);
        assert_eq!(b.record(true, false), None);
        assert_eq!(b.record(false, false), None);
        assert!(
            matches!(b.record(true, false), Some(BreakerState::Open(_))),
            "2 of 4 failed"
        );
        assert!(matches!(b.admit(), Admission::Wait(d) if d == Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.admit(), Admission::Probe);
        assert!(
            matches!(b.admit(), Admission::Wait(_)),
            "one probe at a time"
        );
        assert_eq!(b.record(true, true), Some(BreakerState::Closed));
        assert_eq!(b.admit(), Admission::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_old_failures_age_out() {
        let b = breaker();
        for _ in 0..4 {
            b.record(false, false);
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.admit(), Admission::Probe);
        assert!(matches!(b.record(false, true), Some(BreakerState::Open(_))));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.admit(), Admission::Probe);
        b.record(true, true);
        // Three failures, then eleven seconds of quiet: they leave the window.
        for _ in 0..3 {
            b.record(false, false);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(b.record(false, false), None, "only 1 call in the window");
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn disabled_breakers_always_admit() {
        let b = Breaker::new(BreakerConfig {
            enabled: false,
            ..BreakerConfig::default()
        });
        for _ in 0..100 {
            b.record(false, false);
        }
        assert_eq!(b.admit(), Admission::Go);
    }
}
