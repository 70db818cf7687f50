//! The one backoff policy of the operator: after the n-th failure in a row, wait
//! `initial · 2^(n-1)`, at most `max`, scaled by a jitter factor so that many waiters spread out.
//!
//! Two users, each with its own figures:
//! - the platform client, between tries of an idempotent request ([`RetryPolicy::backoff`]:
//!   from `--platform-initial-backoff` to `--platform-max-backoff`, scaled into `[d/2, d]`, so a
//!   delay never passes the cap; exosite-platform.md §8);
//! - the controllers, before the next reconcile after a transient error
//!   (`src/controller/schedule.rs`: from 1 s to `--error-backoff-max`, ±10 %;
//!   docs/architecture.md §9.3).
//!
//! It lives in `platform` because both the platform client and the controllers may use it
//! (docs/architecture.md §4).

use std::time::Duration;

use rand::Rng;

use super::config::RetryPolicy;

/// The largest doubling: `initial · 2^30` passes any cap the flags can name.
const MAX_DOUBLINGS: u32 = 30;

/// How a delay is spread: multiplied by a factor between `low` and `high`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    low: f64,
    high: f64,
}

impl Jitter {
    /// The delay `d` scaled into `[d/2, d]`: never more than the cap, and still growing.
    pub const HALF_TO_FULL: Jitter = Jitter {
        low: 0.5,
        high: 1.0,
    };
    /// The delay `d` scaled into `[0.9·d, 1.1·d]` (±10 %).
    pub const TEN_PERCENT: Jitter = Jitter {
        low: 0.9,
        high: 1.1,
    };
    /// No jitter: the delay as computed.
    pub const NONE: Jitter = Jitter {
        low: 1.0,
        high: 1.0,
    };

    /// A factor between `low` and `high` (swapped when given the other way round; a negative
    /// or non-finite bound counts as 0).
    pub fn between(low: f64, high: f64) -> Self {
        let bound = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        let (low, high) = (bound(low), bound(high));
        Jitter {
            low: low.min(high),
            high: low.max(high),
        }
    }

    /// The factor at `unit` (a number in `[0, 1]`, clamped): `low` at 0, `high` at 1.
    pub fn factor(self, unit: f64) -> f64 {
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        self.low + (self.high - self.low) * unit
    }
}

/// Exponential backoff with a cap and jitter (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure, before jitter.
    pub initial: Duration,
    /// The largest delay before jitter.
    pub max: Duration,
    /// How the delay is spread.
    pub jitter: Jitter,
}

impl Backoff {
    /// The delay after the `failures`-th failure in a row (1 = the first; 0 counts as 1) before
    /// jitter: `initial · 2^(failures-1)`, at most `max`.
    pub fn base(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(MAX_DOUBLINGS);
        self.initial.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`base`](Self::base) scaled by the jitter factor at `unit` (a number in `[0, 1]`).
    pub fn delay_at(&self, failures: u32, unit: f64) -> Duration {
        self.base(failures).mul_f64(self.jitter.factor(unit))
    }

    /// [`delay_at`](Self::delay_at) with a random `unit`.
    pub fn delay(&self, failures: u32) -> Duration {
        self.delay_at(failures, rand::rng().random_range(0.0..=1.0))
    }
}

impl RetryPolicy {
    /// The backoff between tries of one request: from `initial_backoff` doubling to
    /// `max_backoff`, scaled into `[d/2, d]`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.initial_backoff,
            max: self.max_backoff,
            jitter: Jitter::HALF_TO_FULL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_platform_retry_backoff_grows_from_one_second_to_the_cap() {
        let b = RetryPolicy::default().backoff();
        assert_eq!(b.delay_at(1, 1.0), secs(1));
        assert_eq!(b.delay_at(2, 1.0), secs(2));
        assert_eq!(b.delay_at(3, 1.0), secs(4));
        assert_eq!(b.delay_at(7, 1.0), secs(60));
        assert_eq!(b.delay_at(40, 1.0), secs(60));
        assert_eq!(b.delay_at(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay_at(7, 0.0), secs(30));
    }

    #[test]
    fn a_random_delay_stays_in_its_band() {
        for jitter in [Jitter::HALF_TO_FULL, Jitter::TEN_PERCENT, Jitter::NONE] {
            let b = Backoff {
                initial: secs(1),
                max: secs(60),
                jitter,
            };
            for failures in 0..40 {
                let d = b.delay(failures);
                assert!(
                    d >= b.delay_at(failures, 0.0) && d <= b.delay_at(failures, 1.0),
                    "{jitter:?} after {failures}: {d:?}"
                );
            }
        }
    }

    #[test]
    fn the_band_is_derived_from_the_base_delay() {
        let b = Backoff {
            initial: Duration::from_millis(250),
            max: secs(8),
            jitter: Jitter::TEN_PERCENT,
        };
        assert_eq!(b.base(0), b.base(1), "no failure counts as the first");
        for failures in 1..10 {
            let base = Duration::from_millis(250)
                .saturating_mul(2u32.pow(failures - 1))
                .min(secs(8));
            assert_eq!(b.base(failures), base);
            assert_eq!(b.delay_at(failures, 0.0), base.mul_f64(0.9));
            assert_eq!(b.delay_at(failures, 0.5), base);
            assert_eq!(b.delay_at(failures, 1.0), base.mul_f64(1.1));
        }
        assert_eq!(b.base(u32::MAX), secs(8), "no overflow far past the cap");
        let huge = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
            jitter: Jitter::NONE,
        };
        assert_eq!(huge.base(5), Duration::MAX, "saturates");
    }

    #[test]
    fn jitter_bounds_are_ordered_and_the_unit_clamped() {
        let j = Jitter::between(1.2, 0.8);
        assert_eq!(j, Jitter::between(0.8, 1.2));
        assert!((j.factor(0.0) - 0.8).abs() < 1e-12);
        assert!((j.factor(1.0) - 1.2).abs() < 1e-12);
        assert!((j.factor(-3.0) - 0.8).abs() < 1e-12);
        assert!((j.factor(7.0) - 1.2).abs() < 1e-12);
        assert!((j.factor(f64::NAN) - 0.8).abs() < 1e-12);
        assert_eq!(Jitter::between(-1.0, f64::NAN), Jitter::between(0.0, 0.0));
        assert_eq!(Jitter::NONE.factor(0.3), 1.0);
    }
}
