//! The HTTP fleet: K devices (up to [`MAX_HTTP_DEVICES`]) as real HTTP clients of the device API
//! (exosite-platform.md §3): activate, long-poll `config_otau` with `If-Modified-Since` /
//! `Last-Modified`, acknowledge and report by writes, content info and download through
//! `/provision/download`, with timeouts and retries.
//!
//! The devices' logic is the same pure [`FleetCore`] as in process, so every behaviour of the
//! profile works here too: one central task owns it and its timer queue; each device has one I/O
//! worker (its actions in order) and, once it has booted, one long-poll task (guide-loop devices
//! send one `If-Modified-Since: 0` poll at a time instead). Requests other than long polls share a
//! concurrency limit.
//!
//! Every waiting long poll holds one connection, so a fleet of K devices with the emulator in the
//! same process needs about 2K open files: call [`raise_open_files_limit`] first (or `ulimit -n`).
//!
//! Devices whose group puts them on MQTT (`transport.mqtt`, [`FleetCore::protocol`]) provision,
//! report and ack over MQTT instead, and receive `config_otau` as pushes rather than by long
//! poll (see [`super::mqtt`]); they read `config_otau` at boot and download content over HTTP
//! like the others (exosite-platform.md §4.4). They need [`HttpFleetConfig::mqtt`].

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::otau::{CONFIG_OTAU, OTAU_IN};

use super::core::{FleetCore, Protocol};
use super::device::{Action, Input};
use super::mqtt::{self, Fault, FaultDraws, MqttDeviceConfig, MqttError, MqttLink};
use super::summary::{DriverCounters, FleetSummary};

/// Registration of the devices through the management API before they activate
/// (`PUT /api:1/service/<cid>/device2/identity/<identity>` with their tags).
#[derive(Debug, Clone)]
pub struct Registration {
    /// Management API base, e.g. `http://127.0.0.1:8080/api:1`.
    pub management_url: String,
    /// A management token (`Authorization: token <t>`).
    pub token: String,
    /// The connector id.
    pub connector: String,
}

/// How the HTTP devices reach the platform.
#[derive(Debug, Clone)]
pub struct HttpFleetConfig {
    /// Device API base URL, e.g. `http://127.0.0.1:8080`.
    pub device_url: String,
    /// `Host` header naming the connector (`<cid>.m2.<domain>`); `None` uses the URL's host
    /// (the emulator's default connector on `127.0.0.1`).
    pub host: Option<String>,
    /// Whitelist the identities through the management API first; `None` when they exist.
    pub register: Option<Registration>,
    /// `Request-Timeout` of long polls, ms (at most 300000).
    pub poll_timeout_ms: u64,
    /// Most requests in flight at once, long polls excluded.
    pub concurrency: usize,
    /// Timeout of one ordinary request.
    pub request_timeout: Duration,
    /// Tries of one request on connection errors, timeouts, 429 and 5xx.
    pub max_tries: u32,
    /// First retry delay; doubles on each try.
    pub retry_delay: Duration,
    /// The emulator's device MQTT listener, for the devices on MQTT; `None` when the profile
    /// puts none there.
    pub mqtt: Option<MqttDeviceConfig>,
}

impl HttpFleetConfig {
    /// Defaults for a device API at `device_url`.
    pub fn new(device_url: impl Into<String>) -> Self {
        HttpFleetConfig {
            device_url: device_url.into().trim_end_matches('/').to_string(),
            host: None,
            register: None,
            poll_timeout_ms: 30_000,
            concurrency: 32,
            request_timeout: Duration::from_secs(10),
            max_tries: 5,
            retry_delay: Duration::from_millis(100),
            mqtt: None,
        }
    }
}

