//! What a handler returns, and how long to wait before the next attempt.

use std::time::Duration;

use serde_json::Value;

/// The result of one attempt. Retry intent is a type, not a string.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Finished; the value becomes the task's `result`.
    Done(Value),
    /// Failed for now; run again after `after` (e.g. a platform's `Retry-After`) or the kind's
    /// backoff, unless the attempts are used up.
    Retry { after: Option<Duration>, error: String },
    /// Failed for good: straight to the dead-letter queue.
    Fail(String),
    /// Not failed, not done: run again after this wait (a rate limit's next window), at no
    /// attempt cost. The task goes back to its lane, PENDING, for any worker.
    Later(Duration),
}

impl Outcome {
    pub fn retry(error: impl Into<String>) -> Outcome {
        Outcome::Retry { after: None, error: error.into() }
    }

    pub fn retry_after(after: Duration, error: impl Into<String>) -> Outcome {
        Outcome::Retry { after: Some(after), error: error.into() }
    }

    pub fn fail(error: impl Into<String>) -> Outcome {
        Outcome::Fail(error.into())
    }
}

/// How a kind is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (retries + 1).
    pub max_attempts: u32,
    pub base: Duration,
    pub factor: f64,
    pub cap: Duration,
}

/// The longest wait a handler may ask for, whatever it asks.
const LONGEST_ASKED_DELAY: Duration = Duration::from_secs(24 * 3600);

/// The share of a delay that jitter may take off, so retries of many tasks spread out.
const JITTER: f64 = 0.25;

impl RetryPolicy {
    /// Delay before attempt `failed + 1`, after attempt `failed` (1-based) failed: exponential
    /// from `base` by `factor`, at most `cap`, less up to a quarter of jitter. `unit` is a
    /// random number in [0, 1). A delay the handler asked for wins, bounded to a day.
    pub fn delay(&self, failed: u32, asked: Option<Duration>, unit: f64) -> Duration {
        if let Some(asked) = asked {
            return asked.min(LONGEST_ASKED_DELAY);
        }
        let exp = self.factor.powi(failed.saturating_sub(1).min(64) as i32);
        let raw = self.base.as_secs_f64() * exp;
        let capped = raw.min(self.cap.as_secs_f64());
        let jittered = capped * (1.0 - JITTER * unit.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_attempts: 4, base: Duration::from_secs(2), factor: 2.0, cap: Duration::from_secs(600) }
    }

    #[test]
    fn grows_exponentially_without_jitter() {
        let p = policy();
        let d: Vec<u64> = (1..=4).map(|n| p.delay(n, None, 0.0).as_secs()).collect();
        assert_eq!(d, vec![2, 4, 8, 16]);
    }

    #[test]
    fn is_capped() {
        assert_eq!(policy().delay(30, None, 0.0), Duration::from_secs(600));
    }

    #[test]
    fn jitter_takes_at_most_a_quarter() {
        let p = policy();
        let d = p.delay(3, None, 0.999_999);
        assert!(d <= Duration::from_secs(8) && d >= Duration::from_secs(6), "{d:?}");
    }

    #[test]
    fn asked_delay_wins_but_is_bounded() {
        let p = policy();
        assert_eq!(p.delay(1, Some(Duration::from_secs(42)), 0.5), Duration::from_secs(42));
        assert_eq!(p.delay(1, Some(Duration::from_secs(10 * 86400)), 0.5), LONGEST_ASKED_DELAY);
    }
}
