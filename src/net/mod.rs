//! Networking shared by the operator and the emulator. It uses nothing else in the crate
//! (docs/architecture.md §4), so both sides may use it.
//!
//! - [`server`]: the one accept loop of every HTTP listener, with the limits that bound what a
//!   client can make a listener hold (docs/security.md, "Listener limits").

pub mod server;
