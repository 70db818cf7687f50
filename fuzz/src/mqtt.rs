//! The emulator's device MQTT session, driven over an in-memory stream: each input is the
//! byte stream a device sends after connecting. Unless the input starts with a CONNECT packet
//! of its own (first byte 0x10), the harness sends a valid CONNECT with the device's token
//! first, so mutations spend their time past authentication. A cloud write of `config_otau`
//! is made while the session runs, so the publish path to the device is exercised too.
//!
//! Whatever the input: the session ends (on paused time, its timeouts pass at once), nothing
//! panics, and every byte the server sent decodes as a sequence of MQTT 3.1.1 packets of the
//! kinds a server sends.

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use otau_operator::emulator::clock::ManualClock;
use otau_operator::emulator::model::{Model, ModelConfig, NewIdentity};
use otau_operator::emulator::mqtt::{MqttMetrics, MqttOptions, MqttService};

const CID: &str = "fuzz0connector00";
const IDENTITY: &str = "dev-000001";
const START: i64 = 1_735_689_600_000_000;
/// Small limits so that inputs reach them.
const RESOURCE_MAX: usize = 4096;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

fn connect_packet(token: &str) -> Vec<u8> {
    let mut connect = Connect::new("");
    connect.keep_alive = 30;
    connect.login = Some(Login::new("", token));
    let mut out = BytesMut::new();
    Packet::Connect(connect)
        .write(&mut out, usize::MAX)
        .expect("a CONNECT encodes");
    out.to_vec()
}

/// One device session fed `data`.
pub fn session(data: &[u8]) {
    let config = ModelConfig {
        resource_max_bytes: RESOURCE_MAX,
        event_capacity: 16,
        ..ModelConfig::default()
    };
    let model = Model::new(config, Arc::new(ManualClock::new(START)));
    let conn = model.add_connector(CID).expect("connector");
    conn.add_identity(IDENTITY, NewIdentity::default())
        .expect("identity");
    conn.add_identity("dev-000002", NewIdentity::default())
        .expect("identity");
    let token = conn.activate(IDENTITY).expect("activate");
    let mut input = Vec::with_capacity(data.len() + 64);
    if data.first() != Some(&0x10) {
        input.extend(connect_packet(&token));
    }
    input.extend_from_slice(data);
    let options = MqttOptions::defaults(&model, Some(CID.to_owned()));
    let service = MqttService::new(model.clone(), options, MqttMetrics::new());
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    runtime().block_on(async move {
        let (device, server) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(device);
        let session = tokio::spawn({
            let service = service.clone();
            async move {
                service
                    .serve_stream(server, "127.0.0.1:1".parse().expect("addr"), stop)
                    .await
            }
        });
        let writer = tokio::spawn(async move {
            let _ = to_server.write_all(&input).await;
            let _ = to_server.shutdown().await;
        });
        let _ = conn.set_state(
            IDENTITY,
            &[(
                "config_otau".to_owned(),
                r#"{"version":"2.0.0"}"#.to_owned(),
            )],
            "fuzz",
        );
        let mut sent = Vec::new();
        let _ = from_server.read_to_end(&mut sent).await;
        let _ = writer.await;
        session.await.expect("the session does not panic");
        let mut buf = BytesMut::from(&sent[..]);
        while !buf.is_empty() {
            let packet = Packet::read(&mut buf, usize::MAX).expect("the server's bytes decode");
            assert!(
                matches!(
                    packet,
                    Packet::ConnAck(_)
                        | Packet::Publish(_)
                        | Packet::PubAck(_)
                        | Packet::SubAck(_)
                        | Packet::UnsubAck(_)
                        | Packet::PingResp
                ),
                "a server sends no {packet:?}"
            );
        }
    });
}
