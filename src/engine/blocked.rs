//! The Rollout's conditions while it cannot decide (a prerequisite is missing, the devices are
//! not listed yet, an older Rollout holds the same devices), and after some of the step's
//! writes failed. With `status::set_conditions` these are every place a Rollout's conditions
//! are computed (docs/architecture.md §7).

use crate::api::conditions::{
    self, COMPLETE, FALSE, PAUSED, PROGRESSING, READY, STALLED, UNKNOWN, new_condition,
    rollout_phase, set_condition,
};
use crate::api::rollout::RolloutStatus;

use super::events::{EngineEvent, reason as event_reason};
use super::memory::AbortCause;
use super::observation::Micros;
use super::status::{Overall, condition_message, set_conditions, time_from_micros};
use super::{Blocker, Decision, EngineInput, PollHint, Requeue};

/// The five conditions a Rollout always shows (`Reconciling` comes and goes).
const ROLLOUT_CONDITIONS: [&str; 5] = [READY, PROGRESSING, PAUSED, COMPLETE, STALLED];

/// One step while the Rollout cannot decide: nothing is written and no one-shot annotation is
/// acted on (they act at the next step with readable device state); the previous counts stay
/// and the conditions say what holds it.
pub fn reconcile_blocked(input: &EngineInput<'_>, blocker: &Blocker, now: Micros) -> Decision {
    let now_t = time_from_micros(now);
    let prev = input.status;
    let generation = input.generation;
    let mut conds = prev.conditions.clone();
    let mut set = |type_: &str, st: &str, r: &str, m: &str| {
        set_condition(
            &mut conds,
            new_condition(
                type_,
                st,
                r,
                condition_message(m),
                generation,
                now_t.clone(),
            ),
        );
    };
    let aborted = input.memory.aborted.is_some() || input.spec.abort;
    let mut events = Vec::new();
    match blocker {
        Blocker::PlatformUnavailable(m) => {
            let m = format!("device state cannot be read: {m}; the wave holds, nothing is written");
            set(READY, UNKNOWN, conditions::reason::PLATFORM_UNAVAILABLE, &m);
            if conditions::find_condition(&prev.conditions, PROGRESSING).is_none() {
                set(
                    PROGRESSING,
                    FALSE,
                    conditions::reason::PLATFORM_UNAVAILABLE,
                    &m,
                );
            }
        }
        Blocker::FirstListing(m) => {
            for type_ in ROLLOUT_CONDITIONS {
                if conditions::find_condition(&prev.conditions, type_).is_none() {
                    set(type_, UNKNOWN, conditions::reason::INITIALIZING, m);
                }
            }
        }
        Blocker::TargetConflict(m) => {
            for type_ in ROLLOUT_CONDITIONS {
                set(type_, FALSE, conditions::reason::TARGET_CONFLICT, m);
            }
            if !was_waiting_for_another(prev) {
                events.push(EngineEvent::normal(
                    event_reason::TARGET_CONFLICT,
                    m.clone(),
                ));
            }
        }
        Blocker::ContentMissing(m) if !aborted => {
            let r = conditions::reason::CONTENT_MISSING;
            set(READY, FALSE, r, m);
            set(PROGRESSING, FALSE, r, m);
            if !was_held_by(prev, r) {
                events.push(EngineEvent::warning(
                    event_reason::CONTENT_MISSING,
                    m.clone(),
                ));
            }
        }
        Blocker::PackageNotReady(m) | Blocker::ConnectorNotReady(m) if !aborted => {
            let r = match blocker {
                Blocker::PackageNotReady(_) => conditions::reason::PACKAGE_NOT_READY,
                _ => conditions::reason::CONNECTOR_NOT_READY,
            };
            set(READY, FALSE, r, m);
            set(PROGRESSING, FALSE, r, m);
        }
        Blocker::PackageNotReady(_)
        | Blocker::ConnectorNotReady(_)
        | Blocker::ContentMissing(_) => {
            let cause = input
                .memory
                .aborted
                .as_ref()
                .map_or(AbortCause::Spec, |a| a.cause);
            let overall = Overall::Aborted(format!(
                "aborted by {}: nothing more is written",
                cause.describe()
            ));
            set_conditions(&mut conds, &overall, false, generation, &now_t);
        }
    }
    conditions::set_reconciling(&mut conds, generation, now_t);
    let mut status = prev.clone();
    status.phase = Some(rollout_phase(&conds));
    status.conditions = conds;
    status.observed_generation = generation;
    Decision {
        notifications: Vec::new(),
        success_records: Vec::new(),
        status,
        memory: input.memory.clone(),
        events,
        requeue: Requeue {
            at: None,
            poll: PollHint::Idle,
        },
    }
}

/// Whether the status already says the Rollout waits for another (its Event was emitted).
fn was_waiting_for_another(status: &RolloutStatus) -> bool {
    was_held_by(status, conditions::reason::TARGET_CONFLICT)
}

/// Whether the status' `Ready` reason already is `reason` (its Event was emitted).
fn was_held_by(status: &RolloutStatus, reason: &str) -> bool {
    conditions::find_condition(&status.conditions, READY).is_some_and(|c| c.reason == reason)
}

/// What the step's `config_otau` writes achieved, when some failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteShortfall<'a> {
    /// The platform's error, as people read it (no secret in it).
    pub error: &'a str,
    /// The notifications the step decided.
    pub decided: usize,
    /// How many of them the platform holds (written, or already set).
    pub written: usize,
}

/// Says in `decision` that `config_otau` writes fail: `Ready` is Unknown with
/// `PlatformUnavailable` (where people look, not only the log) and a Warning Event; the
/// devices not written stay pending and are due when the platform accepts writes. The next
/// step that writes sets `Ready` from the rollout's state again.
pub fn writes_failed(
    decision: &mut Decision,
    shortfall: WriteShortfall<'_>,
    generation: Option<i64>,
    now: Micros,
) {
    let message = condition_message(&format!(
        "config_otau writes fail: {}; {} of {} written in this pass, the rest are written when \
         the platform accepts them",
        shortfall.error, shortfall.written, shortfall.decided
    ));
    let now_t = time_from_micros(now);
    let conds = &mut decision.status.conditions;
    set_condition(
        conds,
        new_condition(
            READY,
            UNKNOWN,
            conditions::reason::PLATFORM_UNAVAILABLE,
            message.as_str(),
            generation,
            now_t.clone(),
        ),
    );
    conditions::set_reconciling(conds, generation, now_t);
    decision.events.push(EngineEvent::warning(
        conditions::reason::PLATFORM_UNAVAILABLE,
        message,
    ));
}
