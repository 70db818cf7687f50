//! When each object is next due for real work.
//!
//! Every status write re-triggers the object's own reconcile (the watch sees the change), and
//! a connector's status write re-triggers its packages. Without a memory, each of those passes
//! would call the platform again. [`Schedule`] remembers, per object UID, which generation and
//! annotations were last handled and when work is due again, so a pass triggered early only
//! re-queues itself. A changed generation or annotation (for example
//! `kubectl annotate ... otau.dev/recheck=$(date +%s)`) makes the object due at once.
//!
//! Failures back off exponentially (1 s doubling to a cap) with ±10 % jitter, by the operator's
//! one backoff policy (`crate::platform::backoff`, docs/architecture.md §9.3).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::platform::backoff::{Backoff, Jitter};

/// The first delay after a failure.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Entry {
    fingerprint: u64,
    due: Option<Instant>,
    failures: u32,
}

/// The per-object schedule (see the module docs).
#[derive(Debug)]
pub struct Schedule {
    entries: Mutex<HashMap<String, Entry>>,
    backoff: Backoff,
}

/// A fingerprint of what the user controls: generation and annotations.
pub fn fingerprint(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut h);
    if let Some(a) = &meta.annotations {
        for (k, v) in a {
            // kubectl's own bookkeeping changes with every apply; it is not an intent.
            if k != "kubectl.kubernetes.io/last-applied-configuration" {
                k.hash(&mut h);
                v.hash(&mut h);
            }
        }
    }
    h.finish()
}

impl Schedule {
    /// An empty schedule whose failure backoff stops growing at `backoff_max`.
    pub fn new(backoff_max: Duration) -> Self {
        Schedule {
            entries: Mutex::new(HashMap::new()),
            backoff: Backoff {
                initial: BACKOFF_INITIAL,
                max: backoff_max.max(BACKOFF_INITIAL),
                jitter: Jitter::TEN_PERCENT,
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `None` when the object should be worked on now; otherwise how long until it is due
    /// (`Some(None)` = only on a change).
    pub fn wait(&self, uid: &str, fingerprint: u64) -> Option<Option<Duration>> {
        let entries = self.lock();
        let entry = entries.get(uid)?;
        if entry.fingerprint != fingerprint {
            return None;
        }
        match entry.due {
            None => Some(None),
            Some(due) => {
                let now = Instant::now();
                (due > now).then(|| Some(due - now))
            }
        }
    }

    /// Work succeeded; next due after `next` (`None`: only on a change).
    pub fn succeeded(&self, uid: &str, fingerprint: u64, next: Option<Duration>) {
        self.lock().insert(
            uid.to_string(),
            Entry {
                fingerprint,
                due: next.map(|d| Instant::now() + d),
                failures: 0,
            },
        );
    }

    /// Work failed. Transient failures back off; `retry` overrides the delay (`Some(None)`:
    /// only on a change). Returns the delay chosen (`None` = wait for a change).
    pub fn failed(
        &self,
        uid: &str,
        fingerprint: u64,
        retry: Option<Option<Duration>>,
    ) -> Option<Duration> {
        let mut entries = self.lock();
        let failures = entries
            .get(uid)
            .filter(|e| e.fingerprint == fingerprint)
            .map_or(0, |e| e.failures)
            .saturating_add(1);
        let delay = match retry {
            Some(fixed) => fixed,
            None => Some(self.backoff(failures)),
        };
        entries.insert(
            uid.to_string(),
            Entry {
                fingerprint,
                due: delay.map(|d| Instant::now() + d),
                failures,
            },
        );
        delay
    }

    /// The delay after the `failures`-th failure in a row.
    pub fn backoff(&self, failures: u32) -> Duration {
        self.backoff.delay(failures)
    }

    /// The delay stored for an object (for `error_policy`), if any.
    pub fn pending(&self, uid: &str) -> Option<Option<Duration>> {
        let entries = self.lock();
        let entry = entries.get(uid)?;
        Some(
            entry
                .due
                .map(|d| d.saturating_duration_since(Instant::now())),
        )
    }

    /// Forgets an object (deleted).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    /// Marks an object due now (a related object changed in a way that matters).
    pub fn expire(&self, uid: &str) {
        if let Some(e) = self.lock().get_mut(uid) {
            e.due = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_object_is_due_and_success_defers_it() {
        let s = Schedule::new(Duration::from_secs(60));
        assert_eq!(s.wait("u", 1), None);
        s.succeeded("u", 1, Some(Duration::from_secs(300)));
        let wait = s.wait("u", 1).expect("deferred").expect("timed");
        assert!(wait > Duration::from_secs(290) && wait <= Duration::from_secs(300));
        // A changed generation or annotation is due at once.
        assert_eq!(s.wait("u", 2), None);
        s.succeeded("u", 1, None);
        assert_eq!(s.wait("u", 1), Some(None));
        s.expire("u");
        assert_eq!(s.wait("u", 1), None);
    }

    #[test]
    fn failures_back_off_up_to_the_cap() {
        let s = Schedule::new(Duration::from_secs(8));
        let delays: Vec<Duration> = (0..6)
            .map(|_| s.failed("u", 1, None).expect("timed"))
            .collect();
        assert!(
            delays[0] >= Duration::from_millis(900) && delays[0] <= Duration::from_millis(1100)
        );
        assert!(
            delays[1] >= Duration::from_millis(1800) && delays[1] <= Duration::from_millis(2200)
        );
        assert!(delays[5] <= Duration::from_millis(8800), "{delays:?}");
        // Success resets the count.
        s.succeeded("u", 1, Some(Duration::from_secs(1)));
        assert!(s.failed("u", 1, None).expect("timed") <= Duration::from_millis(1100));
        // A fixed retry overrides the backoff.
        assert_eq!(s.failed("u", 1, Some(None)), None);
        assert_eq!(s.pending("u"), Some(None));
    }

    #[test]
    fn the_cap_is_never_below_the_first_delay() {
        let s = Schedule::new(Duration::from_millis(100));
        for failures in [1, 2, 10] {
            let d = s.backoff(failures);
            assert!(
                d >= BACKOFF_INITIAL.mul_f64(0.9) && d <= BACKOFF_INITIAL.mul_f64(1.1),
                "after {failures}: {d:?}"
            );
        }
    }
}
