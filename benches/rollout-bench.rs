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
//! - report -> status latency, p50/p99/max: for the k-th device to succeed (its final
//!   `otau_in` timestamp in the emulator), the time the Rollout status, observed through a
//!   watch, first counted k successes;
//! - the operator's resident memory before the Rollout, at its peak and after `Complete`, and
//!   the peak growth per device.
//!
//! `--push` turns on the operator's push receiver (`--push-addr`), points the emulator's
//! webhook delivery at it (signed with the connector's key) and sets both poll intervals to an
//! hour, so after the first listing only push can move the status.
//!
//! Run it with `cargo bench`, which builds the operator binary in release mode with it (not
//! part of `cargo test`; `hack/rollout-bench.sh` adds the defaults):
//!
//! ```sh
//! cargo bench --bench rollout-bench -- --devices 100000
//! cargo bench --bench rollout-bench -- --devices 20000 --push
//! cargo bench --bench rollout-bench -- --devices 1000000 --timeout 7200
//! cargo bench --bench rollout-bench -- --devices 2000 --http --mqtt-percent 50
//! ```
//!
//! `--mqtt-percent P` puts P % of a socket fleet's devices (drawn per device, `transport.mqtt`
//! of docs/fleet-profiles.md) on the emulator's device MQTT server (a plain listener in this
//! process): they provision, report and ack over MQTT and get `config_otau` as a push.
#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use otau_operator::api::Rollout;
use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::fleet::{
    Fleet, FleetCore, FleetOptions, HttpFleet, HttpFleetConfig, MqttDeviceConfig, Profile,
    raise_open_files_limit,
};
use otau_operator::emulator::model::{Model, ModelConfig};
use otau_operator::emulator::mqtt::{
    MQTT_LISTENER, MqttListener, MqttMetrics, MqttOptions, MqttService,
};
use otau_operator::emulator::server::{self, AppState, ServerOptions};
use otau_operator::emulator::webhook::{
    WebhookConfig, WebhookDelivery, WebhookSecret, WebhookTarget,
};

const CID: &str = "bench0rollout000";
const TOKEN: &str = "b3nchb3nchb3nchb3nchb3nchb3nchb3nchb3nch";
const WEBHOOK_KEY: &str = "bench-webhook-key-0123456789abcdef";

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
    /// Device status by push: the operator's push receiver on, the emulator's webhook pointed
    /// at it, poll intervals of an hour (only the first listing is a poll).
    #[arg(long)]
    push: bool,
    /// Run the devices as an HTTP fleet (real clients of the emulator's device API that
    /// long-poll `config_otau`) instead of in process; at most 10,000 devices. Raises the soft
    /// open-files limit to the hard one.
    #[arg(long)]
    http: bool,
    /// Percent of the devices that follow the OTA guide's example loop (`guide_loop`:
    /// If-Modified-Since: 0, no memory, reinstall again and again).
    #[arg(long, default_value_t = 0)]
    guide_percent: u64,
    /// Percent of the devices on MQTT (drawn per device): they talk to the emulator's device
    /// MQTT server instead of long-polling over HTTP. Implies `--http` (a socket fleet).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100))]
    mqtt_percent: u64,
}

/// The bench's fleet: `n` devices tagged `fleet=bench`, `guide_percent` % of them in the
/// OTA guide's loop, each on MQTT with a chance of `mqtt_percent` %.
fn profile_yaml(n: u64, guide_percent: u64, mqtt_percent: u64) -> String {
    let transport = format!(
        "transport: {{mqtt: {}}}",
        mqtt_percent.min(100) as f64 / 100.0
    );
    let durations =
        "durations: {step: 100ms, test: 200ms, download: 200ms, install: 500ms, reboot: 200ms}";
    let guides = n * guide_percent.min(100) / 100;
    let mut yaml = "seed: 1\ngroups:\n".to_string();
    if n > guides {
        yaml.push_str(&format!(
            "  - {{name: all, count: {}, identity_prefix: dev-, version: '1.0.0', tags: [{{name: fleet, value: bench}}], {transport}, behaviour: {{{durations}}}}}\n",
            n - guides
        ));
    }
    if guides > 0 {
        yaml.push_str(&format!(
            "  - {{name: guide, count: {guides}, identity_prefix: guide-, version: '1.0.0', tags: [{{name: fleet, value: bench}}], {transport}, behaviour: {{guide_loop: 1, {durations}}}}}\n"
        ));
    }
    yaml
}

