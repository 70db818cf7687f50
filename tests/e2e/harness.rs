//! The end-to-end harness: the emulator in this process (management + device API on
//! 127.0.0.1:0) with a simulated in-process fleet running in real time, optional webhook
//! delivery to the operator's push receiver, the operator binary as a separate process bound
//! to one test namespace, and helpers reading the emulator's ground truth.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::emulator::faults::FaultConfig;
use otau_operator::emulator::fleet::{
    Fleet, FleetCore, FleetHandle, FleetOptions, FleetSummary, HttpFleet, HttpFleetConfig,
    HttpFleetHandle, MqttDeviceConfig, MqttFaults, MqttTlsPort, Profile,
};
use otau_operator::emulator::model::{Connector, Model, Tag};
use otau_operator::emulator::mqtt::{MqttListener, MqttMetrics, MqttOptions, MqttService};
use otau_operator::emulator::server::{self, AppState, ServerOptions};
use otau_operator::emulator::tls::self_signed;
use otau_operator::emulator::webhook::{
    WebhookConfig, WebhookDelivery, WebhookSecret, WebhookTarget,
};
use otau_operator::otau::{Classification, classify};

use crate::support::emulator::{EmulatorSetup, TestEmulator};
use crate::support::process::{OperatorProcess, operator_command};
use crate::support::{ControlPlane, wait_for};

/// The connector (product) id of every test.
pub const CID: &str = "e2e0rollout00000";
/// The management token the emulator accepts.
pub const MTOKEN: &str = "e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0e2e0";
/// The webhook key shared by the emulator and the connector's Secret.
pub const WEBHOOK_KEY: &str = "e2e-webhook-key-0123456789";
/// The operator's instance name.
pub const INSTANCE: &str = "otau-e2e-0";
/// The target version of every test package.
pub const VERSION: &str = "2.0.0";
/// How long a test waits for one condition.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// The emulator of one test, with its fleet.
pub struct Emu {
    /// The platform model (ground truth).
    pub model: Arc<Model>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    fleet: Option<FleetHandle>,
    http: Option<HttpFleetHandle>,
    /// The HTTP fleet's last summary once it stopped.
    stopped: Option<FleetSummary>,
    webhook: Option<WebhookDelivery>,
    /// The device MQTT server, its plain listener and its TLS listener, when started with one.
    mqtt: Option<(Arc<MqttService>, MqttListener, MqttListener)>,
    emulator: TestEmulator,
}

/// A fleet profile: `groups` is a list of (prefix, count, behaviour YAML) on version 1.0.0,
/// tagged `fleet=e2e`, with short step durations.
pub fn profile(seed: u64, groups: &[(&str, u64, &str)]) -> Profile {
    let mut yaml = format!("seed: {seed}\ngroups:\n");
    for (i, (prefix, count, outcomes)) in groups.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: g{i}\n    count: {count}\n    identity_prefix: {prefix}\n    version: \"1.0.0\"\n    tags: [{{name: fleet, value: e2e}}]\n    behaviour:\n      outcomes: {{{outcomes}}}\n      durations: {{step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}}\n"
        ));
    }
    Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"))
}

impl Emu {
    /// Starts the emulator with the connector [`CID`] and runs `profile`'s fleet on it.
    pub async fn start(profile: &Profile) -> Emu {
        let emulator = TestEmulator::start(EmulatorSetup {
            connector_id: CID.to_string(),
            management_tokens: vec![MTOKEN.to_string()],
            automation_tokens: Vec::new(),
        })
        .await;
        let fleet =
            Fleet::start(&emulator.model, CID, profile, &FleetOptions::default()).expect("fleet");
        Emu {
            model: emulator.model.clone(),
            base: emulator.base.clone(),
            fleet: Some(fleet),
            http: None,
            stopped: None,
            webhook: None,
            mqtt: None,
            emulator,
        }
    }

    /// Starts the emulator with the connector [`CID`] and runs `profile`'s fleet as real HTTP
    /// clients of its device API (activate, long poll, writes, downloads), whitelisted with
    /// their tags in the model; returns once every device has reported at boot.
    pub async fn start_http(profile: &Profile) -> Emu {
        Self::start_sockets(profile, None).await
    }