/// Why the HTTP fleet could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpFleetError {
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Too many devices for one task each.
    #[error(
        "an HTTP fleet runs at most {max} devices, the profile has {got}; use the in-process fleet for more"
    )]
    TooMany {
        /// The limit.
        max: usize,
        /// The profile's size.
        got: usize,
    },
    /// The profile puts devices on MQTT but no MQTT listener was given.
    #[error(
        "the profile puts {devices} devices on MQTT (transport.mqtt) but the fleet has no MQTT listener to reach"
    )]
    NoMqttListener {
        /// Devices on MQTT.
        devices: usize,
    },
    /// The profile sends devices' HTTP to the MQTT TLS port but no such port was given.
    #[error(
        "the profile sends {devices} devices' HTTP to the MQTT TLS port (transport.http_on_mqtt_port) but the fleet has no MQTT TLS port to reach"
    )]
    NoMqttTlsPort {
        /// Devices that would use it.
        devices: usize,
    },
    /// The MQTT TLS port's certificate is not usable.
    #[error("the certificate of the MQTT TLS port: {0}")]
    Certificate(String),
    /// The MQTT fault setting is not usable.
    #[error("{0}")]
    MqttFaults(String),
}

/// Most devices an HTTP fleet runs (each has its own tasks and a long-poll connection).
pub const MAX_HTTP_DEVICES: usize = 10_000;

/// Raises the soft limit of open files (`RLIMIT_NOFILE`) to the hard limit, for HTTP fleets of
/// thousands of long-polling devices; returns the soft limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some() && limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// What the I/O side tells the central task.
#[derive(Debug)]
enum Event {
    Config(u32, String),
    Downloaded(u32, bool),
    Counted(Counter),
}

#[derive(Debug, Clone, Copy)]
enum Counter {
    Download { bytes: u64 },
    Error,
    MqttWrite,
    MqttPush,
    MqttReconnect,
}

/// A running HTTP fleet.
#[derive(Debug)]
pub struct HttpFleetHandle {
    stop: watch::Sender<bool>,
    summary: watch::Receiver<FleetSummary>,
    tasks: JoinSet<()>,
    identities: Vec<String>,
}

/// Where a device's HTTP requests go: the device HTTP API, or HTTP on the MQTT TLS port
/// (ALPN `http/1.1`, exosite-platform.md §3.1).
struct HttpRoute {
    client: Client,
    /// Base URL without a trailing slash.
    base: String,
    /// `Host` header to send, if not the URL's.
    host: Option<String>,
}

/// Shared by every task of one fleet.
struct Shared {
    client: Client,
    config: HttpFleetConfig,
    limit: Semaphore,
    events: mpsc::UnboundedSender<Event>,
    stop: watch::Receiver<bool>,
}

/// Entry point of HTTP fleets.
#[derive(Debug)]
pub struct HttpFleet;

