//! The Exosite semantics of the device MQTT API (exosite-platform.md §4), apart from any
//! socket: what a CONNECT's credentials mean, what a device's topic means, the `$resource.batch`
//! payload with its timestamps normalised by magnitude, the topic a cloud write is published
//! on, and the QoS decisions. The packets themselves are encoded and decoded by `rumqttc`'s
//! codec; everything here is our own reading of the contract.

use rumqttc::mqttbytes::QoS;

/// Topic prefix of device resources, both ways.
pub const RESOURCE_PREFIX: &str = "$resource/";
/// Topic of several timestamped values at once.
pub const BATCH_TOPIC: &str = "$resource.batch";
/// Topic prefix of provisioning, both ways.
pub const PROVISION_PREFIX: &str = "$provision/";
/// Largest number of entries in one `$resource.batch`.
pub const MAX_BATCH_ENTRIES: usize = 1_000;

/// What a CONNECT's user name and password ask for (exosite-platform.md §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectAuth {
    /// No user name and no (or an empty) password: a session that may only provision.
    Anonymous,
    /// Empty (or no) user name, the token as password.
    Token(String),
    /// The identity as user name, its password (or token) as password.
    Password {
        /// The identity.
        identity: String,
        /// The password.
        password: String,
    },
}

/// Reads the credentials of a CONNECT: `login` is its (user name, password), absent when the
/// CONNECT carries neither.
pub fn connect_auth(login: Option<(&str, &str)>) -> ConnectAuth {
    match login {
        None | Some(("", "")) => ConnectAuth::Anonymous,
        Some(("", token)) => ConnectAuth::Token(token.to_string()),
        Some((identity, password)) => ConnectAuth::Password {
            identity: identity.to_string(),
            password: password.to_string(),
        },
    }
}

/// What a device's PUBLISH topic means (exosite-platform.md §4.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTopic<'a> {
    /// `$provision/<identity>`: activate this identity (anonymous sessions only).
    Provision(&'a str),
    /// `$resource/<alias>`: a device write of one resource.
    Resource(&'a str),
    /// `$resource.batch`: several timestamped values.
    Batch,
    /// Any other topic: a custom message, raising the device2 `publish` event.
    Custom(&'a str),
}

/// The meaning of a device's topic. A `$resource/` or `$provision/` topic with an empty or
/// multi-level remainder is a custom topic (no alias or identity contains `/`).
pub fn device_topic(topic: &str) -> DeviceTopic<'_> {
    if topic == BATCH_TOPIC {
        return DeviceTopic::Batch;
    }
    let single = |rest: &str| !rest.is_empty() && !rest.contains('/');
    if let Some(alias) = topic.strip_prefix(RESOURCE_PREFIX)
        && single(alias)
    {
        return DeviceTopic::Resource(alias);
    }
    if let Some(identity) = topic.strip_prefix(PROVISION_PREFIX)
        && single(identity)
    {
        return DeviceTopic::Provision(identity);
    }
    DeviceTopic::Custom(topic)
}

/// The topic a cloud write of `alias` at `micros` is published on: `$resource/<alias>/<µs>`.
pub fn set_topic(alias: &str, micros: i64) -> String {
    format!("{RESOURCE_PREFIX}{alias}/{micros}")
}

/// The topic of the provisioning reply: `$provision/<identity>` (exosite-platform.md §4.3).
pub fn provision_topic(identity: &str) -> String {
    format!("{PROVISION_PREFIX}{identity}")
}

/// A time of uncertain unit normalised to µs by magnitude, as the connector templates do
/// (exosite-platform.md §1.3): `< 1e11` is seconds, `< 1e14` milliseconds, else µs.
pub fn normalise_micros(t: f64) -> Option<i64> {
    if !t.is_finite() || t < 0.0 {
        return None;
    }
    let micros = if t < 1e11 {
        t * 1e6
    } else if t < 1e14 {
        t * 1e3
    } else {
        t
    };
    if micros > i64::MAX as f64 {
        return None;
    }
    Some(micros as i64)
}

/// Why a `$resource.batch` payload is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not a JSON array of objects with `timestamp` and `values`.
    #[error("the batch is not a JSON array of {{timestamp, values}} objects: {0}")]
    Shape(String),
    /// More than [`MAX_BATCH_ENTRIES`] entries.
    #[error("the batch has more than {MAX_BATCH_ENTRIES} entries")]
    TooMany,
}

