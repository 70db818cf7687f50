//! A small device-side MQTT 3.1.1 client over any stream (plain TCP or TLS), on the same
//! codec as the server: what simulated devices and the MQTT bench use to connect thousands of
//! devices without a task per connection of their own. It does not reconnect or retransmit:
//! the caller decides (a simulated device's behaviour is the point).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use otau_operator::emulator::mqtt::client::{Credentials, DeviceClient};
//! let stream = tokio::net::TcpStream::connect("127.0.0.1:1883").await?;
//! let (mut device, code) = DeviceClient::connect(stream, &Credentials::Token("t".into()), 60).await?;
//! assert!(code.is_none(), "CONNACK refused: {code:?}");
//! device.publish("$resource/otau_in", br#"{"status":"INIT"}"#, false).await?;
//! let (topic, value) = device.next_message().await?;
//! # Ok(()) }
//! ```

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Login, Packet, PubAck, Publish, Subscribe,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use rumqttc::mqttbytes::v4::ConnectReturnCode as ReturnCode;

/// Largest packet the client reads.
pub const MAX_INCOMING: usize = 2 * 1024 * 1024 + 64 * 1024;

/// What a device presents in CONNECT (exosite-platform.md §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No user name, no password: provisioning only.
    Anonymous,
    /// Empty user name, the token as password.
    Token(String),
    /// Identity and password.
    Password {
        /// The identity.
        identity: String,
        /// The password.
        password: String,
    },
}

/// One device's MQTT connection.
#[derive(Debug)]
pub struct DeviceClient<Io> {
    io: Io,
    buf: BytesMut,
    next_pkid: u16,
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> DeviceClient<Io> {
    /// Sends CONNECT (empty client id, clean session) and reads CONNACK; `None` when the
    /// server accepted, else its refusal code (4: bad user name or password).
    pub async fn connect(
        io: Io,
        credentials: &Credentials,
        keep_alive_secs: u16,
    ) -> std::io::Result<(Self, Option<ConnectReturnCode>)> {
        let mut connect = Connect::new("");
        connect.keep_alive = keep_alive_secs;
        connect.login = match credentials {
            Credentials::Anonymous => None,
            Credentials::Token(t) => Some(Login::new("", t.as_str())),
            Credentials::Password { identity, password } => {
                Some(Login::new(identity.as_str(), password.as_str()))
            }
        };
        let mut client = DeviceClient {
            io,
            buf: BytesMut::with_capacity(1024),
            next_pkid: 1,
        };
        client.send(&Packet::Connect(connect)).await?;
        match client.next_packet().await? {
            Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok((client, None)),
            Packet::ConnAck(ack) => Ok((client, Some(ack.code))),
            other => Err(invalid(format!("expected CONNACK, got {other:?}"))),
        }
    }

    /// Sends one packet.
    pub async fn send(&mut self, packet: &Packet) -> std::io::Result<()> {
        let mut out = BytesMut::with_capacity(packet.size() + 5);
        packet.write(&mut out, usize::MAX).map_err(invalid)?;
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// Publishes `payload` on `topic`, QoS 1 (PUBACK expected; see [`DeviceClient::next_packet`])
    /// when `at_least_once`, else QoS 0.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        at_least_once: bool,
    ) -> std::io::Result<()> {
        let qos = if at_least_once {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let mut publish = Publish::new(topic, qos, payload.to_vec());
        if at_least_once {
            publish.pkid = self.pkid();
        }
        self.send(&Packet::Publish(publish)).await
    }

    /// Subscribes to `filter` at QoS 1 (the server grants at most 1 and ignores filters).
    pub async fn subscribe(&mut self, filter: &str) -> std::io::Result<()> {
        let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
        subscribe.pkid = self.pkid();
        self.send(&Packet::Subscribe(subscribe)).await
    }

    /// Sends DISCONNECT (a Will is then discarded).
    pub async fn disconnect(mut self) -> std::io::Result<()> {
        self.send(&Packet::Disconnect).await?;
        self.io.shutdown().await
    }

    fn pkid(&mut self) -> u16 {
        let id = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        id
    }

    /// The next packet from the server; an EOF is `UnexpectedEof`.
    pub async fn next_packet(&mut self) -> std::io::Result<Packet> {
        super::session::read_packet(&mut self.io, &mut self.buf, MAX_INCOMING)
            .await
            .map_err(|e| match e {
                rumqttc::mqttbytes::Error::Io(io) => io,
                other => invalid(other),
            })
    }

    /// The next PUBLISH from the server as (topic, payload), answering a QoS 1 one with PUBACK
    /// and skipping every other packet.
    pub async fn next_message(&mut self) -> std::io::Result<(String, Vec<u8>)> {
        loop {
            if let Packet::Publish(p) = self.next_packet().await? {
                if p.qos == QoS::AtLeastOnce {
                    self.send(&Packet::PubAck(PubAck::new(p.pkid))).await?;
                }
                return Ok((p.topic, p.payload.to_vec()));
            }
        }
    }

    /// The stream, for the caller's own use (for example to close it abruptly).
    pub fn into_inner(self) -> Io {
        self.io
    }
}
