//! Building the status: counts, conditions, messages, recent failures and time helpers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::conditions::{
    self, COMPLETE, FALSE, PAUSED, PROGRESSING, READY, STALLED, TRUE, new_condition, reason,
    set_condition,
};
use crate::api::rollout::{DeviceCounts, MAX_RECENT_FAILURES};
use crate::otau::safe_text;

use super::device::DeviceState;
use super::observation::Micros;

/// The longest identity a `recentFailures` entry holds, in bytes of UTF-8 (the CRD allows
/// 128 characters); longer ones are cut with `…` ([`safe_text`]).
pub const MAX_FAILURE_IDENTITY_BYTES: usize = 128;
/// The longest message a `recentFailures` entry holds, in bytes (the CRD allows 256
/// characters).
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 256;
/// The longest condition message the engine writes, in bytes: a platform error quoted in
/// `PlatformUnavailable` is cut there.
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 1024;

/// A condition message as the engine writes it: device and platform text made safe to show
/// (control and invisible characters escaped) and cut at [`MAX_CONDITION_MESSAGE_BYTES`].
pub fn condition_message(message: &str) -> String {
    safe_text(message, MAX_CONDITION_MESSAGE_BYTES)
}

/// The time of a step, whole seconds (a `metav1.Time` keeps only seconds, so anything finer
/// would not survive a status round trip and a restart would decide differently).
pub fn time_from_micros(us: Micros) -> Time {
    let seconds = us.div_euclid(1_000_000);
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// [`time_from_micros`] rounded up to the next whole second.
pub fn time_from_micros_ceil(us: Micros) -> Time {
    time_from_micros(us.saturating_add(999_999))
}

/// A status time in µs.
pub fn micros_of(t: &Time) -> Micros {
    t.0.as_microsecond()
}

/// Adds one device in `state` to `counts`.
pub fn count(counts: &mut DeviceCounts, state: DeviceState) {
    counts.targeted += 1;
    match state {
        DeviceState::Pending | DeviceState::RetryDue { .. } => counts.pending += 1,
        DeviceState::Notified => counts.notified += 1,
        DeviceState::InProgress => counts.in_progress += 1,
        DeviceState::Succeeded => counts.succeeded += 1,
        DeviceState::Rerun => {
            counts.succeeded += 1;
            counts.reruns += 1;
        }
        DeviceState::Failed => counts.failed += 1,
        DeviceState::Aborted => counts.aborted += 1,
        DeviceState::TimedOut => counts.timed_out += 1,
        DeviceState::Skipped | DeviceState::Superseded => counts.skipped += 1,
        DeviceState::Invalid => counts.invalid += 1,
        DeviceState::Busy => counts.busy += 1,
        DeviceState::Foreign | DeviceState::ForeignSkipped => counts.foreign += 1,
    }
}

/// The overall state a step ends in, which decides the conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overall {
    /// Terminal.
    Aborted(String),
    /// Paused by the failure threshold.
    FailureThresholdExceeded(String),
    /// Every wave completed and every finished device installed the version.
    Complete(String),
    /// Every wave completed within the threshold, but some finished devices failed, refused,
    /// timed out or sent an unreadable report.
    CompletedWithFailures(String),
    /// `spec.paused` or the pause annotation.
    PausedByUser(String),
    /// The next wave needs approval.
    WaitingForApproval(String),
    /// A soak is running.
    Soaking(String),
    /// A wave is being delivered (or no device matches yet).
    WaveInProgress(String),
    /// Devices match the selectors, but the exclusions remove every one of them.
    AllTargetsExcluded(String),
}

/// Sets the six Rollout conditions for `overall`, keeping transition times of unchanged ones:
/// the five below, then `Reconciling` from them ([`conditions::set_reconciling`]), so kstatus
/// (Flux) reads:
///
/// | `overall` | kstatus |
/// |---|---|
/// | `WaveInProgress`, `Soaking` | InProgress |
/// | `WaitingForApproval`, `PausedByUser` | InProgress (until a person approves or resumes) |
/// | `FailureThresholdExceeded`, `Aborted` | Failed (`Stalled=True`; nothing more is written) |
/// | `AllTargetsExcluded` | Failed (`Stalled=True`: nothing to write until the spec or the fleet changes) |
/// | `Complete`, `CompletedWithFailures` | Current |
pub fn set_conditions(
    conditions: &mut Vec<Condition>,
    overall: &Overall,
    user_paused: bool,
    generation: Option<i64>,
    now: &Time,
) {
    let mut set = |type_: &str, status: &str, reason: &str, message: &str| {
        set_condition(
            conditions,
            new_condition(
                type_,
                status,
                reason,
                condition_message(message),
                generation,
                now.clone(),
            ),
        );
    };
    match overall {
        Overall::Aborted(m) => {
            let r = reason::ABORTED;
            set(READY, FALSE, r, m);
            set(PROGRESSING, FALSE, r, m);
            set(PAUSED, FALSE, r, m);
            set(COMPLETE, FALSE, r, m);
            set(STALLED, TRUE, r, m);
        }
        Overall::FailureThresholdExceeded(m) => {
            let r = reason::FAILURE_THRESHOLD_EXCEEDED;
            set(READY, FALSE, r, m);
            set(PROGRESSING, FALSE, r, m);
            set(PAUSED, TRUE, r, m);
            set(COMPLETE, FALSE, r, m);
            set(STALLED, TRUE, r, m);
        }
        Overall::Complete(m) => complete(&mut set, reason::ALL_WAVES_SUCCEEDED, m, user_paused),
        Overall::CompletedWithFailures(m) => {
            complete(&mut set, reason::COMPLETED_WITH_FAILURES, m, user_paused);
        }
        Overall::AllTargetsExcluded(m) => {
            let r = reason::ALL_TARGETS_EXCLUDED;
            set(READY, FALSE, r, m);
            set(PROGRESSING, FALSE, r, m);
            set(PAUSED, FALSE, r, m);
            set(COMPLETE, FALSE, r, m);
            set(STALLED, TRUE, r, m);
        }
        Overall::PausedByUser(m) => held(&mut set, reason::PAUSED_BY_USER, m),
        Overall::WaitingForApproval(m) => held(&mut set, reason::WAITING_FOR_APPROVAL, m),
        Overall::Soaking(m) => moving(&mut set, reason::SOAKING, m),
        Overall::WaveInProgress(m) => moving(&mut set, reason::WAVE_IN_PROGRESS, m),
    }
    conditions::set_reconciling(conditions, generation, now.clone());
}

