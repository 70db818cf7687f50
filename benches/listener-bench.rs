//! listener-bench: the operator under a flood of hostile push connections, with the chart's
//! file limit. Starts the operator binary with `ulimit -n 1024` (override with `--nofile`)
//! against a running control plane, gives it one connector that takes pushes (a paused
//! Rollout on the in-process emulator), then for each attack holds `--connections` (1,000)
//! connections to the push port for `--seconds` (30), each re-opened `--reopen-ms` (1,000)
//! after the operator closes or answers it:
//!
//! - `slow-headers`: a request head sent one byte per second;
//! - `slow-body`: a complete, well-formed head (known product id, a signature header) and a
//!   260 KiB body sent one KiB per second;
//! - `oversized`: a head declaring a 2 MiB body, then the body as fast as it goes.
//!
//! Throughout, `/readyz` is timed on a fresh connection every 200 ms and the operator's RSS
//! sampled. It prints per attack the connections the attacker held, the `/readyz` latencies,
//! the RSS peak and the operator's refusal counters, then the process's peak RSS (`VmHWM`),
//! and checks the targets of docs/scale.md: peak RSS under half the chart's 512 MiB limit,
//! `/readyz` always under 1 s.
//!
//! ```sh
//! eval "$(hack/control-plane.sh up --crds)"
//! cargo bench --bench listener-bench -- --kubeconfig "$KUBECONFIG"
//! cargo bench --bench listener-bench -- --kubeconfig "$KUBECONFIG" --operator /path/to/other/otau-operator
//! ```
#![forbid(unsafe_code)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use otau_operator::controller::push::signature;
use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::model::{Model, ModelConfig};
use otau_operator::emulator::server::{self, AppState, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CID: &str = "bench0listener00";
const TOKEN: &str = "l1st3nl1st3nl1st3nl1st3nl1st3nl1st3nl1st";
const WEBHOOK_KEY: &str = "bench-webhook-key-listeners-0123";
/// The chart's memory limit; the target is half of it.
const CHART_MEMORY_LIMIT_MIB: f64 = 512.0;
/// The most `/readyz` may take.
const READYZ_TARGET: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(about = "Hostile push connections against the operator: its memory and /readyz")]
struct Args {
    /// Kubeconfig of a running control plane with the CRDs (default: $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// kubectl (default: $KUBECTL, else `kubectl` on PATH).
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    kubectl: PathBuf,
    /// Connections each attack holds.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// How long each attack lasts, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// The operator's file limit (`ulimit -n`).
    #[arg(long, default_value_t = 1024)]
    nofile: u32,
    /// The attacks to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "slow-headers,slow-body,oversized"
    )]
    attacks: Vec<Attack>,
    /// Another operator binary to measure (e.g. an older build); default: the one `cargo
    /// bench` built.
    #[arg(long)]
    operator: Option<PathBuf>,
    /// How long an attacking connection waits before it opens again after the operator closed
    /// or answered it, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    reopen_ms: u64,
    /// Stop an attack early once the operator's RSS passes this (MiB): an unbounded
    /// operator would otherwise take the machine's memory.
    #[arg(long, default_value_t = 2048)]
    abort_rss_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Attack {
    SlowHeaders,
    SlowBody,
    Oversized,
}

