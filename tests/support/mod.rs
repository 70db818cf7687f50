//! Test support shared by the integration-test binaries: a real local Kubernetes control plane
//! (etcd + kube-apiserver, started by `hack/control-plane.sh run`), clients and kubectl bound
//! to it, fresh namespaces, and a condition poller.
//!
//! Use it from a test binary with
//! `#[path = "../support/mod.rs"] mod support;` and then `support::ControlPlane::get()`.
//!
//! One control plane starts per test binary, on first use, and stops when the test process
//! ends, however it ends: the supervisor script watches its stdin, which only this process
//! holds open, so the operating system closes it when the process exits (even on SIGKILL).
//!
//! TLS: kube is built with rustls, and the dependency tree enables exactly one rustls crypto
//! provider (aws-lc-rs, see Cargo.lock), which rustls then selects by itself; no explicit
//! `CryptoProvider::install_default` is needed. Should a second provider ever be enabled,
//! client creation fails loudly with rustls' "no process-level CryptoProvider" message.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod emulator;
pub mod process;
pub mod raw_http;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// The label every test namespace carries, with the (sanitised) test name as its value, so
/// leftovers can be listed or deleted in bulk.
pub const TEST_LABEL: &str = "otau.dev/test";

/// How long the whole start-up (etcd, apiserver, CRDs) may take before the tests fail. The
/// script itself gives each component 120 s; this is the backstop above those.
const STARTUP_DEADLINE: Duration = Duration::from_secs(300);

/// How many of the supervisor's last stderr lines are kept for error messages.
const KEPT_LOG_LINES: usize = 200;

