//! Child processes (the operator binary, mostly) whose stdout and stderr are copied line by
//! line into one shared log that tests read while the process runs.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The lines a child wrote so far, stdout and stderr interleaved as they arrived.
pub type SharedLog = Arc<Mutex<String>>;

/// Starts `command` with stdout and stderr piped and copies each line into the returned log
/// (one thread per stream, ending with the stream). Panics with `what` if it cannot start.
pub fn spawn_logged(command: &mut Command, what: &str) -> (Child, SharedLog) {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let log = SharedLog::default();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let mut text = log.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
    }
    (child, log)
}

/// `kubectl-otau --kubeconfig <kubeconfig> -n <namespace> <args>`: the plugin cargo built for
/// this test binary, never the ambient `KUBECONFIG`; stdin empty (and stdout a pipe, so no
/// colour).
pub fn kubectl_otau(kubeconfig: &std::path::Path, namespace: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kubectl-otau"));
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", namespace])
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    command
}

/// Runs [`kubectl_otau`]; panics (with its output) unless it exits 0; returns stdout.
pub fn kubectl_otau_stdout(kubeconfig: &std::path::Path, namespace: &str, args: &[&str]) -> String {
    let out = kubectl_otau(kubeconfig, namespace, args)
        .output()
        .expect("run kubectl-otau");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl otau {args:?} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The identities `kubectl otau devices ... -o json` listed.
pub fn listed_identities(json: &str) -> std::collections::BTreeSet<String> {
    let devices: serde_json::Value = serde_json::from_str(json).expect("devices JSON");
    devices
        .as_array()
        .expect("an array of devices")
        .iter()
        .map(|d| d["identity"].as_str().expect("identity").to_owned())
        .collect()
}

/// A copy of everything in the log so far.
pub fn log_text(log: &SharedLog) -> String {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The `addr` field of the first JSON log line whose `message` is `message` (how the
/// operator announces its listeners: `--log-format json`).
pub fn logged_addr(log: &str, message: &str) -> Option<std::net::SocketAddr> {
    log.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == message)
            .then(|| v["addr"].as_str()?.parse().ok())
            .flatten()
    })
}

/// Waits (up to `deadline`) until `GET http://addr/readyz` answers 2xx; the panic message
/// carries the child's log.
pub async fn wait_ready(
    addr: std::net::SocketAddr,
    log: &SharedLog,
    deadline: std::time::Duration,
) {
    let url = format!("http://{addr}/readyz");
    let ready = tokio::time::timeout(
        deadline,
        super::wait_for(deadline, "/readyz to answer 2xx", || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }),
    )
    .await;
    if ready.is_err() {
        panic!(
            "not ready within {deadline:?} ({url}); its log:\n{}",
            log_text(log)
        );
    }
}

/// The outbound flags of every test operator (unless a test asks for others with
/// [`operator_command_with_outbound`]): the emulator and the file servers listen on
/// 127.0.0.1, which the outbound policy refuses by default (docs/security.md §2).
pub const TEST_OUTBOUND: &[&str] = &["--allow-private-sources"];

/// The label and annotation every test credential Secret carries (docs/security.md §4): the
/// opt-in, and the emulator's host as the one its token may go to. YAML, under `metadata:`.
pub const CREDENTIAL_OPT_IN: &str = "  labels:\n    otau.dev/connector-credential: \"true\"\n  annotations:\n    otau.dev/allowed-hosts: 127.0.0.1\n";

/// The label every test ConfigMap or Secret file source carries. YAML, under `metadata:`.
pub const PACKAGE_SOURCE_OPT_IN: &str = "  labels:\n    otau.dev/package-source: \"true\"\n";

/// `otau-operator run` with what every test of the binary wants: `kubeconfig`, `/metrics` on
/// 127.0.0.1:0, JSON logs (debug for the operator), fast platform retries, the outbound flags
/// of [`TEST_OUTBOUND`], nothing taken from the test's own `KUBECONFIG` or `RUST_LOG`, stdin
/// closed. Callers add the rest.
pub fn operator_command(kubeconfig: &std::path::Path) -> Command {
    operator_command_with_outbound(kubeconfig, TEST_OUTBOUND)
}