fn main() -> ExitCode {
    let Some(argv) = support::bench_args() else {
        support::not_a_bench_run("listener-bench");
        self_check();
        return ExitCode::SUCCESS;
    };
    let args = Args::parse_from(std::iter::once("listener-bench".to_string()).chain(argv));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("listener-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("listener-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn kubectl(bench: &Args, args: &[&str], stdin: &str) -> Result<String, String> {
    let mut child = Command::new(&bench.kubectl)
        .arg("--kubeconfig")
        .arg(&bench.kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    std::io::Write::write_all(&mut child.stdin.take().ok_or("stdin")?, stdin.as_bytes())
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

/// `VmRSS` or `VmHWM` of `pid`, KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn logged_addr(path: &Path, message: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == message).then(|| v["addr"].as_str()?.parse().ok())?
    })
}

async fn wait_for_addr(log: &Path, message: &str) -> Result<SocketAddr, String> {
    let started = Instant::now();
    loop {
        if let Some(a) = logged_addr(log, message) {
            return Ok(a);
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "the operator did not log {message:?}; see {}",
                log.display()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One whole HTTP exchange on a fresh connection; the status code (0: none) and the time.
async fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (u16, Duration) {
    let started = Instant::now();
    let answer = tokio::time::timeout(limit, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
            if text.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&text)
            .split_whitespace()
            .nth(1)?
            .parse::<u16>()
            .ok()
    })
    .await;
    (answer.ok().flatten().unwrap_or(0), started.elapsed())
}

fn signed_push(event: &str) -> Vec<u8> {
    let sig = signature(WEBHOOK_KEY.as_bytes(), event.as_bytes());
    format!(
        "POST /hooks/device2?connector={CID} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Type: application/json\r\nX-Otau-Signature: {sig}\r\nContent-Length: {}\r\n\r\n{event}",
        event.len()
    )
    .into_bytes()
}

/// What one attacking connection sends: the first bytes, then what it drips (and how often),
/// or a body sent as fast as it goes.
struct Script {
    head: Vec<u8>,
    drip: Vec<u8>,
    every: Duration,
    flood: usize,
}

fn script(attack: Attack) -> Script {
    let well_formed = format!("sha256={}", "0".repeat(64));
    match attack {
        Attack::SlowHeaders => Script {
            head: format!("POST /hooks/device2?connector={CID} HTTP/1.1\r\nHost: bench\r\n").into_bytes(),
            drip: b"x".to_vec(),
            every: Duration::from_secs(1),
            flood: 0,
        },
        Attack::SlowBody => Script {
            head: format!(
                "POST /hooks/device2?connector={CID} HTTP/1.1\r\nHost: bench\r\nX-Otau-Signature: {well_formed}\r\nContent-Length: {}\r\n\r\n",
                260 * 1024
            )
            .into_bytes(),
            drip: vec![b' '; 1024],
            every: Duration::from_secs(1),
            flood: 0,
        },
        Attack::Oversized => Script {
            head: format!(
                "POST /hooks/device2?connector={CID} HTTP/1.1\r\nHost: bench\r\nX-Otau-Signature: {well_formed}\r\nContent-Length: {}\r\n\r\n",
                2 << 20
            )
            .into_bytes(),
            drip: Vec::new(),
            every: Duration::from_secs(1),
            flood: 2 << 20,
        },
    }
}

/// Counters of the attacking side.
#[derive(Default)]
struct Attackers {
    open: AtomicU64,
    opened: AtomicU64,
    closed_by_operator: AtomicU64,
}

/// One attacking connection, re-opened `reopen` after the operator closes or answers it,
/// until `stop`.
async fn attacker(
    addr: SocketAddr,
    attack: Attack,
    reopen: Duration,
    counters: Arc<Attackers>,
    stop: Arc<AtomicBool>,
) {
    let script = script(attack);
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        counters.opened.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        let held = hold(&mut stream, &script, &stop).await;
        counters.open.fetch_sub(1, Ordering::Relaxed);
        if !held {
            counters.closed_by_operator.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(reopen).await;
        }
    }
}

/// Sends the script until `stop` (true) or the operator closes or answers (false).
async fn hold(stream: &mut TcpStream, script: &Script, stop: &AtomicBool) -> bool {
    if stream.write_all(&script.head).await.is_err() {
        return false;
    }
    if script.flood > 0 {
        let chunk = vec![0u8; 64 * 1024];
        let mut sent = 0;
        while sent < script.flood {
            if stream.write_all(&chunk).await.is_err() {
                return false;
            }
            sent += chunk.len();
        }
    }
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        tokio::select! {
            // An answer or a close: the operator is done with this connection.
            _ = stream.read(&mut buf) => return false,
            () = tokio::time::sleep(script.every) => {
                if !script.drip.is_empty() && stream.write_all(&script.drip).await.is_err() {
                    return false;
                }
            }
        }
    }
    true
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn refused(metrics: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("otau_listener_refused_total{listener=\"push\""))
        .filter_map(|l| {
            let reason = l.split("reason=\"").nth(1)?.split('"').next()?.to_string();
            Some((reason, l.rsplit(' ').next()?.parse().ok()?))
        })
        .filter(|(_, n): &(String, f64)| *n > 0.0)
        .collect()
}

