//! Harness for the operator tests: the shared test emulator (tests/support/emulator.rs: ExoSense
//! GraphQL, fault injection and a request log), a file server for URL sources, the operator
//! binary as a separate process bound to one test namespace, kubectl helpers, condition
//! waits with deadlines, and the scan for leaked tokens.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use serde::de::DeserializeOwned;

use crate::support::emulator::{EmulatorSetup, TestEmulator};
use crate::support::process::{
    CREDENTIAL_OPT_IN, OperatorProcess, TEST_OUTBOUND, operator_command_with_outbound,
};
use crate::support::{ControlPlane, wait_for};

/// The connector (product) id of every test.
pub const CID: &str = "t41hp23nod8s00000";
/// The management token the emulator accepts from the start.
pub const MTOKEN: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee01";
/// The ExoSense Automation token the emulator accepts.
pub const XTOKEN: &str = "feedbeeffeedbeeffeedbeeffeedbeeffeedbeef";
/// The operator's instance name in tests.
pub const INSTANCE: &str = "otau-operator-test-0";
/// How long a test waits for a condition.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The shared test emulator (tests/support/emulator.rs) with this binary's tokens.
pub struct Emu(TestEmulator);

impl std::ops::Deref for Emu {
    type Target = TestEmulator;
    fn deref(&self) -> &TestEmulator {
        &self.0
    }
}

impl Emu {
    /// Starts the emulator with the connector [`CID`], the token [`MTOKEN`] and the ExoSense
    /// token [`XTOKEN`].
    pub async fn start() -> Emu {
        Emu(TestEmulator::start(EmulatorSetup {
            connector_id: CID.to_string(),
            management_tokens: vec![MTOKEN.to_string()],
            automation_tokens: vec![XTOKEN.to_string()],
        })
        .await)
    }

    /// An IoTConnector plus its token Secret as YAML.
    pub fn connector_yaml(&self, name: &str, secret: &str, extra_spec: &str) -> String {
        format!(
            r#"apiVersion: otau.dev/v1alpha1
kind: IoTConnector
metadata:
  name: {name}
spec:
  productId: {CID}
  managementUrl: {base}/api:1/
  allowInsecureHttp: true
  tokenSecretRef:
    name: {secret}
{extra_spec}"#,
            base = self.base
        )
    }
}

/// A token Secret as YAML, opted in as a connector credential for the emulator's host
/// (docs/security.md §4).
pub fn secret_yaml(name: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n{CREDENTIAL_OPT_IN}type: Opaque\nstringData:\n  token: {token}\n"
    )
}

/// A token Secret as YAML as the previous release wrote it: no opt-in label or annotation.
pub fn unlabelled_secret_yaml(name: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ntype: Opaque\nstringData:\n  token: {token}\n"
    )
}

/// A file server on 127.0.0.1:0 serving `files` (path → bytes).
pub struct FileServer {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Serves `files` at `/<name>`.
    pub async fn start(files: Vec<(&str, Vec<u8>)>) -> FileServer {
        let mut app = axum::Router::new();
        for (name, bytes) in files {
            let bytes = axum::body::Bytes::from(bytes);
            app = app.route(
                &format!("/{name}"),
                axum::routing::get(move || {
                    let b = bytes.clone();
                    async move { b }
                }),
            );
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind file server");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FileServer { base, _task: task }
    }
}

/// The operator binary running as a process, watching one namespace.
pub type Operator = OperatorProcess;

/// Starts `otau-operator run` against the test control plane, for `namespace`, with fast
/// retries and the test outbound flags (`--allow-private-sources`), plus `extra` flags; waits
/// until it serves `/readyz`.
pub async fn start_operator(cp: &ControlPlane, namespace: &str, extra: &[&str]) -> Operator {
    start_operator_with_outbound(cp, namespace, TEST_OUTBOUND, extra).await
}

/// [`start_operator`] with `outbound` as the outbound flags (`--allow-private-sources`,
/// `--platform-host`), none when empty.
pub async fn start_operator_with_outbound(
    cp: &ControlPlane,
    namespace: &str,
    outbound: &[&str],
    extra: &[&str],
) -> Operator {
    let mut command = operator_command_with_outbound(cp.kubeconfig(), outbound);
    command
        .args(["--watch-namespace", namespace])
        .args(["--instance", INSTANCE])
        .args(extra)
        // No push receiver: these tests poll nothing, and a fixed port would collide
        // between tests running at once (an unknown variable is ignored).
        .env("OTAU_PUSH_ADDR", "off");
    OperatorProcess::start(&mut command, DEADLINE).await
}

/// `kubectl apply --server-side -n <namespace> -f -` of `yaml`; panics with kubectl's output.
pub fn apply(cp: &ControlPlane, namespace: &str, yaml: &str) {
    kubectl_stdin(
        cp,
        &["apply", "--server-side", "-n", namespace, "-f", "-"],
        yaml,
    );
}

/// Runs kubectl with `args` and `stdin`; panics with its output on failure; returns stdout.
pub fn kubectl_stdin(cp: &ControlPlane, args: &[&str], stdin: &str) -> String {
    cp.kubectl_output(args, stdin)
}

/// Runs kubectl with `args`; returns stdout; panics on failure.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> String {
    kubectl_stdin(cp, args, "")
}

