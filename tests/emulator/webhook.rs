//! Push of device2 events (exosite-platform.md §6.3, §9 "Push") over real loopback HTTP: a
//! receiver in the test checks every signature itself with the `hmac` crate.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use otau_operator::emulator::webhook::{
    WebhookConfig, WebhookSecret, WebhookStatsSnapshot, WebhookTarget,
};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::admin::{CID, EdgeEmu, wait_for};
use otau_operator::emulator::faults::FaultConfig;

const SECRET: &str = "per-connector-secret";
const DEADLINE: Duration = Duration::from_secs(20);

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    query: BTreeMap<String, String>,
    content_type: String,
    signature: String,
    body: Bytes,
}

#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer, in order; 204 once used up.
    script: Arc<Mutex<VecDeque<u16>>>,
    /// When set, each request waits for a permit before answering.
    gate: Option<Arc<Semaphore>>,
}

impl Receiver {
    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

async fn receive(
    State(rx): State<Receiver>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    rx.got.lock().unwrap().push(Received {
        query,
        content_type: header("content-type"),
        signature: header("x-otau-signature"),
        body,
    });
    if let Some(gate) = &rx.gate {
        gate.acquire().await.unwrap().forget();
    }
    let status = rx.script.lock().unwrap().pop_front().unwrap_or(204);
    StatusCode::from_u16(status).unwrap()
}

/// Starts a receiver on 127.0.0.1:0 answering `script`; its URL.
async fn receiver(script: &[u16], gate: Option<Arc<Semaphore>>) -> (Receiver, String) {
    let rx = Receiver {
        got: Arc::default(),
        script: Arc::new(Mutex::new(script.iter().copied().collect())),
        gate,
    };
    let app = Router::new()
        .route("/hooks/device2", post(receive))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/device2", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (rx, url)
}

/// A webhook setting for [`CID`] with short retry delays, so tests do not wait seconds.
fn config(url: &str) -> WebhookConfig {
    WebhookConfig {
        targets: BTreeMap::from([(
            CID.to_string(),
            WebhookTarget {
                url: url.parse().unwrap(),
                secret: WebhookSecret::new(SECRET),
            },
        )]),
        retry_delays: vec![
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::from_millis(40),
        ],
        ..WebhookConfig::default()
    }
}

/// Checks the signature independently of the emulator's code.
fn signature_ok(r: &Received) -> bool {
    let Some(hex_digest) = r.signature.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&r.body);
    mac.verify_slice(&hex::decode(hex_digest).unwrap()).is_ok()
}

async fn emu_with(url: &str) -> EdgeEmu {
    EdgeEmu::start_with(FaultConfig::default(), Some(config(url))).await
}

fn stats(emu: &EdgeEmu) -> WebhookStatsSnapshot {
    emu.webhook.as_ref().unwrap().stats().snapshot()
}

async fn wait_finished(emu: &EdgeEmu, n: u64) -> WebhookStatsSnapshot {
    wait_for("webhook deliveries to finish", DEADLINE, || async {
        let s = stats(emu);
        (s.finished() >= n).then_some(s)
    })
    .await
}

const REPORT: &str = r#"{"version":"1.0.2","status":"INSTALL_STEP","message":""}"#;

