//! The Exosite over-the-air update (OTAU) schema: the `config_otau` manifest the operator writes
//! to devices, the `otau_in` status reports devices write back, and how those reports are
//! classified (exosite-platform.md §2), and how text a device wrote is made safe to show
//! ([`safe_text`]).
//!
//! Everything here is pure data and parsing: no I/O, and parsing never panics.

mod classify;
mod manifest;
mod report;
mod text;

pub use classify::{Classification, classify};
pub use manifest::{Manifest, ManifestError, Payload, PayloadItem, same_json};
pub use report::{Report, ReportError, Status, StatusClass};
pub use text::{ELLIPSIS, is_safe_text, needs_escape, safe_text};

/// The settable resource that carries the manifest (cloud → device).
pub const CONFIG_OTAU: &str = "config_otau";
/// The device's status report resource (device → cloud).
pub const OTAU_IN: &str = "otau_in";
/// The largest `config_otau` value the operator will build, in bytes: the strict legacy device2
/// string limit, so the value fits both documented limits (exosite-platform.md §1.2).
pub const MAX_MANIFEST_BYTES: usize = 65_536;
/// The first attempt number; a manifest without an `attempt` key is attempt 1.
pub const FIRST_ATTEMPT: u32 = 1;