    /// As [`Emu::start_http`], with the device MQTT server on a plain listener (default
    /// connector [`CID`]) for the devices the profile puts on MQTT (`transport.mqtt`), which
    /// inject `mqtt_faults` on their connections, and on a TLS listener whose HTTP by ALPN
    /// serves the devices that send their HTTP there (`transport.http_on_mqtt_port`). `None`:
    /// no MQTT server.
    pub async fn start_sockets(profile: &Profile, mqtt_faults: Option<MqttFaults>) -> Emu {
        let emulator = TestEmulator::start(EmulatorSetup {
            connector_id: CID.to_string(),
            management_tokens: vec![MTOKEN.to_string()],
            automation_tokens: Vec::new(),
        })
        .await;
        let core = FleetCore::new(profile, None, None).expect("fleet");
        let conn = emulator.conn();
        for g in core.groups() {
            let tags: Vec<Tag> = g.tags.iter().map(|t| Tag::new(&t.name, &t.value)).collect();
            let ids =
                (g.first..g.first + g.count).map(|i| (core.identity(i).to_string(), tags.clone()));
            conn.add_identities_bulk(ids).expect("whitelist");
        }
        let mut config = HttpFleetConfig::new(&emulator.base);
        config.poll_timeout_ms = 20_000;
        let mut mqtt = None;
        if let Some(faults) = mqtt_faults {
            let options = MqttOptions::defaults(&emulator.model, Some(CID.to_string()));
            let service = MqttService::new(emulator.model.clone(), options, MqttMetrics::new());
            let plain =
                MqttListener::start_plain("127.0.0.1:0".parse().expect("addr"), service.clone())
                    .await
                    .expect("MQTT listener");
            let cert = self_signed(&[]).expect("certificate");
            let app = server::router(AppState {
                model: emulator.model.clone(),
                options: Arc::new(ServerOptions {
                    default_connector: Some(CID.to_string()),
                    ..ServerOptions::default()
                }),
            });
            let tls = MqttListener::start_tls(
                "127.0.0.1:0".parse().expect("addr"),
                service.clone(),
                &cert,
                app,
            )
            .await
            .expect("MQTT TLS listener");
            let mut device = MqttDeviceConfig::new(plain.local_addr);
            device.faults = faults;
            device.http_port = Some(MqttTlsPort {
                address: tls.local_addr,
                host: format!("{CID}.m2.localhost"),
                certificate_pem: cert.certificate_pem(),
            });
            config.mqtt = Some(device);
            mqtt = Some((service, plain, tls));
        }
        let http = HttpFleet::start(core, config).expect("socket fleet");
        let ids = http.identities().to_vec();
        let emu = Emu {
            model: emulator.model.clone(),
            base: emulator.base.clone(),
            fleet: None,
            http: Some(http),
            stopped: None,
            webhook: None,
            mqtt,
            emulator,
        };
        wait_for(DEADLINE, "every HTTP device's boot report", || {
            let booted = ids.iter().all(|id| emu.reported(id, "otau_in").is_some());
            async move { booted }
        })
        .await;
        emu
    }

    /// The HTTP fleet's summary (its action counters count actions handed to the devices'
    /// I/O; the emulator's state says what landed).
    pub fn http_summary(&self) -> FleetSummary {
        match (&self.http, &self.stopped) {
            (Some(h), _) => h.summary(),
            (None, Some(s)) => s.clone(),
            (None, None) => panic!("no HTTP fleet"),
        }
    }

    /// The device MQTT server, when started with one.
    pub fn mqtt(&self) -> &MqttService {
        &self.mqtt.as_ref().expect("an MQTT server").0
    }

    /// `host:port` of the plain MQTT listener, when started with one.
    pub fn mqtt_address(&self) -> SocketAddr {
        self.mqtt.as_ref().expect("an MQTT server").1.local_addr
    }

