//! The device MQTT API (exosite-platform.md §4) on its own listeners: plain MQTT (for tests
//! and local development; the connector is the default connector, as for the device HTTP API
//! with an IP address as host) and MQTT over TLS (the connector named by SNI
//! `<cid>.m2.<domain>`, else the default one), sharing the [`Model`] with the HTTP API.
//!
//! On the TLS port a client that offers ALPN `http/1.1` gets the emulator's HTTP API instead
//! (exosite-platform.md §3.1, "Content over the MQTT port"); any other client gets MQTT.
//!
//! Packets are encoded and decoded by `rumqttc`'s MQTT 3.1.1 codec (`rumqttc::mqttbytes::v4`);
//! the Exosite semantics are ours ([`protocol`], [`session`]). Decisions (documented in
//! exosite-platform.md §4 and docs/emulator.md):
//!
//! - QoS 2 PUBLISH: refused (the connection is closed, the message dropped); a SUBSCRIBE
//!   asking for QoS 2 is granted QoS 1; the server publishes at QoS 0.
//! - A packet over [`MqttOptions::max_packet_bytes`] or a value over the resource value size:
//!   dropped, and the connection closed.
//! - Will: taken as the device's QoS 0 publish on its topic when the connection ends without
//!   DISCONNECT; Will QoS and Retain are ignored.
//! - The device2 setting `protocol.name` is not required: every device may use MQTT and HTTP
//!   at once (mixed fleets share one connector).
//!
//! Limits of every connection: the CONNECT within [`MqttOptions::connect_timeout`] of the
//! accept (TLS handshake included), nothing for 1.5 × the keep-alive closes it (a keep-alive
//! of 0 gets [`MqttOptions::idle_timeout`]), [`MqttOptions::max_packet_bytes`],
//! [`MqttOptions::max_connections`] per listener, and [`MqttOptions::write_timeout`] for a
//! device that stops reading. A connection that chose HTTP by ALPN gets the request limits of
//! the HTTP listeners ([`MqttOptions::http`], applied by `crate::net::server::HandedOver`).

pub mod client;
mod faults;
mod hub;
pub mod metrics;
pub mod protocol;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::server::Acceptor;

use super::device_api::connector_for_host;
use super::faults::Faults;
use super::model::Model;
use super::server::ListenerOptions;
use super::tls::{SelfSigned, TlsError};
use crate::net::server::{HandedOver, Setup};
use hub::Hub;
pub use metrics::{Close, MqttMetrics};

/// The listener name of plain MQTT.
pub const MQTT_LISTENER: &str = "mqtt";
/// The listener name of MQTT over TLS.
pub const MQTTS_LISTENER: &str = "mqtts";
/// The listener name (`listener` label of the listener metrics) of the HTTP served on the TLS
/// port by ALPN.
pub const MQTTS_HTTP_LISTENER: &str = "mqtts_http";
/// The ALPN protocol that selects HTTP on the TLS MQTT port.
pub const HTTP_ALPN: &[u8] = b"http/1.1";
/// Default time from the accept to a complete CONNECT.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle limit of a session whose keep-alive is 0 (1.5 × the 300 s client default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(450);
/// Default time a device has to take what the server sends.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Room for a PUBLISH's topic and headers on top of the largest resource value.
pub const PACKET_OVERHEAD: usize = 64 * 1024;

/// Limits and switches of the MQTT listeners.
#[derive(Debug, Clone)]
pub struct MqttOptions {
    /// Connector of connections that name none (plain listener; TLS without SNI or with an IP
    /// address). `None`: such connections are closed without CONNACK.
    pub default_connector: Option<String>,
    /// Time from the accept (TLS handshake included) to a complete CONNECT.
    pub connect_timeout: Duration,
    /// Idle limit of a session whose CONNECT asks for keep-alive 0.
    pub idle_timeout: Duration,
    /// Time a device has to take one packet the server sends.
    pub write_timeout: Duration,
    /// Largest packet (remaining length) a device may send.
    pub max_packet_bytes: usize,
    /// Connections each listener holds at once; one more is accepted and closed at once.
    pub max_connections: usize,
    /// The HTTP limits of connections on the TLS port that chose HTTP by ALPN (those of the
    /// emulator's HTTP listeners: header and body timeouts, bodies in flight, body and head
    /// sizes; the connection cap is [`MqttOptions::max_connections`]), and where their
    /// refusals are counted (listener [`MQTTS_HTTP_LISTENER`]).
    pub http: ListenerOptions,
    /// Fault injection (the emulator's `--fault` rules on `mqtt.connect`, `mqtt.publish`,
    /// `mqtt.deliver`; off by default), shared with the HTTP listeners.
    pub faults: Arc<Faults>,
}

