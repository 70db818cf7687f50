//! A faithful local Exosite platform (Murano IoT Connector + ExoSense subset), built against the
//! project's platform contract (exosite-platform.md). It serves the device HTTP API, the
//! management API, the content store, ExoSense GraphQL and device2 event push, and runs fleets of
//! simulated devices. It uses [`crate::otau`] only: never the engine or the controller.

pub mod admin;
pub mod clock;
pub mod device_api;
pub mod events;
pub mod faults;
pub mod fleet;
pub mod graphql;
pub mod management;
pub mod model;
pub mod mqtt;
pub mod object_store;
pub mod platform_adapter;
pub mod server;
pub mod tls;
pub mod webhook;
