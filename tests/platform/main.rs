//! Platform client tests: the real Exosite client against the real emulator over loopback HTTP.
//! One test binary; one module per area.

mod content;
mod faults;
mod identities;
mod packages;
mod security;

/// An emulator on 127.0.0.1:0 with ExoSense GraphQL, fault injection and a server-side request
/// log, plus clients configured for tests.
pub mod harness {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::Request;
    use axum::middleware::{self, Next};
    use axum::response::Response;
    use otau_operator::emulator::clock::{Clock, SystemClock};
    use otau_operator::emulator::faults::{self, FaultConfig, Faults};
    use otau_operator::emulator::graphql::{self, GraphqlState};
    use otau_operator::emulator::model::{Connector, Model, ModelConfig};
    use otau_operator::emulator::server::{self, AppState, RunningServer, ServerOptions};
    use otau_operator::platform::{
        ClientConfig, ExoSenseConfig, ExositePlatform, PlatformMetrics, RateLimit, RetryPolicy,
        SecretToken, StaticToken,
    };
    use tokio::time::Instant;

    /// The connector every test uses.
    pub const CID: &str = "t41hp23nod8s00000";
    /// The management token the emulator accepts.
    pub const MTOKEN: &str = "9b1f0c2d3e4a5b6c7d8e9f00112233445566aabb";
    /// The instance name in the User-Agent.
    pub const INSTANCE: &str = "otau-operator-test-0";

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
        /// `Retry-After` answered, if any.
        pub retry_after: Option<String>,
        /// `User-Agent` sent.
        pub user_agent: String,
    }

    /// A running emulator.
    pub struct Emu {
        /// The model.
        pub model: Arc<Model>,
        /// Fault injection (off until a test sets rules).
        pub faults: Arc<Faults>,
        /// `http://127.0.0.1:<port>`.
        pub base: String,
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
        log.lock().expect("log").push(entry);
        response
    }

    impl Emu {
        /// Starts the emulator.
        pub async fn start() -> Emu {
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let model = Model::new(
                ModelConfig {
                    management_tokens: vec![MTOKEN.to_string()],
                    ..ModelConfig::default()
                },
                clock,
            );
            model.add_connector(CID).expect("connector");
            let state = AppState {
                model: model.clone(),
                options: Arc::new(ServerOptions {
                    default_connector: Some(CID.to_string()),
                    ..ServerOptions::default()
                }),
            };
            let faults = Arc::new(Faults::off());
            let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
            let app = server::router(state.clone()).merge(graphql::router(GraphqlState {
                model: model.clone(),
                default_connector: Some(CID.to_string()),
                automation_tokens: Vec::new(),
            }));
            let app = faults::apply(app, faults.clone())
                .layer(middleware::from_fn_with_state(log.clone(), record));
            let server =
                server::start_with_router("127.0.0.1:0".parse().expect("addr"), state, app)
                    .await
                    .expect("start emulator");
            Emu {
                model,
                faults,
                base: server.base_url.clone(),
                log,
                _server: server,
            }
        }

        /// The test connector.
        pub fn conn(&self) -> Arc<Connector> {
            self.model.connector(CID).expect("connector")
        }

        /// The management API base.
        pub fn management_url(&self) -> url::Url {
            url::Url::parse(&format!("{}/api:1/", self.base)).expect("url")
        }

        /// Sets fault rules.
        pub fn set_faults(&self, config: FaultConfig) {
            self.faults.set_config(config).expect("fault config");
        }

        /// Every request seen so far.
        pub fn log(&self) -> Vec<Logged> {
            self.log.lock().expect("log").clone()
        }

        /// A client config for tests: fast retries, a generous rate limit.
        pub fn config(&self, token: &str) -> ClientConfig {
            let mut c = ClientConfig::new(
                CID,
                self.management_url(),
                Arc::new(StaticToken(SecretToken::new(token))),
            );
            c.instance = INSTANCE.to_string();
            c.request_timeout = Duration::from_secs(10);
            c.retry = RetryPolicy {
                max_tries: 5,
                initial_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(100),
            };
            c.rate_limit = RateLimit {
                per_second: 10_000.0,
                burst: 10_000,
            };
            c
        }

        /// The same with ExoSense configured (the emulator accepts its management token there).
        pub fn config_with_exosense(&self) -> ClientConfig {
            let mut c = self.config(MTOKEN);
            c.exosense = Some(ExoSenseConfig {
                graphql_url: url::Url::parse(&format!("{}/api/graphql", self.base)).expect("url"),
                credentials: Arc::new(StaticToken(SecretToken::new(MTOKEN))),
            });
            c
        }

        /// A client with the good token.
        pub fn client(&self) -> ExositePlatform {
            ExositePlatform::new(self.config(MTOKEN), None).expect("client")
        }

        /// A client from `config`, with metrics.
        pub fn client_with(
            &self,
            config: ClientConfig,
            metrics: Option<Arc<PlatformMetrics>>,
        ) -> ExositePlatform {
            ExositePlatform::new(config, metrics).expect("client")
        }
    }

    /// The User-Agent the client must send.
    pub fn expected_user_agent() -> String {
        format!("otau-operator/{} ({INSTANCE})", env!("CARGO_PKG_VERSION"))
    }
}
