//! otau-operator: a Kubernetes operator that rolls software packages out to fleets of IoT
//! devices on the Exosite platform (Murano IoT Connector + ExoSense), in waves, and pauses by
//! itself when devices start failing.
//!
//! Code map (who may use whom; see docs/architecture.md):
//! - [`api`]: the CRD types. Uses nothing else in the crate.
//! - [`otau`]: the Exosite OTAU schema. Uses nothing else in the crate.
//! - [`emulator`]: a local Exosite platform. Uses [`otau`] only.
//! - [`engine`]: the rollout logic, pure. Uses [`api`] and [`otau`] only.
//! - [`platform`]: the Exosite platform client (trait + reqwest implementation). Uses [`otau`] only.
//! - [`controller`]: the kube-runtime controllers and the operator runtime. Uses [`api`], [`otau`], [`platform`].
//! - [`plugin`]: the `kubectl otau` plugin. Uses [`api`], [`otau`], [`platform`], [`engine`], and the controller's identity-to-observation mapping (so `devices` names states exactly as the operator counts them).
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod emulator;
pub mod engine;
pub mod otau;
pub mod platform;
pub mod plugin;
