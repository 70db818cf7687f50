//! The device MQTT API (exosite-platform.md §4) over real loopback sockets, with two clients:
//! rumqttc's `AsyncClient` (a stock Rust device-side client) and the emulator's own
//! `DeviceClient` where a test needs packet-level control. Each Must and Should of §9 "Device
//! MQTT" names its test here (or in tests/python/test_mqtt.py).

use std::sync::Arc;
use std::time::Duration;

use otau_operator::emulator::events::{ConnectorEvent, DATA_IN, PUBLISH};
use otau_operator::emulator::mqtt::client::{Credentials, DeviceClient, ReturnCode};
use otau_operator::emulator::mqtt::{
    Close, MQTT_LISTENER, MqttListener, MqttMetrics, MqttOptions, MqttService,
};
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, Incoming, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use crate::harness::{CID, Emu};

/// Bound on every wait of these tests: a failure shows as a timeout, never a hang.
const WAIT: Duration = Duration::from_secs(10);

/// An emulator with its plain MQTT listener.
struct MqttEmu {
    emu: Emu,
    service: Arc<MqttService>,
    listener: MqttListener,
}

impl MqttEmu {
    async fn start() -> MqttEmu {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut MqttOptions)) -> MqttEmu {
        let emu = Emu::start().await;
        let mut options = MqttOptions::defaults(&emu.model, Some(CID.to_string()));
        tweak(&mut options);
        let service = MqttService::new(emu.model.clone(), options, MqttMetrics::new());
        let listener = MqttListener::start_plain("127.0.0.1:0".parse().unwrap(), service.clone())
            .await
            .unwrap();
        MqttEmu {
            emu,
            service,
            listener,
        }
    }

    async fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.listener.local_addr).await.unwrap()
    }

    /// Our client, connected with `credentials`; the CONNACK refusal if any.
    async fn raw(
        &self,
        credentials: &Credentials,
        keep_alive: u16,
    ) -> (DeviceClient<TcpStream>, Option<ReturnCode>) {
        tokio::time::timeout(
            WAIT,
            DeviceClient::connect(self.tcp().await, credentials, keep_alive),
        )
        .await
        .expect("CONNACK in time")
        .unwrap()
    }

    /// Opens a session of the device `identity` with our client: whitelisted and activated
    /// over HTTP, then connected with its token and keep-alive `keep_alive` s, its CONNACK
    /// accepted. Returns the client and the credentials (for more sessions of the device).
    async fn session(
        &self,
        identity: &str,
        keep_alive: u16,
    ) -> (DeviceClient<TcpStream>, Credentials) {
        let credentials = Credentials::Token(self.emu.device(identity).await);
        let (device, refused) = self.raw(&credentials, keep_alive).await;
        assert_eq!(refused, None, "{identity}: CONNACK refused");
        (device, credentials)
    }

    /// rumqttc, with `user`/`password` (none when both empty), clean session.
    fn rumqttc(&self, user: &str, password: &str) -> (AsyncClient, EventLoop) {
        let mut options =
            rumqttc::MqttOptions::new("", "127.0.0.1", self.listener.local_addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(2 << 20, 2 << 20);
        if !(user.is_empty() && password.is_empty()) {
            options.set_credentials(user, password);
        }
        AsyncClient::new(options, 16)
    }
}

/// The next message the server publishes to our client (topic, payload), within [`WAIT`].
async fn next_message(device: &mut DeviceClient<TcpStream>) -> (String, Vec<u8>) {
    tokio::time::timeout(WAIT, device.next_message())
        .await
        .expect("a message in time")
        .expect("the connection stays up")
}

/// The next packet the server sends to our client, within [`WAIT`].
async fn next_packet(device: &mut DeviceClient<TcpStream>) -> rumqttc::mqttbytes::v4::Packet {
    tokio::time::timeout(WAIT, device.next_packet())
        .await
        .expect("a packet in time")
        .expect("the connection stays up")
}

/// Polls `events` until the next incoming PUBLISH; (topic, payload).
async fn next_publish(events: &mut EventLoop) -> (String, String) {
    tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await.expect("the connection stays up") {
                Event::Incoming(Incoming::Publish(p)) => {
                    return (p.topic, String::from_utf8(p.payload.to_vec()).unwrap());
                }
                _ => continue,
            }
        }
    })
    .await
    .expect("a PUBLISH in time")
}