impl MqttOptions {
    /// Defaults for `model`: the largest packet is its resource value size plus
    /// [`PACKET_OVERHEAD`].
    pub fn defaults(model: &Model, default_connector: Option<String>) -> MqttOptions {
        MqttOptions {
            default_connector,
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            max_packet_bytes: model
                .config()
                .resource_max_bytes
                .saturating_add(PACKET_OVERHEAD),
            max_connections: super::server::MAX_CONNECTIONS,
            http: ListenerOptions::defaults(model),
            faults: Arc::new(Faults::off()),
        }
    }
}

/// What every MQTT listener of one model shares: the model, the options, the metrics and the
/// sessions (so a device connected on either listener receives its cloud writes).
pub struct MqttService {
    model: Arc<Model>,
    options: MqttOptions,
    metrics: MqttMetrics,
    hub: Arc<Hub>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for MqttService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttService")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MqttService {
    /// The service of `model`. Register [`MqttService::metrics`] where `/metrics` reads them.
    pub fn new(model: Arc<Model>, options: MqttOptions, metrics: MqttMetrics) -> Arc<MqttService> {
        let (stop, stopped) = watch::channel(false);
        Arc::new(MqttService {
            model,
            options,
            metrics,
            hub: Hub::new(stopped),
            stop,
        })
    }

    /// The metrics.
    pub fn metrics(&self) -> &MqttMetrics {
        &self.metrics
    }

    /// The options.
    pub fn options(&self) -> &MqttOptions {
        &self.options
    }

    /// Devices with an authenticated session now.
    pub fn connected_devices(&self) -> usize {
        self.hub.connected()
    }

    /// Serves one already-connected stream (plain MQTT, the default connector) until it ends,
    /// and tells why: for in-memory streams (fuzzing, tests) and callers with their own
    /// accept loop. It counts under the `mqtt` listener and holds no slot of it.
    pub async fn serve_stream<Io>(
        self: &Arc<Self>,
        io: Io,
        remote: SocketAddr,
        stop: watch::Receiver<bool>,
    ) -> Close
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
    {
        let accepted = session::Accepted {
            listener: MQTT_LISTENER,
            remote,
            connector: self.options.default_connector.clone(),
            connect_deadline: Instant::now() + self.options.connect_timeout,
        };
        session::run(io, self.clone(), accepted, stop).await
    }

    /// Stops the cloud-write routing (listeners stop with [`MqttListener::shutdown`]).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Completes once `stop` says true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A running MQTT listener.
#[derive(Debug)]
pub struct MqttListener {
    /// The address it listens on (the real port when started with port 0).
    pub local_addr: SocketAddr,
    /// `mqtt://<addr>` or `mqtts://<addr>`.
    pub url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl MqttListener {
    /// Binds `addr` (port 0 picks a free port) and serves plain MQTT; connections use the
    /// default connector.
    pub async fn start_plain(
        addr: SocketAddr,
        service: Arc<MqttService>,
    ) -> std::io::Result<MqttListener> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(
            listener,
            MQTT_LISTENER,
            service,
            stopped,
            |stream, remote, service, stop| async move {
                let accepted = session::Accepted {
                    listener: MQTT_LISTENER,
                    remote,
                    connector: service.options.default_connector.clone(),
                    connect_deadline: Instant::now() + service.options.connect_timeout,
                };
                session::run(stream, service, accepted, stop).await;
            },
        ));
        Ok(MqttListener {
            local_addr,
            url: format!("mqtt://{local_addr}"),
            stop,
            task,
        })
    }

