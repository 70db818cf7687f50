//! Device2 events (exosite-platform.md §6.1), as the model raises them and the webhook
//! delivery sends them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One device2 event, serialised exactly as the contract's `data_in` example
/// (`type`, `identity`, `timestamp`, `ip`, `connection_id`, `payload`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    /// Event type: `data_in`, `provisioned`, `deleted`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The device identity.
    pub identity: String,
    /// When the event happened, µs since the epoch.
    pub timestamp: i64,
    /// The device's address as the platform saw it (empty for in-process devices).
    pub ip: String,
    /// Request or connection id.
    pub connection_id: String,
    /// For `data_in`: one entry per write, with the aliases written.
    pub payload: Vec<EventPayload>,
}

/// One write inside a `data_in` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPayload {
    /// Alias → value written.
    pub values: BTreeMap<String, String>,
    /// µs since the epoch.
    pub timestamp: i64,
}

/// A device event together with the connector it happened on (the connector is not part of the
/// wire body: webhook delivery names it in the URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorEvent {
    /// The IoT Connector (product) id.
    pub connector: String,
    /// The event.
    pub event: DeviceEvent,
}

/// The `data_in` event type name.
pub const DATA_IN: &str = "data_in";
/// The `publish` event type name: a device's MQTT message on a topic that is not a resource
/// (exosite-platform.md §4.3); its one payload entry maps the topic to the message.
pub const PUBLISH: &str = "publish";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_in_serialises_in_contract_shape() {
        let ev = DeviceEvent {
            kind: DATA_IN.into(),
            identity: "00AB01".into(),
            timestamp: 1_700_000_000_000_000,
            ip: "203.0.113.7".into(),
            connection_id: "c-1".into(),
            payload: vec![EventPayload {
                values: BTreeMap::from([(
                    "otau_in".to_string(),
                    r#"{"version":"1.0.2","status":"INSTALLED_VERSION","message":""}"#.to_string(),
                )]),
                timestamp: 1_700_000_000_000_000,
            }],
        };
        let body = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            body,
            r#"{"type":"data_in","identity":"00AB01","timestamp":1700000000000000,"ip":"203.0.113.7","connection_id":"c-1","payload":[{"values":{"otau_in":"{\"version\":\"1.0.2\",\"status\":\"INSTALLED_VERSION\",\"message\":\"\"}"},"timestamp":1700000000000000}]}"#
        );
        assert_eq!(body.len(), 248, "the §6.3 test vector body is 248 bytes");
    }
}