/// CPU seconds (user + system, every thread) of process `pid` so far, from
/// `/proc/<pid>/stat` (in USER_HZ, 100 per second on Linux).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), counted from `state` (field 3).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
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

fn main() {
    let Some(argv) = support::bench_args() else {
        support::not_a_bench_run("rollout-bench");
        self_check();
        return;
    };
    let args = Args::parse_from(std::iter::once("rollout-bench".to_string()).chain(argv));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rollout-bench: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("rollout-bench: {e}");
        std::process::exit(1);
    }
}

/// Microseconds since the Unix epoch (the emulator's clock is the system clock too).
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// What the watch saw of the Rollout's status: (time µs, succeeded) at each change of the
/// count, and whether `Complete` is true.
#[derive(Default)]
struct Observed {
    succeeded: Vec<(i64, i64)>,
    complete: bool,
}

/// Watches the Rollout `bench` and records every change of its succeeded count.
fn watch_status(api: Api<Rollout>) -> Arc<std::sync::Mutex<Observed>> {
    let observed = Arc::new(std::sync::Mutex::new(Observed::default()));
    let out = observed.clone();
    tokio::spawn(async move {
        let stream = watcher(
            api,
            watcher::Config::default().fields("metadata.name=bench"),
        )
        .default_backoff()
        .applied_objects();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            let at = now_micros();
            let Ok(rollout) = item else { continue };
            let Some(status) = rollout.status else {
                continue;
            };
            let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
            let count = status.totals.succeeded;
            if o.succeeded.last().is_none_or(|&(_, last)| last != count) {
                o.succeeded.push((at, count));
            }
            o.complete = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True");
        }
    });
    observed
}