    /// Stops the HTTP fleet: its devices stop where they are.
    pub async fn stop_http(&mut self) -> FleetSummary {
        let summary = self.http.take().expect("an HTTP fleet").stop().await;
        self.stopped = Some(summary.clone());
        summary
    }

    /// The value a device last wrote to `alias`.
    pub fn reported(&self, identity: &str, alias: &str) -> Option<String> {
        let state = self.conn().state(identity).ok()?;
        state.get(alias).and_then(|s| s.reported.clone())
    }

    /// Sets the emulator's fault rules (an empty config turns them off).
    pub fn set_faults(&self, config: FaultConfig) {
        self.emulator.set_faults(config);
    }

    /// Delivers the connector's `data_in` events to `push` (the operator's receiver), signed
    /// with `key`.
    pub fn push_to(&mut self, push: SocketAddr, key: &str) {
        let mut config = WebhookConfig::default();
        config.targets.insert(
            CID.to_string(),
            WebhookTarget {
                url: url::Url::parse(&format!("http://{push}/hooks/device2")).expect("url"),
                secret: WebhookSecret::new(key.as_bytes().to_vec()),
            },
        );
        self.webhook = Some(WebhookDelivery::start(&self.model, config).expect("webhook"));
    }

    /// Every request the emulator saw so far.
    pub fn log(&self) -> Vec<crate::support::emulator::Logged> {
        self.emulator.log()
    }

    /// The connector.
    pub fn conn(&self) -> Arc<Connector> {
        self.model.connector(CID).expect("connector")
    }

    /// `config_otau` cloud writes per device (devices never written are absent).
    pub fn writes(&self) -> BTreeMap<String, Vec<Option<u64>>> {
        self.conn()
            .ground_truth_all()
            .into_iter()
            .map(|(id, w)| (id, w.iter().map(|w| w.attempt).collect()))
            .collect()
    }

    /// Every client (User-Agent) that wrote `config_otau`.
    pub fn writers(&self) -> Vec<String> {
        let mut clients: Vec<String> = self
            .conn()
            .ground_truth_all()
            .values()
            .flatten()
            .map(|w| w.client.clone())
            .collect();
        clients.sort();
        clients.dedup();
        clients
    }

    /// Devices by the class of their current `otau_in` against [`VERSION`]:
    /// `succeeded`, `failed`, `aborted`, `in_progress`, `malformed`, `other`.
    pub fn report_classes(&self, identities: &[String]) -> HashMap<&'static str, i64> {
        let conn = self.conn();
        let mut out = HashMap::new();
        for id in identities {
            let state = conn.state(id).expect("state");
            let raw = state.get("otau_in").and_then(|s| s.reported.clone());
            let class = match classify(raw.as_deref(), VERSION) {
                Classification::Succeeded => "succeeded",
                Classification::Failed => "failed",
                Classification::Aborted => "aborted",
                Classification::InProgress { .. } => "in_progress",
                Classification::Malformed(_) => "malformed",
                _ => "other",
            };
            *out.entry(class).or_insert(0) += 1;
        }
        out
    }

    /// The fleet's summary: runs finished with success.
    pub fn fleet_successes(&self) -> u64 {
        match (&self.fleet, &self.http) {
            (Some(f), _) => f.summary().finished.success,
            (None, Some(h)) => h.summary().finished.success,
            (None, None) => 0,
        }
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        self.webhook.take();
        if let Some(f) = self.fleet.take() {
            f.stop();
        }
        // Dropping the handle aborts the devices' tasks.
        self.http.take();
        if let Some((service, _, _)) = &self.mqtt {
            service.stop();
        }
    }
}

/// The operator binary running as a process for one namespace (the shared
/// [`OperatorProcess`], plus where its push receiver listens).
pub struct Operator {
    process: OperatorProcess,
    /// The push receiver.
    pub push_addr: SocketAddr,
}

impl std::ops::Deref for Operator {
    type Target = OperatorProcess;
    fn deref(&self) -> &OperatorProcess {
        &self.process
    }
}

impl std::ops::DerefMut for Operator {
    fn deref_mut(&mut self) -> &mut OperatorProcess {
        &mut self.process
    }
}

