//! otau-operator: a Kubernetes operator that rolls software packages out to fleets of IoT
//! devices on the Exosite platform (Murano IoT Connector + ExoSense), in waves, and pauses by
//! itself when devices start failing.
//!
//! Code map (who may use whom; docs/architecture.md §4 is the reference):
//! - [`api`]: the CRD types. Uses nothing else in the crate.
//! - [`otau`]: the Exosite OTAU schema. Uses nothing else in the crate.
//! - [`engine`]: the rollout logic, pure. Uses [`api`], [`otau`], and the [`platform`]'s data
//!   types for the one identity-to-observation mapping.
//! - [`net`]: the outbound HTTP policy every request to a user-named URL follows. Uses
//!   nothing else in the crate.
//! - [`platform`]: the Exosite platform client (trait + reqwest implementation). Uses [`otau`]
//!   and [`net`].
//! - [`emulator`]: a local Exosite platform. Uses [`otau`], [`net`], and the [`platform`] trait
//!   and its types for the in-process adapter.
//! - [`controller`]: the kube-runtime controllers and the operator runtime. Uses [`api`],
//!   [`otau`], [`engine`], [`platform`], [`net`].
//! - [`net`]: the outbound HTTP policy and the one accept loop of every HTTP listener, with its
//!   limits. Uses nothing else in the crate; [`platform`], [`controller`], [`emulator`] and
//!   [`plugin`] use it.
//! - [`plugin`]: the `kubectl otau` plugin. Uses [`api`], [`otau`], [`platform`], [`engine`]
//!   (its identity-to-observation mapping, so `devices` names states exactly as the operator
//!   counts them).
//!
//! Outside the library: `src/main.rs` and `src/cmd/` (the `otau-operator` subcommands) may use
//! everything; `src/bin/kubectl-otau.rs` only wires [`plugin`]; the benchmark programs in
//! `benches/` use the public API and are never installed.
#![forbid(unsafe_code)]

pub mod api;
pub mod controller;
pub mod emulator;
pub mod engine;
pub mod net;
pub mod otau;
pub mod platform;
pub mod plugin;
