//! One MQTT connection, from its CONNECT to its end: authentication (CONNACK 4 for bad
//! credentials), provisioning in an anonymous session, device publishes as device writes,
//! cloud writes published at once, the replay of unsynced set values on connect, keep-alive
//! enforcement, and the Will when the connection ends without DISCONNECT.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::MqttService;
use super::faults::{Injected, inject};
use super::hub::{Registration, ToSession};
use super::metrics::Close;
use super::protocol::{self, ConnectAuth, DeviceTopic, PublishQos};
use crate::emulator::model::{Connector, DeviceCredential, ModelError, WriteOrigin};

/// Bytes a session reads at a time (the buffer grows to the packet being read).
const READ_CHUNK: usize = 4096;

/// The context of one accepted connection.
pub(crate) struct Accepted {
    /// `mqtt` or `mqtts`.
    pub(crate) listener: &'static str,
    /// The peer.
    pub(crate) remote: SocketAddr,
    /// The connector the connection addresses (SNI or the default connector); `None`: unknown.
    pub(crate) connector: Option<String>,
    /// When the CONNECT must have arrived.
    pub(crate) connect_deadline: Instant,
}

/// Who the session is.
enum Peer {
    /// Anonymous: may only provision.
    Anonymous,
    /// An authenticated device.
    Device {
        identity: Arc<str>,
        registration: Registration,
    },
}

struct Session<Io> {
    io: Io,
    buf: BytesMut,
    service: Arc<MqttService>,
    accepted: Accepted,
    connector: Arc<Connector>,
    origin: WriteOrigin,
}

/// What reading the next packet gave.
enum Read {
    Packet(Packet),
    Closed(Close),
}

/// Serves one connection until it ends; counts how it ended and tells it.
pub(crate) async fn run<Io>(
    io: Io,
    service: Arc<MqttService>,
    accepted: Accepted,
    stop: watch::Receiver<bool>,
) -> Close
where
    Io: AsyncRead + AsyncWrite + Unpin + Send,
{
    let listener = accepted.listener;
    let close = serve(io, service.clone(), accepted, stop).await;
    service.metrics.closed(listener, close);
    close
}

async fn serve<Io>(
    io: Io,
    service: Arc<MqttService>,
    accepted: Accepted,
    mut stop: watch::Receiver<bool>,
) -> Close
where
    Io: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut pre = Preface {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        max: service.options.max_packet_bytes,
        bad_protocol: false,
    };
    let deadline = accepted.connect_deadline;
    let first = tokio::select! {
        read = tokio::time::timeout_at(deadline, pre.read_packet()) => match read {
            Ok(read) => read,
            Err(_) => Read::Closed(Close::ConnectTimeout),
        },
        () = super::stopped(&mut stop) => Read::Closed(Close::Stopping),
    };
    let connect = match first {
        Read::Packet(Packet::Connect(c)) => c,
        Read::Packet(_) => return Close::Malformed,
        Read::Closed(Close::Malformed) if pre.bad_protocol => {
            service.metrics.connect(accepted.listener, "bad_protocol");
            let _ = pre.refuse(ConnectReturnCode::RefusedProtocolVersion).await;
            return Close::ConnectRefused;
        }
        Read::Closed(close) => return close,
    };
    if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
        service.metrics.connect(accepted.listener, "bad_protocol");
        let _ = pre.refuse(ConnectReturnCode::RefusedProtocolVersion).await;
        return Close::ConnectRefused;
    }
    let Some(connector) = accepted
        .connector
        .as_deref()
        .and_then(|cid| service.model.connector(cid))
    else {
        // As the device HTTP API does for an unknown host: closed without an answer.
        service
            .metrics
            .connect(accepted.listener, "unknown_connector");
        return Close::ConnectRefused;
    };
    if let Some(close) = connect_fault(&service, &accepted, &mut pre).await {
        return close;
    }
    let session_number = service.hub.session_number();
    let origin = WriteOrigin {
        ip: accepted.remote.ip().to_string(),
        connection_id: format!("mqtt-{session_number}"),
    };
    let mut session = Session {
        io: pre.io,
        buf: pre.buf,
        service: service.clone(),
        accepted,
        connector,
        origin,
    };
    let login = connect
        .login
        .as_ref()
        .map(|l| (l.username.as_str(), l.password.as_str()));
    let peer = match protocol::connect_auth(login) {
        ConnectAuth::Anonymous => Peer::Anonymous,
        auth => match session.authenticate(&auth) {
            Some(identity) => {
                let Some(device) = session.connector.device_id(&identity) else {
                    return Close::Malformed;
                };
                let registration = service
                    .hub
                    .register(&session.connector, device, session_number);
                Peer::Device {
                    identity,
                    registration,
                }
            }
            None => {
                service
                    .metrics
                    .connect(session.listener(), "bad_credentials");
                let _ = session
                    .send(&Packet::ConnAck(ConnAck::new(
                        ConnectReturnCode::BadUserNamePassword,
                        false,
                    )))
                    .await;
                return Close::ConnectRefused;
            }
        },
    };
    let result = match &peer {
        Peer::Anonymous => "anonymous",
        Peer::Device { .. } => "accepted",
    };
    service.metrics.connect(session.listener(), result);
    if let Err(close) = session
        .send(&Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            false,
        )))
        .await
    {
        return close;
    }
    let keep_alive = protocol::keep_alive_limit(connect.keep_alive, service.options.idle_timeout);
    session
        .serve_peer(peer, keep_alive, &mut stop, &connect)
        .await
}