/// Polls `events` until `want` matches an incoming packet.
async fn until(events: &mut EventLoop, want: impl Fn(&Incoming) -> bool) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(i) = events.poll().await.expect("the connection stays up")
                && want(&i)
            {
                return;
            }
        }
    })
    .await
    .expect("the packet in time")
}

/// The next event of `kind` for `identity`.
async fn next_event(
    rx: &mut broadcast::Receiver<ConnectorEvent>,
    kind: &str,
    identity: &str,
) -> ConnectorEvent {
    tokio::time::timeout(WAIT, async {
        loop {
            let ev = rx.recv().await.unwrap();
            if ev.event.kind == kind && ev.event.identity == identity {
                return ev;
            }
        }
    })
    .await
    .expect("the event in time")
}

/// Reads until the server closes the connection; the bytes read before.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut all))
        .await
        .expect("the server closes the connection in time")
        .ok();
    all
}

#[tokio::test]
async fn mqtt_anonymous_connect_provisions_on_dollar_provision_and_the_token_works_over_http() {
    let m = MqttEmu::start().await;
    m.emu.whitelist("mq1").await;
    let (client, mut events) = m.rumqttc("", "");
    client
        .publish("$provision/mq1", QoS::AtLeastOnce, false, Vec::<u8>::new())
        .await
        .unwrap();
    // Delivered without a SUBSCRIBE (§4.2).
    let (topic, token) = next_publish(&mut events).await;
    assert_eq!(topic, "$provision/mq1");
    assert_eq!(token.len(), 40, "{token}");
    let r = m
        .emu
        .dev(Method::GET, "/onep:v1/stack/alias?otau_in", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "the token authenticates over HTTP"
    );
    // Provisioning twice fails: the anonymous session is closed (no status in MQTT).
    let (mut again, refused) = m.raw(&Credentials::Anonymous, 30).await;
    assert_eq!(refused, None);
    again.publish("$provision/mq1", b"", false).await.unwrap();
    let mut stream = again.into_inner();
    assert!(read_to_close(&mut stream).await.is_empty());
    assert_eq!(
        m.service
            .metrics()
            .closed_count(MQTT_LISTENER, Close::ProvisionRefused),
        1
    );
}

#[tokio::test]
async fn mqtt_token_and_password_auth_and_bad_credentials_get_connack_4() {
    let m = MqttEmu::start().await;
    let token = m.emu.device("mq2").await;
    let (_ok, refused) = m.raw(&Credentials::Token(token.clone()), 30).await;
    assert_eq!(refused, None, "token in the password, empty user name");
    let by_identity = Credentials::Password {
        identity: "mq2".into(),
        password: token.clone(),
    };
    assert_eq!(
        m.raw(&by_identity, 30).await.1,
        None,
        "identity as user name"
    );
    let bad = Credentials::Token("x".repeat(40));
    assert_eq!(
        m.raw(&bad, 30).await.1,
        Some(ReturnCode::BadUserNamePassword)
    );
    let wrong_identity = Credentials::Password {
        identity: "other".into(),
        password: token,
    };
    assert_eq!(
        m.raw(&wrong_identity, 30).await.1,
        Some(ReturnCode::BadUserNamePassword)
    );
    // rumqttc sees the same refusal.
    let (_c, mut events) = m.rumqttc("", "not-a-token");
    let err = tokio::time::timeout(WAIT, events.poll())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)
        ),
        "{err:?}"
    );
    assert_eq!(
        m.service
            .metrics()
            .connects(MQTT_LISTENER, "bad_credentials"),
        3
    );
}

