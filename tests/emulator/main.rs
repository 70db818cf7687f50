//! Emulator tests: one test binary, one module per area (real loopback HTTP where HTTP is
//! involved).

#[path = "../support/raw_http.rs"]
#[allow(dead_code)]
mod raw_http;

mod command;
mod content;
mod device_api;
mod fleet;
mod listeners;
mod management;
mod mqtt;

// Edge parts (GraphQL, webhook, faults, admin + metrics).
mod admin;
mod faults;
mod graphql;
mod webhook;

/// A real emulator server on 127.0.0.1:0 for one test, with helpers for both APIs.
pub mod harness {
    use std::sync::Arc;
    use std::time::Duration;

    use otau_operator::emulator::clock::{Clock, ManualClock, SystemClock};
    use otau_operator::emulator::model::{Connector, Model, ModelConfig};
    use otau_operator::emulator::server::{self, AppState, RunningServer, ServerOptions};
    use otau_operator::net::server::Limits;
    use reqwest::{Method, RequestBuilder, StatusCode};

    /// The connector every test uses.
    pub const CID: &str = "t41hp23nod8s00000";
    /// The management token every test uses.
    pub const MTOKEN: &str = "test-management-token-0123456789abcdefgh";
    /// A manual clock's start: 2023-11-14T22:13:20Z.
    pub const START: i64 = 1_700_000_000_000_000;

    /// A running emulator.
    pub struct Emu {
        /// The model behind the server.
        pub model: Arc<Model>,
        /// The manual clock, when started with one.
        pub clock: Option<Arc<ManualClock>>,
        /// `http://127.0.0.1:<port>`.
        pub base: String,
        /// HTTP client.
        pub http: reqwest::Client,
        _server: RunningServer,
    }

    impl Emu {
        /// On the system clock, default options (default connector = [`CID`]).
        pub async fn start() -> Emu {
            Self::start_with(None, |_| {}).await
        }

        /// On a manual clock standing at [`START`].
        pub async fn start_manual() -> Emu {
            Self::start_with(Some(Arc::new(ManualClock::new(START))), |_| {}).await
        }

        /// With a clock (system clock if `None`) and options changed by `tweak`.
        pub async fn start_with(
            clock: Option<Arc<ManualClock>>,
            tweak: impl FnOnce(&mut ServerOptions),
        ) -> Emu {
            Self::start_listening(clock, tweak, None).await
        }

        /// On the system clock, default options, the listener's limits `limits`.
        pub async fn start_with_limits(limits: Limits) -> Emu {
            Self::start_listening(None, |_| {}, Some(limits)).await
        }

        async fn start_listening(
            clock: Option<Arc<ManualClock>>,
            tweak: impl FnOnce(&mut ServerOptions),
            limits: Option<Limits>,
        ) -> Emu {
            let dyn_clock: Arc<dyn Clock> = match &clock {
                Some(c) => c.clone(),
                None => Arc::new(SystemClock),
            };
            let config = ModelConfig {
                management_tokens: vec![MTOKEN.to_string()],
                accounts: vec![otau_operator::emulator::model::Account {
                    email: "user@example.com".into(),
                    password: "secret".into(),
                }],
                ..ModelConfig::default()
            };
            let model = Model::new(config, dyn_clock);
            model.add_connector(CID).unwrap();
            let mut options = ServerOptions {
                default_connector: Some(CID.to_string()),
                ..ServerOptions::default()
            };
            tweak(&mut options);
            let state = AppState {
                model: model.clone(),
                options: Arc::new(options),
            };
            let addr = "127.0.0.1:0".parse().unwrap();
            let server = match limits {
                Some(limits) => {
                    let app = server::router(state.clone());
                    let listener = server::ListenerOptions::with_limits(limits);
                    server::start_with(addr, state, app, listener).await
                }
                None => server::start(addr, state).await,
            }
            .unwrap();
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            Emu {
                model,
                clock,
                base: server.base_url.clone(),
                http,
                _server: server,
            }
        }

        /// The test connector.
        pub fn conn(&self) -> Arc<Connector> {
            self.model.connector(CID).unwrap()
        }

        /// Moves the manual clock forward.
        pub fn advance(&self, d: Duration) {
            self.clock.as_ref().expect("a manual clock").advance(d);
        }

        /// A management API request to `/api:1/<path>` with the test token.
        pub fn mgmt(&self, method: Method, path: &str) -> RequestBuilder {
            self.http
                .request(method, format!("{}/api:1/{path}", self.base))
                .header("authorization", format!("token {MTOKEN}"))
        }

        /// A device2 request to `/api:1/service/<CID>/device2/<path>`.
        pub fn device2(&self, method: Method, path: &str) -> RequestBuilder {
            self.mgmt(method, &format!("service/{CID}/device2{path}"))
        }

        /// A device API request with `X-Exosite-CIK`.
        pub fn dev(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
            self.http
                .request(method, format!("{}{path}", self.base))
                .header("x-exosite-cik", token)
        }

        /// Whitelists `identity` through the management API.
        pub async fn whitelist(&self, identity: &str) {
            let r = self
                .device2(Method::PUT, &format!("/identity/{identity}"))
                .json(&serde_json::json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        }

        /// Whitelists and activates `identity`; its token.
        pub async fn device(&self, identity: &str) -> String {
            self.whitelist(identity).await;
            let r = self
                .http
                .post(format!("{}/provision/activate", self.base))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("id={identity}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.text().await.unwrap()
        }

        /// Cloud write of `alias` through `PATCH …/state`.
        pub async fn cloud_set(&self, identity: &str, alias: &str, value: &str) -> StatusCode {
            self.device2(Method::PATCH, &format!("/identity/{identity}/state"))
                .json(&serde_json::json!({ alias: value }))
                .send()
                .await
                .unwrap()
                .status()
        }

        /// Device write of `alias=value`.
        pub async fn device_write(&self, token: &str, alias: &str, value: &str) -> StatusCode {
            let body: String = form_urlencoded::Serializer::new(String::new())
                .append_pair(alias, value)
                .finish();
            self.dev(Method::POST, "/onep:v1/stack/alias", token)
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
    }

    /// Kills the child process when the test ends, however it ends.
    pub struct Killed(pub std::process::Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts the `otau-operator emulator --listen 127.0.0.1:0 <extra>` binary and reads the
    /// JSON line it prints when ready (with a deadline).
    pub fn start_binary(extra: &[&str]) -> (Killed, serde_json::Value) {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let mut child = Command::new(env!("CARGO_BIN_EXE_otau-operator"))
            .args(["emulator", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the emulator binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let guard = Killed(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the emulator prints its JSON line");
        let ready: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        (guard, ready)
    }

    /// Decodes a form body into pairs.
    pub fn form(body: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect()
    }
}
