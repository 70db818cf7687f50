//! What the engine is told about one device: the platform layer maps its identity listing
//! (exosite-platform.md §5.2, §5.3) into [`DeviceObservation`]s.

use crate::api::DeviceTag;

/// Microseconds since the Unix epoch, the platform's unit for state timestamps.
pub type Micros = i64;

/// One resource of one device as the management API lists it: `{set, reported, timestamp}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceState {
    /// The `set` value (what the cloud or the device last wrote), if any.
    pub set: Option<String>,
    /// The `reported` value (what the device last wrote), if any.
    pub reported: Option<String>,
    /// Time of the last write of either value, by any writer. Microseconds on the wire;
    /// seconds and milliseconds are accepted too (see [`normalize_timestamp`]).
    pub timestamp: i64,
}

impl ResourceState {
    /// A resource whose `set` value is `value` (written by the cloud) at `timestamp` µs.
    pub fn set(value: impl Into<String>, timestamp: Micros) -> Self {
        Self {
            set: Some(value.into()),
            reported: None,
            timestamp,
        }
    }

    /// A resource the device wrote (`set` and `reported` both `value`) at `timestamp` µs.
    pub fn written_by_device(value: impl Into<String>, timestamp: Micros) -> Self {
        let value = value.into();
        Self {
            set: Some(value.clone()),
            reported: Some(value),
            timestamp,
        }
    }
}

/// One device as observed on the platform, the only per-device input of the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceObservation {
    /// The device identity, unique within the connector.
    pub identity: String,
    /// The device's identity tags (device2 `tags`).
    pub tags: Vec<DeviceTag>,
    /// The `config_otau` resource: its `set` value says which manifest (and attempt) the
    /// device was notified with, its timestamp starts the device timeout.
    pub config_otau: Option<ResourceState>,
    /// The `otau_in` resource: the device's latest status report.
    pub otau_in: Option<ResourceState>,
}

impl DeviceObservation {
    /// A device with the given identity and nothing else known yet.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            ..Self::default()
        }
    }
}

/// Brings a platform timestamp to microseconds the way connector templates do
/// (exosite-platform.md §1.3): below 1e11 it is seconds, below 1e14 milliseconds, otherwise
/// microseconds. Negative values become 0.
pub fn normalize_timestamp(raw: i64) -> Micros {
    if raw <= 0 {
        0
    } else if raw < 100_000_000_000 {
        raw.saturating_mul(1_000_000)
    } else if raw < 100_000_000_000_000 {
        raw.saturating_mul(1_000)
    } else {
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_seconds_milliseconds_and_microseconds_become_microseconds() {
        let cases = [
            (0, 0),
            (-5, 0),
            (1_700_000_000, 1_700_000_000_000_000),
            (1_700_000_000_123, 1_700_000_000_123_000),
            (1_700_000_000_123_456, 1_700_000_000_123_456),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_timestamp(raw), expected, "{raw}");
        }
    }
}
