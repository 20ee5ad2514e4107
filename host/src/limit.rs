//! Rate limits: a GCRA limiter per pipeline sink and per upstream origin,
//! and a cool-down when an upstream answers 429 with `Retry-After`.

use crate::config::{RateLimitConfig, UpstreamConfig};
use crate::origin::Origin;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Longest cool-down an upstream can ask for (one hour).
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(3600);

/// One rate limit with an optional cool-down.
pub struct Limiter {
    bucket: DefaultDirectRateLimiter,
    cool_down_until: Mutex<Option<Instant>>,
    waits: AtomicU64,
}

impl Limiter {
    /// A limiter allowing `per_second` calls with bursts of `burst`.
    pub fn new(config: &RateLimitConfig) -> Self {
        let rate = NonZeroU32::new(config.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = config.burst.and_then(NonZeroU32::new).unwrap_or(rate);
        Limiter {
            bucket: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            cool_down_until: Mutex::new(None),
            waits: AtomicU64::new(0),
        }
    }

    /// Wait until a call may go.
    pub async fn acquire(&self) {
        let until = *self
            .cool_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(until) = until
            && until > Instant::now()
        {
            self.waits.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep_until(until).await;
        }
        if self.bucket.check().is_err() {
            self.waits.fetch_add(1, Ordering::Relaxed);
            self.bucket.until_ready().await;
        }
    }

    /// Hold every call back for `d` (capped at [`MAX_COOL_DOWN`]).
    pub fn cool_down(&self, d: Duration) {
        let until = Instant::now() + d.min(MAX_COOL_DOWN);
        let mut slot = self
            .cool_down_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if slot.is_none_or(|current| current < until) {
            *slot = Some(until);
        }
    }

    /// How many calls had to wait.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

/// A budget of bytes per second with a burst: a token bucket in bytes, for
/// what a pipeline takes in.
pub struct ByteRate {
    per_second: u64,
    burst: u64,
    /// Bytes available, and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl ByteRate {
    /// `per_second` bytes a second, up to `burst` at once (a full bucket
    /// to start with).
    pub fn new(per_second: u64, burst: u64) -> ByteRate {
        let burst = burst.max(per_second).max(1);
        ByteRate {
            per_second: per_second.max(1),
            burst,
            state: Mutex::new((burst as f64, Instant::now())),
        }
    }

    /// Take `bytes` now, or `Err(seconds)` until they would be there (at
    /// least 1). Bytes beyond the burst are never there.
    pub fn take(&self, bytes: u64) -> Result<(), u64> {
        self.take_at(bytes, Instant::now())
    }

    fn take_at(&self, bytes: u64, now: Instant) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(state.1).as_secs_f64();
        let available = (state.0 + elapsed * self.per_second as f64).min(self.burst as f64);
        *state = (available, now);
        let wanted = bytes as f64;
        if wanted <= available {
            state.0 -= wanted;
            return Ok(());
        }
        let missing = wanted.min(self.burst as f64) - available;
        Err(((missing / self.per_second as f64).ceil() as u64).max(1))
    }
}

/// Records (log lines, audit entries) of one key let through at most
/// `per_minute` times a minute; the rest are summed into the next one let
/// through. At most `max_keys` keys are tracked: past that, keys quiet for a
/// minute are forgotten, and a key that still finds no room is not recorded
/// (its caller counts it elsewhere), so a flood from many sources cannot
/// grow the table without bound.
pub struct RecordBudget<K> {
    per_minute: u32,
    max_keys: usize,
    windows: Mutex<BTreeMap<K, Window>>,
}

/// Records let through for one key in the current minute.
#[derive(Default)]
struct Window {
    started_ms: u64,
    written: u32,
    suppressed: u64,
}

impl<K: Ord> RecordBudget<K> {
    /// A budget of `per_minute` records per key, for up to `max_keys` keys.
    pub fn new(per_minute: u32, max_keys: usize) -> Self {
        RecordBudget {
            per_minute,
            max_keys,
            windows: Mutex::default(),
        }
    }