#[tokio::test]
async fn mqtt_resource_publish_is_a_device_write_seen_over_http_and_raises_data_in() {
    let m = MqttEmu::start().await;
    let token = m.emu.device("mq3").await;
    let mut rx = m.emu.model.subscribe_events();
    let (client, mut events) = m.rumqttc("", &token);
    let report = r#"{"version":"1.0.0","status":"INSTALLED_VERSION","message":""}"#;
    client
        .publish("$resource/otau_in", QoS::AtLeastOnce, false, report)
        .await
        .unwrap();
    until(&mut events, |i| matches!(i, Incoming::PubAck(_))).await;
    let ev = next_event(&mut rx, DATA_IN, "mq3").await;
    assert_eq!(ev.event.payload[0].values["otau_in"], report);
    assert!(
        ev.event.connection_id.starts_with("mqtt-"),
        "{:?}",
        ev.event
    );
    assert_eq!(ev.event.ip, "127.0.0.1");
    // Seen over HTTP: the device read returns the set value a device write stored.
    let r = m
        .emu
        .dev(Method::GET, "/onep:v1/stack/alias?otau_in", &token)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert_eq!(
        crate::harness::form(&body),
        vec![("otau_in".to_string(), report.to_string())]
    );
    // And the other way: an HTTP device write is what the state holds, whoever wrote.
    assert_eq!(
        m.emu.device_write(&token, "otau_in", "{}").await,
        StatusCode::NO_CONTENT
    );
    let state = m.emu.conn().state("mq3").unwrap();
    assert_eq!(state["otau_in"].reported.as_deref(), Some("{}"));
}

#[tokio::test]
async fn mqtt_batch_publish_writes_each_alias_with_timestamps_normalised_by_magnitude() {
    let m = MqttEmu::start().await;
    let mut rx = m.emu.model.subscribe_events();
    let (mut device, _) = m.session("mq4", 30).await;
    let batch = r#"[{"timestamp": 1526046488, "values": {"otau_in": "{\"status\":\"INIT\"}"}},
                    {"timestamp": 1526046489000000, "values": {"otau_in": "{\"status\":\"DOWNLOADING\"}", "temperature": 98.7}}]"#;
    device
        .publish("$resource.batch", batch.as_bytes(), false)
        .await
        .unwrap();
    let ev = next_event(&mut rx, DATA_IN, "mq4").await;
    let times: Vec<i64> = ev.event.payload.iter().map(|p| p.timestamp).collect();
    assert_eq!(times, vec![1_526_046_488_000_000, 1_526_046_489_000_000]);
    assert_eq!(ev.event.payload[1].values["temperature"], "98.7");
    let state = m.emu.conn().state("mq4").unwrap();
    assert_eq!(
        state["otau_in"].reported.as_deref(),
        Some(r#"{"status":"DOWNLOADING"}"#),
        "the newest entry of the alias is stored"
    );
}

#[tokio::test]
async fn mqtt_cloud_write_is_published_at_once_without_subscribe_and_the_echo_acks_it() {
    let m = MqttEmu::start().await;
    let token = m.emu.device("mq5").await;
    let mut rx = m.emu.model.subscribe_events();
    let (client, mut events) = m.rumqttc("", &token);
    until(&mut events, |i| matches!(i, Incoming::ConnAck(_))).await;
    let manifest = r#"{"version":"2.0.0","attempt":1,"files":[]}"#;
    assert_eq!(
        m.emu.cloud_set("mq5", "config_otau", manifest).await,
        StatusCode::NO_CONTENT
    );
    let (topic, value) = next_publish(&mut events).await;
    let set = m
        .emu
        .conn()
        .read_set("mq5", "config_otau")
        .unwrap()
        .unwrap();
    assert_eq!(topic, format!("$resource/config_otau/{}", set.set_modified));
    assert_eq!(value, manifest);
    // The ack: the identical value published back (§4.4 step 2).
    client
        .publish(
            "$resource/config_otau",
            QoS::AtLeastOnce,
            false,
            value.clone(),
        )
        .await
        .unwrap();
    until(&mut events, |i| matches!(i, Incoming::PubAck(_))).await;
    let ev = next_event(&mut rx, DATA_IN, "mq5").await;
    assert_eq!(ev.event.payload[0].values["config_otau"], manifest);
    let state = m.emu.conn().state("mq5").unwrap();
    assert_eq!(state["config_otau"].reported, state["config_otau"].set);
}

