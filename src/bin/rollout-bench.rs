//! `rollout-bench`: one Rollout of N simulated devices end to end, and its figures.
//!
//! Starts a local control plane (`hack/control-plane.sh run`, tools from `hack/tools.sh`), the
//! emulator in this process with an in-process fleet of N devices (fast step durations), and
//! the operator binary next to this one as a process; applies a connector (rate limit raised),
//! a links-only package and a Rollout with kubectl; then prints:
//!
//! - notifications per second (emulator ground truth: first to last `config_otau` write);
//! - platform calls per device (the operator's `otau_platform_requests_total` / N);
//! - time from the last device's final report to `Complete` in the Rollout's status;
//! - the operator's resident memory before the Rollout and at its peak, and per device.
//!
//! Build and run (not part of `cargo test`):
//!
//! ```sh
//! cargo build --release --bins
//! target/release/rollout-bench --devices 100000
//! ```

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::fleet::{Fleet, FleetOptions, Profile};
use otau_operator::emulator::model::{Model, ModelConfig};
use otau_operator::emulator::server::{self, AppState, ServerOptions};

const CID: &str = "bench0rollout000";
const TOKEN: &str = "b3nchb3nchb3nchb3nchb3nchb3nchb3nchb3nch";

/// Arguments.
#[derive(Debug, Parser)]
#[command(
    about = "Run one Rollout of N simulated devices through the operator and print its figures"
)]
struct Args {
    /// Number of devices.
    #[arg(long, default_value_t = 100_000)]
    devices: u64,
    /// Cumulative wave sizes in percent.
    #[arg(long, default_value = "1,10,50,100", value_delimiter = ',')]
    waves: Vec<u32>,
    /// The connector's client-side rate limit (requests per second, also the burst).
    #[arg(long, default_value_t = 20_000)]
    rate: u32,
    /// `--write-concurrency` of the operator.
    #[arg(long, default_value_t = 64)]
    write_concurrency: usize,
    /// `--poll-interval-active` of the operator.
    #[arg(long, default_value = "2s")]
    poll_interval: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tools_bin() -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(repo_root().join("hack/tools.sh"))
        .arg("--print")
        .output()
        .map_err(|e| format!("hack/tools.sh --print: {e}"))?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin"))
}

struct ControlPlane {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    _supervisor: Child,
}

impl ControlPlane {
    fn start() -> Result<ControlPlane, String> {
        let bin = tools_bin()?;
        let dir = std::env::temp_dir().join(format!("otau-rollout-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut supervisor = Command::new("bash")
            .arg(repo_root().join("hack/control-plane.sh"))
            .args(["run", "--rm"])
            .arg(&dir)
            .env("KUBE_APISERVER", bin.join("kube-apiserver"))
            .env("ETCD", bin.join("etcd"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("hack/control-plane.sh: {e}"))?;
        let mut line = String::new();
        BufReader::new(supervisor.stdout.take().ok_or("no stdout")?)
            .read_line(&mut line)
            .map_err(|e| format!("control plane: {e}"))?;
        let ready: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| format!("control plane printed {line:?}: {e}"))?;
        let kubeconfig = PathBuf::from(ready["kubeconfig"].as_str().ok_or("no kubeconfig")?);
        let cp = ControlPlane {
            kubeconfig,
            kubectl: bin.join("kubectl"),
            _supervisor: supervisor,
        };
        let crds = repo_root().join("crds");
        cp.kubectl(
            &["apply", "--server-side", "-f", &crds.display().to_string()],
            "",
        )?;
        cp.kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=120s",
                "-f",
                &crds.display().to_string(),
            ],
            "",
        )?;
        Ok(cp)
    }