    /// End every key's current minute, as if it had passed.
    #[cfg(test)]
    pub fn end_minute(&self) {
        for w in self
            .windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values_mut()
        {
            w.started_ms = 0;
        }
    }

    /// Whether a record of `key` is let through at `now_ms`, and `detail`
    /// with the count of those left out since the last one let through.
    pub fn admit(&self, key: K, detail: String, now_ms: u64) -> Option<String> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.contains_key(&key) && windows.len() >= self.max_keys {
            windows.retain(|_, w| now_ms.saturating_sub(w.started_ms) < 60_000);
            if windows.len() >= self.max_keys {
                return None;
            }
        }
        let w = windows.entry(key).or_default();
        if now_ms.saturating_sub(w.started_ms) >= 60_000 {
            w.started_ms = now_ms;
            w.written = 0;
        }
        if w.written >= self.per_minute {
            w.suppressed += 1;
            return None;
        }
        w.written += 1;
        Some(match std::mem::take(&mut w.suppressed) {
            0 => detail,
            n => format!("{detail} (and {n} more of this kind before it, not recorded one by one)"),
        })
    }
}

/// Limiters per upstream origin.
#[derive(Default)]
pub struct UpstreamLimits {
    by_origin: Vec<(Origin, String, Arc<Limiter>)>,
}

impl UpstreamLimits {
    /// From `[upstreams]`; origins were validated with the config.
    pub fn new(config: &BTreeMap<String, UpstreamConfig>) -> Self {
        UpstreamLimits {
            by_origin: config
                .iter()
                .filter_map(|(o, u)| {
                    Some((
                        Origin::parse(o).ok()?,
                        o.clone(),
                        Arc::new(Limiter::new(u.rate_limit.as_ref()?)),
                    ))
                })
                .collect(),
        }
    }

    /// The limiter for a request URI, if its origin has one.
    pub fn for_uri(&self, uri: &http::Uri) -> Option<Arc<Limiter>> {
        self.by_origin
            .iter()
            .find(|(o, _, _)| o.allows_uri(uri))
            .map(|(_, _, l)| l.clone())
    }

    /// (origin, waits) for every limited origin.
    pub fn waits(&self) -> Vec<(String, u64)> {
        self.by_origin
            .iter()
            .map(|(_, o, l)| (o.clone(), l.waits()))
            .collect()
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_byte_budget_refills_at_its_rate_and_says_how_long_to_wait() {
        let rate = super::ByteRate::new(1000, 3000);
        let t0 = tokio::time::Instant::now();
        assert_eq!(rate.take_at(2500, t0), Ok(()));
        assert_eq!(rate.take_at(1000, t0), Err(1), "500 left, 500 missing");
        let t1 = t0 + std::time::Duration::from_millis(500);
        assert_eq!(rate.take_at(1000, t1), Ok(()), "refilled by 500");
        assert_eq!(rate.take_at(2500, t1), Err(3));
        let later = t1 + std::time::Duration::from_secs(60);
        assert_eq!(
            rate.take_at(3000, later),
            Ok(()),
            "never more than the burst"
        );
        assert_eq!(rate.take_at(1, later), Err(1));
        assert!(
            rate.take_at(10_000, later + std::time::Duration::from_secs(60))
                .is_err()
        );
    }

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cool_down_holds_calls_back() {
        let l = Limiter::new(&RateLimitConfig {
            per_second: 1000,
            burst: Some(1000),
        });
        l.cool_down(Duration::from_secs(5));
        let t = Instant::now();
        l.acquire().await;
        assert!(t.elapsed() >= Duration::from_secs(5));
        assert_eq!(l.waits(), 1);
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("later"), None);
    }

    #[tokio::test]
    async fn the_bucket_limits_the_rate() {
        let l = Limiter::new(&RateLimitConfig {
            per_second: 50,
            burst: Some(1),
        });
        let t = std::time::Instant::now();
        for _ in 0..11 {
            l.acquire().await;
        }
        // 10 intervals of 20 ms after the first call.
        assert!(
            t.elapsed() >= Duration::from_millis(180),
            "{:?}",
            t.elapsed()
        );
    }
}