/// The fault rules' decision on a CONNECT (`mqtt.connect`, see [`super::faults`]): `Some` when
/// the session ends here, closed without CONNACK or refused with CONNACK 3.
async fn connect_fault<Io>(
    service: &MqttService,
    accepted: &Accepted,
    pre: &mut Preface<Io>,
) -> Option<Close>
where
    Io: AsyncRead + AsyncWrite + Unpin + Send,
{
    let faults = &service.options.faults;
    match inject(faults, "mqtt.connect", accepted.connector.as_deref()).await {
        Injected::Pass => None,
        Injected::Drop => Some(Close::Fault),
        Injected::Refuse => {
            let _ = pre.refuse(ConnectReturnCode::ServiceUnavailable).await;
            Some(Close::Fault)
        }
    }
}

/// The connection before its CONNECT.
struct Preface<Io> {
    io: Io,
    buf: BytesMut,
    max: usize,
    bad_protocol: bool,
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> Preface<Io> {
    async fn read_packet(&mut self) -> Read {
        let read = read_packet(&mut self.io, &mut self.buf, self.max).await;
        if let Err(CodecError::InvalidProtocol | CodecError::InvalidProtocolLevel(_)) = &read {
            self.bad_protocol = true;
        }
        match read {
            Ok(packet) => Read::Packet(packet),
            Err(e) => Read::Closed(close_for(&e)),
        }
    }

    async fn refuse(&mut self, code: ConnectReturnCode) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        let _ = ConnAck::new(code, false).write(&mut out);
        self.io.write_all(&out).await?;
        self.io.flush().await
    }
}

/// Why the codec's error closes the session.
fn close_for(e: &CodecError) -> Close {
    match e {
        CodecError::PayloadSizeLimitExceeded(_) => Close::PacketTooLarge,
        CodecError::Io(_) => Close::PeerClosed,
        _ => Close::Malformed,
    }
}

