//! Ground truth and metrics over real loopback HTTP, and [`EdgeEmu`]: an
//! emulator with every edge part attached (GraphQL, admin, `/metrics`, faults, webhook), shared
//! by the graphql, webhook and faults test modules.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use otau_operator::emulator::admin::{self, AdminState, RequestMetrics};
use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::faults::{FaultConfig, Faults};
use otau_operator::emulator::graphql::GraphqlState;
use otau_operator::emulator::model::{Account, Connector, Model, ModelConfig, NewIdentity};
use otau_operator::emulator::server::{self, AppState, RunningServer, ServerOptions};
use otau_operator::emulator::webhook::{WebhookConfig, WebhookDelivery};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

/// The connector of the edge tests.
pub const CID: &str = "edge0connector0";
/// The management token of the edge tests.
pub const MTOKEN: &str = "edge-management-token-0123456789abcdefgh";
/// The ExoSense automation token of the edge tests.
pub const ATOKEN: &str = "edge-automation-token";

/// A running emulator with the edge parts attached.
pub struct EdgeEmu {
    /// The model.
    pub model: Arc<Model>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// HTTP client (no proxy, 30 s timeout).
    pub http: reqwest::Client,
    /// The live fault setting.
    pub faults: Arc<Faults>,
    /// Webhook delivery, when started with a webhook setting.
    pub webhook: Option<WebhookDelivery>,
    _server: RunningServer,
}

impl EdgeEmu {
    /// No faults, no webhook.
    pub async fn start() -> EdgeEmu {
        Self::start_with(FaultConfig::default(), None).await
    }

    /// With a fault setting and an optional webhook setting.
    pub async fn start_with(faults: FaultConfig, webhook: Option<WebhookConfig>) -> EdgeEmu {
        let config = ModelConfig {
            management_tokens: vec![MTOKEN.to_string()],
            accounts: vec![Account {
                email: "user@example.com".into(),
                password: "secret".into(),
            }],
            ..ModelConfig::default()
        };
        let model = Model::new(config, Arc::new(SystemClock));
        model.add_connector(CID).unwrap();
        let state = AppState {
            model: model.clone(),
            options: Arc::new(ServerOptions {
                default_connector: Some(CID.to_string()),
                ..ServerOptions::default()
            }),
        };
        let webhook = webhook.map(|w| WebhookDelivery::start(&model, w).unwrap());
        let faults = Arc::new(Faults::new(faults).unwrap());
        let admin_state = AdminState {
            model: model.clone(),
            faults: faults.clone(),
            requests: RequestMetrics::new(),
            webhook: webhook.as_ref().map(WebhookDelivery::stats),
        };
        let graphql = GraphqlState {
            model: model.clone(),
            default_connector: Some(CID.to_string()),
            automation_tokens: vec![ATOKEN.to_string()],
        };
        let app = admin::attach(server::router(state.clone()), admin_state, graphql);
        let server = server::start_with_router("127.0.0.1:0".parse().unwrap(), state, app)
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        EdgeEmu {
            model,
            base: server.base_url.clone(),
            http,
            faults,
            webhook,
            _server: server,
        }
    }

    /// The test connector.
    pub fn conn(&self) -> Arc<Connector> {
        self.model.connector(CID).unwrap()
    }

    /// A request to `<base><path>`.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A device2 request to `/api:1/service/<CID>/device2<path>` with the management token.
    pub fn device2(&self, method: Method, path: &str) -> RequestBuilder {
        self.req(method, &format!("/api:1/service/{CID}/device2{path}"))
            .header("authorization", format!("token {MTOKEN}"))
    }

    /// Whitelists and activates `identity` (in the model); its device token.
    pub fn device(&self, identity: &str) -> String {
        let conn = self.conn();
        conn.add_identity(identity, NewIdentity::default()).unwrap();
        conn.activate(identity).unwrap()
    }

    /// A device write of `alias=value` over the device API.
    pub async fn device_write(&self, token: &str, alias: &str, value: &str) -> StatusCode {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(alias, value)
            .finish();
        self.req(Method::POST, "/onep:v1/stack/alias")
            .header("x-exosite-cik", token)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// `GET <path>` as JSON.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(Method::GET, path).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{path}: {status} {text:?} is not JSON: {e}"));
        (status, v)
    }
}

