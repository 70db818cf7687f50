//! The MQTT side of a socket-fleet device (exosite-platform.md §4): one MQTT 3.1.1 connection
//! per device to the emulator's device MQTT listener, made with the `rumqttc` client.
//!
//! - Provisioning (§4.3): an anonymous session publishes `$provision/<identity>` and receives
//!   the token on the same topic, without a SUBSCRIBE.
//! - The session (§4.1): empty client id, user name `""`, the token as password, clean session.
//! - Writes: `$resource/<alias>` at QoS 1; the link waits for the PUBACK before the next one, so
//!   a device's writes land in order, and a write whose PUBACK never came is sent again on a
//!   new connection (at least once).
//! - Pushes: `$resource/config_otau/<µs>` (§4.4 step 1), with or without a subscription; a
//!   reconnect receives the values set while the device was away (§4.4 step 5).
//!
//! MQTT has no read: an MQTT device reads `config_otau` at boot, and downloads content, over
//! HTTP (§4.4 step 4); the socket fleet's HTTP code does that part.
//!
//! Device-side faults ([`MqttFaults`]) drop or close the connection before a write, so that a
//! fleet exercises reconnects, resent writes and the replay of pushes missed meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
};

use crate::otau::CONFIG_OTAU;

/// How the MQTT devices of a socket fleet reach the emulator.
#[derive(Debug, Clone)]
pub struct MqttDeviceConfig {
    /// The emulator's plain device MQTT listener (it picks the default connector, like the
    /// plain HTTP listener on `127.0.0.1`).
    pub address: SocketAddr,
    /// MQTT keep-alive of each connection.
    pub keep_alive: Duration,
    /// Device-side faults.
    pub faults: MqttFaults,
    /// The MQTT TLS port where HTTP is served by ALPN `http/1.1` (exosite-platform.md §3.1),
    /// for the devices whose group sends their HTTP there (`transport.http_on_mqtt_port`).
    pub http_port: Option<MqttTlsPort>,
}

/// The emulator's MQTT TLS port, as an HTTP client reaches it by ALPN `http/1.1`.
#[derive(Debug, Clone)]
pub struct MqttTlsPort {
    /// Its address.
    pub address: SocketAddr,
    /// The host name for SNI and `Host`, naming the connector: `<cid>.m2.localhost`.
    pub host: String,
    /// The port's certificate (PEM), the only one the devices trust there.
    pub certificate_pem: String,
}

impl MqttDeviceConfig {
    /// Defaults for a listener at `address`: 60 s keep-alive, no faults.
    pub fn new(address: SocketAddr) -> Self {
        MqttDeviceConfig {
            address,
            keep_alive: Duration::from_secs(60),
            faults: MqttFaults::default(),
            http_port: None,
        }
    }
}

/// Faults an MQTT device injects on its own connection, drawn per write from a generator seeded
/// by (`seed`, device index), so a run repeats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MqttFaults {
    /// Share of writes before which the device's connection drops: the socket closes without a
    /// DISCONNECT (the server sees a lost connection), then the device reconnects and writes.
    pub drop_rate: f64,
    /// Share of writes before which the device disconnects cleanly (DISCONNECT) and reconnects.
    pub disconnect_rate: f64,
    /// Seed of the fault draws.
    pub seed: u64,
}

impl MqttFaults {
    /// Checks that the rates are probabilities.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("drop_rate", self.drop_rate),
            ("disconnect_rate", self.disconnect_rate),
        ] {
            if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
                return Err(format!("MQTT fault {name} {p} is not between 0 and 1"));
            }
        }
        if self.drop_rate + self.disconnect_rate > 1.0 {
            return Err("MQTT fault rates add up to more than 1".into());
        }
        Ok(())
    }

    /// Whether any fault is on.
    pub fn is_off(&self) -> bool {
        self.drop_rate <= 0.0 && self.disconnect_rate <= 0.0
    }
}

/// What a device does to its connection before one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing.
    None,
    /// Close the socket without DISCONNECT, then reconnect.
    Drop,
    /// Send DISCONNECT, then reconnect.
    Disconnect,
}

/// The fault draws of one device.
#[derive(Debug)]
pub struct FaultDraws {
    faults: MqttFaults,
    rng: ChaCha8Rng,
}

