//! What the engine is told about one device, and the one mapping from what the platform lists
//! (exosite-platform.md §5.2, §5.3) to it: [`DeviceObservation`] from a listed
//! [`Identity`], [`PartialUpdate`] for what one pushed event or one of our own writes changed.
//! The poller, push, `simulate` and `kubectl otau devices` all go through here, so each names
//! a device's state exactly as the engine counts it.

use crate::api::DeviceTag;
use crate::platform::types::Identity;
pub use crate::platform::types::ResourceState;

/// Microseconds since the Unix epoch, the platform's unit for state timestamps.
pub type Micros = i64;

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

impl From<Identity> for DeviceObservation {
    /// One listed identity: its tags, and each OTAU resource unless it holds nothing at all.
    fn from(identity: Identity) -> Self {
        let state = identity.state;
        Self {
            identity: identity.identity,
            tags: identity
                .tags
                .into_iter()
                .map(|t| DeviceTag::new(t.name, t.value))
                .collect(),
            config_otau: holding_something(state.config_otau),
            otau_in: holding_something(state.otau_in),
        }
    }
}

impl From<&Identity> for DeviceObservation {
    /// As [`From<Identity>`], for a listing the caller keeps.
    fn from(identity: &Identity) -> Self {
        Self {
            identity: identity.identity.clone(),
            tags: identity
                .tags
                .iter()
                .map(|t| DeviceTag::new(t.name.clone(), t.value.clone()))
                .collect(),
            config_otau: holding_something(identity.state.config_otau.clone()),
            otau_in: holding_something(identity.state.otau_in.clone()),
        }
    }
}

/// A resource that holds neither a set nor a reported value is no resource at all: the
/// device never had one written.
fn holding_something(state: ResourceState) -> Option<ResourceState> {
    (state.set.is_some() || state.reported.is_some()).then_some(state)
}

/// What changed about one device that the index already holds: our own `config_otau` write
/// (or the device's ack), or a pushed `otau_in` report. Folded by
/// [`super::DeviceIndex::apply_partial`], newer values only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialUpdate {
    /// A new `config_otau` set value at a time (µs).
    pub config_otau: Option<(String, Micros)>,
    /// A new `otau_in` report, as the device wrote it, at a time (µs).
    pub otau_in: Option<(String, Micros)>,
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

    #[test]
    fn a_listed_identity_becomes_one_observation_either_way() {
        use crate::platform::types::{IdentityState, Tag};
        let identity = Identity {
            identity: "d1".into(),
            status: "provisioned".into(),
            tags: vec![Tag {
                name: "region".into(),
                value: "eu".into(),
            }],
            state: IdentityState {
                config_otau: ResourceState {
                    set: Some("x".into()),
                    reported: None,
                    timestamp: Some(5),
                },
                otau_in: ResourceState {
                    set: None,
                    reported: None,
                    timestamp: Some(9),
                },
            },
            created: Some(1),
        };
        let borrowed = DeviceObservation::from(&identity);
        let owned = DeviceObservation::from(identity);
        assert_eq!(borrowed, owned);
        assert_eq!(owned.identity, "d1");
        assert_eq!(owned.tags, vec![DeviceTag::new("region", "eu")]);
        assert_eq!(owned.config_otau, Some(ResourceState::set("x", 5)));
        assert_eq!(owned.otau_in, None, "a timestamp alone holds nothing");
    }
}
