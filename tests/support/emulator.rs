//! The emulator for integration tests, in-process on 127.0.0.1:0: one connector, the
//! management API, ExoSense GraphQL, fault injection (off until a test sets rules) and a
//! server-side log of every request, so tests check what reached the platform, not what the
//! client believes it sent.
//!
//! Shared by the `platform` and `cluster` test binaries (each wraps it with its own helpers).

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use otau_operator::emulator::clock::{Clock, SystemClock};
use otau_operator::emulator::faults::{self, FaultConfig, Faults};
use otau_operator::emulator::graphql::{self, GraphqlState};
use otau_operator::emulator::model::{Connector, ContentItem, Model, ModelConfig};
use otau_operator::emulator::server::{self, AppState, RunningServer, ServerOptions};
use tokio::time::Instant;

/// One request as the emulator saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// When the request reached the server.
    pub received: Instant,
    /// When the server answered.
    pub answered: Instant,
    /// Method.
    pub method: String,
    /// Path (without query).
    pub path: String,
    /// Query string (empty when none).
    pub query: String,
    /// Status answered.
    pub status: u16,
    /// `Retry-After` answered, as sent.
    pub retry_after: Option<String>,
    /// `User-Agent` sent.
    pub user_agent: String,
}

impl Logged {
    /// `Retry-After` in whole seconds, when the answer carried that form.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .as_deref()
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Who the emulator knows.
#[derive(Debug, Clone)]
pub struct EmulatorSetup {
    /// The one connector (product) id.
    pub connector_id: String,
    /// The management tokens accepted (the emulator's GraphQL accepts them as well).
    pub management_tokens: Vec<String>,
    /// Extra ExoSense Automation tokens accepted by GraphQL only.
    pub automation_tokens: Vec<String>,
}

/// A running emulator.
pub struct TestEmulator {
    /// The platform model (ground truth).
    pub model: Arc<Model>,
    /// Fault injection (off until set).
    pub faults: Arc<Faults>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    connector_id: String,
    log: Arc<Mutex<Vec<Logged>>>,
    _server: RunningServer,
}

async fn record(
    axum::extract::State(log): axum::extract::State<Arc<Mutex<Vec<Logged>>>>,
    req: Request,
    next: Next,
) -> Response {
    let received = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let user_agent = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let response = next.run(req).await;
    let entry = Logged {
        received,
        answered: Instant::now(),
        method,
        path,
        query,
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        user_agent,
    };
    log.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    response
}

impl TestEmulator {
    /// Starts the emulator for `setup`.
    pub async fn start(setup: EmulatorSetup) -> TestEmulator {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let model = Model::new(
            ModelConfig {
                management_tokens: setup.management_tokens.clone(),
                ..ModelConfig::default()
            },
            clock,
        );
        model
            .add_connector(&setup.connector_id)
            .expect("add the test connector");
        let state = AppState {
            model: model.clone(),
            options: Arc::new(ServerOptions {
                default_connector: Some(setup.connector_id.clone()),
                ..ServerOptions::default()
            }),
        };
        let faults = Arc::new(Faults::off());
        let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let app = server::router(state.clone()).merge(graphql::router(GraphqlState {
            model: model.clone(),
            default_connector: Some(setup.connector_id.clone()),
            automation_tokens: setup.automation_tokens.clone(),
        }));
        let app = faults::apply(app, faults.clone())
            .layer(middleware::from_fn_with_state(log.clone(), record));
        let running = server::start_with_router("127.0.0.1:0".parse().expect("addr"), state, app)
            .await
            .expect("start the emulator");
        TestEmulator {
            model,
            faults,
            base: running.base_url.clone(),
            connector_id: setup.connector_id,
            log,
            _server: running,
        }
    }

    /// The test connector.
    pub fn conn(&self) -> Arc<Connector> {
        self.model
            .connector(&self.connector_id)
            .expect("the test connector")
    }

    /// One content item of the test connector.
    pub fn content(&self, id: &str) -> Option<Arc<ContentItem>> {
        self.conn().content().get(id)
    }

    /// Every content id of the test connector.
    pub fn content_ids(&self) -> Vec<String> {
        self.conn()
            .content()
            .list()
            .iter()
            .map(|i| i.id.clone())
            .collect()
    }

    /// The management API base, `http://127.0.0.1:<port>/api:1/`.
    pub fn management_url(&self) -> url::Url {
        url::Url::parse(&format!("{}/api:1/", self.base)).expect("management url")
    }

    /// The ExoSense GraphQL endpoint.
    pub fn graphql_url(&self) -> url::Url {
        url::Url::parse(&format!("{}{}", self.base, graphql::GRAPHQL_PATH)).expect("graphql url")
    }

    /// Sets fault rules.
    pub fn set_faults(&self, config: FaultConfig) {
        self.faults.set_config(config).expect("fault config");
    }

    /// Every request seen so far.
    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The uploads (object-store POSTs) so far.
    pub fn uploads(&self) -> usize {
        self.log()
            .iter()
            .filter(|l| l.method == "POST" && l.path.starts_with("/objectstore/"))
            .count()
    }
}