/// The repository root (where `hack/` and `crds/` live).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A running local control plane: etcd and kube-apiserver with RBAC and token auth, an admin
/// kubeconfig, and the CRDs from `crds/` installed and Established.
pub struct ControlPlane {
    kubeconfig: PathBuf,
    server: String,
    dir: PathBuf,
    audit_log: Option<PathBuf>,
    /// The supervisor process. Never waited on: it lives as long as this test process.
    _supervisor: Child,
    /// The write end of the supervisor's stdin. Held (never written) for the life of the
    /// process; when the process exits the OS closes it and the supervisor stops everything.
    _supervisor_stdin: ChildStdin,
}

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
static AUDITED_CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
static DEDICATED_CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The audit policy of [`ControlPlane::with_audit_log`]: every request at Metadata level (who,
/// verb, resource, subresource, namespace, name, response code; no bodies), logged when the
/// response starts (watches) and when it completes.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

impl ControlPlane {
    /// The control plane of this test binary, started on first use (blocking, up to a few
    /// minutes on a busy machine). Panics with the reason, naming `hack/tools.sh` when the
    /// binaries are missing; every later call panics with the same message.
    pub fn get() -> &'static ControlPlane {
        match CONTROL_PLANE.get_or_init(|| start_control_plane(false)) {
            Ok(control_plane) => control_plane,
            Err(reason) => panic!("the local control plane is not available: {reason}"),
        }
    }

    /// A second control plane of this test binary whose apiserver writes an audit log
    /// ([`ControlPlane::audit_log`]) of every request at Metadata level; started on first use,
    /// apart from [`ControlPlane::get`]'s so other tests' requests stay out of its log.
    pub fn with_audit_log() -> &'static ControlPlane {
        match AUDITED_CONTROL_PLANE.get_or_init(|| start_control_plane(true)) {
            Ok(control_plane) => control_plane,
            Err(reason) => panic!("the audited local control plane is not available: {reason}"),
        }
    }

    /// A control plane of its own for the tests of this binary that change cluster-scoped
    /// objects other tests rely on (such as installing older CRDs); started on first use.
    /// Such tests take it with [`ControlPlane::dedicated_exclusive`], one at a time.
    pub fn dedicated() -> &'static ControlPlane {
        match DEDICATED_CONTROL_PLANE.get_or_init(|| start_control_plane(false)) {
            Ok(control_plane) => control_plane,
            Err(reason) => panic!("the dedicated local control plane is not available: {reason}"),
        }
    }

    /// [`ControlPlane::dedicated`], held by this test alone until the guard drops: tests that
    /// install other CRDs on it must not see each other's.
    pub async fn dedicated_exclusive()
    -> (&'static ControlPlane, tokio::sync::MutexGuard<'static, ()>) {
        static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let guard = EXCLUSIVE.lock().await;
        (Self::dedicated(), guard)
    }

    /// The apiserver's audit log (one JSON event per line), for a control plane from
    /// [`ControlPlane::with_audit_log`]; `None` for the others.
    pub fn audit_log(&self) -> Option<&Path> {
        self.audit_log.as_deref()
    }

    /// The admin kubeconfig (token in `system:masters`, CA = the apiserver's certificate).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The folder holding the control plane's data, certificates and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new admin client built from this control plane's kubeconfig (never from the ambient
    /// configuration). Make one per test: each `#[tokio::test]` has its own runtime.
    pub async fn client(&self) -> Client {
        let kubeconfig = self.read_kubeconfig();
        client_from(kubeconfig).await
    }

    /// A new client that authenticates with `token` (for example a ServiceAccount token from
    /// `kubectl create token`) instead of the admin token.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let mut kubeconfig = self.read_kubeconfig();
        for user in &mut kubeconfig.auth_infos {
            user.auth_info = Some(AuthInfo {
                token: Some(token.to_owned().into()),
                ..AuthInfo::default()
            });
        }
        client_from(kubeconfig).await
    }

    /// `kubectl --kubeconfig <this control plane's kubeconfig>`, ready for more arguments.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(tool("kubectl"));
        command
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig);
        command
    }

    /// Runs kubectl against this control plane with `args`, feeding it `stdin`; panics with
    /// kubectl's output when it fails; returns its stdout.
    pub fn kubectl_output(&self, args: &[&str], stdin: &str) -> String {
        use std::io::Write;

        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write to kubectl");
        let out = child.wait_with_output().expect("kubectl output");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates a fresh, uniquely named namespace for the test `test_name`, labelled
    /// `otau.dev/test=<test_name>`, and returns its name.
    pub async fn namespace(&self, test_name: &str) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let name = format!(
            "{}-{}",
            dns_label_prefix(test_name),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    TEST_LABEL.to_owned(),
                    label_value(test_name),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client().await)
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("creating test namespace {name}: {error}"));
        name
    }

    fn read_kubeconfig(&self) -> Kubeconfig {
        Kubeconfig::read_from(&self.kubeconfig).unwrap_or_else(|error| {
            panic!("reading kubeconfig {}: {error}", self.kubeconfig.display())
        })
    }
}

async fn client_from(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|error| panic!("loading the test kubeconfig: {error}"));
    Client::try_from(config).unwrap_or_else(|error| panic!("building a kube client: {error}"))
}

/// Polls `condition` until it returns true; panics naming `what` once `deadline` (real time)
/// has passed. The poll interval starts at 20 ms and backs off to 500 ms.
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    let mut interval = Duration::from_millis(20);
    loop {
        if condition().await {
            return;
        }
        let elapsed = started.elapsed();
        if elapsed >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(interval.min(deadline - elapsed)).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

/// The Python of the test devices' packages (paho-mqtt): `python3` of the venv that
/// `hack/tools.sh` fills (`PYTHON_TEST` overrides). Panics naming `hack/tools.sh python` when
/// it is not there.
pub fn test_python() -> PathBuf {
    if let Some(explicit) = std::env::var_os("PYTHON_TEST").filter(|v| !v.is_empty()) {
        return PathBuf::from(explicit);
    }
    let python = tools_bin_dir()
        .and_then(Path::parent)
        .map(|tools| tools.join("venv/bin/python3"))
        .filter(|p| p.is_file());
    python.unwrap_or_else(|| {
        panic!("no Python with paho-mqtt: run `hack/tools.sh python` (or set PYTHON_TEST)")
    })
}

/// The path of a test tool (`kubectl`, `kube-apiserver`, `etcd`), resolved the same way as
/// `hack/control-plane.sh` does: the environment variable named after the tool (`KUBECTL`,
/// `KUBE_APISERVER`, `ETCD`), then the folder `hack/tools.sh` installs into
/// (`hack/tools.sh --print`, overridable with `OTAU_TOOLS_DIR`), then `PATH`.
/// Panics with a message naming `hack/tools.sh` when the tool is nowhere.
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|reason| panic!("{reason}"))
}