impl Operator {
    /// Starts `otau-operator run` for `namespace` with fast polls and the push receiver on
    /// 127.0.0.1:0, plus `extra` flags (which replace the defaults of the same poll and status
    /// flags); waits for `/readyz`.
    pub async fn start(cp: &ControlPlane, namespace: &str, extra: &[&str]) -> Operator {
        Operator::start_with_env(cp, namespace, extra, &[]).await
    }

    /// [`Operator::start`] listing the devices at start-up only (polls every hour): within a
    /// test, reports reach it by push alone.
    pub async fn start_push_only(cp: &ControlPlane, namespace: &str) -> Operator {
        let polls = ["--poll-interval-active", "1h", "--poll-interval-idle", "1h"];
        Operator::start(cp, namespace, &polls).await
    }

    /// [`Operator::start`] with extra environment variables for the process.
    pub async fn start_with_env(
        cp: &ControlPlane,
        namespace: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let mut command = Operator::command(cp, namespace, INSTANCE, extra);
        command.envs(env.iter().copied());
        let mut process = OperatorProcess::start(&mut command, DEADLINE).await;
        let push_addr = process
            .wait_logged_addr(&["push receiver listening"], DEADLINE)
            .await;
        Operator { process, push_addr }
    }

    /// `otau-operator run` as `instance` for `namespace`, the push receiver on 127.0.0.1:0,
    /// fast polls unless `extra` sets them, then `extra`.
    fn command(cp: &ControlPlane, namespace: &str, instance: &str, extra: &[&str]) -> Command {
        let mut command = operator_command(cp.kubeconfig());
        command
            .args(["--watch-namespace", namespace])
            .args(["--push-addr", "127.0.0.1:0"])
            .args(["--instance", instance]);
        for (flag, value) in [
            ("--poll-interval-active", "1s"),
            ("--poll-interval-idle", "3s"),
            ("--status-min-interval", "300ms"),
        ] {
            if !extra.contains(&flag) {
                command.args([flag, value]);
            }
        }
        command.args(extra);
        command
    }
}

/// The Secrets (opted in as connector credentials, docs/security.md §4), IoTConnector (rate
/// limit raised, webhook key) and links-only SoftwarePackage `fw` every test starts from.
pub fn base_yaml(emu: &Emu) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: token
  labels:
    otau.dev/connector-credential: "true"
  annotations:
    otau.dev/allowed-hosts: 127.0.0.1
type: Opaque
stringData:
  token: {MTOKEN}
---
apiVersion: v1
kind: Secret
metadata:
  name: webhook
  labels:
    otau.dev/connector-credential: "true"
type: Opaque
stringData:
  hmacKey: {WEBHOOK_KEY}
---
apiVersion: otau.dev/v1alpha1
kind: IoTConnector
metadata:
  name: emulator
spec:
  productId: {CID}
  managementUrl: {base}/api:1/
  allowInsecureHttp: true
  tokenSecretRef:
    name: token
  webhook:
    secretRef:
      name: webhook
  rateLimit:
    requestsPerSecond: 5000
    burst: 5000
---
apiVersion: otau.dev/v1alpha1
kind: SoftwarePackage
metadata:
  name: fw
spec:
  connectorRef:
    name: emulator
  version: {VERSION}
  displayName: Firmware {VERSION}
  links:
    - https://vendor.example.com/fw/{VERSION}/fw.img
"#,
        base = emu.base
    )
}

/// A Rollout of `fw` to the devices tagged `fleet=e2e`, with `rest` appended to its spec
/// (indented by two spaces).
pub fn rollout_yaml(name: &str, rest: &str) -> String {
    format!(
        "apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {name}\nspec:\n  packageRef:\n    name: fw\n  targets:\n    tags:\n      - name: fleet\n        value: e2e\n{rest}"
    )
}

/// `kubectl apply --server-side -n <namespace> -f -`.
pub fn apply(cp: &ControlPlane, namespace: &str, yaml: &str) {
    kubectl_stdin(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=e2e-user",
            "-n",
            namespace,
            "-f",
            "-",
        ],
        yaml,
    );
}