    /// Binds `addr` and serves MQTT over TLS with `certificate`; a client offering ALPN
    /// `http/1.1` gets `http_app` (the emulator's HTTP router) instead.
    pub async fn start_tls(
        addr: SocketAddr,
        service: Arc<MqttService>,
        certificate: &SelfSigned,
        http_app: Router,
    ) -> Result<MqttListener, TlsError> {
        let mqtt_config = Arc::new(certificate.server_config(&[])?);
        let http_config = Arc::new(certificate.server_config(&[HTTP_ALPN])?);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TlsError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TlsError::Bind { addr, source })?;
        let (stop, stopped) = watch::channel(false);
        let configs = TlsConfigs {
            mqtt: mqtt_config,
            http: http_config,
            app: http_app,
            limits: HandedOver::new(Setup {
                name: MQTTS_HTTP_LISTENER,
                limits: service.options.http.limits,
                metrics: service.options.http.metrics.clone(),
            }),
        };
        let task = tokio::spawn(accept_loop(
            listener,
            MQTTS_LISTENER,
            service,
            stopped,
            move |stream, remote, service, stop| {
                let configs = configs.clone();
                async move { serve_tls(stream, remote, service, configs, stop).await }
            },
        ));
        Ok(MqttListener {
            local_addr,
            url: format!("mqtts://{local_addr}"),
            stop,
            task,
        })
    }

    /// Stops accepting, closes the sessions and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Clone)]
struct TlsConfigs {
    mqtt: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
    app: Router,
    /// The HTTP limits, shared by every connection that chose HTTP.
    limits: HandedOver,
}

/// The TLS handshake (under the connect timeout), then HTTP when the client offered ALPN
/// `http/1.1`, MQTT otherwise.
async fn serve_tls(
    stream: TcpStream,
    remote: SocketAddr,
    service: Arc<MqttService>,
    configs: TlsConfigs,
    stop: watch::Receiver<bool>,
) {
    let deadline = Instant::now() + service.options.connect_timeout;
    let handshake = async {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        let wants_http = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == HTTP_ALPN));
        let sni = hello.server_name().map(str::to_string);
        let config = if wants_http {
            configs.http.clone()
        } else {
            configs.mqtt.clone()
        };
        let tls = start.into_stream(config).await?;
        Ok::<_, std::io::Error>((tls, wants_http, sni))
    };
    let (tls, wants_http, sni) = match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "MQTT TLS handshake failed");
            service.metrics.closed(MQTTS_LISTENER, Close::PeerClosed);
            return;
        }
        Err(_) => {
            service
                .metrics
                .closed(MQTTS_LISTENER, Close::ConnectTimeout);
            return;
        }
    };
    if wants_http {
        service.metrics.http_connection();
        let app = super::server::connection_service(configs.app, remote);
        configs.limits.serve(tls, remote, app, stop).await;
        return;
    }
    let connector = match sni {
        Some(name) => connector_for_host(&name, service.options.default_connector.as_deref()),
        None => service.options.default_connector.clone(),
    };
    let accepted = session::Accepted {
        listener: MQTTS_LISTENER,
        remote,
        connector,
        connect_deadline: deadline,
    };
    session::run(tls, service, accepted, stop).await;
}

