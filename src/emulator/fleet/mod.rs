//! Simulated device fleets (issue 4 item 6; exosite-platform.md §2.2 and §9 "Simulated
//! devices").
//!
//! - [`profile`]: behaviour profiles read from YAML.
//! - [`device`]: one device as a pure event-driven state machine (no I/O, 32 bytes of state).
//! - [`core`]: all devices of a fleet, their identities, the catalog of versions and manifests,
//!   and one timer queue for all of them.
//!
//! Randomness is seeded per device from (fleet seed, identity), and per run from the manifest's
//! (version, attempt), so the order in which events arrive never changes an outcome and the same
//! seed repeats a run exactly.

pub mod catalog;
pub mod core;
pub mod device;
pub mod profile;
pub mod seed;
pub mod timers;

pub use self::core::FleetCore;
pub use device::{AckStyle, Action, Input, Outcome, Phase};
pub use profile::{Profile, ProfileError};
