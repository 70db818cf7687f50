//! The MQTT listeners' metrics, registered in the emulator's `/metrics` registry (prefix
//! `otau_emulator_`):
//!
//! | Metric | Labels |
//! |---|---|
//! | `otau_emulator_mqtt_connections` (gauge) | `listener` (`mqtt`, `mqtts`): sessions open now |
//! | `otau_emulator_mqtt_connects_total` | `listener`, `result` (`accepted`, `anonymous`, `bad_credentials`, `bad_protocol`, `unknown_connector`) |
//! | `otau_emulator_mqtt_closed_total` | `listener`, `reason` ([`Close::label`]) |
//! | `otau_emulator_mqtt_messages_total` | `direction` (`in`, `out`), `kind` (`resource`, `batch`, `provision`, `custom`, `set`, `replay`) |
//! | `otau_emulator_mqtt_http_connections_total` | none: HTTP/1.1 connections served on the TLS MQTT port by ALPN |

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Why the server ended a session: the `reason` label of `otau_emulator_mqtt_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The device sent DISCONNECT.
    Disconnect,
    /// The device closed the socket (or it failed).
    PeerClosed,
    /// Over the connection cap: accepted and closed at once.
    ConnectionCap,
    /// The CONNECT was refused: bad credentials (CONNACK 4), a protocol other than MQTT 3.1.1
    /// (CONNACK 1), or an unknown connector (closed without CONNACK).
    ConnectRefused,
    /// No complete CONNECT within the connect timeout (TLS handshake included).
    ConnectTimeout,
    /// Nothing received for 1.5 × the keep-alive.
    KeepAliveTimeout,
    /// A packet over the largest packet size.
    PacketTooLarge,
    /// A packet the codec cannot read, or one out of place (a second CONNECT, a server packet).
    Malformed,
    /// A PUBLISH with QoS 2.
    Qos2,
    /// A value over the resource value size, or a batch the model refused.
    ValueRefused,
    /// An anonymous session published something other than `$provision/<identity>`, or its
    /// activation failed.
    ProvisionRefused,
    /// The device did not read what the server sent in time.
    WriteTimeout,
    /// The listener stops.
    Stopping,
    /// A fault rule on `mqtt.connect`, `mqtt.publish` or `mqtt.deliver` dropped or refused it
    /// (the emulator's fault injection, `--fault`).
    Fault,
}

impl Close {
    /// Every reason, in label order.
    pub const ALL: [Close; 14] = [
        Close::Disconnect,
        Close::PeerClosed,
        Close::ConnectionCap,
        Close::ConnectRefused,
        Close::ConnectTimeout,
        Close::KeepAliveTimeout,
        Close::PacketTooLarge,
        Close::Malformed,
        Close::Qos2,
        Close::ValueRefused,
        Close::ProvisionRefused,
        Close::WriteTimeout,
        Close::Stopping,
        Close::Fault,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Close::Disconnect => "disconnect",
            Close::PeerClosed => "peer_closed",
            Close::ConnectionCap => "connection_cap",
            Close::ConnectRefused => "connect_refused",
            Close::ConnectTimeout => "connect_timeout",
            Close::KeepAliveTimeout => "keep_alive_timeout",
            Close::PacketTooLarge => "packet_too_large",
            Close::Malformed => "malformed",
            Close::Qos2 => "qos2",
            Close::ValueRefused => "value_refused",
            Close::ProvisionRefused => "provision_refused",
            Close::WriteTimeout => "write_timeout",
            Close::Stopping => "stopping",
            Close::Fault => "fault",
        }
    }

    /// Whether the device ended the session in order (a Will is then discarded).
    pub fn is_orderly(self) -> bool {
        matches!(self, Close::Disconnect)
    }
}

/// The MQTT metrics; clones share the series.
#[derive(Debug, Clone)]
pub struct MqttMetrics {
    connections: IntGaugeVec,
    connects: IntCounterVec,
    closed: IntCounterVec,
    messages: IntCounterVec,
    http: IntCounter,
}

impl MqttMetrics {
    /// The metrics, not registered anywhere yet.
    pub fn new() -> MqttMetrics {
        let connections = IntGaugeVec::new(
            Opts::new("mqtt_connections", "MQTT connections open now, by listener"),
            &["listener"],
        )
        .expect("valid metric");
        let connects = IntCounterVec::new(
            Opts::new(
                "mqtt_connects_total",
                "MQTT CONNECTs by listener and result",
            ),
            &["listener", "result"],
        )
        .expect("valid metric");
        let closed = IntCounterVec::new(
            Opts::new(
                "mqtt_closed_total",
                "MQTT connections ended, by listener and reason",
            ),
            &["listener", "reason"],
        )
        .expect("valid metric");
        let messages = IntCounterVec::new(
            Opts::new(
                "mqtt_messages_total",
                "MQTT PUBLISH packets by direction (in: from devices, out: to devices) and kind",
            ),
            &["direction", "kind"],
        )
        .expect("valid metric");
        let http = IntCounter::new(
            "mqtt_http_connections_total",
            "HTTP/1.1 connections served on the TLS MQTT port (ALPN http/1.1)",
        )
        .expect("valid metric");
        MqttMetrics {
            connections,
            connects,
            closed,
            messages,
            http,
        }
    }

    /// Registers every series in `registry` (the emulator's `/metrics` registry).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.connections.clone()))?;
        registry.register(Box::new(self.connects.clone()))?;
        registry.register(Box::new(self.closed.clone()))?;
        registry.register(Box::new(self.messages.clone()))?;
        registry.register(Box::new(self.http.clone()))
    }

    /// Counts one open connection of `listener` until the guard drops.
    pub(crate) fn open(&self, listener: &str) -> OpenConnection {
        let gauge = self.connections.with_label_values(&[listener]);
        gauge.inc();
        OpenConnection(gauge)
    }

    /// Connections `listener` holds open now.
    pub fn connections(&self, listener: &str) -> i64 {
        self.connections.with_label_values(&[listener]).get()
    }

    pub(crate) fn connect(&self, listener: &str, result: &str) {
        self.connects.with_label_values(&[listener, result]).inc();
    }

    /// CONNECTs of `listener` with `result` so far.
    pub fn connects(&self, listener: &str, result: &str) -> u64 {
        self.connects.with_label_values(&[listener, result]).get()
    }

    pub(crate) fn closed(&self, listener: &str, reason: Close) {
        self.closed
            .with_label_values(&[listener, reason.label()])
            .inc();
    }

    /// Sessions of `listener` ended for `reason` so far.
    pub fn closed_count(&self, listener: &str, reason: Close) -> u64 {
        self.closed
            .with_label_values(&[listener, reason.label()])
            .get()
    }

    pub(crate) fn message(&self, direction: &str, kind: &str) {
        self.messages.with_label_values(&[direction, kind]).inc();
    }

    /// PUBLISH packets of `direction` and `kind` so far.
    pub fn messages(&self, direction: &str, kind: &str) -> u64 {
        self.messages.with_label_values(&[direction, kind]).get()
    }

    pub(crate) fn http_connection(&self) {
        self.http.inc();
    }

    /// HTTP connections served on the TLS MQTT port so far.
    pub fn http_connections(&self) -> u64 {
        self.http.get()
    }
}

impl Default for MqttMetrics {
    fn default() -> Self {
        MqttMetrics::new()
    }
}

/// One open connection in the gauge.
pub(crate) struct OpenConnection(prometheus::IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