fn find_tool(name: &str) -> Result<PathBuf, String> {
    let variable = name.to_uppercase().replace('-', "_");
    if let Some(explicit) = std::env::var_os(&variable).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{variable}={} does not name a file; point it at a {name} binary or unset it",
                path.display()
            ))
        };
    }
    let tools_bin = tools_bin_dir();
    if let Some(bin) = tools_bin {
        let candidate = bin.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if let Some(found) = on_path {
        return Ok(found);
    }
    let looked_in = tools_bin.map_or_else(
        || "the tools folder (hack/tools.sh --print failed)".to_owned(),
        |bin| bin.display().to_string(),
    );
    Err(format!(
        "{name} not found (looked at ${variable}, {looked_in} and PATH). \
         Build the pinned test tools with `hack/tools.sh` (several minutes, once), \
         or set {variable} to a prebuilt {name}"
    ))
}

/// `<hack/tools.sh --print>/bin`, asked once per process so the folder logic lives in one place.
fn tools_bin_dir() -> Option<&'static Path> {
    static TOOLS_BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    TOOLS_BIN
        .get_or_init(|| {
            let output = Command::new("bash")
                .arg(repo_root().join("hack/tools.sh"))
                .arg("--print")
                .stdin(Stdio::null())
                .output()
                .ok()
                .filter(|output| output.status.success())?;
            let dir = String::from_utf8(output.stdout).ok()?;
            Some(PathBuf::from(dir.trim()).join("bin"))
        })
        .as_deref()
}

/// The start-up: spawn the supervisor (with an audit policy when `audit` is set), read its JSON
/// line, install the CRDs.
fn start_control_plane(audit: bool) -> Result<ControlPlane, String> {
    // Check the binaries here too, so the message names them before any process starts.
    let kube_apiserver = find_tool("kube-apiserver")?;
    let etcd = find_tool("etcd")?;
    find_tool("kubectl")?;

    let dir = tempfile::Builder::new()
        .prefix("otau-control-plane-")
        .tempdir()
        .map_err(|error| format!("creating a temporary folder: {error}"))?
        .keep();
    let keep = std::env::var_os("OTAU_KEEP_CONTROL_PLANE").is_some_and(|value| !value.is_empty());
    let mut command = Command::new("bash");
    command
        .arg(repo_root().join("hack/control-plane.sh"))
        .arg("run");
    if !keep {
        command.arg("--rm");
    }
    if audit {
        let policy = dir.join("audit-policy.yaml");
        std::fs::write(&policy, AUDIT_POLICY)
            .map_err(|error| format!("writing {}: {error}", policy.display()))?;
        command.arg("--audit-policy").arg(policy);
    }
    let mut supervisor = command
        .arg(&dir)
        .env("KUBE_APISERVER", &kube_apiserver)
        .env("ETCD", &etcd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("starting hack/control-plane.sh: {error}"))?;
    let supervisor_stdin = supervisor.stdin.take().expect("stdin is piped");
    let log = keep_last_lines(supervisor.stderr.take().expect("stderr is piped"));
    let first_line = read_first_line(supervisor.stdout.take().expect("stdout is piped"));

    let line = match first_line.recv_timeout(STARTUP_DEADLINE) {
        Ok(Some(line)) => line,
        Ok(None) => {
            let status = supervisor
                .wait()
                .map_or_else(|error| error.to_string(), |status| status.to_string());
            return Err(format!(
                "hack/control-plane.sh run exited ({status}) before it was ready:\n{}",
                log_text(&log)
            ));
        }
        Err(_) => {
            // SIGTERM lets the script stop etcd and the apiserver; dropping our end of its
            // stdin alone would only be noticed once it is up.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(supervisor.id().to_string())
                .status();
            return Err(format!(
                "hack/control-plane.sh run was not ready within {STARTUP_DEADLINE:?}:\n{}",
                log_text(&log)
            ));
        }
    };
    let ready: serde_json::Value = serde_json::from_str(&line)
        .map_err(|error| format!("hack/control-plane.sh printed {line:?}, not JSON: {error}"))?;
    let field = |name: &str| {
        ready[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("hack/control-plane.sh printed no \"{name}\" in {line}"))
    };
    let audit_log = match ready["audit_log"].as_str() {
        Some(path) if audit && !path.is_empty() => Some(PathBuf::from(path)),
        _ if audit => {
            return Err(format!(
                "hack/control-plane.sh was asked for an audit log but printed none in {line}"
            ));
        }
        _ => None,
    };
    let control_plane = ControlPlane {
        kubeconfig: PathBuf::from(field("kubeconfig")?),
        server: field("server")?,
        dir,
        audit_log,
        _supervisor: supervisor,
        _supervisor_stdin: supervisor_stdin,
    };
    install_crds(&control_plane)?;
    Ok(control_plane)
}

