//! What the engine must remember between steps that the platform cannot tell it: the Rollout's
//! `status.decisions` (see docs/rollouts.md "Status fields"). The types live in the API
//! ([`crate::api::rollout_decisions`]) because they are part of the Rollout's status; the engine
//! calls them its memory. It is small and bounded (at most one baseline per wave), never per
//! device.

pub use crate::api::rollout_decisions::{
    AbortCause, AbortRecord, RolloutDecisions as EngineMemory, ThresholdBaseline,
};