/// Accepts connections until `stop`, holding at most `max_connections` (one more is accepted
/// and closed at once, as the HTTP listeners do), backing off on accept errors that are not a
/// connection's own; then waits for the sessions to end.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &'static str,
    service: Arc<MqttService>,
    mut stop: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr, Arc<MqttService>, watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let permits = service
        .options
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(permits));
    let mut backoff = crate::net::server::AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut stop) => break,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff.succeeded();
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    service.metrics.closed(name, Close::ConnectionCap);
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let open = service.metrics.open(name);
                let work = handle(stream, remote, service.clone(), stop.clone());
                tokio::spawn(async move {
                    work.await;
                    drop(open);
                    drop(slot);
                });
            }
            Err(e) if crate::net::server::is_connection_error(&e) => {}
            Err(e) => {
                let wait = backoff.failed(name, &e);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stopped(&mut stop) => break,
                }
            }
        }
    }
    drop(listener);
    let all = u32::try_from(permits).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        crate::net::server::SHUTDOWN_GRACE + Duration::from_secs(1),
        slots.acquire_many(all),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;
    use proptest::prelude::*;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{Connect, Login, Packet, Publish, Subscribe};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{MqttMetrics, MqttOptions, MqttService};
    use crate::emulator::clock::SystemClock;
    use crate::emulator::model::{Model, ModelConfig, NewIdentity};

    fn encode(packet: Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        out.to_vec()
    }

    /// One piece of what a device sends: a well-formed packet of any kind a device may send,
    /// or raw bytes.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        let topic = prop_oneof![
            Just("$resource/otau_in".to_string()),
            Just("$resource/config_otau".to_string()),
            Just("$resource.batch".to_string()),
            Just("$provision/dev2".to_string()),
            "[a-z$/.#+]{0,12}",
        ];
        let payload = prop_oneof![
            Just(br#"[{"timestamp":1526046488,"values":{"otau_in":"x"}}]"#.to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ];
        prop_oneof![
            (topic, payload, 0u8..3, 1u16..5).prop_map(|(t, p, q, id)| {
                let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][q as usize];
                let mut publish = Publish::new(t, qos, p);
                publish.pkid = if q == 0 { 0 } else { id };
                encode(Packet::Publish(publish))
            }),
            Just(encode(Packet::Subscribe(Subscribe::new(
                "#",
                QoS::ExactlyOnce
            )))),
            Just(encode(Packet::PingReq)),
            Just(encode(Packet::Disconnect)),
            proptest::collection::vec(any::<u8>(), 0..16),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever a device sends after a valid CONNECT, the session ends when the stream
        /// does, and every byte the server sent decodes as packets a server sends.
        #[test]
        fn any_device_byte_stream_ends_the_session_with_well_formed_answers(
            pieces in proptest::collection::vec(piece(), 0..12),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let model = Model::new(
                    ModelConfig { resource_max_bytes: 64, ..ModelConfig::default() },
                    Arc::new(SystemClock),
                );
                let conn = model.add_connector("c1").unwrap();
                conn.add_identity("dev1", NewIdentity::default()).unwrap();
                conn.add_identity("dev2", NewIdentity::default()).unwrap();
                let token = conn.activate("dev1").unwrap();
                let service = MqttService::new(
                    model.clone(),
                    MqttOptions::defaults(&model, Some("c1".into())),
                    MqttMetrics::new(),
                );
                let mut connect = Connect::new("");
                connect.login = Some(Login::new("", token));
                let mut input = encode(Packet::Connect(connect));
                input.extend(pieces.concat());
                let (device, server) = tokio::io::duplex(1 << 16);
                let (mut from_server, mut to_server) = tokio::io::split(device);
                let (_stop, stop) = tokio::sync::watch::channel(false);
                let session = tokio::spawn({
                    let service = service.clone();
                    async move { service.serve_stream(server, "127.0.0.1:9".parse().unwrap(), stop).await }
                });
                to_server.write_all(&input).await.unwrap();
                to_server.shutdown().await.unwrap();
                let mut sent = Vec::new();
                tokio::time::timeout(std::time::Duration::from_secs(10), from_server.read_to_end(&mut sent))
                    .await
                    .expect("the session ends")
                    .unwrap();
                session.await.unwrap();
                let mut buf = BytesMut::from(&sent[..]);
                let first = Packet::read(&mut buf, usize::MAX).unwrap();
                assert!(matches!(first, Packet::ConnAck(ref a) if a.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success), "{first:?}");
                while !buf.is_empty() {
                    let p = Packet::read(&mut buf, usize::MAX).unwrap();
                    assert!(matches!(p, Packet::Publish(_) | Packet::PubAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp), "{p:?}");
                }
            });
        }
    }
}