#[tokio::test]
async fn mqtt_reconnect_replays_set_values_newer_than_reported_only() {
    let m = MqttEmu::start().await;
    let token = m.emu.device("mq6").await;
    let manifest = r#"{"version":"3.0.0"}"#;
    assert_eq!(
        m.emu.cloud_set("mq6", "config_otau", manifest).await,
        StatusCode::NO_CONTENT
    );
    let credentials = Credentials::Token(token);
    let (mut device, _) = m.raw(&credentials, 30).await;
    let (topic, value) = next_message(&mut device).await;
    assert!(topic.starts_with("$resource/config_otau/"), "{topic}");
    assert_eq!(value, manifest.as_bytes());
    device
        .publish("$resource/config_otau", manifest.as_bytes(), true)
        .await
        .unwrap();
    // The PUBACK tells the ack was stored.
    let ack = next_packet(&mut device).await;
    assert!(
        matches!(ack, rumqttc::mqttbytes::v4::Packet::PubAck(_)),
        "{ack:?}"
    );
    device.disconnect().await.unwrap();
    // Acked: nothing is replayed; the first packet after CONNACK is the answer to our ping.
    let (mut again, _) = m.raw(&credentials, 30).await;
    again
        .send(&rumqttc::mqttbytes::v4::Packet::PingReq)
        .await
        .unwrap();
    let first = next_packet(&mut again).await;
    assert_eq!(first, rumqttc::mqttbytes::v4::Packet::PingResp);
}

#[tokio::test]
async fn mqtt_qos2_publish_is_refused_by_closing_and_subscribe_is_granted_at_most_qos1() {
    let m = MqttEmu::start().await;
    let token = m.emu.device("mq7").await;
    let (client, mut events) = m.rumqttc("", &token);
    client
        .subscribe("$resource/#", QoS::ExactlyOnce)
        .await
        .unwrap();
    until(&mut events, |i| match i {
        Incoming::SubAck(ack) => {
            assert_eq!(
                ack.return_codes,
                vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            );
            true
        }
        _ => false,
    })
    .await;
    client.unsubscribe("$resource/#").await.unwrap();
    until(&mut events, |i| matches!(i, Incoming::UnsubAck(_))).await;
    client
        .publish("$resource/otau_in", QoS::ExactlyOnce, false, "{}")
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if events.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closes the connection");
    assert_eq!(
        m.service.metrics().closed_count(MQTT_LISTENER, Close::Qos2),
        1
    );
    let state = m.emu.conn().state("mq7").unwrap();
    assert!(
        !state.contains_key("otau_in"),
        "the QoS 2 message is dropped"
    );
}

#[tokio::test]
async fn mqtt_oversized_packet_and_oversized_value_are_dropped_and_disconnect() {
    let m = MqttEmu::start_with(|o| o.max_packet_bytes = 4096).await;
    let (mut device, _) = m.session("mq8", 30).await;
    device
        .publish("$resource/otau_in", &vec![b'x'; 8192], false)
        .await
        .unwrap();
    let mut stream = device.into_inner();
    assert!(read_to_close(&mut stream).await.is_empty());
    assert_eq!(
        m.service
            .metrics()
            .closed_count(MQTT_LISTENER, Close::PacketTooLarge),
        1
    );

    // A value within the packet size but over the resource value size.
    let small = MqttEmu::start().await;
    let limit = small.emu.model.config().resource_max_bytes;
    let (mut device, _) = small.session("mq8", 30).await;
    device
        .publish("$resource/otau_in", &vec![b'y'; limit + 1], false)
        .await
        .unwrap();
    let mut stream = device.into_inner();
    assert!(read_to_close(&mut stream).await.is_empty());
    assert_eq!(
        small
            .service
            .metrics()
            .closed_count(MQTT_LISTENER, Close::ValueRefused),
        1
    );
    assert!(
        !small
            .emu
            .conn()
            .state("mq8")
            .unwrap()
            .contains_key("otau_in")
    );
}

#[tokio::test]
async fn mqtt_custom_topic_raises_a_device2_publish_event() {
    let m = MqttEmu::start().await;
    let mut rx = m.emu.model.subscribe_events();
    let (mut device, _) = m.session("mq9", 30).await;
    device
        .publish("telemetry/boot", b"hello", true)
        .await
        .unwrap();
    let ev = next_event(&mut rx, PUBLISH, "mq9").await;
    assert_eq!(ev.event.payload[0].values["telemetry/boot"], "hello");
}