    fn kubectl(&self, args: &[&str], stdin: &str) -> Result<String, String> {
        let mut child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("stdin")?
            .write_all(stdin.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn logged_addr(path: &Path, message: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == message).then(|| v["addr"].as_str().map(str::to_owned))?
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("rollout-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let n = args.devices;
    eprintln!("starting the control plane");
    let cp = ControlPlane::start()?;

    let model = Model::new(
        ModelConfig {
            management_tokens: vec![TOKEN.to_string()],
            ..ModelConfig::default()
        },
        Arc::new(SystemClock),
    );
    model.add_connector(CID).map_err(|e| e.to_string())?;
    let running = server::start(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        AppState {
            model: model.clone(),
            options: Arc::new(ServerOptions {
                default_connector: Some(CID.to_string()),
                ..ServerOptions::default()
            }),
        },
    )
    .await
    .map_err(|e| format!("emulator: {e}"))?;
    let profile = Profile::from_yaml(&format!(
        "seed: 1\ngroups:\n  - name: all\n    count: {n}\n    identity_prefix: dev-\n    version: \"1.0.0\"\n    tags: [{{name: fleet, value: bench}}]\n    behaviour:\n      durations: {{step: 100ms, test: 200ms, download: 200ms, install: 500ms, reboot: 200ms}}\n"
    ))
    .map_err(|e| e.to_string())?;
    eprintln!("starting {n} simulated devices");
    let fleet =
        Fleet::start(&model, CID, &profile, &FleetOptions::default()).map_err(|e| e.to_string())?;

    let operator_bin = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("otau-operator");
    let log_path =
        std::env::temp_dir().join(format!("otau-rollout-bench-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    cp.kubectl(&["create", "namespace", "bench"], "")?;
    let mut operator = Command::new(&operator_bin)
        .arg("run")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args([
            "--watch-namespace",
            "bench",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--push-addr",
            "off",
            "--log-format",
            "json",
            "--log-level",
            "warn,otau_operator=info",
        ])
        .args([
            "--poll-interval-active",
            &args.poll_interval,
            "--poll-interval-idle",
            "30s",
        ])
        .args(["--write-concurrency", &args.write_concurrency.to_string()])
        .args(["--instance", "bench"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", operator_bin.display()))?;
    let pid = operator.id();
    let started = Instant::now();
    let metrics_addr = loop {
        if let Some(a) = logged_addr(&log_path, "metrics and health server listening") {
            break a;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the operator did not start; see {}",
                log_path.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);

    let waves: String = args
        .waves
        .iter()
        .map(|p| format!("    - percent: {p}\n"))
        .collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: token}}\nstringData: {{token: {TOKEN}}}\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: IoTConnector\nmetadata: {{name: emulator}}\nspec:\n  productId: {CID}\n  managementUrl: {base}/api:1/\n  allowInsecureHttp: true\n  tokenSecretRef: {{name: token}}\n  rateLimit: {{requestsPerSecond: {rate}, burst: {rate}}}\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata: {{name: fw}}\nspec:\n  connectorRef: {{name: emulator}}\n  version: 2.0.0\n  links: [\"https://vendor.example.com/fw.img\"]\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: bench}}\nspec:\n  packageRef: {{name: fw}}\n  targets:\n    tags: [{{name: fleet, value: bench}}]\n  waves:\n{waves}  policy:\n    deviceTimeout: 30m\n    failureThreshold: {{percent: 100}}\n",
        base = running.base_url,
        rate = args.rate,
    );
    cp.kubectl(&["apply", "--server-side", "-n", "bench", "-f", "-"], &yaml)?;
    let applied = Instant::now();

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cp.kubeconfig).map_err(|e| e.to_string())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let api: Api<Rollout> = Api::namespaced(client, "bench");
    let mut rss_peak = rss_idle;
    let complete_at = loop {
        rss_peak = rss_peak.max(rss_kib(pid));
        if let Ok(r) = api.get("bench").await
            && r.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
        {
            break Instant::now();
        }
        if applied.elapsed() > Duration::from_secs(args.timeout) {
            let _ = operator.kill();
            return Err("the Rollout did not complete in time".into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    rss_peak = rss_peak.max(rss_kib(pid));

    let conn = model.connector(CID).ok_or("the connector is gone")?;
    let truth = conn.ground_truth_all();
    let writes: usize = truth.values().map(Vec::len).sum();
    let first = truth.values().flatten().map(|w| w.at).min().unwrap_or(0);
    let last = truth.values().flatten().map(|w| w.at).max().unwrap_or(0);
    let mut last_report = 0i64;
    for id in truth.keys() {
        if let Ok(state) = conn.state(id)
            && let Some(r) = state.get("otau_in")
        {
            last_report = last_report.max(r.timestamp);
        }
    }
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let report_to_complete =
        (now_us - last_report) as f64 / 1e6 - complete_at.elapsed().as_secs_f64();
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let calls = metric_sum(&metrics, "otau_platform_requests_total");
    let list_calls = metrics
        .lines()
        .filter(|l| {
            l.starts_with("otau_platform_requests_total") && l.contains("device2.identity.list")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    let write_secs = (last - first) as f64 / 1e6;
    println!(
        "devices: {n}; waves: {:?}; rate limit {} /s; write concurrency {}",
        args.waves, args.rate, args.write_concurrency
    );
    println!(
        "apply -> Complete: {:.1} s",
        (complete_at - applied).as_secs_f64()
    );
    println!(
        "config_otau writes: {writes} ({:.3} per device)",
        writes as f64 / n as f64
    );
    println!(
        "notifications per second (first to last write, over all waves): {:.0}",
        writes as f64 / write_secs.max(1e-6)
    );
    println!(
        "platform calls per device: {:.4} (of which listing pages {:.0})",
        calls / n as f64,
        list_calls
    );
    println!(
        "last final report -> Complete in status (poll, interval {}): {:.2} s",
        args.poll_interval, report_to_complete
    );
    println!(
        "operator RSS: {:.1} MiB idle, {:.1} MiB peak, {:.0} bytes per device",
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        (rss_peak.saturating_sub(rss_idle) * 1024) as f64 / n as f64
    );
    let _ = operator.kill();
    let _ = operator.wait();
    fleet.stop();
    running.shutdown().await;
    Ok(())
}
