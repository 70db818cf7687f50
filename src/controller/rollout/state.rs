//! What the Rollout controller keeps in memory per Rollout between reconciles: the status it
//! computed last (which may be newer than the one written, see status coalescing), the
//! engine's memory, and when it last wrote the status.
//!
//! Nothing here is needed for correctness after a restart: the platform is the ledger and the
//! written status holds the decisions, the engine's memory included (`status.decisions`). A
//! status written before that field existed gets its memory rebuilt ([`memory_from_status`]):
//! the abort (from the `Stalled`/`Aborted` condition) and a pause by annotation (from
//! `status.pause`); resume baselines cannot be rebuilt.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use crate::api::conditions::{self, STALLED, reason};
use crate::api::rollout::{Rollout, RolloutStatus};
use crate::controller::package::listing::ListingMark;
use crate::engine::{AbortCause, AbortRecord, EngineMemory};

/// One Rollout's in-memory state.
#[derive(Clone, Debug, Default)]
pub struct Tracked {
    /// Namespace (for metrics clean-up).
    pub namespace: String,
    /// Name (for metrics clean-up).
    pub name: String,
    /// The status computed last.
    pub computed: Option<RolloutStatus>,
    /// The engine memory computed last.
    pub memory: EngineMemory,
    /// The status last written, and when.
    pub written: Option<(RolloutStatus, Instant)>,
    /// Reconciles that failed in a row (for the backoff).
    pub failures: u32,
    /// Identities whose last write ended without a clear answer (timeout, 5xx): their state
    /// is read again before they are written.
    pub uncertain: HashSet<String>,
    /// The last look at the package's ExoSense listing (aggregates only).
    pub listing: ListingMark,
    /// The last wave whose package content was found on the platform before it started
    /// (`super::content`); 0 before any.
    pub content_verified: i32,
}

/// Every tracked Rollout, by UID.
#[derive(Debug, Default)]
pub struct TrackedRollouts {
    inner: Mutex<HashMap<String, Tracked>>,
}

impl TrackedRollouts {
    /// The state of `rollout`, created from its written status on first sight.
    pub fn get(&self, rollout: &Rollout, uid: &str) -> Tracked {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(uid.to_owned())
            .or_insert_with(|| {
                let status = rollout.status.clone();
                Tracked {
                    namespace: rollout.metadata.namespace.clone().unwrap_or_default(),
                    name: rollout.metadata.name.clone().unwrap_or_default(),
                    memory: status
                        .as_ref()
                        .map(|s| {
                            if s.decisions.is_empty() {
                                memory_from_status(rollout, s)
                            } else {
                                s.decisions.clone()
                            }
                        })
                        .unwrap_or_default(),
                    computed: status.clone(),
                    written: status.map(|s| (s, Instant::now())),
                    ..Tracked::default()
                }
            })
            .clone()
    }

    /// Changes the state of `uid` (when tracked).
    pub fn update(&self, uid: &str, change: impl FnOnce(&mut Tracked)) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get_mut(uid) {
            change(t);
        }
    }

    /// Forgets `uid`; returns what was kept.
    pub fn forget(&self, uid: &str) -> Option<Tracked> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(uid)
    }

    /// Every tracked UID.
    pub fn uids(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// The engine memory a status without `decisions` implies (see the module docs).
pub fn memory_from_status(rollout: &Rollout, status: &RolloutStatus) -> EngineMemory {
    let mut memory = EngineMemory::default();
    if let Some(stalled) = conditions::find_condition(&status.conditions, STALLED)
        && stalled.status == conditions::TRUE
        && stalled.reason == reason::ABORTED
    {
        let cause = [
            AbortCause::Annotation,
            AbortCause::FailureThreshold,
            AbortCause::Spec,
        ]
        .into_iter()
        .find(|c| stalled.message.contains(c.describe()))
        .unwrap_or(AbortCause::Spec);
        memory.aborted = Some(AbortRecord {
            cause,
            at: stalled.last_transition_time.clone(),
        });
    }
    if let Some(pause) = &status.pause
        && pause.reason == reason::PAUSED_BY_USER
        && !rollout.spec.paused
        && status.acted_on.pause.is_some()
    {
        memory.paused_by_annotation_since = Some(pause.since.clone());
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{TRUE, new_condition};
    use crate::api::rollout::{ActedOn, PauseInfo, RolloutSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn rollout(paused: bool) -> Rollout {
        let spec: RolloutSpec = serde_json::from_value(serde_json::json!({
            "packageRef": {"name": "p"},
            "targets": {"identities": ["a"]},
            "waves": [{"percent": 100}],
            "paused": paused,
        }))
        .expect("spec");
        Rollout::new("r", spec)
    }

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).expect("time"))
    }

    #[test]
    fn an_abort_is_rebuilt_from_the_stalled_condition_with_its_cause() {
        let status = RolloutStatus {
            conditions: vec![new_condition(
                STALLED,
                TRUE,
                reason::ABORTED,
                "aborted by the otau.dev/abort annotation at 2026-01-01: nothing more is written",
                Some(1),
                at(100),
            )],
            ..RolloutStatus::default()
        };
        let memory = memory_from_status(&rollout(false), &status);
        let record = memory.aborted.expect("aborted");
        assert_eq!(record.cause, AbortCause::Annotation);
        assert_eq!(record.at, at(100));
        assert!(memory.paused_by_annotation_since.is_none());
    }

    #[test]
    fn a_pause_by_annotation_is_rebuilt_but_not_a_pause_by_spec() {
        let status = RolloutStatus {
            pause: Some(PauseInfo {
                reason: reason::PAUSED_BY_USER.into(),
                since: at(50),
                generation: Some(1),
            }),
            acted_on: ActedOn {
                pause: Some("n1".into()),
                ..ActedOn::default()
            },
            ..RolloutStatus::default()
        };
        let memory = memory_from_status(&rollout(false), &status);
        assert_eq!(memory.paused_by_annotation_since, Some(at(50)));
        assert!(memory.aborted.is_none());
        let memory = memory_from_status(&rollout(true), &status);
        assert_eq!(memory.paused_by_annotation_since, None);
    }
}
