//! Condition types, reasons and helpers shared by the three kinds (docs/architecture.md §8).
//!
//! Conditions are plain `metav1.Condition`s. Every condition carries `observedGeneration`;
//! `lastTransitionTime` changes only when `status` changes ([`set_condition`]). A Rollout's
//! `status.phase` is a summary derived from its conditions by [`rollout_phase`], the only place
//! that mapping lives; nothing reads the phase back as input.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::{ListMerge, merge_strategy};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use super::rollout::RolloutPhase;

/// The most conditions a status may hold (the schema's `maxItems`).
pub const MAX_CONDITIONS: usize = 8;

/// Condition type: the summary on every kind.
pub const READY: &str = "Ready";
/// Condition type: work is under way (a package uploading, a wave being delivered).
pub const PROGRESSING: &str = "Progressing";
/// Condition type: a Rollout holds (by the user, for approval, or automatically).
pub const PAUSED: &str = "Paused";
/// Condition type: a Rollout delivered every wave (mirrors a batch Job's `Complete`).
pub const COMPLETE: &str = "Complete";
/// Condition type: needs a human (rejected credentials, invalid package, failures, abort).
pub const STALLED: &str = "Stalled";
/// Condition type: the operator is still working towards what the spec asks (or waiting for
/// something that clears by itself, or for a person to approve or resume). The condition
/// kstatus (Flux, kpt) reads first: `True` is InProgress. Derived from `Ready` and `Stalled` by
/// [`set_reconciling`], the only place that rule lives.
pub const RECONCILING: &str = "Reconciling";

/// Condition status `True`.
pub const TRUE: &str = "True";
/// Condition status `False`.
pub const FALSE: &str = "False";
/// Condition status `Unknown`.
pub const UNKNOWN: &str = "Unknown";

/// Reasons, as in the docs/architecture.md §8 table.
pub mod reason {
    /// First visit, before anything is known.
    pub const INITIALIZING: &str = "Initializing";
    /// IoTConnector: credentials accepted and the product exists.
    pub const CONNECTED: &str = "Connected";
    /// IoTConnector: the named credentials Secret (or key) does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// Any kind: the platform is unreachable, answers 5xx or times out.
    pub const PLATFORM_UNAVAILABLE: &str = "PlatformUnavailable";
    /// IoTConnector: the management API answered 401/403.
    pub const CREDENTIALS_REJECTED: &str = "CredentialsRejected";
    /// IoTConnector: a credentials Secret lacks the opt-in label, or may not be sent to the
    /// connector's host; nothing was sent.
    pub const CREDENTIAL_NOT_ALLOWED: &str = "CredentialNotAllowed";
    /// SoftwarePackage: files are being uploaded.
    pub const UPLOADING: &str = "Uploading";
    /// SoftwarePackage / Rollout: the IoTConnector is not Ready.
    pub const CONNECTOR_NOT_READY: &str = "ConnectorNotReady";
    /// SoftwarePackage: uploaded and registered.
    pub const REGISTERED: &str = "Registered";
    /// SoftwarePackage: the platform refuses the package as written.
    pub const PACKAGE_INVALID: &str = "PackageInvalid";
    /// Rollout: the SoftwarePackage is not Ready.
    pub const PACKAGE_NOT_READY: &str = "PackageNotReady";
    /// Rollout: a wave is being delivered.
    pub const WAVE_IN_PROGRESS: &str = "WaveInProgress";
    /// Rollout: a wave finished and its soak time is running before the next one starts.
    pub const SOAKING: &str = "Soaking";
    /// Rollout: the next wave waits for approval.
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
    /// Rollout: `spec.paused` is true (or the pause annotation was applied).
    pub const PAUSED_BY_USER: &str = "PausedByUser";
    /// Rollout: failures went over the threshold; paused automatically.
    pub const FAILURE_THRESHOLD_EXCEEDED: &str = "FailureThresholdExceeded";
    /// Rollout: aborted; terminal.
    pub const ABORTED: &str = "Aborted";
    /// Rollout: every wave finished and every finished device installed the version.
    pub const ALL_WAVES_SUCCEEDED: &str = "AllWavesSucceeded";
    /// Rollout: every wave finished within the threshold, but some devices failed, refused
    /// the update (`INSTALL_ABORTED`), timed out or sent an unreadable report; the message
    /// gives the counts and the success rate.
    pub const COMPLETED_WITH_FAILURES: &str = "CompletedWithFailures";
    /// SoftwarePackage: a content item the package put on the platform is gone (found before a
    /// wave started); the package uploads it again. Rollout: the wave about to start holds
    /// until the package is Ready again. The message names the item.
    pub const CONTENT_MISSING: &str = "ContentMissing";
    /// Rollout: an older active Rollout targets the same devices; this one waits before its
    /// first write.
    pub const TARGET_CONFLICT: &str = "TargetConflict";
    /// Rollout: the targets' identities or tags select devices, and `targets.exclude` removes
    /// every one of them; nothing can be delivered until the targets change (or a device that
    /// is not excluded joins).
    pub const ALL_TARGETS_EXCLUDED: &str = "AllTargetsExcluded";
}

