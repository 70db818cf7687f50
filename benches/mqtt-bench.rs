//! Device MQTT measurements (not part of `cargo test`): N MQTT devices connected at once to the
//! emulator over loopback (`otau-operator emulator --mqtt-listen`, a child process, so its
//! memory is its own), the emulator's resident memory per connection, and the latency from a
//! cloud write of `config_otau` (`PATCH …/state` sent) to the device's receipt of
//! `$resource/config_otau/<µs>`, p50 and p99.
//!
//! Run: `cargo bench --bench mqtt-bench [-- --devices N --writes N --concurrency N]`
//! (defaults 10000, 2000, 16). Needs `ulimit -n` above N + 100 (the emulator and this program
//! each hold N sockets). Load is bounded: N connections and `--writes` cloud writes, every
//! phase under a time limit, on 127.0.0.1 only.
#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use otau_operator::emulator::mqtt::client::{Credentials, DeviceClient};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const CID: &str = "t41hp23nod8s00000";
const MTOKEN: &str = "bench-management-token-000000000000000000";
/// Upper bound of any one phase.
const PHASE_LIMIT: Duration = Duration::from_secs(300);

struct Settings {
    devices: usize,
    writes: usize,
    concurrency: usize,
}

fn settings(args: Vec<String>) -> Result<Settings, String> {
    let mut s = Settings {
        devices: 10_000,
        writes: 2_000,
        concurrency: 16,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--devices" => s.devices = value.max(1),
            "--writes" => s.writes = value,
            "--concurrency" => s.concurrency = value.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    s.writes = s.writes.min(s.devices);
    Ok(s)
}

/// Resident set size of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The `q` quantile (0..=1) of sorted `v`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

/// The emulator child, killed when dropped.
struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_emulator(devices: usize) -> Result<(Emulator, serde_json::Value), String> {
    let max = (devices + 1024).to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_otau-operator"))
        .args([
            "emulator",
            "--listen",
            "127.0.0.1:0",
            "--mqtt-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--management-token",
            MTOKEN,
            "--listener-max-connections",
            &max,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the emulator: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let guard = Emulator(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("ready line: {e}"))?;
    let ready = serde_json::from_str(&line).map_err(|e| format!("ready line {line:?}: {e}"))?;
    Ok((guard, ready))
}

/// Whitelists and activates `dev-<i>` for every i < n over HTTP; their tokens.
async fn provision(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    concurrency: usize,
) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let id = format!("dev-{i:06}");
            let r = http
                .put(format!("{base}/api:1/service/{CID}/device2/identity/{id}"))
                .header("authorization", format!("token {MTOKEN}"))
                .json(&serde_json::json!({}))
                .send()
                .await
                .expect("whitelist");
            assert!(r.status().is_success(), "whitelist {id}: {}", r.status());
            http.post(format!("{base}/provision/activate"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("id={id}"))
                .send()
                .await
                .expect("activate")
                .text()
                .await
                .expect("token")
        })
        .buffered(concurrency)
        .collect()
        .await
}

async fn run(s: &Settings) -> Result<(), String> {
    let (emulator, ready) = start_emulator(s.devices)?;
    let pid = emulator.0.id();
    let base = ready["device_url"]
        .as_str()
        .ok_or("device_url")?
        .to_string();
    let mqtt = ready["mqtt_url"].as_str().ok_or("mqtt_url")?;
    let addr = mqtt.trim_start_matches("mqtt://").to_string();
    let http = reqwest::Client::new();

    let started = Instant::now();
    let tokens = tokio::time::timeout(
        PHASE_LIMIT,
        provision(&http, &base, s.devices, s.concurrency),
    )
    .await
    .map_err(|_| "provisioning took too long")?;
    println!(
        "provisioned {} devices over HTTP in {:.1?}",
        tokens.len(),
        started.elapsed()
    );
    let rss_before = rss_kib(pid);

    // Connect every device; each then waits for one cloud write and reports when it came.
    let (got_tx, mut got_rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let (connected_tx, mut connected_rx) = mpsc::unbounded_channel::<()>();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(s.devices);
    let permits = Arc::new(tokio::sync::Semaphore::new(s.concurrency * 4));
    for (i, token) in tokens.into_iter().enumerate() {
        let addr = addr.clone();
        let got = got_tx.clone();
        let connected = connected_tx.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await.expect("semaphore");
            let stream = TcpStream::connect(&addr).await.expect("connect");
            let (mut device, refused) =
                DeviceClient::connect(stream, &Credentials::Token(token), 300)
                    .await
                    .expect("CONNACK");
            assert_eq!(refused, None);
            drop(permit);
            let _ = connected.send(());
            if device.next_message().await.is_ok() {
                let _ = got.send((i, Instant::now()));
            }
            // Hold the connection until the bench ends.
            let _ = device.next_packet().await;
        }));
    }
    for _ in 0..s.devices {
        tokio::time::timeout(PHASE_LIMIT, connected_rx.recv())
            .await
            .map_err(|_| "connecting took too long")?;
    }
    let connect_time = started.elapsed();
    // Let the emulator settle its buffers before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(pid);
    let per = (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / s.devices as f64;
    println!(
        "connected {} MQTT devices in {:.1?}; emulator RSS {:.1} MiB before, {:.1} MiB after: {:.1} KiB per connection",
        s.devices,
        connect_time,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        per / 1024.0
    );

    // Cloud writes to the first `writes` devices, `concurrency` at a time.
    let sent: Vec<Instant> = futures::stream::iter(0..s.writes)
        .map(|i| {
            let http = http.clone();
            let base = base.clone();
            async move {
                let at = Instant::now();
                let r = http
                    .patch(format!(
                        "{base}/api:1/service/{CID}/device2/identity/dev-{i:06}/state"
                    ))
                    .header("authorization", format!("token {MTOKEN}"))
                    .json(
                        &serde_json::json!({"config_otau": format!("{{\"version\":\"1.0.{i}\"}}")}),
                    )
                    .send()
                    .await
                    .expect("set state");
                assert!(r.status().is_success(), "set state: {}", r.status());
                at
            }
        })
        .buffered(s.concurrency)
        .collect()
        .await;
    let mut latencies = Vec::with_capacity(s.writes);
    for _ in 0..s.writes {
        let (i, at) = tokio::time::timeout(PHASE_LIMIT, got_rx.recv())
            .await
            .map_err(|_| "publishes took too long")?
            .ok_or("devices gone")?;
        latencies.push(at.saturating_duration_since(sent[i]));
    }
    latencies.sort();
    println!(
        "cloud write -> device publish over {} writes ({} concurrent, {} devices connected): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        s.writes,
        s.concurrency,
        s.devices,
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("otau_emulator_mqtt_connections"))
    {
        println!("{line}");
    }
    for t in tasks {
        t.abort();
    }
    drop(emulator);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let Some(args) = support::bench_args() else {
        support::not_a_bench_run("mqtt-bench");
        assert_eq!(
            quantile(&[1, 2, 3, 4].map(Duration::from_millis), 0.5),
            Duration::from_millis(3)
        );
        return std::process::ExitCode::SUCCESS;
    };
    let s = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mqtt-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "mqtt-bench: {} cores, {} devices, {} cloud writes, concurrency {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        s.devices,
        s.writes,
        s.concurrency
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(&s)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mqtt-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
