//! package-upload-bench: how long a SoftwarePackage with one large URL file takes from
//! `kubectl apply` to `Ready`, and how much the operator's resident memory grows while it
//! streams the file (it must stay below 64 MiB above its idle RSS: files stream through a
//! temporary file, never whole in memory).
//!
//! Needs a running control plane with the CRDs (`eval "$(hack/control-plane.sh up --crds)"`);
//! `cargo bench` builds the operator binary it starts:
//!
//! ```sh
//! cargo bench --bench package-upload-bench -- --kubeconfig "$KUBECONFIG" --size-mib 50
//! ```
//!
//! Everything runs on 127.0.0.1: the emulator (in this process), a file server (in this
//! process) and the operator (a child process, watching one fresh namespace).
#![forbid(unsafe_code)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use kube::api::Api;
use otau_operator::api::SoftwarePackage;
use otau_operator::api::conditions::{READY, find_condition};
use otau_operator::emulator::clock::SystemClock;
use otau_operator::emulator::model::{Model, ModelConfig};
use otau_operator::emulator::server::{self, AppState, ServerOptions};
use sha2::{Digest, Sha256};

const CID: &str = "b3nchm4rk00000000";
const TOKEN: &str = "0123456789abcdef0123456789abcdef0bench01";
/// The bound on the operator's RSS growth while it uploads (docs/connectors-and-packages.md).
const RSS_BUDGET_MIB: f64 = 64.0;