impl FaultDraws {
    /// The draws of device `index`.
    pub fn new(faults: &MqttFaults, index: u32) -> Self {
        let seed = super::seed::combine(faults.seed, u64::from(index));
        FaultDraws {
            faults: faults.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// The fault before the next write.
    pub fn before_write(&mut self) -> Fault {
        if self.faults.is_off() {
            return Fault::None;
        }
        let r: f64 = self.rng.random();
        if r < self.faults.drop_rate {
            Fault::Drop
        } else if r < self.faults.drop_rate + self.faults.disconnect_rate {
            Fault::Disconnect
        } else {
            Fault::None
        }
    }
}

/// Why an MQTT operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The server refused the CONNECT (return code 4 for bad credentials, §4.1).
    #[error("the server refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// The connection failed or closed.
    #[error("MQTT connection: {0}")]
    Connection(String),
    /// No answer in time.
    #[error("no answer from the MQTT server within {0:?}")]
    Timeout(Duration),
    /// The provisioning reply was not a token.
    #[error("the provisioning reply is not a 40-character token")]
    BadToken,
}

impl MqttError {
    /// Whether trying again cannot help: the credentials were refused (CONNACK 4 or 5), or the
    /// provisioning reply was not a token. A server that is unavailable (CONNACK 3), a lost
    /// connection or a timeout may pass.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            MqttError::Refused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
            ) | MqttError::BadToken
        )
    }
}

impl From<ConnectionError> for MqttError {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::ConnectionRefused(code) => MqttError::Refused(code),
            other => MqttError::Connection(other.to_string()),
        }
    }
}

/// Largest packet a device sends or takes: a resource value is at most 1 MiB (§4.2), plus the
/// topic and the header.
const MAX_PACKET: usize = 1024 * 1024 + 4096;

fn options(config: &MqttDeviceConfig, password: &str) -> MqttOptions {
    // Empty client id (§4.1: Murano identifies the device by its credentials); rumqttc allows it
    // with a clean session, which the platform assumes anyway.
    let mut options = MqttOptions::new("", config.address.ip().to_string(), config.address.port());
    options
        .set_keep_alive(config.keep_alive)
        .set_clean_session(true)
        .set_credentials("", password)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    options
}

/// The value of a push of `config_otau` (`$resource/config_otau/<µs>`), if `topic` is one.
pub fn config_push(topic: &str, payload: &[u8]) -> Option<String> {
    let rest = topic.strip_prefix("$resource/")?;
    let (alias, stamp) = rest.split_once('/')?;
    if alias != CONFIG_OTAU || stamp.is_empty() || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(String::from_utf8_lossy(payload).into_owned())
}

/// Provisions `identity` over an anonymous session (§4.3); the token.
pub async fn provision(
    config: &MqttDeviceConfig,
    identity: &str,
    timeout: Duration,
) -> Result<String, MqttError> {
    let (client, mut events) = AsyncClient::new(options(config, ""), 4);
    let topic = format!("$provision/{identity}");
    let reply = async {
        wait_connack(&mut events).await?;
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, Vec::new())
            .await
            .map_err(|e| MqttError::Connection(e.to_string()))?;
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await?
                && p.topic == topic
            {
                return Ok::<_, MqttError>(String::from_utf8_lossy(&p.payload).trim().to_string());
            }
        }
    };
    let token = tokio::time::timeout(timeout, reply)
        .await
        .map_err(|_| MqttError::Timeout(timeout))??;
    disconnect(&client, &mut events).await;
    if token.len() != 40 || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(MqttError::BadToken);
    }
    Ok(token)
}

/// Sends DISCONNECT and polls until it is written (at most 5 s: it is written at once unless
/// the machine is very busy).
async fn disconnect(client: &AsyncClient, events: &mut EventLoop) {
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(event) = events.poll().await {
            if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = event {
                break;
            }
        }
    })
    .await;
}

async fn wait_connack(events: &mut EventLoop) -> Result<(), MqttError> {
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await? {
            return Ok(());
        }
    }
}

/// One device's authenticated MQTT session.
pub struct MqttLink {
    client: AsyncClient,
    /// Behind a mutex only so that the link is `Sync` (the device's I/O task is shared by
    /// reference across awaits); every use goes through `&mut self` and `get_mut`, never a lock.
    events: std::sync::Mutex<EventLoop>,
}

impl std::fmt::Debug for MqttLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MqttLink")
    }
}