/// One entry of a batch: when (µs), and the (alias, value) pairs.
pub type BatchEntry = (i64, Vec<(String, String)>);

/// Parses a `$resource.batch` payload (exosite-platform.md §4.3): a JSON array of
/// `{"timestamp": <s, ms or µs>, "values": {alias: value}}`. A string value is taken as it is;
/// any other JSON value as its JSON text (`98.7`, `true`). A missing timestamp is `now_micros`.
pub fn parse_batch(payload: &[u8], now_micros: i64) -> Result<Vec<BatchEntry>, BatchError> {
    let shape = |m: &str| BatchError::Shape(m.to_string());
    let parsed: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| shape(&format!("not JSON ({e})")))?;
    let serde_json::Value::Array(items) = parsed else {
        return Err(shape("not an array"));
    };
    if items.len() > MAX_BATCH_ENTRIES {
        return Err(BatchError::TooMany);
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let serde_json::Value::Object(mut entry) = item else {
            return Err(shape("an entry is not an object"));
        };
        let at = match entry.get("timestamp") {
            None | Some(serde_json::Value::Null) => now_micros,
            Some(t) => t
                .as_f64()
                .and_then(normalise_micros)
                .ok_or_else(|| shape("a timestamp is not a non-negative number"))?,
        };
        let Some(serde_json::Value::Object(values)) = entry.remove("values") else {
            return Err(shape("an entry has no `values` object"));
        };
        let values = values
            .into_iter()
            .map(|(alias, v)| match v {
                serde_json::Value::String(s) => (alias, s),
                other => (alias, other.to_string()),
            })
            .collect();
        out.push((at, values));
    }
    Ok(out)
}

/// What the server does with a device's PUBLISH of this QoS (exosite-platform.md §4.2: QoS 0
/// and 1 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishQos {
    /// QoS 0: handled, nothing answered.
    Handle,
    /// QoS 1: handled, then answered with PUBACK.
    HandleAndAck,
    /// QoS 2: refused. MQTT 3.1.1 has no negative acknowledgement, and answering PUBREC would
    /// promise exactly-once delivery the platform does not offer; the message is dropped and
    /// the connection closed, so the device sees the failure at once.
    Refuse,
}

/// The decision for a device PUBLISH of `qos`.
pub fn publish_qos(qos: QoS) -> PublishQos {
    match qos {
        QoS::AtMostOnce => PublishQos::Handle,
        QoS::AtLeastOnce => PublishQos::HandleAndAck,
        QoS::ExactlyOnce => PublishQos::Refuse,
    }
}

/// The QoS granted to a SUBSCRIBE filter requesting `qos`: at most 1 (QoS 2 is downgraded,
/// as MQTT 3.1.1 allows a server to do). The filter itself is ignored: every device receives
/// its own set values with or without a subscription (exosite-platform.md §4.2).
pub fn granted_qos(qos: QoS) -> QoS {
    match qos {
        QoS::ExactlyOnce => QoS::AtLeastOnce,
        other => other,
    }
}