/// Measures package upload time and operator RSS.
#[derive(Debug, Parser)]
struct Args {
    /// Kubeconfig of a control plane with the CRDs installed.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Size of the file, MiB.
    #[arg(long, default_value_t = 50)]
    size_mib: usize,
    /// The operator binary (default: the `otau-operator` cargo built with this benchmark).
    #[arg(long)]
    operator: Option<PathBuf>,
    /// kubectl (default: $KUBECTL, else `kubectl` on PATH).
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    kubectl: PathBuf,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn kubectl(args: &Args, namespace: &str, yaml: &str) -> Result<(), String> {
    let mut child = Command::new(&args.kubectl)
        .arg("--kubeconfig")
        .arg(&args.kubeconfig)
        .args(["apply", "--server-side", "-n", namespace, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("kubectl: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("kubectl stdin")?
        .write_all(yaml.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn main() -> ExitCode {
    let Some(argv) = support::bench_args() else {
        support::not_a_bench_run("package-upload-bench");
        return ExitCode::SUCCESS;
    };
    let args = Args::parse_from(std::iter::once("package-upload-bench".to_string()).chain(argv));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match runtime.block_on(bench(args)) {
        Ok(within_budget) if within_budget => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("package-upload-bench: {e}");
            ExitCode::from(2)
        }
    }
}

async fn bench(args: Args) -> Result<bool, String> {
    // Emulator.
    let model = Model::new(
        ModelConfig {
            management_tokens: vec![TOKEN.to_string()],
            content_max_bytes: 1 << 30,
            ..ModelConfig::default()
        },
        Arc::new(SystemClock),
    );
    model.add_connector(CID).map_err(|e| e.to_string())?;
    let state = AppState {
        model: model.clone(),
        options: Arc::new(ServerOptions {
            default_connector: Some(CID.to_string()),
            ..ServerOptions::default()
        }),
    };
    let emulator = server::start("127.0.0.1:0".parse().expect("addr"), state)
        .await
        .map_err(|e| format!("emulator: {e}"))?;

    // File server.
    let size = args.size_mib << 20;
    let data: Vec<u8> = (0..size)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sha = hex::encode(Sha256::digest(&data));
    let body = axum::body::Bytes::from(data);
    let app = axum::Router::new().route(
        "/big.bin",
        axum::routing::get(move || {
            let b = body.clone();
            async move { b }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let files = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    // Namespace, connector, operator.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&args.kubeconfig).map_err(|e| e.to_string())?,
        &Default::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let namespace = format!("upload-bench-{}", std::process::id());
    let ns_yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n");
    kubectl(&args, "default", &ns_yaml)?;
    kubectl(
        &args,
        &namespace,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n  labels:\n    otau.dev/connector-credential: \"true\"\n  annotations:\n    otau.dev/allowed-hosts: 127.0.0.1\nstringData:\n  token: {TOKEN}\n---\napiVersion: otau.dev/v1alpha1\nkind: IoTConnector\nmetadata:\n  name: emu\nspec:\n  productId: {CID}\n  managementUrl: {}/api:1/\n  allowInsecureHttp: true\n  tokenSecretRef:\n    name: token\n",
            emulator.base_url
        ),
    )?;
    let operator = args
        .operator
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_otau-operator")));
    let mut child = Command::new(&operator)
        .arg("run")
        .arg("--kubeconfig")
        .arg(&args.kubeconfig)
        .args(["--watch-namespace", &namespace])
        .args(["--metrics-addr", "127.0.0.1:0", "--log-format", "json"])
        .arg("--allow-private-sources")
        .env("OTAU_PUSH_ADDR", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", operator.display()))?;
    let pid = child.id();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let log = log.clone();
        let stderr = child.stderr.take().ok_or("stderr")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
    }

    // RSS sampler.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (peak, sampling, stop) = (peak.clone(), sampling.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if sampling.load(Ordering::SeqCst)
                    && let Some(kib) = rss_kib(pid)
                {
                    peak.fetch_max(kib, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
    }

    let result = async {
        let connectors: Api<otau_operator::api::IoTConnector> =
            Api::namespaced(client.clone(), &namespace);
        wait_ready(&connectors, "emu", Duration::from_secs(120)).await?;
        // Idle: the mean of 1 s of samples once the connector is Ready.
        let mut idle = Vec::new();
        for _ in 0..50 {
            idle.extend(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let idle_kib = idle.iter().sum::<u64>() / idle.len().max(1) as u64;
        sampling.store(true, Ordering::SeqCst);
        let started = Instant::now();
        kubectl(
            &args,
            &namespace,
            &format!(
                "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: big\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  allowInsecureHttp: true\n  files:\n    - name: big.bin\n      url: {files}/big.bin\n      sha256: {sha}\n"
            ),
        )?;
        let packages: Api<SoftwarePackage> = Api::namespaced(client.clone(), &namespace);
        wait_ready(&packages, "big", Duration::from_secs(600)).await?;
        let elapsed = started.elapsed();
        sampling.store(false, Ordering::SeqCst);
        let stored = model
            .connector(CID)
            .and_then(|c| c.content().get(&format!("{namespace}_big_big.bin")))
            .ok_or("the emulator holds no big.bin")?;
        if hex::encode(Sha256::digest(&stored.data)) != sha {
            return Err("the uploaded bytes differ".to_string());
        }
        Ok::<_, String>((idle_kib, elapsed))
    }
    .await;
    stop.store(true, Ordering::SeqCst);
    let _ = child.kill();
    let _ = child.wait();
    let (idle_kib, elapsed) = result.map_err(|e| {
        let log = log.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "{e}\noperator log tail:\n{}",
            log.iter()
                .rev()
                .take(20)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let peak_kib = peak.load(Ordering::SeqCst);
    let growth_mib = (peak_kib.saturating_sub(idle_kib)) as f64 / 1024.0;
    let mib = args.size_mib as f64;
    println!("file size:              {mib} MiB");
    println!(
        "apply -> Ready:         {:.2} s ({:.1} MiB/s)",
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64()
    );
    println!(
        "operator idle RSS:      {:.1} MiB",
        idle_kib as f64 / 1024.0
    );
    println!(
        "operator peak RSS:      {:.1} MiB (while uploading)",
        peak_kib as f64 / 1024.0
    );
    println!("growth over idle:       {growth_mib:.1} MiB (budget {RSS_BUDGET_MIB} MiB)");
    let ok = growth_mib < RSS_BUDGET_MIB;
    println!(
        "{}",
        if ok {
            "PASS"
        } else {
            "FAIL: RSS grew over the budget"
        }
    );
    Ok(ok)
}

async fn wait_ready<K>(api: &Api<K>, name: &str, deadline: Duration) -> Result<(), String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let until = Instant::now() + deadline;
    loop {
        if let Ok(obj) = api.get(name).await {
            let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
            let conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> =
                serde_json::from_value(value["status"]["conditions"].clone()).unwrap_or_default();
            if let Some(ready) = find_condition(&conditions, READY) {
                if ready.status == "True" {
                    return Ok(());
                }
                if Instant::now() > until {
                    return Err(format!(
                        "{name} not Ready: {}: {}",
                        ready.reason, ready.message
                    ));
                }
            }
        }
        if Instant::now() > until {
            return Err(format!("{name} not Ready within {} s", deadline.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
