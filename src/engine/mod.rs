//! The rollout engine: pure functions that decide, from the platform's state of each device
//! and the Rollout's spec and persisted status, which devices to notify now, the new status,
//! the Events to emit and when to look again (docs/architecture.md §2, docs/rollouts.md).
//!
//! No I/O, no clock (`now` is a parameter), no Kubernetes client: the controller and
//! `simulate` both drive the same [`reconcile`]. Uses only [`crate::api`], [`crate::otau`] and
//! the platform's data types (`platform::types`, for [`DeviceObservation`]).
//!
//! ```text
//!  observations ──► DeviceIndex (40-byte entries, identity arena, stable order)
//!                        │
//!  spec + annotations + status + memory + now ──► reconcile ──► Decision {
//!                                                      notifications (identity, attempt, manifest),
//!                                                      success records (identity),
//!                                                      status, memory, events, requeue }
//! ```
//!
//! Rollout states (conditions of docs/architecture.md §8; the phase is derived from them):
//!
//! ```text
//!            ┌──────────── spec.paused / pause annotation ───────────┐
//!            ▼                                                       │
//!      PausedByUser ◄─────────────────────────────┐                  │
//!            │ unpause / resume                   │                  │
//!            ▼                                    │                  │
//!  (start)─► WaveInProgress ──all finished──► Soaking ──soak over──► WaitingForApproval
//!            ▲   │                                │                    │ approved
//!            │   │ threshold exceeded             └──── next wave ◄────┘
//!            │   ▼                                         │
//!            │  FailureThresholdExceeded (Paused+Stalled)   └─ last wave done ─► Complete
//!            │   │ resumeToken / resume annotation / spec change that passes
//!            └───┘
//!  any state ── spec.abort / abort annotation / onFailure: Abort ──► Aborted (terminal)
//! ```

mod blocked;
mod control;
mod counts;
mod device;
mod events;
mod failures;
mod foreign;
mod index;
mod memory;
mod notify;
mod observation;
mod order;
mod outcome;
mod policy;
mod reconcile;
mod record;
mod status;
mod waves;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::rollout::{RolloutSpec, RolloutStatus};

pub use blocked::{WriteShortfall, reconcile_blocked, writes_failed};
pub use control::ResumeRequest;
pub use device::{
    DeviceState, EvalContext, attempt_written_at, busy_until, evaluate, report_belongs_to_attempt,
    times_out_at,
};
pub use events::{EngineEvent, EventType, MAX_EVENT_MESSAGE_BYTES, ThresholdTrip, reason};
pub use foreign::{
    connector_manifests, created_before, newer_rollout_manifests, newer_rollout_packages,
};
pub use index::{
    DeviceEntry, DeviceIndex, IndexConfig, MAX_ATTEMPT, MAX_NOTES, Notified, ReportCode, SetKind,
};
pub use memory::{AbortCause, AbortRecord, EngineMemory, ThresholdBaseline};
pub use observation::{
    DeviceObservation, Micros, PartialUpdate, ResourceState, normalize_timestamp,
};
pub use order::{order_key, order_seed, rollout_marker};
pub use policy::{
    Judgement, ParsedPolicy, accepted_baseline, foreign_finished, judge, judge_started_waves,
    percent_text, started_waves_text,
};
pub use reconcile::reconcile;
pub use record::{SUCCESS_RECORD_TAG, success_record};
pub use status::{
    MAX_CONDITION_MESSAGE_BYTES, MAX_FAILURE_IDENTITY_BYTES, MAX_FAILURE_MESSAGE_BYTES, Overall,
    condition_message, set_conditions,
};
pub use waves::{cumulative_sizes, positional_wave};

/// Everything a step reads besides the device index and the time.
#[derive(Clone, Copy, Debug)]
pub struct EngineInput<'a> {
    /// The Rollout's namespace (part of the default order seed).
    pub namespace: &'a str,
    /// The Rollout's name (part of the default order seed).
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The spec.
    pub spec: &'a RolloutSpec,
    /// `metadata.annotations` (the one-shot actions).
    pub annotations: &'a BTreeMap<String, String>,
    /// `metadata.creationTimestamp` (µs), if known: no write of this Rollout precedes it, so it
    /// bounds when a first notification the index did not see written (acknowledged before an
    /// operator restart) was written, also when the status write that recorded the first
    /// wave's start was lost ([`attempt_written_at`]).
    pub created_at: Option<Micros>,
    /// The status as persisted by the previous step (default on the first).
    pub status: &'a RolloutStatus,
    /// The engine memory as persisted by the previous step (default on the first).
    pub memory: &'a EngineMemory,
    /// At most this many notifications in one decision (the caller's write batch); the devices
    /// beyond it stay pending and are due at the next step. `None`: every due device at once.
    /// Bounds the memory a step allocates when a wave of hundreds of thousands starts. `Some(0)`
    /// decides none: the status a caller writes after some of its writes failed, counting only
    /// the devices the index shows notified.
    pub max_notifications: Option<usize>,
}

/// Why nothing can be delivered right now (the prerequisites of docs/architecture.md §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// The SoftwarePackage is not Ready; the message says why.
    PackageNotReady(String),
    /// The package's IoTConnector is not Ready.
    ConnectorNotReady(String),
    /// Device state cannot be read from the platform right now.
    PlatformUnavailable(String),
    /// The first complete listing of the devices has not been read yet (a first visit shows
    /// every condition Unknown, `Initializing`).
    FirstListing(String),
    /// An older active Rollout targets some of the same devices; the message names it. Only
    /// before this Rollout's first write.
    TargetConflict(String),
    /// A content item of the package is not on the platform: the wave about to start (and
    /// every write) holds until the package is Ready again; the message names the item. The
    /// controller finds it out before a wave starts (one content listing per wave).
    ContentMissing(String),
}

/// One `config_otau` write to make now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The device identity.
    pub identity: String,
    /// The attempt this write is (1 = first notification).
    pub attempt: u32,
    /// The exact `config_otau` value to write (shared between notifications).
    pub manifest: Arc<str>,
}

/// How soon to poll the platform again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PollHint {
    /// Devices are in flight or writes are due: poll at the short interval.
    Active,
    /// Waiting for a person, a soak or late joiners: poll at the long interval.
    Idle,
    /// Nothing can change any more without a spec change (aborted, nothing in flight).
    None,
}

/// When to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requeue {
    /// The next moment something is due by time alone (a device timeout, the end of a soak),
    /// in µs; the caller requeues at the earlier of this and its poll interval.
    pub at: Option<Micros>,
    /// Which poll interval applies.
    pub poll: PollHint,
}

/// The outcome of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The `config_otau` writes to make now, in wave order.
    pub notifications: Vec<Notification>,
    /// The devices on which to write the success record now (identities, in wave order): they
    /// re-run an update they installed ([`DeviceIndex::success_record`]).
    pub success_records: Vec<String>,
    /// The new status, to be written whole.
    pub status: RolloutStatus,
    /// The new engine memory, to be persisted with the status.
    pub memory: EngineMemory,
    /// Events to emit.
    pub events: Vec<EngineEvent>,
    /// When to look again.
    pub requeue: Requeue,
}

/// Why a step could not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The spec holds something the engine cannot use (the message names the field).
    #[error("invalid Rollout spec: {0}")]
    InvalidSpec(String),
    /// The device index was built for other targets or another order seed: rebuild it.
    #[error("the device index does not match the Rollout: {0}; rebuild it from a full listing")]
    IndexMismatch(String),
}