#[tokio::test]
async fn mqtt_will_is_a_qos0_device_publish_on_abrupt_close_and_dropped_on_disconnect() {
    let m = MqttEmu::start().await;
    let token = m.emu.device("mq10").await;
    let mut rx = m.emu.model.subscribe_events();
    let will = |status: &str| {
        let mut o = rumqttc::MqttOptions::new("", "127.0.0.1", m.listener.local_addr.port());
        o.set_credentials("", token.as_str());
        o.set_last_will(rumqttc::LastWill::new(
            "$resource/otau_in",
            format!(r#"{{"status":"{status}"}}"#),
            QoS::ExactlyOnce,
            true,
        ));
        AsyncClient::new(o, 4)
    };
    // Orderly DISCONNECT: the Will is discarded.
    let (client, mut events) = will("ORDERLY");
    until(&mut events, |i| matches!(i, Incoming::ConnAck(_))).await;
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(WAIT, async { while events.poll().await.is_ok() {} }).await;
    // Abrupt close: the Will (asked with QoS 2 and retain) is taken as a QoS 0 device write.
    let (_client, mut events) = will("GONE");
    until(&mut events, |i| matches!(i, Incoming::ConnAck(_))).await;
    drop(events);
    let ev = next_event(&mut rx, DATA_IN, "mq10").await;
    assert_eq!(
        ev.event.payload[0].values["otau_in"],
        r#"{"status":"GONE"}"#
    );
}

#[tokio::test]
async fn mqtt_keep_alive_is_enforced_at_one_and_a_half_times() {
    let m = MqttEmu::start().await;
    let (device, _) = m.session("mq11", 1).await;
    let started = tokio::time::Instant::now();
    let mut stream = device.into_inner();
    assert!(read_to_close(&mut stream).await.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
    assert_eq!(
        m.service
            .metrics()
            .closed_count(MQTT_LISTENER, Close::KeepAliveTimeout),
        1
    );
}

#[tokio::test]
async fn mqtt_connect_timeout_and_connection_cap_close_connections() {
    let m = MqttEmu::start_with(|o| {
        o.connect_timeout = Duration::from_millis(300);
        o.max_connections = 1;
    })
    .await;
    let mut silent = m.tcp().await;
    // The listener holds one connection: the next is accepted and closed at once.
    let mut over = m.tcp().await;
    assert!(read_to_close(&mut over).await.is_empty());
    assert!(
        read_to_close(&mut silent).await.is_empty(),
        "no CONNECT: closed"
    );
    assert_eq!(
        m.service
            .metrics()
            .closed_count(MQTT_LISTENER, Close::ConnectTimeout),
        1
    );
    assert_eq!(
        m.service
            .metrics()
            .closed_count(MQTT_LISTENER, Close::ConnectionCap),
        1
    );
}

#[tokio::test]
async fn mqtt_other_protocol_levels_get_connack_1_and_garbage_is_closed() {
    let m = MqttEmu::start().await;
    // CONNECT of MQTT 3.1 ("MQIsdp", level 3).
    let mut stream = m.tcp().await;
    let mut packet = vec![0x10, 0];
    let body: Vec<u8> = [&[0u8, 6][..], b"MQIsdp", &[3, 2, 0, 30, 0, 0]].concat();
    packet[1] = body.len() as u8;
    packet.extend(body);
    stream.write_all(&packet).await.unwrap();
    assert_eq!(read_to_close(&mut stream).await, vec![0x20, 2, 0, 1]);
    let mut garbage = m.tcp().await;
    garbage.write_all(&[0xff; 16]).await.unwrap();
    assert!(read_to_close(&mut garbage).await.is_empty());
}

#[tokio::test]
async fn mqtt_every_session_of_a_device_receives_its_cloud_writes() {
    let m = MqttEmu::start().await;
    let (mut first, credentials) = m.session("mq12", 30).await;
    let (mut second, _) = m.raw(&credentials, 30).await;
    assert_eq!(m.service.connected_devices(), 1);
    m.emu.cloud_set("mq12", "config_otau", "{}").await;
    for device in [&mut first, &mut second] {
        let (topic, value) = next_message(device).await;
        assert!(topic.starts_with("$resource/config_otau/"), "{topic}");
        assert_eq!(value, b"{}");
    }
    first.disconnect().await.unwrap();
    m.emu.cloud_set("mq12", "config_otau", "{\"v\":2}").await;
    let (_, value) = next_message(&mut second).await;
    assert_eq!(value, b"{\"v\":2}");
}

/// The Python with paho-mqtt: `PYTHON_TEST`, else the tools venv that `hack/tools.sh`
/// fills (`OTAU_TOOLS_DIR` or `~/.cache/otau-operator/tools`).
fn paho_python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("PYTHON_TEST").filter(|v| !v.is_empty()) {
        return p.into();
    }
    let tools = std::env::var_os("OTAU_TOOLS_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/otau-operator/tools"))
        })
        .expect("HOME or OTAU_TOOLS_DIR");
    let python = tools.join("venv/bin/python3");
    assert!(
        python.is_file(),
        "no Python with paho-mqtt at {}: run `hack/tools.sh python`",
        python.display()
    );
    python
}

