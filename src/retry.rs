//! How long a failed job waits before its next attempt.

use crate::random::random_u64;
use std::collections::HashMap;
use std::time::Duration;

/// Exponential backoff with full jitter and a cap.
///
/// After the n-th failed attempt the job waits a random delay between zero and
/// `min(max_delay, base_delay * 2^(n-1))` ("full jitter": spreading retries evenly keeps a
/// burst of failures from coming back as a burst).
///
/// # Examples
///
/// ```
/// use jobq::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::exponential(Duration::from_secs(2), Duration::from_secs(60));
/// assert_eq!(policy.ceiling(1), Duration::from_secs(2));
/// assert_eq!(policy.ceiling(4), Duration::from_secs(16));
/// assert_eq!(policy.ceiling(10), Duration::from_secs(60));
/// assert!(policy.delay(3) <= Duration::from_secs(8));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    base_delay: Duration,
    max_delay: Duration,
    jitter: bool,
}

impl Default for RetryPolicy {
    /// Base 5 s, cap 1 h, full jitter: ceilings of 5, 10, 20, 40, 80 s for the first five
    /// failures.
    fn default() -> Self {
        RetryPolicy::exponential(Duration::from_secs(5), Duration::from_secs(3600))
    }
}

impl RetryPolicy {
    /// Doubling from `base_delay`, capped at `max_delay`, with full jitter.
    pub fn exponential(base_delay: Duration, max_delay: Duration) -> RetryPolicy {
        RetryPolicy {
            base_delay,
            max_delay: max_delay.max(base_delay),
            jitter: true,
        }
    }

    /// Always exactly `delay`, without jitter.
    pub fn fixed(delay: Duration) -> RetryPolicy {
        RetryPolicy {
            base_delay: delay,
            max_delay: delay,
            jitter: false,
        }
    }

    /// The same policy waiting exactly the ceiling each time (for tests and for systems
    /// where predictability matters more than spreading load).
    pub fn without_jitter(self) -> RetryPolicy {
        RetryPolicy {
            jitter: false,
            ..self
        }
    }

    /// The longest wait after failed attempt `attempt` (1 for the first).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        if self.base_delay == self.max_delay {
            return self.base_delay;
        }
        let doublings = attempt.saturating_sub(1).min(62);
        self.base_delay
            .checked_mul(1u32.checked_shl(doublings.min(31)).unwrap_or(u32::MAX))
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }

    /// The wait after failed attempt `attempt`: uniform in `0..=ceiling(attempt)` with
    /// jitter, the ceiling itself without.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(random_u64() % (nanos + 1))
    }
}

/// Retry policies by queue and by kind, with a default. A kind's policy wins over its
/// queue's, which wins over the default.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryPolicies {
    pub default: RetryPolicy,
    pub by_queue: HashMap<String, RetryPolicy>,
    pub by_kind: HashMap<String, RetryPolicy>,
}

impl RetryPolicies {
    pub fn for_job(&self, queue: &str, kind: &str) -> &RetryPolicy {
        self.by_kind
            .get(kind)
            .or_else(|| self.by_queue.get(queue))
            .unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_the_capped_exponential_ceiling() {
        let policy = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 1..=40 {
            let ceiling = policy.ceiling(attempt);
            assert!(ceiling <= Duration::from_secs(5));
            for _ in 0..200 {
                assert!(policy.delay(attempt) <= ceiling);
            }
        }
        assert_eq!(policy.ceiling(1), Duration::from_millis(100));
        assert_eq!(policy.ceiling(3), Duration::from_millis(400));
        assert_eq!(policy.ceiling(7), Duration::from_secs(5));
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let policy = RetryPolicy::exponential(Duration::from_secs(10), Duration::from_secs(10));
        let policy = RetryPolicy {
            jitter: true,
            ..policy
        };
        let delays: Vec<Duration> = (0..2000).map(|_| policy.delay(1)).collect();
        let low = delays.iter().filter(|d| d.as_secs_f64() < 2.5).count();
        let high = delays.iter().filter(|d| d.as_secs_f64() > 7.5).count();
        // Uniform: about a quarter in each end. Bounds far outside chance.
        assert!((300..700).contains(&low), "{low}");
        assert!((300..700).contains(&high), "{high}");
    }

    #[test]
    fn fixed_and_unjittered_policies_are_exact() {
        assert_eq!(
            RetryPolicy::fixed(Duration::from_secs(3)).delay(9),
            Duration::from_secs(3)
        );
        let p = RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60))
            .without_jitter();
        assert_eq!(p.delay(3), Duration::from_secs(4));
    }

    #[test]
    fn kind_beats_queue_beats_default() {
        let mut p = RetryPolicies::default();
        p.by_queue
            .insert("q".into(), RetryPolicy::fixed(Duration::from_secs(1)));
        p.by_kind
            .insert("k".into(), RetryPolicy::fixed(Duration::from_secs(2)));
        assert_eq!(p.for_job("q", "k").delay(1), Duration::from_secs(2));
        assert_eq!(p.for_job("q", "other").delay(1), Duration::from_secs(1));
        assert_eq!(*p.for_job("x", "y"), RetryPolicy::default());
    }
}