/// Waits until `check` gives `Some`, polling every 10 ms, for at most `deadline`.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Per device, how many `config_otau` writes it received, when, and from which client
/// (`X-Otau-Client`, else `User-Agent`), on the admin JSON endpoints.
#[tokio::test]
async fn config_otau_ground_truth_names_count_time_and_client() {
    let emu = EdgeEmu::start().await;
    emu.device("d1");
    emu.device("d2");
    let manifest = |attempt: u32| {
        json!({"version": "1.0.2", "name": "fw", "type": "URL_LIST", "payload": ["f.bin"], "attempt": attempt})
            .to_string()
    };
    let r = emu
        .device2(Method::PATCH, "/identity/d1/state")
        .header("x-otau-client", "operator-test/1")
        .json(&json!({"config_otau": manifest(1)}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = emu
        .device2(Method::PATCH, "/identity/d1/state")
        .header("user-agent", "plain-agent/2")
        .json(&json!({"config_otau": manifest(2)}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());

    let (status, v) = emu
        .get_json(&format!("/admin/devices/{CID}/d1/writes"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["count"], 2);
    assert_eq!(v["writes"][0]["client"], "operator-test/1");
    assert_eq!(v["writes"][0]["attempt"], 1);
    assert_eq!(v["writes"][1]["client"], "plain-agent/2");
    assert_eq!(v["writes"][1]["attempt"], 2);
    let (t0, t1) = (
        v["writes"][0]["at"].as_i64().unwrap(),
        v["writes"][1]["at"].as_i64().unwrap(),
    );
    assert!(
        t0 > 1_600_000_000_000_000 && t1 >= t0,
        "µs timestamps: {t0} {t1}"
    );

    let (status, v) = emu
        .get_json(&format!("/admin/devices/{CID}/d2/writes"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["count"], 0);

    let (_, v) = emu
        .get_json(&format!("/admin/config_otau_writes?connector={CID}"))
        .await;
    let c = &v["connectors"][CID];
    assert_eq!(c["total_writes"], 2);
    assert_eq!(c["devices_written"], 1);
    assert_eq!(c["devices_written_more_than_once"], 1);
    let d1 = &c["devices"]["d1"];
    assert_eq!(d1["count"], 2);
    assert_eq!(
        d1["clients"],
        json!({"operator-test/1": 1, "plain-agent/2": 1})
    );
    assert_eq!(d1["max_attempt"], 2);
    assert_eq!(d1["first_at"].as_i64(), Some(t0));
    assert_eq!(d1["last_at"].as_i64(), Some(t1));

    let (status, v) = emu.get_json("/admin/devices/nope/d1/writes").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(v["message"].as_str().unwrap().contains("nope"));
    let (status, _) = emu
        .get_json(&format!("/admin/devices/{CID}/ghost/writes"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = emu
        .get_json("/admin/config_otau_writes?connector=nope")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Per-route request counts and timings on `/admin/requests`, and reset.
#[tokio::test]
async fn requests_are_counted_per_route_status_and_method() {
    let emu = EdgeEmu::start().await;
    emu.device("d1");
    for _ in 0..3 {
        let r = emu
            .device2(Method::GET, "/identity/d1/state")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let r = emu
        .device2(Method::GET, "/identity/ghost/state")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = emu.req(Method::GET, "/timestamp").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let (_, v) = emu.get_json("/admin/requests").await;
    let state = &v["routes"]["device2.state"];
    assert_eq!(state["count"], 4);
    assert_eq!(state["by_status"], json!({"200": 3, "404": 1}));
    assert_eq!(state["by_method"], json!({"GET": 4}));
    assert!(state["max_ms"].as_f64().unwrap() >= state["mean_ms"].as_f64().unwrap());
    assert_eq!(v["routes"]["device.timestamp"]["count"], 1);

    let r = emu
        .req(Method::DELETE, "/admin/requests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (_, v) = emu.get_json("/admin/requests").await;
    // Only the GET /admin/requests itself is still in flight when the tallies are read.
    assert!(v["routes"].get("device2.state").is_none(), "{v}");
}

/// `/metrics` in Prometheus text: requests by route and status, the latency histogram,
/// `config_otau` writes, webhook deliveries, injected faults, devices by state.
#[tokio::test]
async fn metrics_expose_requests_writes_faults_and_devices() {
    let webhook = WebhookConfig::default();
    let emu = EdgeEmu::start_with(FaultConfig::default(), Some(webhook)).await;
    let token = emu.device("d1");
    emu.conn()
        .add_identity("d2", NewIdentity::default())
        .unwrap();
    let r = emu
        .device2(Method::PATCH, "/identity/d1/state")
        .json(&json!({"config_otau": "{\"version\":\"2\"}"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let report = r#"{"version":"1","status":"INSTALLED_VERSION","message":""}"#;
    assert_eq!(
        emu.device_write(&token, "otau_in", report).await,
        StatusCode::NO_CONTENT
    );

    let r = emu.req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let has = |line: &str| {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        )
    };
    has(r#"otau_emulator_requests_total{method="PATCH",route="device2.state",status="204"} 1"#);
    has(r#"otau_emulator_requests_total{method="POST",route="device.write",status="204"} 1"#);
    has(&format!(
        r#"otau_emulator_config_otau_writes_total{{connector="{CID}"}} 1"#
    ));
    has(&format!(
        r#"otau_emulator_devices{{connector="{CID}",status="provisioned"}} 1"#
    ));
    has(&format!(
        r#"otau_emulator_devices{{connector="{CID}",status="whitelisted"}} 1"#
    ));
    has(&format!(
        r#"otau_emulator_devices_by_otau_status{{connector="{CID}",otau_status="INSTALLED_VERSION"}} 1"#
    ));
    has(&format!(
        r#"otau_emulator_devices_by_otau_status{{connector="{CID}",otau_status="none"}} 1"#
    ));
    has(r#"otau_emulator_faults_injected_total{kind="errors"} 0"#);
    assert!(text.contains("otau_emulator_webhook_deliveries_total{outcome=\"delivered\"}"));
    assert!(text.contains(
        "otau_emulator_request_duration_seconds_bucket{route=\"device2.state\",le=\"0.001\"}"
    ));
    assert!(text.contains("# TYPE otau_emulator_request_duration_seconds histogram"));
    assert!(text.contains("# TYPE otau_emulator_config_otau_writes_total counter"));
}

/// The optional HTTPS listener serves the same router with a self-signed
/// certificate generated at start; a client that trusts it gets answers, one that does not is
/// refused.
#[tokio::test]
async fn https_listener_serves_the_router_with_a_self_signed_certificate() {
    use otau_operator::emulator::tls::TlsListener;

    let emu = EdgeEmu::start().await;
    let token = emu.device("tls1");
    let state = AppState {
        model: emu.model.clone(),
        options: Arc::new(ServerOptions {
            default_connector: Some(CID.to_string()),
            ..ServerOptions::default()
        }),
    };
    let tls = TlsListener::start("127.0.0.1:0".parse().unwrap(), server::router(state), &[])
        .await
        .unwrap();
    assert!(
        tls.certificate_pem()
            .starts_with("-----BEGIN CERTIFICATE-----\n")
    );
    let trusting = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_der(tls.certificate_der()).unwrap()])
        .build()
        .unwrap();
    let r = trusting
        .post(format!("{}/onep:v1/stack/alias", tls.base_url))
        .header("x-exosite-cik", &token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("otau_in=over-tls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        emu.conn().state("tls1").unwrap()["otau_in"]
            .reported
            .as_deref(),
        Some("over-tls")
    );
    let r = trusting
        .get(format!(
            "https://localhost:{}/timestamp",
            tls.local_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let untrusting = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        untrusting
            .get(format!("{}/timestamp", tls.base_url))
            .send()
            .await
            .is_err()
    );
    tls.shutdown().await;
}
