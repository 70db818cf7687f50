//! A client-side token bucket per connector (GCRA form: one timestamp, no refill task).
//!
//! Hand-written instead of `governor`: the whole algorithm is a dozen lines, it hands out slots
//! first come first served, and it adds no dependency.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::config::RateLimit;

/// Admits at most `burst` requests at once and `per_second` on average.
#[derive(Debug)]
pub struct TokenBucket {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of the sustained schedule a burst may run.
    tolerance: Duration,
    /// Theoretical arrival time of the next request.
    next: Mutex<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: RateLimit) -> Self {
        let per_second = if limit.per_second.is_finite() && limit.per_second > 0.0 {
            limit.per_second
        } else {
            crate::platform::config::DEFAULT_RATE_PER_SECOND
        };
        let interval = Duration::from_secs_f64(1.0 / per_second);
        let burst = limit.burst.max(1);
        TokenBucket {
            interval,
            tolerance: interval.saturating_mul(burst - 1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Reserves the next slot and returns when it may be used (now or later).
    pub fn reserve(&self) -> Instant {
        self.reserve_at(Instant::now())
    }

    /// [`TokenBucket::reserve`] at a given time.
    pub fn reserve_at(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let tat = (*next).max(now);
        let allowed = tat.checked_sub(self.tolerance).unwrap_or(now).max(now);
        *next = tat + self.interval;
        allowed
    }

    /// Waits for a slot.
    pub async fn acquire(&self) {
        let at = self.reserve();
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_sustained_rate() {
        let bucket = TokenBucket::new(RateLimit {
            per_second: 10.0,
            burst: 20,
        });
        let start = Instant::now();
        let slots: Vec<Instant> = (0..40).map(|_| bucket.reserve_at(start)).collect();
        // The first 20 go at once.
        assert!(slots[..20].iter().all(|s| *s == start));
        // Then one every 100 ms.
        assert_eq!(slots[20] - start, Duration::from_millis(100));
        assert_eq!(slots[39] - start, Duration::from_millis(2000));
        // In any window of one second at most burst + rate slots.
        for (i, s) in slots.iter().enumerate() {
            let in_window = slots[i..]
                .iter()
                .filter(|t| **t < *s + Duration::from_secs(1))
                .count();
            assert!(in_window <= 30, "window at {i} holds {in_window}");
        }
    }

    #[test]
    fn an_idle_bucket_refills_to_the_burst_only() {
        let bucket = TokenBucket::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let later = Instant::now() + Duration::from_secs(100);
        let slots: Vec<Instant> = (0..4).map(|_| bucket.reserve_at(later)).collect();
        assert_eq!(&slots[..3], &[later, later, later]);
        assert_eq!(slots[3] - later, Duration::from_millis(500));
    }
}