/// [`operator_command`] with `outbound` as the outbound flags instead of [`TEST_OUTBOUND`].
pub fn operator_command_with_outbound(kubeconfig: &std::path::Path, outbound: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_otau-operator"));
    command
        .arg("run")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .args(["--log-level", "info,otau_operator=debug"])
        .args(["--platform-initial-backoff", "100ms"])
        .args(["--platform-max-backoff", "2s"])
        .args(["--error-backoff-max", "3s"])
        .args(outbound)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// The operator binary running as a child process, with its log and the address of its
/// metrics and health server; killed when dropped, so a failing test leaves nothing running.
pub struct OperatorProcess {
    child: Child,
    log: SharedLog,
    /// Where `/metrics`, `/readyz` and `/healthz` are served.
    pub metrics_addr: std::net::SocketAddr,
}

impl OperatorProcess {
    /// Starts `command` (see [`operator_command`]) and waits, up to `deadline`, until it logs
    /// its metrics address and answers `/readyz`. Panics with the log if it does not, or if
    /// it exits first.
    pub async fn start(command: &mut Command, deadline: std::time::Duration) -> OperatorProcess {
        let (child, log) = spawn_logged(command, "the operator binary");
        let mut process = OperatorProcess {
            child,
            log,
            metrics_addr: ([127, 0, 0, 1], 0).into(),
        };
        process.metrics_addr = process
            .wait_logged_addr(&["metrics and health server listening"], deadline)
            .await;
        wait_ready(process.metrics_addr, &process.log, deadline).await;
        process
    }

    /// Waits, up to `deadline`, until the log announces an address under one of `messages`
    /// (the first that does). Panics with the log if the process exits first or the deadline
    /// passes.
    pub async fn wait_logged_addr(
        &mut self,
        messages: &[&str],
        deadline: std::time::Duration,
    ) -> std::net::SocketAddr {
        let mut found = None;
        let child = &mut self.child;
        let log = &self.log;
        let waited = tokio::time::timeout(
            deadline,
            super::wait_for(deadline * 2, "an address in the log", || {
                let text = log_text(log);
                found = messages.iter().find_map(|m| logged_addr(&text, m));
                if found.is_none()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!("the operator exited ({status}) before logging {messages:?}:\n{text}");
                }
                let done = found.is_some();
                async move { done }
            }),
        )
        .await;
        if waited.is_err() {
            panic!(
                "the operator logged none of {messages:?} within {deadline:?}:\n{}",
                self.logs()
            );
        }
        found.expect("found")
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        log_text(&self.log)
    }

    /// Waits, up to `deadline`, until the process logged a line containing `text`.
    pub async fn wait_log(&self, text: &str, deadline: std::time::Duration) {
        super::wait_for(deadline, &format!("the operator to log {text:?}"), || {
            let found = self.logs().contains(text);
            async move { found }
        })
        .await;
    }

    /// `/metrics` now.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Sends `signal` (`TERM`, `KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} failed");
    }

    /// Waits, up to `deadline`, for the process to exit; its status. Panics with the log
    /// after the deadline.
    pub async fn wait_exit(&mut self, deadline: std::time::Duration) -> std::process::ExitStatus {
        let mut exited = None;
        super::wait_for(deadline, "the operator to exit", || {
            exited = exited.or(self.child.try_wait().expect("try_wait"));
            let done = exited.is_some();
            async move { done }
        })
        .await;
        exited.expect("exited")
    }

    /// SIGTERM, then waits (up to `deadline`) for the exit; whether it exited 0. A graceful
    /// shutdown releases the Lease and closes the watches.
    pub async fn stop(&mut self, deadline: std::time::Duration) -> bool {
        self.signal("TERM");
        self.wait_exit(deadline).await.success()
    }

    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL the operator");
        self.child.wait().expect("reap the operator");
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
