//! The Kubernetes Events a step asks the caller to emit.

use crate::otau::safe_text;

/// The longest Event message the engine builds, in bytes (an Event note may hold 1 kB); a
/// message is made safe to show ([`safe_text`]) and cut there when built.
pub const MAX_EVENT_MESSAGE_BYTES: usize = 1000;

/// Event type, as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Normal progress.
    Normal,
    /// Something a person should look at.
    Warning,
}

/// One Event to emit: a reason (CamelCase, stable) and a message with counts, never lists of
/// devices; the wave it concerns and the threshold judgement behind it travel as data, so
/// callers render the engine's decision instead of reading it back out of the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason, one of [`reason`].
    pub reason: &'static str,
    /// What happened, with the numbers.
    pub message: String,
    /// The wave (from 1) the event is about: the wave started, completed, approved or waiting
    /// for approval; for a threshold trip, the last of the started waves it judged.
    pub wave: Option<u32>,
    /// The judgement behind a tripped threshold (`AutoPaused`, or `Aborted` by the threshold).
    pub threshold: Option<ThresholdTrip>,
}

/// The numbers of a tripped failure threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThresholdTrip {
    /// Waves 1 to this one were judged together.
    pub started_waves: u32,
    /// Failures judged (failed, plus timed out when `countTimeouts`), since any resume.
    pub failed: i64,
    /// Finished devices judged, since any resume.
    pub finished: i64,
}

impl EngineEvent {
    /// A Normal event; the message is made safe to show and bounded.
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self {
            type_: EventType::Normal,
            reason,
            message: safe_text(&message, MAX_EVENT_MESSAGE_BYTES),
            wave: None,
            threshold: None,
        }
    }

    /// A Warning event; the message is made safe to show and bounded.
    pub fn warning(reason: &'static str, message: String) -> Self {
        Self {
            type_: EventType::Warning,
            reason,
            message: safe_text(&message, MAX_EVENT_MESSAGE_BYTES),
            wave: None,
            threshold: None,
        }
    }

    /// The same event, about wave `wave` (from 1).
    pub fn about_wave(self, wave: usize) -> Self {
        Self {
            wave: u32::try_from(wave).ok(),
            ..self
        }
    }

    /// The same event, carrying the threshold judgement that caused it.
    pub fn with_threshold(self, trip: ThresholdTrip) -> Self {
        Self {
            threshold: Some(trip),
            ..self
        }
    }
}

/// Event reasons.
pub mod reason {
    /// A wave started (Normal).
    pub const WAVE_STARTED: &str = "WaveStarted";
    /// Every device of a wave finished (Normal).
    pub const WAVE_COMPLETED: &str = "WaveCompleted";
    /// A gated wave was approved by annotation (Normal).
    pub const WAVE_APPROVED: &str = "WaveApproved";
    /// The next wave waits for approval (Normal).
    pub const WAITING_FOR_APPROVAL: &str = "WaitingForApproval";
    /// Paused by the user (Normal).
    pub const PAUSED: &str = "Paused";
    /// Resumed (Normal).
    pub const RESUMED: &str = "Resumed";
    /// The failure threshold paused the rollout (Warning), with the numbers.
    pub const AUTO_PAUSED: &str = "AutoPaused";
    /// Aborted (Warning).
    pub const ABORTED: &str = "Aborted";
    /// Every wave completed (Normal).
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// A one-shot annotation holds a value that cannot be acted on (Warning).
    pub const INVALID_ANNOTATION: &str = "InvalidAnnotation";
    /// The Rollout waits for an older active Rollout over the same devices (Normal), once
    /// when it starts waiting.
    pub const TARGET_CONFLICT: &str = crate::api::conditions::reason::TARGET_CONFLICT;
    /// A content item of the package is missing on the platform: the next wave holds (Warning).
    pub const CONTENT_MISSING: &str = crate::api::conditions::reason::CONTENT_MISSING;
}
