//! Simulated device fleets (exosite-platform.md §2.2 and §9 "Simulated
//! devices").
//!
//! - [`profile`]: behaviour profiles read from YAML.
//! - [`device`]: one device as a pure event-driven state machine (no I/O, 32 bytes of state).
//! - [`core`]: all devices of a fleet, their identities, the catalog of versions and manifests,
//!   and one timer queue for all of them.
//! - [`in_process`]: drives a core against a model connector, in virtual or real time
//!   ([`Fleet::start`] runs one on its own thread for `otau-operator emulator`).
//! - [`http`]: K devices as real clients of the device API over sockets: HTTP, or MQTT for the
//!   share a profile puts there ([`mqtt`]).
//!
//! Randomness is seeded per device from (fleet seed, identity), and per run from the manifest's
//! (version, attempt), so the order in which events arrive never changes an outcome and the same
//! seed repeats a run exactly.

pub mod catalog;
pub mod core;
pub mod device;
pub mod http;
pub mod in_process;
pub mod mqtt;
pub mod profile;
pub mod runner;
pub mod seed;
pub mod summary;
pub mod timers;

pub use self::core::{FleetCore, Protocol};
pub use device::{AckStyle, Action, Input, Outcome, Phase};
pub use http::{
    HttpFleet, HttpFleetConfig, HttpFleetHandle, MAX_HTTP_DEVICES, Registration,
    raise_open_files_limit,
};
pub use in_process::InProcessFleet;
pub use mqtt::{MqttDeviceConfig, MqttFaults, MqttTlsPort};
pub use profile::{Profile, ProfileError};
pub use runner::{Fleet, FleetError, FleetHandle, FleetOptions};
pub use summary::FleetSummary;
