//! Token buckets per connector and API (exosite-platform.md §8, flag `rate_limit`).

use std::collections::HashMap;

use tokio::time::Instant;

use super::{Api, RateLimit};

/// Upper bound on the number of buckets; beyond it (a scan of random connector ids) the oldest
/// state is forgotten, which only makes the limit more lenient.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Buckets that start full and refill continuously.
#[derive(Debug)]
pub(super) struct RateLimiter {
    limit: RateLimit,
    buckets: HashMap<(Api, Option<String>), Bucket>,
}

impl RateLimiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        RateLimiter {
            limit,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from the bucket of (`api`, `connector`), or says after how many whole
    /// seconds (at least 1) one will be there.
    pub(super) fn take(&mut self, api: Api, connector: Option<&str>) -> Result<(), u64> {
        self.take_at(api, connector, Instant::now())
    }

    fn take_at(&mut self, api: Api, connector: Option<&str>, now: Instant) -> Result<(), u64> {
        let burst = f64::from(self.limit.burst);
        let rate = self.limit.per_second;
        if self.buckets.len() >= MAX_BUCKETS {
            self.buckets.clear();
        }
        let bucket = self
            .buckets
            .entry((api, connector.map(str::to_string)))
            .or_insert(Bucket {
                tokens: burst,
                last: now,
            });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            // Whole seconds, rounded up, never 0 (Retry-After is in seconds).
            Err((wait.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_a_burst_then_refills() {
        let mut rl = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(rl.take_at(Api::Management, Some("a"), t0), Ok(()));
        }
        assert_eq!(rl.take_at(Api::Management, Some("a"), t0), Err(1));
        // Other connectors and other APIs have their own buckets.
        assert_eq!(rl.take_at(Api::Management, Some("b"), t0), Ok(()));
        assert_eq!(rl.take_at(Api::Device, Some("a"), t0), Ok(()));
        // Half a second gives one token back at 2/s.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(rl.take_at(Api::Management, Some("a"), t1), Ok(()));
        assert_eq!(rl.take_at(Api::Management, Some("a"), t1), Err(1));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let mut rl = RateLimiter::new(RateLimit {
            per_second: 0.1,
            burst: 1,
        });
        let t0 = Instant::now();
        assert_eq!(rl.take_at(Api::Graphql, None, t0), Ok(()));
        assert_eq!(rl.take_at(Api::Graphql, None, t0), Err(10));
        let t1 = t0 + Duration::from_millis(2500);
        assert_eq!(rl.take_at(Api::Graphql, None, t1), Err(8));
    }
}
