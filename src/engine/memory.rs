//! What the engine must remember between steps that `RolloutStatus` has no field for yet.
//!
//! Everything here belongs in the Rollout's status (the integrator is asked to add the fields;
//! see docs/rollouts.md "Status fields"); until then the caller persists an [`EngineMemory`]
//! next to the status and passes it back. It is small and bounded (at most one baseline per
//! wave), never per device.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// Why the rollout was aborted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortRecord {
    /// What aborted the rollout.
    pub cause: AbortCause,
    /// When (whole seconds).
    pub at: Time,
}

/// Failures already accepted in one wave by a resume after an automatic pause: the threshold
/// of that wave is judged again over the devices that finish after the resume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdBaseline {
    /// The wave (from 1).
    pub wave: i32,
    /// Finished devices of the wave at the resume.
    pub finished: i64,
    /// Failures (as the threshold counts them) of the wave at the resume.
    pub failed: i64,
}

/// The engine's own bounded memory, persisted by the caller with the status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineMemory {
    /// Since when the `otau.dev/pause` annotation holds the rollout (until a resume
    /// annotation or a new `spec.resumeToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_by_annotation_since: Option<Time>,
    /// The abort, once it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<AbortRecord>,
    /// Per-wave threshold baselines set by resumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<ThresholdBaseline>,
}

impl EngineMemory {
    /// The baseline of a wave, if a resume set one.
    pub fn baseline(&self, wave: i32) -> Option<&ThresholdBaseline> {
        self.baselines.iter().find(|b| b.wave == wave)
    }
}