impl HttpFleet {
    /// Starts every device of `core` on the current tokio runtime.
    pub fn start(
        core: FleetCore,
        config: HttpFleetConfig,
    ) -> Result<HttpFleetHandle, HttpFleetError> {
        if core.len() > MAX_HTTP_DEVICES {
            return Err(HttpFleetError::TooMany {
                max: MAX_HTTP_DEVICES,
                got: core.len(),
            });
        }
        let protocols: Vec<Protocol> = (0..core.len() as u32).map(|i| core.protocol(i)).collect();
        let on_mqtt = protocols.iter().filter(|p| **p == Protocol::Mqtt).count();
        match &config.mqtt {
            None if on_mqtt > 0 => {
                return Err(HttpFleetError::NoMqttListener { devices: on_mqtt });
            }
            Some(m) => m.faults.validate().map_err(HttpFleetError::MqttFaults)?,
            None => {}
        }
        // Every long poll holds a connection; keep them all for reuse, so that a write waking
        // thousands of polls does not make as many new connections.
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(core.len() + config.concurrency.max(1) * 2)
            .tcp_nodelay(true)
            .user_agent(concat!("otau-fleet/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let counters = DriverCounters {
            mqtt_devices: on_mqtt as u64,
            ..DriverCounters::default()
        };
        let (summary_tx, summary_rx) = watch::channel(FleetSummary::new(&core, &counters));
        let plain = Arc::new(HttpRoute {
            client: client.clone(),
            base: config.device_url.clone(),
            host: config.host.clone(),
        });
        let on_mqtt_port = match config.mqtt.as_ref().and_then(|m| m.http_port.as_ref()) {
            Some(port) => Some(Arc::new(http_on_mqtt_port(port, core.len())?)),
            None => None,
        };
        let wants_mqtt_port = (0..core.len() as u32)
            .filter(|i| protocols[*i as usize] == Protocol::Mqtt && core.http_on_mqtt_port(*i))
            .count();
        if wants_mqtt_port > 0 && on_mqtt_port.is_none() {
            return Err(HttpFleetError::NoMqttTlsPort {
                devices: wants_mqtt_port,
            });
        }
        let shared = Arc::new(Shared {
            client,
            limit: Semaphore::new(config.concurrency.max(1)),
            config,
            events: events_tx,
            stop: stop_rx,
        });
        let identities: Vec<String> = (0..core.len() as u32)
            .map(|i| core.identity(i).to_string())
            .collect();
        let tags: Vec<Vec<(String, String)>> = (0..core.len() as u32)
            .map(|i| {
                core.groups()
                    .iter()
                    .find(|g| i >= g.first && i < g.first + g.count)
                    .map(|g| {
                        g.tags
                            .iter()
                            .map(|t| (t.name.clone(), t.value.clone()))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let mut tasks = JoinSet::new();
        let mut workers = Vec::with_capacity(identities.len());
        for (i, identity) in identities.iter().enumerate() {
            let (tx, rx) = mpsc::unbounded_channel();
            workers.push(tx);
            let mqtt = match (protocols[i], &shared.config.mqtt) {
                (Protocol::Mqtt, Some(m)) => Some(MqttSide {
                    link: None,
                    faults: FaultDraws::new(&m.faults, i as u32),
                }),
                _ => None,
            };
            let http = match &on_mqtt_port {
                Some(route) if mqtt.is_some() && core.http_on_mqtt_port(i as u32) => route.clone(),
                _ => plain.clone(),
            };
            let device = DeviceIo {
                http,
                index: i as u32,
                identity: identity.clone(),
                tags: tags[i].clone(),
                token: None,
                polling: None,
                mqtt,
                shared: shared.clone(),
            };
            tasks.spawn(device.run(rx));
        }
        let central = Central {
            core,
            workers,
            counters,
            summary: summary_tx,
            stop: shared.stop.clone(),
        };
        tasks.spawn(central.run(events_rx));
        Ok(HttpFleetHandle {
            stop: stop_tx,
            summary: summary_rx,
            tasks,
            identities,
        })
    }
}

impl HttpFleetHandle {
    /// The latest summary. Its action counters count actions handed to the devices' I/O
    /// workers (requests may still be in flight); `errors` counts requests that failed after
    /// their retries. Check the platform's state for what devices actually wrote.
    pub fn summary(&self) -> FleetSummary {
        self.summary.borrow().clone()
    }

    /// The devices' identities, by index.
    pub fn identities(&self) -> &[String] {
        &self.identities
    }

    /// Waits until `done` holds for the summary, or `timeout` passes (then `Err` with the last
    /// summary).
    pub async fn wait_for(
        &mut self,
        mut done: impl FnMut(&FleetSummary) -> bool,
        timeout: Duration,
    ) -> Result<FleetSummary, FleetSummary> {
        let mut rx = self.summary.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|s| done(s))).await {
            Ok(Ok(s)) => Ok(s.clone()),
            _ => Err(self.summary()),
        }
    }

    /// Stops every device and waits for their tasks.
    pub async fn stop(mut self) -> FleetSummary {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.summary()
    }
}

/// The task that owns the devices' state machines and timers.
struct Central {
    core: FleetCore,
    workers: Vec<mpsc::UnboundedSender<Action>>,
    counters: DriverCounters,
    summary: watch::Sender<FleetSummary>,
    stop: watch::Receiver<bool>,
}

fn now_micros() -> i64 {
    use crate::emulator::clock::{Clock, SystemClock};
    SystemClock.now_micros()
}

impl Central {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        let now = now_micros();
        for i in 0..self.core.len() as u32 {
            self.give(i, Input::Start, now);
        }
        self.publish();
        loop {
            let wait = self
                .core
                .next_due()
                .map(|due| (due - now_micros()).clamp(0, 60_000_000))
                .unwrap_or(60_000_000);
            tokio::select! {
                _ = self.stop.changed() => return,
                event = events.recv() => match event {
                    Some(e) => {
                        self.on_event(e);
                        // Take what else is queued before publishing: the summary counts every
                        // device, so one per event would cost K per event.
                        for _ in 0..4096 {
                            match events.try_recv() {
                                Ok(e) => self.on_event(e),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = tokio::time::sleep(Duration::from_micros(wait as u64)) => {}
            }
            let now = now_micros();
            while let Some(t) = self.core.pop_due(now) {
                self.give(t.device, Input::Timer(t.seq), now);
            }
            self.publish();
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = now_micros();
        match event {
            Event::Config(i, value) => self.give(i, Input::Config(&value), now),
            Event::Downloaded(i, ok) => self.give(i, Input::Downloaded(ok), now),
            Event::Counted(Counter::Download { bytes }) => self.counters.bytes += bytes,
            Event::Counted(Counter::Error) => self.counters.errors += 1,
            Event::Counted(Counter::MqttWrite) => self.counters.mqtt_writes += 1,
            Event::Counted(Counter::MqttPush) => self.counters.mqtt_pushes += 1,
            Event::Counted(Counter::MqttReconnect) => self.counters.mqtt_reconnects += 1,
        }
    }

    fn give(&mut self, index: u32, input: Input<'_>, now: i64) {
        let mut out = Vec::new();
        self.core.handle(index, input, now, &mut out);
        for action in out {
            match &action {
                Action::Report(_) => self.counters.reports += 1,
                Action::Ack(_) => self.counters.acks += 1,
                Action::Download(_) => self.counters.downloads += 1,
                Action::FetchLink(_) => self.counters.links += 1,
                Action::ReadConfig | Action::Poll | Action::Schedule { .. } => {}
            }
            if let Some(w) = self.workers.get(index as usize) {
                let _ = w.send(action);
            }
        }
    }

    fn publish(&self) {
        let summary = FleetSummary::new(&self.core, &self.counters);
        self.summary.send_if_modified(|old| {
            if *old == summary {
                false
            } else {
                *old = summary;
                true
            }
        });
    }
}

/// The I/O side of one device: its actions in order, and its long poll (HTTP) or its MQTT
/// session.
struct DeviceIo {
    /// Where its HTTP requests go.
    http: Arc<HttpRoute>,
    index: u32,
    identity: String,
    tags: Vec<(String, String)>,
    token: Option<Arc<str>>,
    polling: Option<tokio::task::JoinHandle<()>>,
    /// `Some` for a device on MQTT.
    mqtt: Option<MqttSide>,
    shared: Arc<Shared>,
}

/// The MQTT session of a device on MQTT (connected once it has a token) and its fault draws.
struct MqttSide {
    link: Option<MqttLink>,
    faults: FaultDraws,
}

/// The next `config_otau` push of a connected MQTT device; never for the others.
async fn next_push(side: &mut Option<MqttSide>) -> Result<String, MqttError> {
    match side.as_mut().and_then(|s| s.link.as_mut()) {
        Some(link) => link.next_push().await,
        None => std::future::pending().await,
    }
}

/// Outcome of one request after retries.
enum Reply {
    Ok(StatusCode, Vec<u8>),
    Failed,
}

impl DeviceIo {
    async fn run(mut self, mut actions: mpsc::UnboundedReceiver<Action>) {
        let mut stop = self.shared.stop.clone();
        loop {
            let action = tokio::select! {
                _ = stop.changed() => break,
                a = actions.recv() => match a { Some(a) => a, None => break },
                pushed = next_push(&mut self.mqtt) => {
                    self.on_push(pushed).await;
                    continue;
                }
            };
            if self.token.is_none() && !self.connect().await {
                self.count(Counter::Error);
                continue;
            }
            self.act(action).await;
        }
        if let Some(p) = self.polling.take() {
            p.abort();
        }
    }

    fn count(&self, c: Counter) {
        let _ = self.shared.events.send(Event::Counted(c));
    }

    /// A push (or the loss of the MQTT session, which is made again at once: the pushes missed
    /// meanwhile arrive on reconnect).
    async fn on_push(&mut self, pushed: Result<String, MqttError>) {
        match pushed {
            Ok(value) => {
                self.count(Counter::MqttPush);
                let _ = self.shared.events.send(Event::Config(self.index, value));
            }
            Err(_) => {
                if let Some(side) = self.mqtt.as_mut() {
                    side.link = None;
                }
                self.count(Counter::MqttReconnect);
                if !self.ensure_mqtt_link().await {
                    self.count(Counter::Error);
                }
            }
        }
    }

    /// Connects the MQTT session if it is not (retrying with a doubling delay); false when it
    /// could not.
    async fn ensure_mqtt_link(&mut self) -> bool {
        let (Some(config), Some(token)) = (self.shared.config.mqtt.clone(), self.token.clone())
        else {
            return false;
        };
        if self.mqtt.as_ref().is_some_and(|s| s.link.is_some()) {
            return true;
        }
        let timeout = self.shared.config.request_timeout;
        let mut delay = self.shared.config.retry_delay;
        let mut stop = self.shared.stop.clone();
        for attempt in 1..=self.shared.config.max_tries.max(1) {
            match MqttLink::connect(&config, &token, timeout).await {
                Ok(link) => {
                    if let Some(side) = self.mqtt.as_mut() {
                        side.link = Some(link);
                    }
                    return true;
                }
                // Bad credentials: trying again cannot help (murano-client stops too, §4.1).
                Err(e) if e.is_final() => return false,
                Err(_) if attempt < self.shared.config.max_tries => {
                    tokio::select! {
                        _ = stop.changed() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Publishes `value` to `$resource/<alias>` and waits for its PUBACK, after this write's
    /// fault (if any); on a lost connection, connects again and sends it again.
    async fn mqtt_write(&mut self, alias: &str, value: &str) {
        let fault = self
            .mqtt
            .as_mut()
            .map_or(Fault::None, |side| side.faults.before_write());
        if fault != Fault::None
            && let Some(link) = self.mqtt.as_mut().and_then(|side| side.link.take())
        {
            match fault {
                Fault::Drop => link.drop_connection(),
                Fault::Disconnect | Fault::None => link.disconnect().await,
            }
            self.count(Counter::MqttReconnect);
        }
        let timeout = self.shared.config.request_timeout;
        let mut delay = self.shared.config.retry_delay;
        for attempt in 1..=self.shared.config.max_tries.max(1) {
            if self.ensure_mqtt_link().await {
                let mut pushed = Vec::new();
                let result = match self.mqtt.as_mut().and_then(|s| s.link.as_mut()) {
                    Some(link) => link.write(alias, value, timeout, &mut pushed).await,
                    None => Err(MqttError::Connection("not connected".into())),
                };
                for v in pushed {
                    self.count(Counter::MqttPush);
                    let _ = self.shared.events.send(Event::Config(self.index, v));
                }
                match result {
                    Ok(()) => {
                        self.count(Counter::MqttWrite);
                        return;
                    }
                    Err(_) => {
                        if let Some(side) = self.mqtt.as_mut() {
                            side.link = None;
                        }
                        self.count(Counter::MqttReconnect);
                    }
                }
            }
            if attempt < self.shared.config.max_tries {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        self.count(Counter::Error);
    }

    /// Reads `config_otau` once over HTTP without waiting (MQTT has no read); the value, if one
    /// is set.
    async fn read_once(&self) -> Option<String> {
        let url = format!("{}/onep:v1/stack/alias?{CONFIG_OTAU}", self.http.base);
        match self
            .send(|c| {
                self.authed(c.get(&url))
                    .header("accept", "application/x-www-form-urlencoded; charset=utf-8")
            })
            .await
        {
            Reply::Ok(StatusCode::OK, body) => form_urlencoded::parse(&body)
                .find(|(k, _)| k == CONFIG_OTAU)
                .map(|(_, v)| v.into_owned()),
            Reply::Ok(StatusCode::NO_CONTENT, _) => None,
            _ => {
                self.count(Counter::Error);
                None
            }
        }
    }

    /// Registers (if configured) and activates (over MQTT for a device on MQTT, then connects its
    /// session); keeps the token.
    async fn connect(&mut self) -> bool {
        if let Some(reg) = self.shared.config.register.clone() {
            let url = format!(
                "{}/service/{}/device2/identity/{}",
                reg.management_url.trim_end_matches('/'),
                reg.connector,
                encode_path(&self.identity)
            );
            let tags: Vec<serde_json::Value> = self
                .tags
                .iter()
                .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                .collect();
            let body =
                serde_json::json!({"auth": {"type": "token"}, "locked": false, "tags": tags})
                    .to_string();
            let reply = self
                .send(|c| {
                    c.put(&url)
                        .header("authorization", format!("token {}", reg.token))
                        .header("content-type", "application/json")
                        .body(body.clone())
                })
                .await;
            if !matches!(reply, Reply::Ok(s, _) if s.is_success()) {
                return false;
            }
        }
        if self.mqtt.is_some() {
            return self.activate_over_mqtt().await;
        }
        let body = form(&[("id", &self.identity)]);
        let url = format!("{}/provision/activate", self.http.base);
        match self
            .send(|c| {
                self.host(c.post(&url))
                    .header(
                        "content-type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .body(body.clone())
            })
            .await
        {
            Reply::Ok(StatusCode::OK, bytes) => {
                let token = String::from_utf8_lossy(&bytes).trim().to_string();
                if token.len() != 40 {
                    return false;
                }
                self.token = Some(Arc::from(token));
                true
            }
            _ => false,
        }
    }

    /// Provisioning over an anonymous MQTT session (exosite-platform.md §4.3), then the
    /// device's own session.
    async fn activate_over_mqtt(&mut self) -> bool {
        let Some(config) = self.shared.config.mqtt.clone() else {
            return false;
        };
        let timeout = self.shared.config.request_timeout;
        let mut delay = self.shared.config.retry_delay;
        for attempt in 1..=self.shared.config.max_tries.max(1) {
            match mqtt::provision(&config, &self.identity, timeout).await {
                Ok(token) => {
                    self.token = Some(Arc::from(token));
                    return self.ensure_mqtt_link().await;
                }
                Err(e) if e.is_final() => return false,
                Err(_) if attempt < self.shared.config.max_tries => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn host(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.http.host {
            Some(h) => rb.header("host", h),
            None => rb,
        }
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let rb = self.host(rb);
        match &self.token {
            Some(t) => rb.header("x-exosite-cik", &**t),
            None => rb,
        }
    }

    async fn act(&mut self, action: Action) {
        if self.mqtt.is_some() {
            return self.act_over_mqtt(action).await;
        }
        match action {
            Action::Report(value) => self.write(OTAU_IN, &value).await,
            Action::Ack(value) => self.write(CONFIG_OTAU, &value).await,
            Action::Download(id) => {
                let ok = self.download(&id).await;
                let _ = self.shared.events.send(Event::Downloaded(self.index, ok));
            }
            // Links are recorded by the central task, not fetched.
            Action::FetchLink(_) | Action::Schedule { .. } => {}
            // Booted: from now on the long poll watches config_otau (If-Modified-Since 0 first,
            // so the current value is read at once).
            Action::ReadConfig => self.start_polling(),
            Action::Poll => {
                let value = self.poll_once().await;
                let _ = self.shared.events.send(Event::Config(self.index, value));
            }
        }
    }

    /// An action of a device on MQTT: writes are publishes; `config_otau` arrives as pushes, and
    /// a read (at boot, or the guide's poll) is one HTTP read that does not wait.
    async fn act_over_mqtt(&mut self, action: Action) {
        match action {
            Action::Report(value) => self.mqtt_write(OTAU_IN, &value).await,
            Action::Ack(value) => self.mqtt_write(CONFIG_OTAU, &value).await,
            Action::Download(id) => {
                let ok = self.download(&id).await;
                let _ = self.shared.events.send(Event::Downloaded(self.index, ok));
            }
            Action::FetchLink(_) | Action::Schedule { .. } => {}
            Action::ReadConfig | Action::Poll => {
                if !self.ensure_mqtt_link().await {
                    self.count(Counter::Error);
                }
                // Nothing set yet: the value comes as a push when the cloud sets it.
                if let Some(value) = self.read_once().await {
                    let _ = self.shared.events.send(Event::Config(self.index, value));
                }
            }
        }
    }

    /// One long poll the way the OTA guide's example sends it (`If-Modified-Since: 0`, so the
    /// server answers at once when a value was ever set, exosite-platform.md §3.9); the value,
    /// `""` when there is none or the poll failed.
    async fn poll_once(&self) -> String {
        let config = &self.shared.config;
        let url = format!("{}/onep:v1/stack/alias?{CONFIG_OTAU}", self.http.base);
        let timeout_ms = config.poll_timeout_ms.min(300_000);
        let rb = self
            .authed(self.http.client.get(&url))
            .header("accept", "application/x-www-form-urlencoded; charset=utf-8")
            .header("request-timeout", timeout_ms.to_string())
            .header("if-modified-since", "0")
            .timeout(Duration::from_millis(timeout_ms) + config.request_timeout);
        let mut stop = self.shared.stop.clone();
        let result = tokio::select! {
            _ = stop.changed() => return String::new(),
            r = rb.send() => r,
        };
        match result {
            Ok(resp) if resp.status() == StatusCode::OK => match resp.bytes().await {
                Ok(body) => form_urlencoded::parse(&body)
                    .find(|(k, _)| k == CONFIG_OTAU)
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
                Err(_) => {
                    self.count(Counter::Error);
                    String::new()
                }
            },
            Ok(resp) if resp.status() == StatusCode::NOT_MODIFIED => String::new(),
            Ok(resp) if resp.status() == StatusCode::NO_CONTENT => String::new(),
            Ok(_) | Err(_) => {
                self.count(Counter::Error);
                String::new()
            }
        }
    }

    async fn write(&mut self, alias: &str, value: &str) {
        let body = form(&[(alias, value)]);
        let url = format!("{}/onep:v1/stack/alias", self.http.base);
        let reply = self
            .send(|c| {
                self.authed(c.post(&url))
                    .header(
                        "content-type",
                        "application/x-www-form-urlencoded; charset=utf-8",
                    )
                    .body(body.clone())
            })
            .await;
        if !matches!(reply, Reply::Ok(s, _) if s.is_success()) {
            self.count(Counter::Error);
        }
    }

    /// Content info (size), then the file; true when it exists and the sizes agree.
    async fn download(&mut self, id: &str) -> bool {
        let base = format!(
            "{}/provision/download?id={}",
            self.http.base,
            encode_query(id)
        );
        let info_url = format!("{base}&info=true");
        let size = match self.send(|c| self.authed(c.get(&info_url))).await {
            Reply::Ok(StatusCode::OK, body) => String::from_utf8_lossy(&body)
                .lines()
                .next()
                .and_then(|line| {
                    line.split(',')
                        .nth(1)
                        .and_then(|s| s.trim().parse::<u64>().ok())
                }),
            _ => None,
        };
        let Some(size) = size else {
            return false;
        };
        match self.send(|c| self.authed(c.get(&base))).await {
            Reply::Ok(StatusCode::OK, body) if body.len() as u64 == size => {
                self.count(Counter::Download { bytes: size });
                true
            }
            _ => false,
        }
    }

    fn start_polling(&mut self) {
        if self.polling.is_some() {
            return;
        }
        let Some(token) = self.token.clone() else {
            return;
        };
        let poller = Poller {
            index: self.index,
            token,
            shared: self.shared.clone(),
        };
        self.polling = Some(tokio::spawn(poller.run()));
    }

    /// Sends a request built by `build`, retrying connection errors, timeouts, 429 and 5xx with
    /// a doubling delay (a `Retry-After` in seconds wins).
    async fn send(&self, build: impl Fn(&Client) -> reqwest::RequestBuilder) -> Reply {
        send_with_retries(&self.shared, &self.http.client, build).await
    }
}

async fn send_with_retries(
    shared: &Shared,
    client: &Client,
    build: impl Fn(&Client) -> reqwest::RequestBuilder,
) -> Reply {
    let config = &shared.config;
    let mut delay = config.retry_delay;
    for attempt in 1..=config.max_tries.max(1) {
        let result = {
            let Ok(_permit) = shared.limit.acquire().await else {
                return Reply::Failed;
            };
            match build(client).timeout(config.request_timeout).send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(b) => Some((status, headers, b.to_vec())),
                        Err(_) => None,
                    }
                }
                Err(_) => None,
            }
        };
        match result {
            Some((status, _, body))
                if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) =>
            {
                return Reply::Ok(status, body);
            }
            Some((_, headers, _)) if attempt < config.max_tries => {
                let wait = retry_after(&headers).unwrap_or(delay);
                tokio::time::sleep(wait).await;
            }
            None if attempt < config.max_tries => tokio::time::sleep(delay).await,
            _ => return Reply::Failed,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
    Reply::Failed
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// The long poll of one device.
struct Poller {
    index: u32,
    token: Arc<str>,
    shared: Arc<Shared>,
}

impl Poller {
    async fn run(self) {
        let config = &self.shared.config;
        let url = format!("{}/onep:v1/stack/alias?{CONFIG_OTAU}", config.device_url);
        let timeout_ms = config.poll_timeout_ms.min(300_000);
        let mut since = "0".to_string();
        let mut backoff = config.retry_delay;
        let mut stop = self.shared.stop.clone();
        loop {
            let mut rb = self
                .shared
                .client
                .get(&url)
                .header("x-exosite-cik", &*self.token)
                .header("accept", "application/x-www-form-urlencoded; charset=utf-8")
                .header("request-timeout", timeout_ms.to_string())
                .header("if-modified-since", &since)
                .timeout(Duration::from_millis(timeout_ms) + config.request_timeout);
            if let Some(h) = &config.host {
                rb = rb.header("host", h);
            }
            let result = tokio::select! {
                _ = stop.changed() => return,
                r = rb.send() => r,
            };
            let ok = match result {
                Ok(resp) if resp.status() == StatusCode::OK => {
                    if let Some(lm) = resp
                        .headers()
                        .get("last-modified")
                        .and_then(|v| v.to_str().ok())
                    {
                        since = lm.to_string();
                    }
                    match resp.bytes().await {
                        Ok(body) => {
                            let value = form_urlencoded::parse(&body)
                                .find(|(k, _)| k == CONFIG_OTAU)
                                .map(|(_, v)| v.into_owned());
                            if let Some(v) = value {
                                let _ = self.shared.events.send(Event::Config(self.index, v));
                            }
                            true
                        }
                        Err(_) => false,
                    }
                }
                Ok(resp) if resp.status() == StatusCode::NOT_MODIFIED => true,
                // 204: nothing set yet; the server answered at once, so wait a little.
                Ok(resp) if resp.status() == StatusCode::NO_CONTENT => false,
                Ok(_) | Err(_) => false,
            };
            if ok {
                backoff = config.retry_delay;
            } else {
                let _ = self.shared.events.send(Event::Counted(Counter::Error));
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The HTTP route over the MQTT TLS port: a client that offers only ALPN `http/1.1`, trusts the
/// port's certificate only, and reaches the port's host name at its address.
fn http_on_mqtt_port(
    port: &mqtt::MqttTlsPort,
    devices: usize,
) -> Result<HttpRoute, HttpFleetError> {
    let certificate = reqwest::Certificate::from_pem(port.certificate_pem.as_bytes())
        .map_err(|e| HttpFleetError::Certificate(e.to_string()))?;
    let client = Client::builder()
        .http1_only()
        .tls_certs_only([certificate])
        .resolve(&port.host, port.address)
        .connect_timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(devices.max(1))
        .tcp_nodelay(true)
        .user_agent(concat!("otau-fleet/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(HttpRoute {
        client,
        base: format!("https://{}:{}", port.host, port.address.port()),
        host: None,
    })
}

/// An `application/x-www-form-urlencoded` body.
fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Percent-encodes a query value.
fn encode_query(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Percent-encodes one path segment.
fn encode_path(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}