/// `kubectl apply --server-side` of `crds/*.yaml`, then waits until each is Established.
/// Does nothing when `crds/` holds no YAML files.
fn install_crds(control_plane: &ControlPlane) -> Result<(), String> {
    let crds_dir = repo_root().join("crds");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&crds_dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    if files.is_empty() {
        return Ok(());
    }
    files.sort();
    let with_files = |command: &mut Command| {
        for file in &files {
            command.arg("-f").arg(file);
        }
    };
    let mut apply = control_plane.kubectl();
    apply.args(["apply", "--server-side", "--field-manager=otau-tests"]);
    with_files(&mut apply);
    run_kubectl(apply, "installing crds/")?;
    let mut wait = control_plane.kubectl();
    wait.args(["wait", "--for=condition=Established", "--timeout=120s"]);
    with_files(&mut wait);
    run_kubectl(wait, "waiting for the CRDs to be Established")
}

fn run_kubectl(mut command: Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("{what}: running kubectl: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what}: kubectl failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Reads the supervisor's first stdout line on a thread; `None` means it closed stdout first.
/// The thread then keeps draining stdout (the script prints nothing more) until it closes.
fn read_first_line(stdout: impl Read + Send + 'static) -> mpsc::Receiver<Option<String>> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let first = match reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line.trim_end().to_owned()),
        };
        let _ = sender.send(first);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    receiver
}

/// Drains the supervisor's stderr on a thread, keeping the last lines for error messages.
fn keep_last_lines(stderr: impl Read + Send + 'static) -> SupervisorLog {
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    let kept = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut kept = kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if kept.len() == KEPT_LOG_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    });
    SupervisorLog { lines, reader }
}

/// The last lines the supervisor wrote to stderr, and the thread collecting them.
struct SupervisorLog {
    lines: Arc<Mutex<VecDeque<String>>>,
    reader: std::thread::JoinHandle<()>,
}

fn log_text(log: &SupervisorLog) -> String {
    // After a failed start the script exits and its stderr closes; give the reader a moment
    // to take in the last lines (the error itself) before reading them.
    let until = Instant::now() + Duration::from_secs(5);
    while !log.reader.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = log
        .lines
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    lines.iter().cloned().collect::<Vec<_>>().join("\n")
}