/// Builds a condition. `now` is passed in: this module never reads a clock. The apiserver
/// stores `metav1.Time` in whole seconds, so pass a whole-second time to compare read-backs.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Inserts or replaces the condition of `new.type_`, keeping the old `lastTransitionTime` when
/// the status did not change. Returns whether anything changed (other than that time).
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) if old.status == new.status => {
            new.last_transition_time = old.last_transition_time.clone();
            let changed = *old != new;
            *old = new;
            changed
        }
        Some(old) => {
            *old = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Sets `Reconciling` from the summary conditions the kind already carries, for all three kinds:
///
/// | `Ready` / `Stalled` | `Reconciling` | kstatus |
/// |---|---|---|
/// | `Stalled=True` | `False`, reason and message of `Stalled` | Failed |
/// | `Ready=True` | `False`, reason of `Ready` | Current |
/// | anything else (`Ready` `False` or `Unknown`, or missing) | `True`, reason and message of `Ready` (`Initializing` without one) | InProgress |
///
/// Call it after the other conditions of a step are set, in the same status write, so its
/// `observedGeneration` is the one they carry. A status written before this condition existed
/// simply lacks it until the next write.
pub fn set_reconciling(conditions: &mut Vec<Condition>, generation: Option<i64>, now: Time) {
    let stalled = find_condition(conditions, STALLED).filter(|c| c.status == TRUE);
    let ready = find_condition(conditions, READY);
    let new = match (stalled, ready) {
        (Some(s), _) => new_condition(
            RECONCILING,
            FALSE,
            &s.reason,
            s.message.clone(),
            generation,
            now,
        ),
        (None, Some(r)) if r.status == TRUE => {
            new_condition(RECONCILING, FALSE, &r.reason, "", generation, now)
        }
        (None, Some(r)) => new_condition(
            RECONCILING,
            TRUE,
            &r.reason,
            r.message.clone(),
            generation,
            now,
        ),
        (None, None) => new_condition(
            RECONCILING,
            TRUE,
            reason::INITIALIZING,
            "waiting for the first check",
            generation,
            now,
        ),
    };
    set_condition(conditions, new);
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// The Rollout phase the conditions describe. This is the one place the mapping lives:
///
/// | Conditions | Phase |
/// |---|---|
/// | `Stalled=True` with reason `Aborted` | `Aborted` |
/// | `Complete=True` | `Complete` |
/// | `Paused=True` (by user, for approval, or after failures) | `Paused` |
/// | `Progressing=True` | `Progressing` |
/// | anything else (no conditions yet, package not ready, ...) | `Pending` |
pub fn rollout_phase(conditions: &[Condition]) -> RolloutPhase {
    let aborted = find_condition(conditions, STALLED)
        .is_some_and(|c| c.status == TRUE && c.reason == reason::ABORTED);
    if aborted {
        RolloutPhase::Aborted
    } else if is_true(conditions, COMPLETE) {
        RolloutPhase::Complete
    } else if is_true(conditions, PAUSED) {
        RolloutPhase::Paused
    } else if is_true(conditions, PROGRESSING) {
        RolloutPhase::Progressing
    } else {
        RolloutPhase::Pending
    }
}

/// Schema of a `conditions` list: bounded, and a list-map keyed by `type`, so server-side apply
/// merges conditions by type instead of replacing the whole list.
///
/// The strings get the same bounds as upstream `metav1.Condition` (type 316, reason 1024,
/// message 32768 characters; status one of `True`, `False`, `Unknown`).
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = Vec::<Condition>::json_schema(generator).to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert("maxItems".into(), MAX_CONDITIONS.into());
    }
    if let Some(properties) = schema
        .pointer_mut("/items/properties")
        .and_then(|p| p.as_object_mut())
    {
        let bounds = [
            (
                "type",
                serde_json::json!({"minLength": 1, "maxLength": 316}),
            ),
            (
                "reason",
                serde_json::json!({"minLength": 1, "maxLength": 1024}),
            ),
            ("message", serde_json::json!({"maxLength": 32768})),
            (
                "status",
                serde_json::json!({"enum": [TRUE, FALSE, UNKNOWN]}),
            ),
            ("observedGeneration", serde_json::json!({"minimum": 0})),
        ];
        for (field, extra) in bounds {
            if let (Some(target), Some(extra)) = (
                properties.get_mut(field).and_then(|f| f.as_object_mut()),
                extra.as_object(),
            ) {
                target.extend(extra.clone());
            }
        }
    }
    merge_strategy(&mut schema, ListMerge::Map(vec!["type".into()]).into())
        .expect("a list-map strategy serializes");
    Schema::try_from(schema).expect("a conditions schema is an object")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        new_condition(type_, status, reason, "", Some(1), at(0))
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conds = vec![new_condition(
            READY,
            FALSE,
            reason::UPLOADING,
            "1/2",
            Some(1),
            at(10),
        )];
        let changed = set_condition(
            &mut conds,
            new_condition(READY, FALSE, reason::UPLOADING, "2/2", Some(2), at(20)),
        );
        assert!(changed);
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].last_transition_time, at(10));
        assert_eq!(conds[0].message, "2/2");
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn set_condition_moves_transition_time_when_status_changes() {
        let mut conds = vec![new_condition(
            READY,
            FALSE,
            reason::UPLOADING,
            "",
            Some(1),
            at(10),
        )];
        assert!(set_condition(
            &mut conds,
            new_condition(READY, TRUE, reason::REGISTERED, "", Some(1), at(30)),
        ));
        assert_eq!(conds[0].last_transition_time, at(30));
        assert_eq!(conds[0].status, TRUE);
    }

    #[test]
    fn set_condition_reports_no_change_for_identical_content() {
        let mut conds = vec![new_condition(
            READY,
            TRUE,
            reason::CONNECTED,
            "ok",
            Some(3),
            at(10),
        )];
        let again = new_condition(READY, TRUE, reason::CONNECTED, "ok", Some(3), at(99));
        assert!(!set_condition(&mut conds, again));
        assert_eq!(conds[0].last_transition_time, at(10));
    }

    #[test]
    fn set_condition_appends_new_types() {
        let mut conds = vec![cond(READY, TRUE, reason::CONNECTED)];
        set_condition(&mut conds, cond(STALLED, FALSE, reason::CONNECTED));
        assert_eq!(conds.len(), 2);
        assert!(is_true(&conds, READY));
        assert!(!is_true(&conds, STALLED));
        assert!(!is_true(&conds, PAUSED));
    }

    #[test]
    fn phase_follows_the_table() {
        use RolloutPhase::*;
        let cases: Vec<(Vec<Condition>, RolloutPhase)> = vec![
            (vec![], Pending),
            (
                vec![
                    cond(READY, FALSE, reason::PACKAGE_NOT_READY),
                    cond(PROGRESSING, FALSE, reason::PACKAGE_NOT_READY),
                ],
                Pending,
            ),
            (
                vec![
                    cond(READY, FALSE, reason::WAVE_IN_PROGRESS),
                    cond(PROGRESSING, TRUE, reason::WAVE_IN_PROGRESS),
                    cond(PAUSED, FALSE, reason::WAVE_IN_PROGRESS),
                ],
                Progressing,
            ),
            (
                vec![
                    cond(PROGRESSING, FALSE, reason::WAITING_FOR_APPROVAL),
                    cond(PAUSED, TRUE, reason::WAITING_FOR_APPROVAL),
                ],
                Paused,
            ),
            (
                vec![
                    cond(PAUSED, TRUE, reason::FAILURE_THRESHOLD_EXCEEDED),
                    cond(STALLED, TRUE, reason::FAILURE_THRESHOLD_EXCEEDED),
                ],
                Paused,
            ),
            (
                vec![
                    cond(READY, TRUE, reason::ALL_WAVES_SUCCEEDED),
                    cond(COMPLETE, TRUE, reason::ALL_WAVES_SUCCEEDED),
                    cond(PROGRESSING, FALSE, reason::ALL_WAVES_SUCCEEDED),
                ],
                Complete,
            ),
            (
                vec![
                    cond(STALLED, TRUE, reason::ABORTED),
                    cond(PAUSED, TRUE, reason::PAUSED_BY_USER),
                    cond(PROGRESSING, FALSE, reason::ABORTED),
                ],
                Aborted,
            ),
            (vec![cond(READY, UNKNOWN, reason::INITIALIZING)], Pending),
        ];
        for (conds, expected) in cases {
            assert_eq!(rollout_phase(&conds), expected, "{conds:?}");
        }
    }

    #[test]
    fn reconciling_follows_ready_and_stalled() {
        let reconciling = |conds: Vec<Condition>| {
            let mut conds = conds;
            set_reconciling(&mut conds, Some(4), at(50));
            let c = find_condition(&conds, RECONCILING).expect("set").clone();
            assert_eq!(c.observed_generation, Some(4));
            (c.status, c.reason)
        };
        let t = |s: &str, r: &str| (s.to_owned(), r.to_owned());
        assert_eq!(reconciling(vec![]), t(TRUE, reason::INITIALIZING));
        assert_eq!(
            reconciling(vec![cond(READY, UNKNOWN, reason::PLATFORM_UNAVAILABLE)]),
            t(TRUE, reason::PLATFORM_UNAVAILABLE)
        );
        assert_eq!(
            reconciling(vec![
                cond(READY, FALSE, reason::WAITING_FOR_APPROVAL),
                cond(STALLED, FALSE, reason::WAITING_FOR_APPROVAL),
            ]),
            t(TRUE, reason::WAITING_FOR_APPROVAL)
        );
        assert_eq!(
            reconciling(vec![
                cond(READY, TRUE, reason::CONNECTED),
                cond(STALLED, FALSE, reason::CONNECTED),
            ]),
            t(FALSE, reason::CONNECTED)
        );
        assert_eq!(
            reconciling(vec![
                cond(READY, FALSE, reason::ABORTED),
                cond(STALLED, TRUE, reason::ABORTED),
            ]),
            t(FALSE, reason::ABORTED)
        );
    }

    #[test]
    fn reconciling_keeps_its_transition_time_while_unchanged() {
        let mut conds = vec![cond(READY, FALSE, reason::UPLOADING)];
        set_reconciling(&mut conds, Some(1), at(10));
        set_reconciling(&mut conds, Some(2), at(20));
        let c = find_condition(&conds, RECONCILING).expect("set");
        assert_eq!(c.last_transition_time, at(10));
        assert_eq!(c.observed_generation, Some(2));
        conds[0] = cond(READY, TRUE, reason::REGISTERED);
        set_reconciling(&mut conds, Some(2), at(30));
        let c = find_condition(&conds, RECONCILING).expect("set");
        assert_eq!(
            (c.status.as_str(), &c.last_transition_time),
            (FALSE, &at(30))
        );
    }

    #[test]
    fn conditions_schema_is_a_bounded_list_map() {
        let mut generator = SchemaGenerator::default();
        let schema = conditions_schema(&mut generator).to_value();
        assert_eq!(schema["type"], "array");
        assert_eq!(schema["maxItems"], MAX_CONDITIONS);
        assert_eq!(schema["x-kubernetes-list-type"], "map");
        assert_eq!(
            schema["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
    }

    #[test]
    fn crd_conditions_have_bounded_strings() {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(crate::api::Rollout::crd()).unwrap();
        let items = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"]["items"]["properties"];
        assert_eq!(items["type"]["maxLength"], 316);
        assert_eq!(items["reason"]["maxLength"], 1024);
        assert_eq!(items["message"]["maxLength"], 32768);
        assert_eq!(
            items["status"]["enum"],
            serde_json::json!(["True", "False", "Unknown"])
        );
    }
}