async fn metrics_text(addr: SocketAddr) -> String {
    match reqwest::get(format!("http://{addr}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// One attack; whether its targets held.
async fn attack(
    args: &Args,
    attack: Attack,
    push: SocketAddr,
    metrics: SocketAddr,
    pid: u32,
) -> bool {
    let counters = Arc::new(Attackers::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(attacker(
                push,
                attack,
                Duration::from_millis(args.reopen_ms),
                counters.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let mut readyz = Vec::new();
    let mut failed = 0;
    let mut rss_peak = 0u64;
    let mut held_max = 0;
    let mut aborted = false;
    while started.elapsed() < Duration::from_secs(args.seconds) {
        let (status, took) = exchange(
            metrics,
            b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        if status != 200 {
            failed += 1;
        }
        readyz.push(took.as_secs_f64());
        rss_peak = rss_peak.max(status_kib(pid, "VmRSS:"));
        held_max = held_max.max(counters.open.load(Ordering::Relaxed));
        if rss_peak > args.abort_rss_mib * 1024 {
            aborted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }
    readyz.sort_by(f64::total_cmp);
    let max = readyz.last().copied().unwrap_or(f64::NAN);
    println!(
        "{attack:?}: {} s, attacker held up to {held_max} of {} connections ({} opened, {} closed or answered by the operator)",
        started.elapsed().as_secs(),
        args.connections,
        counters.opened.load(Ordering::Relaxed),
        counters.closed_by_operator.load(Ordering::Relaxed),
    );
    println!(
        "  /readyz: {} samples, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {failed} not 200",
        readyz.len(),
        percentile(&readyz, 50.0) * 1e3,
        percentile(&readyz, 99.0) * 1e3,
        max * 1e3
    );
    println!(
        "  operator RSS peak during the attack: {:.1} MiB{}",
        rss_peak as f64 / 1024.0,
        if aborted {
            " (stopped early: over --abort-rss-mib)"
        } else {
            ""
        }
    );
    println!(
        "  refused so far: {:?}",
        refused(&metrics_text(metrics).await)
    );
    !aborted && failed == 0 && max < READYZ_TARGET.as_secs_f64()
}

async fn run(args: Args) -> Result<bool, String> {
    let model = Model::new(
        ModelConfig {
            management_tokens: vec![TOKEN.to_string()],
            ..ModelConfig::default()
        },
        Arc::new(SystemClock),
    );
    model.add_connector(CID).map_err(|e| e.to_string())?;
    let emulator = server::start(
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
    let namespace = format!("listener-bench-{}", std::process::id());
    kubectl(&args, &["create", "namespace", &namespace], "")?;
    let operator_bin = args
        .operator
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_otau-operator")));
    let log_path =
        std::env::temp_dir().join(format!("otau-listener-bench-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let mut operator = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -n {} && exec \"$0\" \"$@\"", args.nofile))
        .arg(&operator_bin)
        .arg("run")
        .arg("--kubeconfig")
        .arg(&args.kubeconfig)
        .args(["--watch-namespace", &namespace])
        .args([
            "--metrics-addr",
            "127.0.0.1:0",
            "--push-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--log-format",
            "json",
            "--log-level",
            "warn,otau_operator=info",
        ])
        .args(["--instance", "listener-bench"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", operator_bin.display()))?;
    let pid = operator.id();
    let result = measure(&args, &namespace, &emulator.base_url, pid, &log_path).await;
    let _ = operator.kill();
    let _ = operator.wait();
    emulator.shutdown().await;
    let _ = kubectl(
        &args,
        &["delete", "namespace", &namespace, "--wait=false"],
        "",
    );
    if result.is_err() {
        eprintln!("operator log: {}", log_path.display());
    }
    result
}

async fn measure(
    args: &Args,
    namespace: &str,
    emulator_url: &str,
    pid: u32,
    log_path: &Path,
) -> Result<bool, String> {
    let metrics = wait_for_addr(log_path, "metrics and health server listening").await?;
    let push = wait_for_addr(log_path, "push receiver listening").await?;
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: token}}\nstringData: {{token: {TOKEN}}}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: webhook}}\nstringData: {{hmacKey: {WEBHOOK_KEY}}}\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: IoTConnector\nmetadata: {{name: emulator}}\nspec:\n  productId: {CID}\n  managementUrl: {emulator_url}/api:1/\n  allowInsecureHttp: true\n  tokenSecretRef: {{name: token}}\n  webhook: {{secretRef: {{name: webhook}}}}\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata: {{name: fw}}\nspec:\n  connectorRef: {{name: emulator}}\n  version: 2.0.0\n  links: [\"https://vendor.example.com/fw.img\"]\n---\n\
apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: held}}\nspec:\n  paused: true\n  packageRef: {{name: fw}}\n  targets:\n    identities: [dev-1]\n  waves:\n    - percent: 100\n"
    );
    kubectl(
        args,
        &["apply", "--server-side", "-n", namespace, "-f", "-"],
        &yaml,
    )?;
    // The Rollout has subscribed once a signed push is accepted.
    let started = Instant::now();
    loop {
        let event = format!(
            r#"{{"type":"connect","identity":"dev-1","timestamp":{},"payload":[]}}"#,
            now_micros()
        );
        if exchange(push, &signed_push(&event), Duration::from_secs(5))
            .await
            .0
            == 204
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err("no signed push was accepted within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let idle = status_kib(pid, "VmRSS:");
    println!(
        "operator: {} with ulimit -n {}; {} connections per attack for {} s; RSS before: {:.1} MiB",
        args.operator
            .as_ref()
            .map_or("this build".to_string(), |p| p.display().to_string()),
        args.nofile,
        args.connections,
        args.seconds,
        idle as f64 / 1024.0
    );
    let mut all_held = true;
    for a in &args.attacks {
        all_held &= attack(args, *a, push, metrics, pid).await;
    }
    let peak = status_kib(pid, "VmHWM:") as f64 / 1024.0;
    let memory_ok = peak < CHART_MEMORY_LIMIT_MIB / 2.0;
    println!(
        "operator peak RSS (VmHWM): {peak:.1} MiB (target under {:.0} MiB): {}",
        CHART_MEMORY_LIMIT_MIB / 2.0,
        if memory_ok { "ok" } else { "OVER" }
    );
    println!(
        "/readyz under {} ms throughout: {}",
        READYZ_TARGET.as_millis(),
        if all_held { "ok" } else { "NO" }
    );
    Ok(memory_ok && all_held)
}

/// The check `cargo test --benches` runs instead of the load.
fn self_check() {
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), 4.0);
    let text = "otau_listener_refused_total{listener=\"push\",reason=\"connection_cap\"} 12\notau_listener_refused_total{listener=\"push\",reason=\"body_timeout\"} 0\n";
    assert_eq!(refused(text), vec![("connection_cap".to_string(), 12.0)]);
    let slow = script(Attack::SlowBody);
    assert!(String::from_utf8_lossy(&slow.head).ends_with("\r\n\r\n"));
    assert!(script(Attack::Oversized).flood > 260 * 1024);
}
