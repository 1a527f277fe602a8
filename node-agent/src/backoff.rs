//! Capped exponential backoff with "equal jitter": the n-th delay is uniform in
//! [c/2, c] where c = min(cap, base * 2^n). Jitter keeps a fleet of agents that lost the
//! API server together from retrying in lockstep; the floor keeps retries from bunching.
//!
//! Small enough to own: the popular `backoff` crate is unmaintained, and the agent needs
//! only "next delay" and "reset", not a retry executor.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
        }
    }

    /// Upper bound of the delay after `failures` consecutive failures (pure).
    pub fn ceiling(base: Duration, cap: Duration, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX);
        base.checked_mul(factor).unwrap_or(cap).min(cap.max(base))
    }

    /// Record a failure and return how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Self::ceiling(self.base, self.cap, self.failures);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { random_u64() % span };
        half + Duration::from_nanos(jitter)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A random number from std's per-process SipHash keys: good enough to spread retries,
/// and avoids a dependency for a few bits of entropy.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(60);
        let seq: Vec<u64> = (0..10)
            .map(|n| Backoff::ceiling(base, cap, n).as_millis() as u64)
            .collect();
        assert_eq!(
            seq,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000
            ]
        );
        assert_eq!(Backoff::ceiling(base, cap, u32::MAX), cap);
    }

    #[test]
    fn delays_stay_within_half_and_full_ceiling_and_reset() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        let mut b = Backoff::new(base, cap);
        for n in 0..20 {
            let ceiling = Backoff::ceiling(base, cap, n);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{n}: {d:?} vs {ceiling:?}"
            );
        }
        assert_eq!(b.failures(), 20);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= base);
    }
}