/// The keep-alive a session is held to: 1.5 × the CONNECT's keep-alive (MQTT 3.1.1, section 3.1.2.10);
/// a keep-alive of 0 (none) gets `idle_limit`, so an idle connection cannot hold its slot
/// forever.
pub fn keep_alive_limit(
    keep_alive_secs: u16,
    idle_limit: std::time::Duration,
) -> std::time::Duration {
    if keep_alive_secs == 0 {
        idle_limit
    } else {
        std::time::Duration::from_millis(u64::from(keep_alive_secs) * 1500)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn credentials_of_each_documented_auth_mode() {
        assert_eq!(connect_auth(None), ConnectAuth::Anonymous);
        assert_eq!(connect_auth(Some(("", ""))), ConnectAuth::Anonymous);
        assert_eq!(
            connect_auth(Some(("", "tok"))),
            ConnectAuth::Token("tok".into())
        );
        assert_eq!(
            connect_auth(Some(("dev1", "pw"))),
            ConnectAuth::Password {
                identity: "dev1".into(),
                password: "pw".into()
            }
        );
    }

    #[test]
    fn device_topics_follow_the_topic_table() {
        assert_eq!(
            device_topic("$provision/dev1"),
            DeviceTopic::Provision("dev1")
        );
        assert_eq!(
            device_topic("$resource/otau_in"),
            DeviceTopic::Resource("otau_in")
        );
        assert_eq!(device_topic("$resource.batch"), DeviceTopic::Batch);
        assert_eq!(
            device_topic("telemetry/x"),
            DeviceTopic::Custom("telemetry/x")
        );
        assert_eq!(
            device_topic("$resource/"),
            DeviceTopic::Custom("$resource/")
        );
        assert_eq!(
            device_topic("$resource/config_otau/123"),
            DeviceTopic::Custom("$resource/config_otau/123")
        );
        assert_eq!(
            device_topic("$provision/"),
            DeviceTopic::Custom("$provision/")
        );
    }

    #[test]
    fn cloud_writes_are_published_with_the_microsecond_suffix() {
        assert_eq!(
            set_topic("config_io", 1_561_622_694_601_000),
            "$resource/config_io/1561622694601000"
        );
        assert_eq!(provision_topic("dev1"), "$provision/dev1");
    }

    #[test]
    fn batch_timestamps_are_normalised_by_magnitude() {
        assert_eq!(
            normalise_micros(1_526_046_488.0),
            Some(1_526_046_488_000_000)
        );
        assert_eq!(
            normalise_micros(1_526_046_488_123.0),
            Some(1_526_046_488_123_000)
        );
        assert_eq!(
            normalise_micros(1_526_046_488_123_456.0),
            Some(1_526_046_488_123_456)
        );
        assert_eq!(normalise_micros(-1.0), None);
        assert_eq!(normalise_micros(f64::NAN), None);
        assert_eq!(normalise_micros(1e300), None);
    }

    #[test]
    fn the_guide_batch_example_parses_in_seconds_and_microseconds() {
        let seconds = br#"[{"timestamp": 1526046488, "values": {"test": "some test data"}},
            {"timestamp": 1526046488, "values": {"temperature": 98.7}}]"#;
        let parsed = parse_batch(seconds, 7).unwrap();
        assert_eq!(
            parsed,
            vec![
                (
                    1_526_046_488_000_000,
                    vec![("test".to_string(), "some test data".to_string())]
                ),
                (
                    1_526_046_488_000_000,
                    vec![("temperature".to_string(), "98.7".to_string())]
                ),
            ]
        );
        let micros =
            br#"[{"timestamp": 1526046488000001, "values": {"a": "1"}}, {"values": {"b": true}}]"#;
        assert_eq!(
            parse_batch(micros, 7).unwrap(),
            vec![
                (
                    1_526_046_488_000_001,
                    vec![("a".to_string(), "1".to_string())]
                ),
                (7, vec![("b".to_string(), "true".to_string())]),
            ]
        );
    }

    #[test]
    fn malformed_batches_are_refused() {
        assert!(matches!(parse_batch(b"{}", 0), Err(BatchError::Shape(_))));
        assert!(matches!(parse_batch(b"[1]", 0), Err(BatchError::Shape(_))));
        assert!(matches!(
            parse_batch(br#"[{"timestamp": "x", "values": {}}]"#, 0),
            Err(BatchError::Shape(_))
        ));
        assert!(matches!(
            parse_batch(br#"[{"timestamp": 1}]"#, 0),
            Err(BatchError::Shape(_))
        ));
        assert!(matches!(parse_batch(b"\xff", 0), Err(BatchError::Shape(_))));
        let many = format!(
            "[{}]",
            vec![r#"{"values":{}}"#; MAX_BATCH_ENTRIES + 1].join(",")
        );
        assert_eq!(parse_batch(many.as_bytes(), 0), Err(BatchError::TooMany));
    }

    #[test]
    fn qos_two_is_refused_on_publish_and_downgraded_on_subscribe() {
        assert_eq!(publish_qos(QoS::AtMostOnce), PublishQos::Handle);
        assert_eq!(publish_qos(QoS::AtLeastOnce), PublishQos::HandleAndAck);
        assert_eq!(publish_qos(QoS::ExactlyOnce), PublishQos::Refuse);
        assert_eq!(granted_qos(QoS::ExactlyOnce), QoS::AtLeastOnce);
        assert_eq!(granted_qos(QoS::AtLeastOnce), QoS::AtLeastOnce);
        assert_eq!(granted_qos(QoS::AtMostOnce), QoS::AtMostOnce);
    }

    #[test]
    fn keep_alive_is_enforced_at_one_and_a_half_times() {
        let idle = Duration::from_secs(450);
        assert_eq!(keep_alive_limit(60, idle), Duration::from_secs(90));
        assert_eq!(keep_alive_limit(1, idle), Duration::from_millis(1500));
        assert_eq!(keep_alive_limit(0, idle), idle);
    }
}