/// The condition `type_` of an object's status, if any (read through JSON so one helper
/// serves every kind).
pub fn condition<K: serde::Serialize>(obj: &K, type_: &str) -> Option<Condition> {
    let v = serde_json::to_value(obj).ok()?;
    let conds: Vec<Condition> = serde_json::from_value(v["status"]["conditions"].clone()).ok()?;
    conds.into_iter().find(|c| c.type_ == type_)
}

/// Waits until `name`'s condition `type_` has `status` and `reason` for the current
/// generation; returns the object then.
pub async fn wait_condition<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> K
where
    K: Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug + kube::Resource,
{
    let found: Arc<Mutex<Option<K>>> = Arc::default();
    let last: Arc<Mutex<String>> = Arc::default();
    let what = format!("{name}: {type_}={status} ({reason})");
    let result = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(obj) = api.get(name).await {
                let c = condition(&obj, type_);
                *last.lock().unwrap_or_else(|e| e.into_inner()) = format!("{c:?}");
                let generation = obj.meta().generation;
                if c.is_some_and(|c| {
                    c.status == status && c.reason == reason && c.observed_generation == generation
                }) {
                    *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(obj);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if result.is_err() {
        panic!(
            "timed out after {DEADLINE:?} waiting for {what}; last seen {}",
            last.lock().unwrap_or_else(|e| e.into_inner())
        );
    }
    let obj = found.lock().unwrap_or_else(|e| e.into_inner()).take();
    obj.expect("found")
}

/// Waits until `name` is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let api = api.clone();
    let name = name.to_string();
    wait_for(DEADLINE, &format!("{name} to be deleted"), move || {
        let api = api.clone();
        let name = name.clone();
        async move { matches!(api.get_opt(&name).await, Ok(None)) }
    })
    .await;
}

/// The Events of a namespace as JSON text.
pub fn events_json(cp: &ControlPlane, namespace: &str) -> String {
    kubectl(
        cp,
        &["get", "events.events.k8s.io", "-n", namespace, "-o", "json"],
    )
}

/// Fails when any of `tokens` appears in the operator's logs, the namespace's Events, or the
/// otau objects (status included).
pub fn assert_no_token_leak(cp: &ControlPlane, namespace: &str, op: &Operator, tokens: &[&str]) {
    let objects = kubectl(
        cp,
        &[
            "get",
            "iotconnectors,softwarepackages",
            "-n",
            namespace,
            "-o",
            "json",
        ],
    );
    let events = events_json(cp, namespace);
    let logs = op.logs();
    assert!(!logs.is_empty(), "the operator logged nothing");
    for token in tokens {
        assert!(
            !logs.contains(token),
            "a token appears in the operator's logs"
        );
        assert!(!events.contains(token), "a token appears in an Event");
        assert!(
            !objects.contains(token),
            "a token appears in an object's status or spec"
        );
    }
}

/// The value of one sample line of the Prometheus text, e.g.
/// `otau_connector_token_ttl_seconds{connector="c",namespace="n"}`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
}
