//! Retry policy: exponential backoff with full jitter, overridden by the
//! delay an upstream asks for.

use crate::config::{Jitter, RetryConfig};
use rand::Rng;

/// Longest delay the engine accepts from a `Retry-After` (one day).
pub const MAX_RETRY_AFTER_MS: u64 = 24 * 60 * 60 * 1000;

/// When and whether to try again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    /// From the pipeline's `retry` table.
    pub fn new(config: RetryConfig) -> Self {
        RetryPolicy { config }
    }

    /// Attempts in all, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.config.max_attempts
    }

    /// Give up once this long has passed since the round began, if set.
    pub fn max_elapsed_ms(&self) -> Option<u64> {
        self.config.max_elapsed_ms
    }

    /// Whether attempt number `attempt` (1-based, counted from the latest
    /// replay) may be followed by another.
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.config.max_attempts
    }

    /// The computed backoff before attempt `attempt + 1`, without jitter.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let c = &self.config;
        let exp = c.multiplier.powi(attempt.saturating_sub(1).min(64) as i32);
        let ms = (c.initial_ms as f64 * exp).min(c.max_ms as f64);
        ms as u64
    }

    /// The delay before attempt `attempt + 1`: the upstream's `retry_after_ms`
    /// when it gave one, else the backoff with the configured jitter.
    pub fn delay_ms(&self, attempt: u32, retry_after_ms: Option<u64>, rng: &mut impl Rng) -> u64 {
        if let Some(ms) = retry_after_ms {
            return ms.min(MAX_RETRY_AFTER_MS);
        }
        let backoff = self.backoff_ms(attempt);
        match self.config.jitter {
            Jitter::Full => rng.random_range(0..=backoff),
            Jitter::None => backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            max_attempts: 5,
            initial_ms: 100,
            max_ms: 1000,
            multiplier: 2.0,
            jitter,
            max_elapsed_ms: None,
        })
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy(Jitter::None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<u64> = (1..=6).map(|a| p.delay_ms(a, None, &mut rng)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert!(p.may_retry(4));
        assert!(!p.may_retry(5));
    }

    #[test]
    fn full_jitter_stays_within_the_backoff_and_varies() {
        let p = policy(Jitter::Full);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let samples: Vec<u64> = (0..200).map(|_| p.delay_ms(3, None, &mut rng)).collect();
        assert!(samples.iter().all(|d| *d <= 400));
        let distinct: std::collections::HashSet<_> = samples.iter().collect();
        assert!(
            distinct.len() > 50,
            "jitter should spread delays: {}",
            distinct.len()
        );
    }

    #[test]
    fn retry_after_overrides_backoff() {
        let p = policy(Jitter::Full);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        assert_eq!(p.delay_ms(1, Some(7000), &mut rng), 7000);
        assert_eq!(p.delay_ms(1, Some(u64::MAX), &mut rng), MAX_RETRY_AFTER_MS);
    }
}
