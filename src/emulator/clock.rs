//! Time for the emulator's model and fleets, injected so that a simulation can run in virtual
//! time while the HTTP servers use the real clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of "now", in microseconds since the Unix epoch (the unit of device2 timestamps).
pub trait Clock: Send + Sync + 'static {
    /// The current time in µs since the epoch.
    fn now_micros(&self) -> i64;

    /// The current time in whole seconds since the epoch.
    fn now_secs(&self) -> i64 {
        self.now_micros().div_euclid(1_000_000)
    }
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: virtual time for simulations and tests.
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `start_micros`.
    pub fn new(start_micros: i64) -> Self {
        ManualClock {
            micros: AtomicI64::new(start_micros),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let d = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(d, Ordering::SeqCst);
    }

    /// Sets the clock to `micros`, if that is not earlier than now (time never goes back).
    pub fn advance_to(&self, micros: i64) {
        self.micros.fetch_max(micros, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> i64 {
        self.micros.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_forward() {
        let c = ManualClock::new(5_000_000);
        assert_eq!(c.now_secs(), 5);
        c.advance(Duration::from_millis(1500));
        assert_eq!(c.now_micros(), 6_500_000);
        c.advance_to(1);
        assert_eq!(c.now_micros(), 6_500_000);
        c.advance_to(9_000_000);
        assert_eq!(c.now_secs(), 9);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_secs() > 1_577_836_800);
    }
}
