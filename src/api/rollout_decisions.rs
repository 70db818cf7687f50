//! The decisions of a Rollout that no platform read can tell (docs/architecture.md §2, "What the
//! rollout decided"), kept in `status.decisions` so that a restarted operator carries on exactly
//! where the last one stopped. Bounded: at most one baseline per wave, never per device.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use super::rollout::MAX_WAVES;

/// What aborted a Rollout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum AbortCause {
    /// `spec.abort: true`.
    Spec,
    /// The `otau.dev/abort` annotation.
    Annotation,
    /// The failure threshold tripped with `onFailure: Abort`.
    FailureThreshold,
}

impl AbortCause {
    /// Human words for messages and events.
    pub fn describe(self) -> &'static str {
        match self {
            AbortCause::Spec => "spec.abort",
            AbortCause::Annotation => "the otau.dev/abort annotation",
            AbortCause::FailureThreshold => "the failure threshold (onFailure: Abort)",
        }
    }
}

/// The abort, once it happened. Terminal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortRecord {
    /// What aborted the rollout: `Spec`, `Annotation` or `FailureThreshold`.
    pub cause: AbortCause,
    /// When (whole seconds).
    pub at: Time,
}

/// Failures already accepted in one wave by a resume after an automatic pause: the threshold
/// of that wave is judged again over the devices that finish after the resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdBaseline {
    /// The wave (from 1).
    #[schemars(range(min = 1, max = 20))]
    pub wave: i32,
    /// Finished devices of the wave at the resume.
    pub finished: i64,
    /// Failures (as the threshold counts them) of the wave at the resume.
    pub failed: i64,
}

/// Decisions the operator must remember between reconciles and across restarts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutDecisions {
    /// Since when the `otau.dev/pause` annotation holds the rollout (until a resume
    /// annotation or a new `spec.resumeToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by_annotation_since: Option<Time>,
    /// The abort, once it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<AbortRecord>,
    /// Per-wave failure baselines accepted by resumes after automatic pauses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub baselines: Vec<ThresholdBaseline>,
}

impl RolloutDecisions {
    /// The baseline of a wave, if a resume set one.
    pub fn baseline(&self, wave: i32) -> Option<&ThresholdBaseline> {
        self.baselines.iter().find(|b| b.wave == wave)
    }

    /// Whether nothing has been decided yet (the field is then left out of the status).
    pub fn is_empty(&self) -> bool {
        self.paused_by_annotation_since.is_none()
            && self.aborted.is_none()
            && self.baselines.is_empty()
    }

    /// At most one baseline per wave, for waves that exist.
    pub fn bounded(mut self) -> Self {
        self.baselines
            .retain(|b| b.wave >= 1 && usize::try_from(b.wave).is_ok_and(|w| w <= MAX_WAVES));
        self.baselines.sort_by_key(|b| b.wave);
        self.baselines.dedup_by_key(|b| b.wave);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_decisions_are_left_out_and_round_trip() {
        let d = RolloutDecisions::default();
        assert!(d.is_empty());
        let full = RolloutDecisions {
            paused_by_annotation_since: None,
            aborted: Some(AbortRecord {
                cause: AbortCause::FailureThreshold,
                at: Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap()),
            }),
            baselines: vec![
                ThresholdBaseline {
                    wave: 3,
                    finished: 10,
                    failed: 2,
                },
                ThresholdBaseline {
                    wave: 3,
                    finished: 11,
                    failed: 2,
                },
                ThresholdBaseline {
                    wave: 99,
                    finished: 1,
                    failed: 1,
                },
            ],
        }
        .bounded();
        assert_eq!(full.baselines.len(), 1);
        assert_eq!(full.baseline(3).map(|b| b.finished), Some(10));
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["aborted"]["cause"], "FailureThreshold");
        assert_eq!(
            serde_json::from_value::<RolloutDecisions>(json).unwrap(),
            full
        );
    }
}