/// §9 Must (our contract): a device write reaches the connector's URL as a `data_in` event,
/// `?connector=<cid>`, JSON, with an `X-Otau-Signature` the receiver verifies over the raw body.
/// A cloud write raises no event.
#[tokio::test]
async fn device_write_is_pushed_signed_to_the_connector_url() {
    let (rx, url) = receiver(&[], None).await;
    let emu = emu_with(&url).await;
    let token = emu.device("00AB01");
    let r = emu
        .device2(reqwest::Method::PATCH, "/identity/00AB01/state")
        .json(&serde_json::json!({"config_otau": "{\"version\":\"1.0.2\"}"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(
        emu.device_write(&token, "otau_in", REPORT).await,
        StatusCode::NO_CONTENT
    );
    let s = wait_finished(&emu, 1).await;
    assert_eq!((s.delivered, s.attempts), (1, 1), "{s:?}");
    // The cloud write came first; had it raised an event, it would have been queued too.
    assert_eq!(s.queued, 1, "{s:?}");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert!(
        signature_ok(r),
        "signature {:?} does not verify",
        r.signature
    );
    assert_eq!(r.query.get("connector").map(String::as_str), Some(CID));
    assert_eq!(r.content_type, "application/json");
    let ev: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(ev["type"], "data_in");
    assert_eq!(ev["identity"], "00AB01");
    assert_eq!(ev["payload"][0]["values"]["otau_in"], REPORT);
    assert!(
        ev["timestamp"].as_i64().unwrap() > 1_600_000_000_000_000,
        "µs"
    );
    // A tampered body or another key would not verify.
    let mut tampered = r.clone();
    tampered.body = r.body.slice(1..);
    assert!(!signature_ok(&tampered));
}

/// §6.3: connection errors, timeouts and 5xx are retried (three more tries), with the same
/// signed body each time.
#[tokio::test]
async fn server_errors_are_retried_until_accepted() {
    let (rx, url) = receiver(&[500, 503], None).await;
    let emu = emu_with(&url).await;
    let token = emu.device("d1");
    assert_eq!(
        emu.device_write(&token, "otau_in", REPORT).await,
        StatusCode::NO_CONTENT
    );
    let s = wait_finished(&emu, 1).await;
    assert_eq!(
        (s.delivered, s.failed, s.attempts, s.retries),
        (1, 0, 3, 2),
        "{s:?}"
    );
    let got = rx.received();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(signature_ok));
    assert!(got.iter().all(|r| r.body == got[0].body));
}

/// §6.3: after the first try and three retries the event is dropped (and counted).
#[tokio::test]
async fn persistent_server_errors_drop_the_event_after_three_retries() {
    let (rx, url) = receiver(&[500, 500, 500, 500, 500], None).await;
    let emu = emu_with(&url).await;
    let token = emu.device("d1");
    emu.device_write(&token, "otau_in", REPORT).await;
    let s = wait_finished(&emu, 1).await;
    assert_eq!((s.delivered, s.failed, s.attempts), (0, 1, 4), "{s:?}");
    assert_eq!(rx.received().len(), 4);
}

/// §6.3: no retry on 4xx.
#[tokio::test]
async fn client_errors_are_not_retried() {
    let (rx, url) = receiver(&[400], None).await;
    let emu = emu_with(&url).await;
    let token = emu.device("d1");
    emu.device_write(&token, "otau_in", REPORT).await;
    let s = wait_finished(&emu, 1).await;
    assert_eq!((s.rejected, s.attempts, s.retries), (1, 1, 0), "{s:?}");
    assert_eq!(rx.received().len(), 1);
}

/// §6.3: a refused connection is retried, then dropped.
#[tokio::test]
async fn connection_errors_are_retried_then_dropped() {
    // A port that was free a moment ago: nothing listens there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/device2", closed.local_addr().unwrap());
    drop(closed);
    let emu = emu_with(&url).await;
    let token = emu.device("d1");
    emu.device_write(&token, "otau_in", REPORT).await;
    let s = wait_finished(&emu, 1).await;
    assert_eq!((s.failed, s.attempts), (1, 4), "{s:?}");
}

/// The queue is bounded: with the receiver stalled, extra events are dropped and counted,
/// while device writes keep being answered at once (the model never waits on delivery).
#[tokio::test]
async fn a_full_queue_drops_events_without_blocking_devices() {
    let gate = Arc::new(Semaphore::new(0));
    let (rx, url) = receiver(&[], Some(gate.clone())).await;
    let mut cfg = config(&url);
    cfg.queue_capacity = 2;
    cfg.max_in_flight = 1;
    let emu = EdgeEmu::start_with(FaultConfig::default(), Some(cfg)).await;
    let token = emu.device("d1");
    for i in 0..10 {
        let v = format!(r#"{{"version":"{i}","status":"INSTALL_STEP","message":""}}"#);
        assert_eq!(
            emu.device_write(&token, "otau_in", &v).await,
            StatusCode::NO_CONTENT
        );
    }
    let s = wait_for("dropped events", DEADLINE, || async {
        let s = stats(&emu);
        (s.queued + s.queue_full == 10).then_some(s)
    })
    .await;
    // One in flight (held at the receiver), at most two waiting (one may sit between the
    // queue and the in-flight slot): the rest were dropped.
    assert!(s.queue_full >= 6, "{s:?}");
    gate.add_permits(100);
    let s = wait_finished(&emu, s.queued).await;
    assert_eq!(s.delivered, s.queued, "{s:?}");
    assert_eq!(rx.received().len() as u64, s.queued);
}

/// `webhook_event_types` adds event types: `provisioned` is pushed when asked for.
#[tokio::test]
async fn extra_event_types_are_pushed_when_configured() {
    let (rx, url) = receiver(&[], None).await;
    let mut cfg = config(&url);
    cfg.event_types.insert("provisioned".into());
    let emu = EdgeEmu::start_with(FaultConfig::default(), Some(cfg)).await;
    emu.device("d9");
    let s = wait_finished(&emu, 1).await;
    assert_eq!(s.delivered, 1);
    let ev: serde_json::Value = serde_json::from_slice(&rx.received()[0].body).unwrap();
    assert_eq!(ev["type"], "provisioned");
    assert_eq!(ev["identity"], "d9");
}

/// The webhook is set by flags (`--webhook-url`, `--webhook-secret-file`), the secret
/// read from a file, never from a flag's value; [`Edges`] starts delivery from them.
#[tokio::test]
async fn edges_start_webhook_delivery_from_flags() {
    use clap::Parser;
    use otau_operator::emulator::admin::{EdgeArgs, Edges};
    use otau_operator::emulator::clock::SystemClock;
    use otau_operator::emulator::model::{Model, ModelConfig, NewIdentity};
    use otau_operator::emulator::server::{self, AppState, ServerOptions};
    use std::io::Write;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        edges: EdgeArgs,
    }

    let (rx, url) = receiver(&[], None).await;
    let mut secret_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret_file, "{SECRET}").unwrap();
    let cmd = Cmd::try_parse_from([
        "emulator",
        "--webhook-url",
        &url,
        "--webhook-secret-file",
        secret_file.path().to_str().unwrap(),
    ])
    .unwrap();
    let model = Model::new(ModelConfig::default(), std::sync::Arc::new(SystemClock));
    let conn = model.add_connector(CID).unwrap();
    let edges = Edges::start(&model, Some(CID), &cmd.edges).unwrap();
    let state = AppState {
        model: model.clone(),
        options: std::sync::Arc::new(ServerOptions {
            default_connector: Some(CID.to_string()),
            ..ServerOptions::default()
        }),
    };
    let app = edges.attach(server::router(state.clone()));
    let running = server::start_with_router("127.0.0.1:0".parse().unwrap(), state, app)
        .await
        .unwrap();
    conn.add_identity("d1", NewIdentity::default()).unwrap();
    let token = conn.activate("d1").unwrap();
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/onep:v1/stack/alias", running.base_url))
        .header("x-exosite-cik", token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("otau_in=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let got = wait_for("the pushed event", DEADLINE, || async {
        let got = rx.received();
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert!(
        signature_ok(&got[0]),
        "the file's secret (without its line break) signs"
    );
    assert_eq!(
        edges.webhook.as_ref().unwrap().stats().snapshot().attempts,
        1
    );
}

/// A device write over MQTT (`$resource/otau_in`, QoS 1) is pushed like an HTTP one: one
/// signed `data_in` event with the report, its connection id naming the MQTT session.
#[tokio::test]
async fn mqtt_device_write_is_pushed_signed_like_an_http_write() {
    use otau_operator::emulator::mqtt::client::{Credentials, DeviceClient};
    use otau_operator::emulator::mqtt::{MqttListener, MqttMetrics, MqttOptions, MqttService};

    let (rx, url) = receiver(&[], None).await;
    let emu = emu_with(&url).await;
    let token = emu.device("00AB02");
    let service = MqttService::new(
        emu.model.clone(),
        MqttOptions::defaults(&emu.model, Some(CID.to_string())),
        MqttMetrics::new(),
    );
    let listener = MqttListener::start_plain("127.0.0.1:0".parse().unwrap(), service)
        .await
        .unwrap();
    let stream = tokio::net::TcpStream::connect(listener.local_addr)
        .await
        .unwrap();
    let (mut device, refused) = DeviceClient::connect(stream, &Credentials::Token(token), 30)
        .await
        .unwrap();
    assert_eq!(refused, None);
    device
        .publish("$resource/otau_in", REPORT.as_bytes(), true)
        .await
        .unwrap();
    let s = wait_finished(&emu, 1).await;
    assert_eq!(s.delivered, 1, "{s:?}");
    let got = rx.received();
    assert!(signature_ok(&got[0]));
    let event: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["type"], "data_in");
    assert_eq!(event["identity"], "00AB02");
    assert_eq!(event["payload"][0]["values"]["otau_in"], REPORT);
    assert!(
        event["connection_id"]
            .as_str()
            .unwrap()
            .starts_with("mqtt-"),
        "{event}"
    );
}