impl MqttLink {
    /// Connects with `token` and waits for the CONNACK.
    pub async fn connect(
        config: &MqttDeviceConfig,
        token: &str,
        timeout: Duration,
    ) -> Result<MqttLink, MqttError> {
        let (client, mut events) = AsyncClient::new(options(config, token), 4);
        tokio::time::timeout(timeout, wait_connack(&mut events))
            .await
            .map_err(|_| MqttError::Timeout(timeout))??;
        Ok(MqttLink {
            client,
            events: std::sync::Mutex::new(events),
        })
    }

    fn events(&mut self) -> &mut EventLoop {
        self.events.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `value` to `$resource/<alias>` at QoS 1 and waits for its PUBACK; pushes of
    /// `config_otau` that arrive meanwhile go to `pushed`.
    pub async fn write(
        &mut self,
        alias: &str,
        value: &str,
        timeout: Duration,
        pushed: &mut Vec<String>,
    ) -> Result<(), MqttError> {
        self.client
            .publish(
                format!("$resource/{alias}"),
                QoS::AtLeastOnce,
                false,
                value.as_bytes().to_vec(),
            )
            .await
            .map_err(|e| MqttError::Connection(e.to_string()))?;
        let acked = async {
            loop {
                match self.events().poll().await? {
                    Event::Incoming(Packet::PubAck(_)) => return Ok(()),
                    Event::Incoming(Packet::Publish(p)) => {
                        pushed.extend(config_push(&p.topic, &p.payload));
                    }
                    Event::Incoming(Packet::Disconnect) => {
                        return Err(MqttError::Connection("the server disconnected".into()));
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, acked)
            .await
            .map_err(|_| MqttError::Timeout(timeout))?
    }

    /// The next push of `config_otau`; keeps the connection alive (pings) meanwhile.
    pub async fn next_push(&mut self) -> Result<String, MqttError> {
        loop {
            match self.events().poll().await? {
                Event::Incoming(Packet::Publish(p)) => {
                    if let Some(value) = config_push(&p.topic, &p.payload) {
                        return Ok(value);
                    }
                }
                Event::Incoming(Packet::Disconnect) => {
                    return Err(MqttError::Connection("the server disconnected".into()));
                }
                _ => {}
            }
        }
    }

    /// Sends DISCONNECT and closes.
    pub async fn disconnect(mut self) {
        let client = self.client.clone();
        disconnect(&client, self.events()).await;
    }

    /// Closes the socket without DISCONNECT (a lost connection, as the server sees it).
    pub fn drop_connection(self) {
        drop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_config_otau_pushes_with_a_timestamp_are_config_values() {
        let v = br#"{"version":"2.0.0"}"#;
        assert_eq!(
            config_push("$resource/config_otau/1561622694601000", v).as_deref(),
            Some(r#"{"version":"2.0.0"}"#)
        );
        assert_eq!(config_push("$resource/config_otau", v), None);
        assert_eq!(config_push("$resource/config_otau/", v), None);
        assert_eq!(config_push("$resource/config_otau/12a", v), None);
        assert_eq!(config_push("$resource/otau_in/1561622694601000", v), None);
        assert_eq!(config_push("$provision/dev-1", v), None);
    }

    #[test]
    fn fault_draws_repeat_per_device_and_follow_the_rates() {
        let faults = MqttFaults {
            drop_rate: 0.2,
            disconnect_rate: 0.1,
            seed: 7,
        };
        let draw = |index| {
            let mut d = FaultDraws::new(&faults, index);
            (0..1000).map(|_| d.before_write()).collect::<Vec<_>>()
        };
        let a = draw(3);
        assert_eq!(a, draw(3));
        assert_ne!(a, draw(4));
        let drops = a.iter().filter(|f| **f == Fault::Drop).count();
        let disconnects = a.iter().filter(|f| **f == Fault::Disconnect).count();
        assert!((150..250).contains(&drops), "{drops}");
        assert!((60..140).contains(&disconnects), "{disconnects}");
        let mut off = FaultDraws::new(&MqttFaults::default(), 3);
        assert!((0..100).all(|_| off.before_write() == Fault::None));
        assert!(
            MqttFaults {
                drop_rate: 0.7,
                disconnect_rate: 0.5,
                seed: 0
            }
            .validate()
            .is_err()
        );
        assert!(
            MqttFaults {
                drop_rate: -0.1,
                ..MqttFaults::default()
            }
            .validate()
            .is_err()
        );
    }
}