/// A DNS-1123 label prefix (lowercase alphanumerics and '-', at most 48 characters) made
/// from a test name; a counter is appended to make namespace names unique.
fn dns_label_prefix(test_name: &str) -> String {
    let mut prefix = String::new();
    for c in test_name.chars() {
        if c.is_ascii_alphanumeric() {
            prefix.push(c.to_ascii_lowercase());
        } else if !prefix.is_empty() && !prefix.ends_with('-') {
            prefix.push('-');
        }
        if prefix.len() == 48 {
            break;
        }
    }
    let prefix = prefix.trim_end_matches('-');
    if prefix.is_empty() {
        "test".to_owned()
    } else {
        prefix.to_owned()
    }
}

/// A valid label value (at most 63 characters of alphanumerics, '-', '_', '.', starting and
/// ending with an alphanumeric) made from a test name.
fn label_value(test_name: &str) -> String {
    let mapped: String = test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "test".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// kstatus' verdict (`status.Compute` of `sigs.k8s.io/cli-utils`, what Flux's health checks and
/// kpt use) on `objects` (one object or a `List`, as `kubectl get -o json` prints), through the
/// `kstatus` helper `hack/tools.sh` builds: `(status, message)` per object, in order.
pub fn kstatus(objects: &serde_json::Value) -> Vec<(String, String)> {
    let results = run_json(&tool("kstatus"), &[], objects);
    results
        .as_array()
        .expect("kstatus prints a JSON array")
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

impl ControlPlane {
    /// kstatus' verdict on one object as the apiserver returns it (`kubectl get -o json`).
    pub fn kstatus_of(&self, namespace: &str, resource: &str, name: &str) -> (String, String) {
        let text = self.kubectl_output(&["get", "-n", namespace, resource, name, "-o", "json"], "");
        let object: serde_json::Value = serde_json::from_str(&text).expect("kubectl prints JSON");
        kstatus(&object).remove(0)
    }
}

/// Runs a JSON-in, JSON-out test helper (`kstatus`, `argocd-lua`) with `input` on stdin.
pub fn run_json(program: &Path, args: &[&str], input: &serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("helper output");
    assert!(
        out.status.success(),
        "{} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed something that is not JSON ({e}): {}",
            program.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The argocd-cm data `hack/argocd-cm.sh` generates (what docs/gitops.md tells people to
/// install), in a file that lives as long as the returned guard.
pub fn argocd_cm() -> (tempfile::TempDir, PathBuf) {
    let out = Command::new("bash")
        .arg(repo_root().join("hack/argocd-cm.sh"))
        .current_dir(repo_root())
        .output()
        .expect("run hack/argocd-cm.sh");
    assert!(
        out.status.success(),
        "hack/argocd-cm.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("argocd-cm-otau.yaml");
    std::fs::write(&file, &out.stdout).expect("write argocd-cm");
    (dir, file)
}

/// Judges `objects` with Argo CD's health checks in Argo CD's runtime: `(status, message)` each.
pub fn argocd_health(cm: &Path, objects: &[serde_json::Value]) -> Vec<(String, String)> {
    let requests: Vec<serde_json::Value> = objects
        .iter()
        .map(|o| serde_json::json!({"op": "health", "object": o}))
        .collect();
    let results = run_json(
        &tool("argocd-lua"),
        &[&cm.to_string_lossy()],
        &serde_json::Value::from(requests),
    );
    results
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            assert!(
                r["error"].is_null(),
                "Argo CD's runtime refused a health check: {r}"
            );
            (
                r["status"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

impl ControlPlane {
    /// What Flux (kstatus) and Argo CD (our health checks in its runtime) make of one object as
    /// the apiserver returns it: `(kstatus status, Argo CD health status)`.
    pub fn gitops_verdicts(&self, namespace: &str, resource: &str, name: &str) -> (String, String) {
        let text = self.kubectl_output(&["get", "-n", namespace, resource, name, "-o", "json"], "");
        let object: serde_json::Value = serde_json::from_str(&text).expect("kubectl prints JSON");
        let flux = kstatus(&object).remove(0).0;
        let (_guard, cm) = argocd_cm();
        let argocd = argocd_health(&cm, &[object]).remove(0).0;
        (flux, argocd)
    }
}