/// Report -> status latencies (s): for the k-th final report (sorted times, µs), the first
/// status observation counting at least k successes, minus the report's time.
fn report_latencies(reports: &[i64], observed: &[(i64, i64)]) -> Vec<f64> {
    let mut latencies = Vec::with_capacity(reports.len());
    let mut o = 0;
    for (k, &reported) in reports.iter().enumerate() {
        let k = k as i64 + 1;
        while o < observed.len() && observed[o].1 < k {
            o += 1;
        }
        let Some(&(seen, _)) = observed.get(o) else {
            break;
        };
        latencies.push((seen - reported) as f64 / 1e6);
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Waits (with a deadline) for the operator's log line `message` and returns its address.
async fn wait_for_addr(log: &Path, message: &str) -> Result<String, String> {
    let started = Instant::now();
    loop {
        if let Some(a) = logged_addr(log, message) {
            return Ok(a);
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "the operator did not log {message:?}; see {}",
                log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn run(args: Args) -> Result<(), String> {
    let n = args.devices;
    if n == 0 {
        return Err("--devices must be at least 1".into());
    }
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
    let profile = Profile::from_yaml(&profile_yaml(n, args.guide_percent, args.mqtt_percent))
        .map_err(|e| e.to_string())?;
    eprintln!("starting {n} simulated devices");
    let mut mqtt = None;
    let (fleet, http) = if args.http || args.mqtt_percent > 0 {
        let limit = raise_open_files_limit().map_err(|e| format!("open files limit: {e}"))?;
        eprintln!("open files limit {limit}");
        let core = FleetCore::new(&profile, None, None).map_err(|e| e.to_string())?;
        let conn = model.connector(CID).ok_or("no connector")?;
        let tags = vec![otau_operator::emulator::model::Tag::new("fleet", "bench")];
        conn.add_identities_bulk(
            (0..core.len() as u32).map(|i| (core.identity(i).to_string(), tags.clone())),
        )
        .map_err(|e| e.to_string())?;
        let mut config = HttpFleetConfig::new(&running.base_url);
        config.concurrency = 64;
        config.poll_timeout_ms = 60_000;
        if args.mqtt_percent > 0 {
            let options = MqttOptions::defaults(&model, Some(CID.to_string()));
            let service = MqttService::new(model.clone(), options, MqttMetrics::new());
            let plain = MqttListener::start_plain(
                "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
                service.clone(),
            )
            .await
            .map_err(|e| format!("MQTT listener: {e}"))?;
            config.mqtt = Some(MqttDeviceConfig::new(plain.local_addr));
            mqtt = Some((service, plain));
        }
        let handle = HttpFleet::start(core, config).map_err(|e| e.to_string())?;
        (None, Some(handle))
    } else {
        let fleet = Fleet::start(&model, CID, &profile, &FleetOptions::default())
            .map_err(|e| e.to_string())?;
        (Some(fleet), None)
    };

    let operator_bin = PathBuf::from(env!("CARGO_BIN_EXE_otau-operator"));
    let log_path =
        std::env::temp_dir().join(format!("otau-rollout-bench-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    cp.kubectl(&["create", "namespace", "bench"], "")?;
    let (push_addr, poll_active, poll_idle) = if args.push {
        ("127.0.0.1:0", "1h", "1h")
    } else {
        ("off", args.poll_interval.as_str(), "30s")
    };
    let mut operator = Command::new(&operator_bin)
        .arg("run")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args([
            "--watch-namespace",
            "bench",
            "--metrics-addr",
            "127.0.0.1:0",
            // The emulator listens on loopback, which the outbound policy refuses by default.
            "--allow-private-sources",
        ])
        .args([
            "--push-addr",
            push_addr,
            "--log-format",
            "json",
            "--log-level",
            "warn,otau_operator=info",
        ])
        .args([
            "--poll-interval-active",
            poll_active,
            "--poll-interval-idle",
            poll_idle,
        ])
        .args(["--write-concurrency", &args.write_concurrency.to_string()])
        .args(["--instance", "bench"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", operator_bin.display()))?;
    let pid = operator.id();
    let result = measure(&args, &cp, &model, &running.base_url, pid, &log_path).await;
    let _ = operator.kill();
    let _ = operator.wait();
    if let Some(fleet) = fleet {
        fleet.stop();
    }
    if let Some(http) = http {
        let summary = http.stop().await;
        println!("socket fleet: {summary}");
    }
    if let Some((service, plain)) = mqtt {
        let m = service.metrics();
        println!(
            "MQTT server: {} sessions accepted, {} provisioning sessions, {} device publishes, {} pushes of cloud writes, {} replayed on connect",
            m.connects(MQTT_LISTENER, "accepted"),
            m.connects(MQTT_LISTENER, "anonymous"),
            m.messages("in", "resource"),
            m.messages("out", "set"),
            m.messages("out", "replay")
        );
        plain.shutdown().await;
        service.stop();
    }
    running.shutdown().await;
    if result.is_err() {
        eprintln!("operator log: {}", log_path.display());
    }
    result
}

async fn measure(
    args: &Args,
    cp: &ControlPlane,
    model: &Model,
    emulator_url: &str,
    pid: u32,
    log_path: &Path,
) -> Result<(), String> {
    let n = args.devices;
    let metrics_addr = wait_for_addr(log_path, "metrics and health server listening").await?;
    let webhook = if args.push {
        let addr = wait_for_addr(log_path, "push receiver listening").await?;
        let mut config = WebhookConfig {
            queue_capacity: 1_000_000,
            max_in_flight: 64,
            ..WebhookConfig::default()
        };
        config.targets.insert(
            CID.to_string(),
            WebhookTarget {
                url: url::Url::parse(&format!("http://{addr}/hooks/device2"))
                    .map_err(|e| e.to_string())?,
                secret: WebhookSecret::new(WEBHOOK_KEY.as_bytes().to_vec()),
            },
        );
        Some(WebhookDelivery::start(model, config).map_err(|e| format!("webhook: {e}"))?)
    } else {
        None
    };
    // Let the operator settle (caches synced) before the idle figure.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(pid);

    let waves: String = args
        .waves
        .iter()
        .map(|p| format!("    - percent: {p}\n"))
        .collect();
    let webhook_yaml = if args.push {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: webhook, labels: {{otau.dev/connector-credential: \"true\"}}}}\nstringData: {{hmacKey: {WEBHOOK_KEY}}}\n---\n"
        )
    } else {
        String::new()
    };
    let webhook_ref = if args.push {
        "  webhook: {secretRef: {name: webhook}}\n"
    } else {
        ""
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: token, labels: {{otau.dev/connector-credential: \"true\"}}, annotations: {{otau.dev/allowed-hosts: 127.0.0.1}}}}\nstringData: {{token: {TOKEN}}}\n---\n{webhook_yaml}\
apiVersion: otau.dev/v1alpha1\nkind: IoTConnector\nmetadata: {{name: emulator}}\nspec:\n  productId: {CID}\n  managementUrl: {emulator_url}/api:1/\n  allowInsecureHttp: true\n  tokenSecretRef: {{name: token}}\n{webhook_ref}  rateLimit: {{requestsPerSecond: {rate}, burst: {rate}}}\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata: {{name: fw}}\nspec:\n  connectorRef: {{name: emulator}}\n  version: 2.0.0\n  links: [\"https://vendor.example.com/fw.img\"]\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: bench}}\nspec:\n  packageRef: {{name: fw}}\n  targets:\n    tags: [{{name: fleet, value: bench}}]\n  waves:\n{waves}  policy:\n    deviceTimeout: 30m\n    failureThreshold: {{percent: 100}}\n",
        rate = args.rate,
    );

    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cp.kubeconfig).map_err(|e| e.to_string())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let observed = watch_status(Api::namespaced(client, "bench"));
    cp.kubectl(&["apply", "--server-side", "-n", "bench", "-f", "-"], &yaml)?;
    let applied = Instant::now();

    let mut rss_peak = rss_idle;
    let cpu_before = cpu_secs(pid);
    let conn = model.connector(CID).ok_or("the connector is gone")?;
    // Long polls the emulator holds at once, at most (HTTP fleets only).
    let mut polls_max = conn.waiting_polls();
    // Pushed events queued in the emulator and not yet answered by the receiver, at most.
    let mut backlog_max = 0u64;
    let mut next_progress = Instant::now() + Duration::from_secs(30);
    let complete_at = loop {
        rss_peak = rss_peak.max(rss_kib(pid));
        polls_max = polls_max.max(conn.waiting_polls());
        if let Some(webhook) = &webhook {
            let s = webhook.stats().snapshot();
            backlog_max = backlog_max.max(s.queued.saturating_sub(s.finished()));
        }
        let (complete, succeeded) = {
            let o = observed.lock().unwrap_or_else(|e| e.into_inner());
            (o.complete, o.succeeded.last().map_or(0, |&(_, c)| c))
        };
        if complete {
            break Instant::now();
        }
        if Instant::now() >= next_progress {
            eprintln!(
                "{:.0} s: {succeeded} of {n} succeeded; operator RSS {:.1} MiB (peak {:.1})",
                applied.elapsed().as_secs_f64(),
                rss_kib(pid) as f64 / 1024.0,
                rss_peak as f64 / 1024.0
            );
            next_progress += Duration::from_secs(30);
        }
        if applied.elapsed() > Duration::from_secs(args.timeout) {
            return Err(format!(
                "the Rollout did not complete in {} s ({succeeded} of {n} succeeded)",
                args.timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    rss_peak = rss_peak.max(rss_kib(pid));
    let cpu = cpu_secs(pid) - cpu_before;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    let truth = conn.ground_truth_all();
    let writes: usize = truth.values().map(Vec::len).sum();
    let first = truth.values().flatten().map(|w| w.at).min().unwrap_or(0);
    let last = truth.values().flatten().map(|w| w.at).max().unwrap_or(0);
    let mut reports: Vec<i64> = Vec::with_capacity(truth.len());
    for id in truth.keys() {
        if let Ok(state) = conn.state(id)
            && let Some(r) = state.get("otau_in")
        {
            let raw = r.reported.as_deref().or(r.set.as_deref());
            if otau_operator::otau::classify(raw, "2.0.0")
                == otau_operator::otau::Classification::Succeeded
            {
                reports.push(r.timestamp);
            }
        }
    }
    reports.sort_unstable();
    let last_report = reports.last().copied().unwrap_or(0);
    let report_to_complete =
        (now_micros() - last_report) as f64 / 1e6 - complete_at.elapsed().as_secs_f64();
    let latencies = {
        let o = observed.lock().unwrap_or_else(|e| e.into_inner());
        report_latencies(&reports, &o.succeeded)
    };
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
    let mode = if args.push {
        "push (poll intervals 1h)".to_owned()
    } else {
        format!("poll, interval {}", args.poll_interval)
    };
    println!(
        "devices: {n}; waves: {:?}; rate limit {} /s; write concurrency {}; {mode}",
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
    println!("last final report -> Complete in status: {report_to_complete:.2} s");
    println!(
        "report -> status ({} successes, status watched): p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        latencies.len(),
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    if let Some(webhook) = &webhook {
        let s = webhook.stats().snapshot();
        println!(
            "webhook: {} queued, {} delivered, {} rejected, {} failed, {} dropped (queue full), {} lagged",
            s.queued, s.delivered, s.rejected, s.failed, s.queue_full, s.lagged
        );
        println!("webhook backlog (queued, not yet answered): at most {backlog_max} events");
    }
    println!("operator CPU apply -> Complete: {cpu:.1} s");
    if args.http || args.mqtt_percent > 0 {
        println!("long polls held by the emulator: at most {polls_max}");
    }
    println!(
        "operator RSS: {:.1} MiB idle, {:.1} MiB peak, {:.1} MiB after Complete; peak growth {:.0} bytes per device",
        rss_idle as f64 / 1024.0,
        rss_peak as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_peak.saturating_sub(rss_idle) * 1024) as f64 / n as f64
    );
    Ok(())
}

/// The check `cargo test --benches` runs instead of the load: the k-th report is paired with
/// the first status that counted k successes.
fn self_check() {
    // The fleet of --guide-percent: sizes add up, the loop only where asked.
    for (n, pct) in [(5000, 10), (7, 0), (3, 100)] {
        let profile = Profile::from_yaml(&profile_yaml(n, pct, 0)).expect("bench profile");
        let sizes = profile.resolve(None).expect("sizes");
        assert_eq!(sizes.iter().map(|s| s.count).sum::<u64>(), n);
        let guides: u64 = sizes
            .iter()
            .filter(|s| profile.groups[s.group].behaviour.guide_loop == 1.0)
            .map(|s| s.count)
            .sum();
        assert_eq!(guides, n * pct / 100);
    }
    // --mqtt-percent: every group carries the share.
    let profile = Profile::from_yaml(&profile_yaml(10, 50, 30)).expect("bench profile");
    assert!(profile.groups.iter().all(|g| g.transport.mqtt == 0.3));
    let core = FleetCore::new(
        &Profile::from_yaml(&profile_yaml(1000, 0, 30)).unwrap(),
        None,
        None,
    )
    .expect("core");
    let on_mqtt = (0..1000)
        .filter(|i| core.protocol(*i) == otau_operator::emulator::fleet::Protocol::Mqtt)
        .count();
    assert!((200..400).contains(&on_mqtt), "{on_mqtt}");
    assert!(cpu_secs(std::process::id()) >= 0.0);
    assert_eq!(cpu_secs(u32::MAX), 0.0);
    let reports = [100, 200, 300, 400];
    let observed = [(50, 0), (250, 2), (1_300, 3), (2_400, 4)];
    let l = report_latencies(&reports, &observed);
    let expected = [50e-6, 150e-6, 1_000e-6, 2_000e-6];
    assert_eq!(l.len(), 4);
    for (a, b) in l.iter().zip(expected) {
        assert!((a - b).abs() < 1e-9, "{l:?}");
    }
    assert_eq!(percentile(&l, 50.0), l[1]);
    assert_eq!(percentile(&l, 99.0), l[3]);
}
