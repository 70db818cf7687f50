//! Emulator measurements (not part of `cargo test`): device write requests/s and management
//! set-state requests/s over loopback HTTP, and the model's memory with 1,000,000 identities.
//!
//! Run: `cargo bench --bench emulator-bench [-- --identities N --requests N --concurrency N]`.
//! Load is bounded in count and time and stays on 127.0.0.1.
#![forbid(unsafe_code)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::model::{Model, ModelConfig, Tag, WriteOrigin};
use otau_operator::emulator::server::{self, AppState, ServerOptions};

const CID: &str = "t41hp23nod8s00000";
const MTOKEN: &str = "bench-management-token-000000000000000000";
/// Upper bound of any one HTTP phase.
const PHASE_LIMIT: Duration = Duration::from_secs(30);

struct Settings {
    identities: u64,
    requests: u64,
    concurrency: u64,
}

fn settings(args: Vec<String>) -> Result<Settings, String> {
    let mut s = Settings {
        identities: 1_000_000,
        requests: 20_000,
        concurrency: 32,
    };
    let mut args = args.into_iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<u64>()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--identities" => s.identities = value,
            "--requests" => s.requests = value,
            "--concurrency" => s.concurrency = value.max(1),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(s)
}

/// Resident set size of this process in KiB, from /proc/self/status.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory(identities: u64) {
    let before = rss_kib().unwrap_or(0);
    let model = Model::new(ModelConfig::default(), Arc::new(SystemClock));
    let conn = model.add_connector(CID).expect("connector id is valid");
    let started = Instant::now();
    let tags = vec![Tag::new("ring", "prod"), Tag::new("region", "eu")];
    let added = conn
        .add_identities_bulk((0..identities).map(|i| (format!("dev-{i:07}"), tags.clone())))
        .expect("identities are valid");
    let add_time = started.elapsed();
    let after_add = rss_kib().unwrap_or(0);
    // Every device gets a manifest (cloud write) and a status report (device write).
    let manifest = r#"{"version":"1.0.2","name":"fw","type":"URL_LIST","payload":["fw-1.0.2.bin"],"attempt":1}"#;
    let report = r#"{"version":"1.0.2","status":"INSTALLED_VERSION","message":""}"#;
    let started = Instant::now();
    let origin = WriteOrigin::default();
    for i in 0..identities {
        let id = format!("dev-{i:07}");
        conn.set_state(&id, &[("config_otau".into(), manifest.into())], "bench")
            .expect("known identity");
        conn.device_write(
            &id,
            &[("otau_in", report), ("config_otau", manifest)],
            &origin,
        )
        .expect("known identity");
    }
    let write_time = started.elapsed();
    let after_writes = rss_kib().unwrap_or(0);
    println!("model memory, {added} identities (2 tags each):");
    println!(
        "  RSS before {:.1} MiB, after bulk add {:.1} MiB (+{:.1} MiB, {:.0} B/identity) in {:.2?}",
        mib(before),
        mib(after_add),
        mib(after_add.saturating_sub(before)),
        (after_add.saturating_sub(before) * 1024) as f64 / added.max(1) as f64,
        add_time
    );
    println!(
        "  after 1 cloud write + 1 device write (report + ack) each: {:.1} MiB (+{:.1} MiB over empty, {:.0} B/identity) in {:.2?}",
        mib(after_writes),
        mib(after_writes.saturating_sub(before)),
        (after_writes.saturating_sub(before) * 1024) as f64 / added.max(1) as f64,
        write_time
    );
    drop(model);
}

async fn http_load(s: &Settings) {
    let model = Model::new(
        ModelConfig {
            management_tokens: vec![MTOKEN.into()],
            ..ModelConfig::default()
        },
        Arc::new(SystemClock),
    );
    let conn = model.add_connector(CID).expect("connector id is valid");
    let state = AppState {
        model: model.clone(),
        options: Arc::new(ServerOptions {
            default_connector: Some(CID.into()),
            ..ServerOptions::default()
        }),
    };
    let running = server::start("127.0.0.1:0".parse().expect("address"), state)
        .await
        .expect("bind 127.0.0.1:0");
    let base = running.base_url.clone();
    let devices = s.concurrency;
    let mut tokens = Vec::new();
    for i in 0..devices {
        let id = format!("bench-{i:04}");
        conn.add_identity(&id, Default::default())
            .expect("identity");
        tokens.push(conn.activate(&id).expect("activation"));
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(devices as usize)
        .build()
        .expect("client");

    // Device writes.
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for token in tokens.clone() {
        let (client, base, counter, total) =
            (client.clone(), base.clone(), counter.clone(), s.requests);
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while counter.fetch_add(1, Ordering::Relaxed) < total && started.elapsed() < PHASE_LIMIT {
                let r = client
                    .post(format!("{base}/onep:v1/stack/alias"))
                    .header("x-exosite-cik", &token)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body("otau_in=%7B%22version%22%3A%221.0.2%22%2C%22status%22%3A%22INSTALL_STEP%22%7D")
                    .send()
                    .await;
                if matches!(r, Ok(r) if r.status() == 204) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "device writes: {ok} x 204 in {secs:.2} s = {:.0} requests/s ({} connections)",
        ok as f64 / secs,
        devices
    );

    // Management set-state.
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..devices {
        let (client, base, counter, total) =
            (client.clone(), base.clone(), counter.clone(), s.requests);
        tasks.push(tokio::spawn(async move {
            let url = format!("{base}/api:1/service/{CID}/device2/identity/bench-{i:04}/state");
            let mut ok = 0u64;
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if n >= total || started.elapsed() >= PHASE_LIMIT {
                    break;
                }
                let body = format!(r#"{{"config_otau":"{{\"version\":\"1.0.{n}\"}}"}}"#);
                let r = client
                    .patch(&url)
                    .header("authorization", format!("token {MTOKEN}"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                if matches!(r, Ok(r) if r.status() == 204) {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap_or(0);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "management set-state: {ok} x 204 in {secs:.2} s = {:.0} requests/s ({} connections)",
        ok as f64 / secs,
        devices
    );
    running.shutdown().await;
}

fn main() -> std::process::ExitCode {
    let Some(args) = support::bench_args() else {
        support::not_a_bench_run("emulator-bench");
        return std::process::ExitCode::SUCCESS;
    };
    let s = match settings(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("emulator-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "emulator-bench: {} cores, {} identities, {} requests per phase, concurrency {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        s.identities,
        s.requests,
        s.concurrency
    );
    memory(s.identities);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("emulator-bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    rt.block_on(http_load(&s));
    std::process::ExitCode::SUCCESS
}
