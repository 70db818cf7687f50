//! The Kubernetes Events a step asks the caller to emit.

/// Event type, as in Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Normal progress.
    Normal,
    /// Something a person should look at.
    Warning,
}

/// One Event to emit: a reason (CamelCase, stable) and a message with counts, never lists of
/// devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// The reason, one of [`reason`].
    pub reason: &'static str,
    /// What happened, with the numbers.
    pub message: String,
}

impl EngineEvent {
    /// A Normal event.
    pub fn normal(reason: &'static str, message: String) -> Self {
        Self {
            type_: EventType::Normal,
            reason,
            message,
        }
    }

    /// A Warning event.
    pub fn warning(reason: &'static str, message: String) -> Self {
        Self {
            type_: EventType::Warning,
            reason,
            message,
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
}