/// paho-mqtt against both MQTT listeners, and content over HTTP on the TLS MQTT port by ALPN
/// with Python's `ssl` + `http.client` (tests/python/mqtt_checks.py).
#[tokio::test]
async fn mqtt_paho_device_and_alpn_http_download_on_the_mqtt_tls_port() {
    use otau_operator::emulator::model::ContentItem;
    use otau_operator::emulator::server::{self, AppState, ServerOptions};
    use sha2::Digest;

    let m = MqttEmu::start().await;
    let data: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sha = hex::encode(sha2::Sha256::digest(&data));
    m.emu
        .conn()
        .content()
        .put(ContentItem {
            id: "fw-1.1.0.bin".into(),
            content_type: "application/octet-stream".into(),
            data: data.into(),
            tags: Default::default(),
            last_modified: 1_700_000_000_000_000,
        })
        .unwrap();
    let cert = otau_operator::emulator::tls::self_signed(&[]).unwrap();
    let state = AppState {
        model: m.emu.model.clone(),
        options: Arc::new(ServerOptions {
            default_connector: Some(CID.to_string()),
            ..ServerOptions::default()
        }),
    };
    let tls = MqttListener::start_tls(
        "127.0.0.1:0".parse().unwrap(),
        m.service.clone(),
        &cert,
        server::router(state),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cafile = dir.path().join("cert.pem");
    std::fs::write(&cafile, cert.certificate_pem()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/mqtt_checks.py");
    let run = tokio::process::Command::new(paho_python())
        .arg(script)
        .args(["--mqtt", &m.listener.local_addr.to_string()])
        .args(["--management", &format!("{}/api:1", m.emu.base)])
        .args(["--management-token", crate::harness::MTOKEN])
        .args(["--connector", CID, "--identity", "paho1"])
        .args(["--mqtts", &tls.local_addr.to_string()])
        .arg("--cafile")
        .arg(&cafile)
        .args(["--content-id", "fw-1.1.0.bin", "--content-sha256", &sha])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the script ends in time")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for check in [
        "ok paho_provision_without_subscribe",
        "ok paho_bad_credentials_connack_4",
        "ok paho_cloud_write_published_without_subscribe",
        "ok paho_ack_and_otau_in_reported",
        "ok paho_batch_in_seconds",
        "ok paho_subscribe_granted_qos1",
        "ok paho_replay_on_reconnect_clean_session",
        "ok paho_mqtt_over_tls_without_alpn",
        "ok alpn_http_download_on_the_mqtt_tls_port",
    ] {
        assert!(
            stdout.lines().any(|l| l == check),
            "{check} missing:\n{stdout}"
        );
    }
    // Ground truth from the model: the device's last reports, over TLS MQTT.
    let state = m.emu.conn().state("paho1").unwrap();
    assert_eq!(
        state["otau_in"].reported.as_deref(),
        Some(r#"{"status":"TLS"}"#)
    );
    let metrics = m.service.metrics();
    assert_eq!(
        metrics.http_connections(),
        1,
        "one ALPN http/1.1 connection"
    );
    assert_eq!(metrics.connects("mqtts", "accepted"), 1);
    tls.shutdown().await;
}

/// The binary's flags: both MQTT listeners start, the ready line names them and the
/// certificate, and a device activated over HTTP connects to `mqtt_url` with its token.
#[tokio::test]
async fn mqtt_binary_listens_on_the_flags_and_names_the_listeners_in_the_ready_line() {
    let (_emulator, ready) = crate::harness::start_binary(&[
        "--mqtt-listen",
        "127.0.0.1:0",
        "--mqtts-listen",
        "127.0.0.1:0",
        "--management-token",
        crate::harness::MTOKEN,
    ]);
    let url = |field: &str| {
        ready[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {ready}"))
            .to_string()
    };
    let plain = url("mqtt_url");
    let tls = url("mqtts_url");
    assert!(plain.starts_with("mqtt://127.0.0.1:"), "{plain}");
    assert!(tls.starts_with("mqtts://127.0.0.1:"), "{tls}");
    assert!(url("tls_certificate_pem").starts_with("-----BEGIN CERTIFICATE-----\n"));
    let base = url("device_url");
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/api:1/service/{CID}/device2/identity/bin1"))
        .header("authorization", format!("token {}", crate::harness::MTOKEN))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = http
        .post(format!("{base}/provision/activate"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=bin1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let stream = TcpStream::connect(plain.trim_start_matches("mqtt://"))
        .await
        .unwrap();
    let (mut device, refused) = DeviceClient::connect(stream, &Credentials::Token(token), 30)
        .await
        .unwrap();
    assert_eq!(refused, None);
    device
        .publish("$resource/otau_in", b"{}", true)
        .await
        .unwrap();
    let ack = next_packet(&mut device).await;
    assert!(
        matches!(ack, rumqttc::mqttbytes::v4::Packet::PubAck(_)),
        "{ack:?}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"otau_emulator_mqtt_connects_total{listener="mqtt",result="accepted"} 1"#),
        "{metrics}"
    );
}

/// HTTP chosen by ALPN on the MQTT TLS port has the HTTP listeners' cap on bodies in flight
/// (`--listener-max-bodies-in-flight`, here 1): while one request's body is still arriving, a
/// second request with a body is answered `503` with `Retry-After: 1` before its body is read,
/// each refusal counted for the listener `mqtts_http`; once the first body is gone, requests
/// with bodies are served again.
#[tokio::test]
async fn http_by_alpn_on_the_mqtt_tls_port_caps_the_bodies_in_flight() {
    use futures::StreamExt;

    let (_emulator, ready) = crate::harness::start_binary(&[
        "--mqtts-listen",
        "127.0.0.1:0",
        "--listener-max-bodies-in-flight",
        "1",
        "--management-token",
        crate::harness::MTOKEN,
    ]);
    let field = |name: &str| {
        ready[name]
            .as_str()
            .unwrap_or_else(|| panic!("{name} in {ready}"))
    };
    let port: std::net::SocketAddr = field("mqtts_url")
        .trim_start_matches("mqtts://")
        .parse()
        .unwrap();
    let certificate =
        reqwest::Certificate::from_pem(field("tls_certificate_pem").as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .http1_only()
        .tls_certs_only([certificate])
        .resolve("localhost", port)
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/onep:v1/stack/alias", port.port());
    // A body that never ends: its request holds the one body slot while it is read.
    let hold = || {
        let endless = futures::stream::once(async {
            Ok::<_, std::io::Error>(bytes::Bytes::from("otau_in="))
        })
        .chain(futures::stream::pending());
        tokio::spawn(
            client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(reqwest::Body::wrap_stream(endless))
                .send(),
        )
    };
    let send = || async {
        tokio::time::timeout(
            WAIT,
            client
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("otau_in=x")
                .send(),
        )
        .await
        .expect("an answer in time")
        .expect("an answer")
    };
    // Until the holding request's headers are in, a request may still get the slot; then
    // every request with a body is refused. The holding request itself is refused when it
    // arrives while such a request has the slot: it is then sent again (and its refusal
    // counted).
    let mut holding = hold();
    let mut refused = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    let answer = loop {
        if holding.is_finished() {
            let answer = holding.await.expect("the task").expect("an answer");
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            refused += 1;
            holding = hold();
        }
        let answer = send().await;
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused += 1;
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never refused: {}",
            answer.status()
        );
    };
    assert_eq!(
        answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let again = send().await;
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
    refused += 1;
    let metrics = reqwest::get(format!("{}/metrics", field("device_url")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        r#"otau_emulator_listener_refused_total{{listener="mqtts_http",reason="bodies_in_flight"}} {refused}"#
    );
    assert!(
        metrics.lines().any(|l| l == series),
        "{series} not in\n{metrics}"
    );
    // The holding request goes away (its connection closes): the slot is free again.
    holding.abort();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = send().await.status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
    }
}