/// Runs kubectl; panics with its output on failure; returns stdout.
pub fn kubectl_stdin(cp: &ControlPlane, args: &[&str], stdin: &str) -> String {
    cp.kubectl_output(args, stdin)
}

/// Runs kubectl with `args`; returns stdout; panics on failure.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    kubectl_stdin(cp, args, "")
}

/// Polls the Rollout until `check` accepts it (for the current generation); panics with the
/// last status seen after [`DEADLINE`].
pub async fn wait_rollout(
    api: &Api<Rollout>,
    name: &str,
    what: &str,
    check: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let started = std::time::Instant::now();
    let mut last = String::new();
    loop {
        if let Ok(r) = api.get(name).await {
            let current = r
                .status
                .as_ref()
                .is_some_and(|s| s.observed_generation == r.metadata.generation);
            if current && check(&r) {
                return r;
            }
            last = serde_json::to_string_pretty(&r.status).unwrap_or_default();
        }
        if started.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for {name}: {what}; last status:\n{last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the condition `type_` of `r` has `status` and `reason`.
pub fn has(r: &Rollout, type_: &str, status: &str, reason: &str) -> bool {
    r.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status && c.reason == reason)
    })
}

/// The condition `type_` of `r`.
pub fn condition(
    r: &Rollout,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    r.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_).cloned())
}

/// The reasons of the Events about `name` in `namespace`, oldest first.
pub fn event_reasons(cp: &ControlPlane, namespace: &str, name: &str) -> Vec<String> {
    let text = kubectl(
        cp,
        &["get", "events.events.k8s.io", "-n", namespace, "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("events JSON");
    let mut items: Vec<(String, String)> = v["items"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|e| e["regarding"]["name"] == name && e["regarding"]["kind"] == "Rollout")
        .map(|e| {
            (
                e["eventTime"].as_str().unwrap_or("").to_owned(),
                e["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    items.sort();
    items.into_iter().map(|(_, r)| r).collect()
}

/// The value of one sample of the Prometheus text, e.g. `otau_x{a="b"}`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
}

/// One group of devices of [`profile_of`].
pub struct Group<'a> {
    /// Identity prefix (`<prefix>000000`, ...).
    pub prefix: &'a str,
    /// How many devices.
    pub count: u64,
    /// The version they run at first boot.
    pub version: &'a str,
    /// The value of their `fleet` tag.
    pub fleet: &'a str,
    /// The behaviour's `outcomes` (YAML flow mapping content, e.g. `silence: 1`).
    pub outcomes: &'a str,
}

/// A fleet profile with per-group version and `fleet` tag, and the short step durations of
/// [`profile`].
pub fn profile_of(seed: u64, groups: &[Group<'_>]) -> Profile {
    let mut yaml = format!("seed: {seed}\ngroups:\n");
    for (i, g) in groups.iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: g{i}\n    count: {}\n    identity_prefix: {}\n    version: \"{}\"\n    tags: [{{name: fleet, value: {}}}]\n    behaviour:\n      outcomes: {{{}}}\n      durations: {{step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}}\n",
            g.count, g.prefix, g.version, g.fleet, g.outcomes
        ));
    }
    Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"))
}

/// The identities of `count` devices with `prefix`, as the fleet names them.
pub fn identities(prefix: &str, count: u64) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i:06}")).collect()
}

/// `ids` in rollout order for `seed` as docs/rollouts.md defines it (computed here, not by
/// the engine): by the first 8 bytes, big-endian, of `sha256(seed ‖ 0x00 ‖ identity)`, ties
/// by identity.
pub fn rollout_order(seed: &str, ids: &[String]) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let mut keyed: Vec<(u64, String)> = ids
        .iter()
        .map(|id| {
            let mut h = Sha256::new();
            h.update(seed.as_bytes());
            h.update([0u8]);
            h.update(id.as_bytes());
            let d = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&d[..8]);
            (u64::from_be_bytes(first), id.clone())
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, id)| id).collect()
}

