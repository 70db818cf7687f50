//! Networking shared by the operator and the emulator. It uses nothing else in the crate
//! (docs/architecture.md §4), so both sides may use it.
//!
//! - [`outbound`]: the one policy for every request to a URL a user's object names
//!   (IoTConnector endpoints, package sources): the address check against server-side request
//!   forgery, applied at every DNS resolution; no redirects followed by the platform client;
//!   timeouts; capped answer bodies.
//! - [`server`]: the one accept loop of every HTTP listener, with the limits that bound what a
//!   client can make a listener hold (docs/security.md, "Listener limits").

pub mod outbound;
pub mod server;