fn complete(set: &mut impl FnMut(&str, &str, &str, &str), r: &str, m: &str, user_paused: bool) {
    set(READY, TRUE, r, m);
    set(PROGRESSING, FALSE, r, m);
    if user_paused {
        set(
            PAUSED,
            TRUE,
            reason::PAUSED_BY_USER,
            "paused by the user: late joiners are not notified",
        );
    } else {
        set(PAUSED, FALSE, r, m);
    }
    set(COMPLETE, TRUE, r, m);
    set(STALLED, FALSE, r, m);
}

fn held(set: &mut impl FnMut(&str, &str, &str, &str), r: &str, m: &str) {
    set(READY, FALSE, r, m);
    set(PROGRESSING, FALSE, r, m);
    set(PAUSED, TRUE, r, m);
    set(COMPLETE, FALSE, r, m);
    set(STALLED, FALSE, r, m);
}

fn moving(set: &mut impl FnMut(&str, &str, &str, &str), r: &str, m: &str) {
    set(READY, FALSE, r, m);
    set(PROGRESSING, TRUE, r, m);
    set(PAUSED, FALSE, r, m);
    set(COMPLETE, FALSE, r, m);
    set(STALLED, FALSE, r, m);
}

/// Whether the previous conditions said Complete.
pub fn was_complete(conditions: &[Condition]) -> bool {
    conditions::is_true(conditions, COMPLETE)
}

/// "37/120 succeeded, 2 failed, 10 in flight" (and the other non-zero states).
pub fn counts_text(c: &DeviceCounts) -> String {
    let mut parts = vec![format!("{}/{} succeeded", c.succeeded, c.targeted)];
    let extra = [
        (c.failed, "failed"),
        (c.timed_out, "timed out"),
        (c.aborted, "aborted"),
        (c.invalid, "invalid"),
        (c.skipped, "skipped"),
        (c.busy, "busy"),
        (c.foreign, "foreign"),
        (c.notified + c.in_progress, "in flight"),
        (c.pending, "pending"),
    ];
    for (n, what) in extra {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

/// One candidate for `recentFailures`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailureCandidate {
    /// When it failed (µs).
    pub at: Micros,
    /// Position in wave order (ties: earlier first).
    pub position: u32,
}

/// Keeps the newest [`MAX_RECENT_FAILURES`] candidates (newest first, ties by position).
#[derive(Default)]
pub struct RecentFailures {
    kept: Vec<FailureCandidate>,
}

impl RecentFailures {
    fn better(a: &FailureCandidate, b: &FailureCandidate) -> bool {
        (a.at, std::cmp::Reverse(a.position)) > (b.at, std::cmp::Reverse(b.position))
    }

    /// Offers one candidate.
    pub fn offer(&mut self, candidate: FailureCandidate) {
        if self.kept.len() == MAX_RECENT_FAILURES
            && !Self::better(&candidate, &self.kept[MAX_RECENT_FAILURES - 1])
        {
            return;
        }
        let at = self
            .kept
            .iter()
            .position(|k| Self::better(&candidate, k))
            .unwrap_or(self.kept.len());
        self.kept.insert(at, candidate);
        self.kept.truncate(MAX_RECENT_FAILURES);
    }

    /// The kept candidates, newest first.
    pub fn into_sorted(self) -> Vec<FailureCandidate> {
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_whole_seconds() {
        assert_eq!(micros_of(&time_from_micros(1_500_000)), 1_000_000);
        assert_eq!(micros_of(&time_from_micros_ceil(1_500_000)), 2_000_000);
        assert_eq!(micros_of(&time_from_micros_ceil(2_000_000)), 2_000_000);
    }

    #[test]
    fn recent_failures_keep_the_newest_twenty() {
        let mut r = RecentFailures::default();
        for i in 0..100u32 {
            r.offer(FailureCandidate {
                at: i64::from(i % 50),
                position: i,
            });
        }
        let kept = r.into_sorted();
        assert_eq!(kept.len(), MAX_RECENT_FAILURES);
        assert_eq!((kept[0].at, kept[0].position), (49, 49));
        assert_eq!((kept[1].at, kept[1].position), (49, 99));
        assert!(kept.windows(2).all(|w| w[0].at >= w[1].at));
    }

    #[test]
    fn counts_text_lists_non_zero_states() {
        let c = DeviceCounts {
            targeted: 120,
            succeeded: 37,
            failed: 2,
            in_progress: 10,
            pending: 71,
            ..DeviceCounts::default()
        };
        assert_eq!(
            counts_text(&c),
            "37/120 succeeded, 2 failed, 10 in flight, 71 pending"
        );
    }
}