/// A Rollout of `fw` to the devices tagged `fleet=<fleet>`, with `rest` appended to its spec.
pub fn rollout_for(name: &str, fleet: &str, rest: &str) -> String {
    format!(
        "apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {name}\nspec:\n  packageRef:\n    name: fw\n  targets:\n    tags:\n      - name: fleet\n        value: {fleet}\n{rest}"
    )
}

/// A `metav1.Time` in µs since the epoch.
pub fn micros(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    t.0.as_microsecond()
}

impl Emu {
    /// Starts another fleet on the same connector (late joiners); dropping the handle stops
    /// it.
    pub fn join(&self, profile: &Profile) -> FleetHandle {
        Fleet::start(&self.model, CID, profile, &FleetOptions::default()).expect("joining fleet")
    }

    /// Ground truth: every `config_otau` cloud write per device (time, client, attempt).
    pub fn write_records(
        &self,
    ) -> BTreeMap<String, Vec<otau_operator::emulator::model::CloudWriteRecord>> {
        self.conn().ground_truth_all()
    }
}

/// The operator's series of complete device listings.
const LISTINGS: &str = r#"otau_device_listings_total{outcome="success"}"#;

/// The lease flags of the leader election tests: short, so a takeover fits in a test.
pub const FAST_LEASE: &[&str] = &["--lease-duration", "4s", "--lease-renew-deadline", "3s"];

impl Operator {
    /// Starts `otau-operator run --leader-elect` as `instance`, with its Lease in `namespace`,
    /// fast polls, the push receiver on 127.0.0.1:0 and `extra` flags; waits for `/readyz`
    /// (which a follower answers too) and for its push receiver (follower or leader) to listen.
    pub async fn start_replica(
        cp: &ControlPlane,
        namespace: &str,
        instance: &str,
        extra: &[&str],
    ) -> Operator {
        let mut command = Operator::command(cp, namespace, instance, extra);
        command
            .args(["--leader-elect", "--lease-namespace", namespace])
            .env_remove("POD_NAMESPACE");
        let mut process = OperatorProcess::start(&mut command, DEADLINE).await;
        let push_addr = process
            .wait_logged_addr(
                &[
                    "push receiver listening",
                    "push receiver listening as a follower",
                ],
                DEADLINE,
            )
            .await;
        Operator { process, push_addr }
    }

    /// Complete device listings so far (`otau_device_listings_total{outcome="success"}`).
    pub async fn listings(&self) -> f64 {
        metric_value(&self.metrics().await, LISTINGS).unwrap_or(0.0)
    }

    /// Waits (up to [`DEADLINE`]) until the operator completed two more device listings than
    /// `after`, so it has read the whole fleet again since a change made during a listing;
    /// returns the count then.
    pub async fn two_more_listings(&self, after: f64) -> f64 {
        let seen = std::cell::Cell::new(after);
        wait_for(DEADLINE, "two more device listings", || async {
            seen.set(self.listings().await);
            seen.get() >= after + 2.0
        })
        .await;
        seen.get()
    }

    /// `otau_leader` now.
    pub async fn leader_gauge(&self) -> Option<f64> {
        metric_value(&self.metrics().await, "otau_leader ")
    }
}

/// The holder of the Lease `otau-operator` in `namespace`, read with kubectl (`None` when the
/// Lease does not exist or has no holder).
pub fn lease_holder(cp: &ControlPlane, namespace: &str) -> Option<String> {
    lease_json(cp, namespace)?["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The Lease `otau-operator` in `namespace` as JSON, read with kubectl (`None` when it does
/// not exist).
pub fn lease_json(cp: &ControlPlane, namespace: &str) -> Option<serde_json::Value> {
    let out = cp.kubectl_output(
        &[
            "get",
            "leases.coordination.k8s.io",
            "-n",
            namespace,
            "--ignore-not-found",
            "-o",
            "json",
        ],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v["items"]
        .as_array()?
        .iter()
        .find(|l| l["metadata"]["name"] == "otau-operator")
        .cloned()
}
