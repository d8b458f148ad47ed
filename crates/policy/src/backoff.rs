//! [`Backoff`]: when to retry a manual or seed peer, as a sans-IO schedule.
//!
//! After each failure the delay doubles from [`BackoffConfig::initial`] up to
//! [`BackoffConfig::max`]; the actual wait is drawn in `[delay/2, delay]`
//! ("equal jitter") so that many nodes that lost the same seed do not all
//! redial it in the same instant. A success resets the schedule. Time and
//! randomness come in as arguments: [`Backoff::on_failure`] takes `now` and
//! a random `u64`, and returns the instant of the next attempt.

use std::time::{Duration, Instant};

/// Parameters of a [`Backoff`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Delay after the first failure (before jitter).
    pub initial: Duration,
    /// Largest delay (before jitter).
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff with jitter for one peer; see the module docs.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    /// A fresh schedule: the first attempt may happen at once.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: 0,
        }
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before jitter after `failures` consecutive failures.
    fn ceiling(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(31);
        self.config
            .initial
            .saturating_mul(1u32 << shift)
            .min(self.config.max)
    }

    /// Records a failed attempt at `now`; returns when to try next.
    /// `random` is any uniformly random `u64` (it picks the jitter).
    pub fn on_failure(&mut self, now: Instant, random: u64) -> Instant {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling();
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { random % (span + 1) };
        now + half + Duration::from_nanos(jitter)
    }

    /// Records a successful connection: the next failure starts over.
    pub fn on_success(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_within_jitter_bounds() {
        let now = Instant::now();
        let mut b = Backoff::new(cfg());
        let expected_ceilings = [1, 2, 4, 8, 8, 8];
        for (i, ceil) in expected_ceilings.into_iter().enumerate() {
            let ceil = Duration::from_secs(ceil);
            let lo = b.clone().on_failure(now, 0) - now;
            let hi = b.clone().on_failure(now, u64::MAX) - now;
            let mid = b.on_failure(now, 12_345_678_901) - now;
            assert_eq!(lo, ceil / 2, "failure {i}: lowest draw is half the ceiling");
            assert!(hi <= ceil && hi >= ceil / 2, "failure {i}: {hi:?}");
            assert!(mid >= lo && mid <= ceil);
        }
        assert_eq!(b.failures(), 6);
    }

    #[test]
    fn success_resets_the_schedule() {
        let now = Instant::now();
        let mut b = Backoff::new(cfg());
        for _ in 0..5 {
            b.on_failure(now, 1);
        }
        b.on_success();
        assert_eq!(b.failures(), 0);
        let next = b.on_failure(now, 0);
        assert_eq!(next - now, Duration::from_millis(500));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let now = Instant::now();
        let mut b = Backoff::new(cfg());
        for _ in 0..1000 {
            let t = b.on_failure(now, u64::MAX);
            assert!(t - now <= Duration::from_secs(8));
        }
    }
}