/// Reads until one complete packet is in `buf` and decodes it. A packet whose declared size is
/// over `max` fails before its body is read.
pub(crate) async fn read_packet<Io: AsyncRead + Unpin>(
    io: &mut Io,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, CodecError> {
    loop {
        match Packet::read(buf, max) {
            Ok(packet) => return Ok(packet),
            Err(CodecError::InsufficientBytes(need)) => {
                buf.reserve(need.clamp(1, READ_CHUNK.max(need.min(max))));
                let n = io.read_buf(buf).await?;
                if n == 0 {
                    return Err(CodecError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin + Send> Session<Io> {
    fn listener(&self) -> &'static str {
        self.accepted.listener
    }

    fn authenticate(&self, auth: &ConnectAuth) -> Option<Arc<str>> {
        let credential = match auth {
            ConnectAuth::Anonymous => return None,
            ConnectAuth::Token(t) => DeviceCredential::Token(t),
            ConnectAuth::Password { identity, password } => {
                DeviceCredential::Password { identity, password }
            }
        };
        self.connector.authenticate(credential)
    }

    async fn send(&mut self, packet: &Packet) -> Result<(), Close> {
        let mut out = BytesMut::with_capacity(packet.size() + 5);
        packet
            .write(&mut out, usize::MAX)
            .map_err(|_| Close::Malformed)?;
        let write = async {
            self.io.write_all(&out).await?;
            self.io.flush().await
        };
        match tokio::time::timeout(self.service.options.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Close::PeerClosed),
            Err(_) => Err(Close::WriteTimeout),
        }
    }

    /// The fault decision for MQTT step `name` of this session (see [`super::faults`]).
    async fn inject(&self, name: &'static str) -> Injected {
        let faults = self.service.options.faults.clone();
        inject(&faults, name, self.accepted.connector.as_deref()).await
    }

    /// Publishes the current set value of `alias` on `$resource/<alias>/<at>`.
    async fn publish_set(
        &mut self,
        identity: &str,
        alias: &str,
        at: i64,
        kind: &str,
    ) -> Result<(), Close> {
        match self.inject("mqtt.deliver").await {
            Injected::Pass => {}
            Injected::Drop => return Ok(()),
            Injected::Refuse => return Err(Close::Fault),
        }
        let value = match self.connector.read_set(identity, alias) {
            Ok(Some(v)) => v.value,
            Ok(None) => return Ok(()),
            Err(_) => return Err(Close::PeerClosed),
        };
        let publish = Publish::new(
            protocol::set_topic(alias, at),
            QoS::AtMostOnce,
            value.as_bytes(),
        );
        self.send(&Packet::Publish(publish)).await?;
        self.service.metrics.message("out", kind);
        Ok(())
    }

    /// Sends the set values the device has not reported back (exosite-platform.md §4.4).
    async fn replay(&mut self, identity: &str) -> Result<(), Close> {
        let pending = self
            .connector
            .unsynced_set_values(identity)
            .map_err(|_| Close::PeerClosed)?;
        for (alias, set) in pending {
            let publish = Publish::new(
                protocol::set_topic(&alias, set.set_modified),
                QoS::AtMostOnce,
                set.value.as_bytes(),
            );
            self.send(&Packet::Publish(publish)).await?;
            self.service.metrics.message("out", "replay");
        }
        Ok(())
    }

    async fn serve_peer(
        &mut self,
        mut peer: Peer,
        keep_alive: Duration,
        stop: &mut watch::Receiver<bool>,
        connect: &Connect,
    ) -> Close {
        if let Peer::Device { identity, .. } = &peer {
            let identity = identity.clone();
            if let Err(close) = self.replay(&identity).await {
                return close;
            }
        }
        let max = self.service.options.max_packet_bytes;
        let mut deadline = Instant::now() + keep_alive;
        let close = loop {
            // Packets already buffered are handled before waiting.
            match Packet::read(&mut self.buf, max) {
                Ok(packet) => {
                    deadline = Instant::now() + keep_alive;
                    match self.handle(&peer, packet).await {
                        Ok(()) => continue,
                        Err(close) => break close,
                    }
                }
                Err(CodecError::InsufficientBytes(need)) => {
                    self.buf
                        .reserve(need.clamp(1, READ_CHUNK.max(need.min(max))));
                }
                Err(e) => break close_for(&e),
            }
            let next = match &mut peer {
                Peer::Device { registration, .. } => {
                    let io = &mut self.io;
                    let buf = &mut self.buf;
                    tokio::select! {
                        read = io.read_buf(buf) => Event::Read(read),
                        message = registration.rx.recv() => Event::Hub(message),
                        () = tokio::time::sleep_until(deadline) => Event::KeepAlive,
                        () = super::stopped(stop) => Event::Stop,
                    }
                }
                Peer::Anonymous => {
                    let io = &mut self.io;
                    let buf = &mut self.buf;
                    tokio::select! {
                        read = io.read_buf(buf) => Event::Read(read),
                        () = tokio::time::sleep_until(deadline) => Event::KeepAlive,
                        () = super::stopped(stop) => Event::Stop,
                    }
                }
            };
            match next {
                Event::Read(Ok(0)) | Event::Read(Err(_)) => break Close::PeerClosed,
                Event::Read(Ok(_)) => {}
                Event::Hub(Some(ToSession::CloudWrite { alias, at })) => {
                    let Peer::Device { identity, .. } = &peer else {
                        continue;
                    };
                    let identity = identity.clone();
                    if let Err(close) = self.publish_set(&identity, &alias, at, "set").await {
                        break close;
                    }
                }
                // The hub is gone: the service stops.
                Event::Hub(None) => break Close::Stopping,
                Event::KeepAlive => break Close::KeepAliveTimeout,
                Event::Stop => break Close::Stopping,
            }
        };
        if !close.is_orderly()
            && let (Peer::Device { identity, .. }, Some(will)) = (&peer, &connect.last_will)
        {
            // Will QoS 1 and 2 are delivered as QoS 0, Will Retain is ignored (§4.2).
            let identity = identity.clone();
            let _ = self.device_message(&identity, &will.topic, &will.message);
        }
        close
    }

    async fn handle(&mut self, peer: &Peer, packet: Packet) -> Result<(), Close> {
        match packet {
            Packet::Publish(publish) => self.handle_publish(peer, publish).await,
            Packet::Subscribe(subscribe) => {
                let codes = subscribe
                    .filters
                    .iter()
                    .map(|f| SubscribeReasonCode::Success(protocol::granted_qos(f.qos)))
                    .collect();
                self.send(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
                    .await
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.send(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                    .await
            }
            Packet::PingReq => self.send(&Packet::PingResp).await,
            Packet::Disconnect => Err(Close::Disconnect),
            // Acknowledgements of what the server sent (it sends QoS 0 only) are ignored.
            Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubComp(_) | Packet::PubRel(_) => {
                Ok(())
            }
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp => Err(Close::Malformed),
        }
    }

    async fn handle_publish(&mut self, peer: &Peer, publish: Publish) -> Result<(), Close> {
        if self.inject("mqtt.publish").await != Injected::Pass {
            return Err(Close::Fault);
        }
        let ack = match protocol::publish_qos(publish.qos) {
            PublishQos::Refuse => return Err(Close::Qos2),
            PublishQos::Handle => false,
            PublishQos::HandleAndAck => true,
        };
        match peer {
            Peer::Anonymous => self.provision(&publish).await?,
            Peer::Device { identity, .. } => {
                let identity = identity.clone();
                self.device_message(&identity, &publish.topic, &publish.payload)?;
            }
        }
        if ack {
            self.send(&Packet::PubAck(PubAck::new(publish.pkid)))
                .await?;
        }
        Ok(())
    }

    /// An anonymous session's publish: only `$provision/<identity>`, answered with the token
    /// on the same topic. A failed activation (not whitelisted, already provisioned, locked)
    /// closes the connection: MQTT has no status to answer with.
    async fn provision(&mut self, publish: &Publish) -> Result<(), Close> {
        let DeviceTopic::Provision(identity) = protocol::device_topic(&publish.topic) else {
            return Err(Close::ProvisionRefused);
        };
        self.service.metrics.message("in", "provision");
        let token = self
            .connector
            .activate(identity)
            .map_err(|_| Close::ProvisionRefused)?;
        let reply = Publish::new(protocol::provision_topic(identity), QoS::AtMostOnce, token);
        self.send(&Packet::Publish(reply)).await?;
        self.service.metrics.message("out", "provision");
        Ok(())
    }

    /// A device's message on `topic` (§4.3): a resource write, a batch, or a custom message.
    fn device_message(&self, identity: &str, topic: &str, payload: &[u8]) -> Result<(), Close> {
        let refused = |e: ModelError| match e {
            ModelError::UnknownIdentity(_) => Close::PeerClosed,
            _ => Close::ValueRefused,
        };
        match protocol::device_topic(topic) {
            DeviceTopic::Resource(alias) => {
                let value = std::str::from_utf8(payload).map_err(|_| Close::ValueRefused)?;
                self.service.metrics.message("in", "resource");
                self.connector
                    .device_write(identity, &[(alias, value)], &self.origin)
                    .map_err(refused)
            }
            DeviceTopic::Batch => {
                let now = self.connector.now_micros();
                let entries =
                    protocol::parse_batch(payload, now).map_err(|_| Close::ValueRefused)?;
                self.service.metrics.message("in", "batch");
                self.connector
                    .device_write_batch(identity, &entries, &self.origin)
                    .map_err(refused)
            }
            DeviceTopic::Provision(_) | DeviceTopic::Custom(_) => {
                let text = String::from_utf8_lossy(payload);
                if text.len() > self.service.model.config().resource_max_bytes {
                    return Err(Close::ValueRefused);
                }
                self.service.metrics.message("in", "custom");
                self.connector
                    .device_publish(identity, topic, &text, &self.origin)
                    .map_err(refused)
            }
        }
    }
}

enum Event {
    Read(std::io::Result<usize>),
    Hub(Option<ToSession>),
    KeepAlive,
    Stop,
}
