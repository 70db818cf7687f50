//! Network policy shared by the parts of the operator that speak HTTP.
//!
//! - [`outbound`]: the one policy for every request to a URL a user's object names
//!   (IoTConnector endpoints, package sources): the address check against server-side request
//!   forgery, applied at every DNS resolution; no redirects followed by the platform client;
//!   timeouts; capped answer bodies.
//!
//! Uses nothing else in the crate (docs/architecture.md §4).

pub mod outbound;
