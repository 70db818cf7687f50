//! Measures the rollout engine: index build time and memory per device, and the time of one
//! reconcile step, for 100,000 and 1,000,000 devices (or `--devices N`). Not a test: run it with
//! `cargo bench --bench engine-bench [-- --devices N]`.
//!
//! Steps measured, each on the same synthetic fleet (identities `SN-00000001`…, tagged
//! `fleet=a`, waves 1/10/50/100 %):
//! - build: fold N observations page by page (1,000 a page, as the poller does) and sort;
//! - first step: wave 1 starts (1 % notified);
//! - wave step: wave 1 reported success, wave 2 starts (9 % notified);
//! - steady step: nothing changed since the last step (the common case of a poll).
#![forbid(unsafe_code)]

mod support;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use otau_operator::api::DeviceTag;
use otau_operator::api::rollout::{RolloutSpec, RolloutStatus};
use otau_operator::engine::{
    Decision, DeviceIndex, DeviceObservation, EngineInput, EngineMemory, IndexConfig,
    ResourceState, order_seed, reconcile, rollout_marker,
};
use otau_operator::otau::{Manifest, Report, Status};

const T0: i64 = 1_700_000_000_000_000;
const PAGE: usize = 1_000;

/// Resident memory of this process in KiB (Linux `/proc/self/status`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn spec() -> RolloutSpec {
    serde_json::from_value(serde_json::json!({
        "packageRef": {"name": "fw-2-0"},
        "targets": {"tags": [{"name": "fleet", "value": "a"}]},
        "waves": [{"percent": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
        "policy": {"deviceTimeout": "1h", "failureThreshold": {"percent": 5, "minFinished": 100}}
    }))
    .expect("a valid spec")
}

fn observation(i: usize) -> DeviceObservation {
    DeviceObservation {
        identity: format!("SN-{i:08}"),
        tags: vec![DeviceTag::new("fleet", "a")],
        config_otau: None,
        otau_in: Some(ResourceState::written_by_device(
            Report::new("1.9", Status::InstalledVersion, "").to_json(),
            T0 - 1_000_000,
        )),
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Step {
    decision: Decision,
    took: Duration,
}

fn step(
    spec: &RolloutSpec,
    status: &RolloutStatus,
    memory: &EngineMemory,
    index: &DeviceIndex,
    now: i64,
) -> Step {
    let annotations = BTreeMap::new();
    let input = EngineInput {
        namespace: "bench",
        name: "ro",
        generation: Some(1),
        created_at: None,
        spec,
        annotations: &annotations,
        status,
        memory,
        max_notifications: None,
    };
    let started = Instant::now();
    let decision = reconcile(&input, index, now).expect("reconcile");
    Step {
        decision,
        took: started.elapsed(),
    }
}

/// Applies a decision's writes to the index (as the next poll would see them), and optionally
/// makes those devices report success.
fn apply(index: &mut DeviceIndex, decision: &Decision, now: i64, succeed: bool) -> Duration {
    let started = Instant::now();
    let updates: Vec<DeviceObservation> = decision
        .notifications
        .iter()
        .map(|n| DeviceObservation {
            identity: n.identity.clone(),
            tags: vec![DeviceTag::new("fleet", "a")],
            config_otau: Some(ResourceState::written_by_device(
                n.manifest.to_string(),
                now,
            )),
            otau_in: Some(ResourceState::written_by_device(
                Report::new(
                    "2.0",
                    if succeed {
                        Status::InstalledVersion
                    } else {
                        Status::Init
                    },
                    "",
                )
                .to_json(),
                now + 1,
            )),
        })
        .collect();
    for page in updates.chunks(PAGE) {
        index.upsert(page);
    }
    index.prepare();
    started.elapsed()
}

fn bench(n: usize) {
    let spec = spec();
    let manifest = Manifest::url_list("2.0", "Firmware", "", vec!["fw-2.0.bin".into()]);
    let rss_before = rss_kib();
    let started = Instant::now();
    let mut index = DeviceIndex::new(IndexConfig {
        seed: order_seed(&spec, "bench", "ro"),
        targets: spec.targets.clone(),
        connector_manifests: vec![manifest.clone()],
        newer_rollout_manifests: Vec::new(),
        // What the operator writes: the package's manifest with the Rollout's marker.
        manifest: manifest.with_rollout(Some(&rollout_marker("bench", "ro"))),
    });
    let mut page = Vec::with_capacity(PAGE);
    for i in 0..n {
        page.push(observation(i));
        if page.len() == PAGE {
            index.upsert(&page);
            page.clear();
        }
    }
    index.upsert(&page);
    drop(page);
    index.prepare();
    let build = started.elapsed();
    let rss_after = rss_kib();
    let heap = index.heap_bytes();

    let memory = EngineMemory::default();
    let first = step(&spec, &RolloutStatus::default(), &memory, &index, T0);
    let wrote_first = first.decision.notifications.len();
    let apply_first = apply(&mut index, &first.decision, T0, true);
    let now = T0 + 60_000_000;
    let wave = step(
        &spec,
        &first.decision.status,
        &first.decision.memory,
        &index,
        now,
    );
    let wrote_wave = wave.decision.notifications.len();
    let _ = apply(&mut index, &wave.decision, now, false);
    let steady = step(
        &spec,
        &wave.decision.status,
        &wave.decision.memory,
        &index,
        now + 60_000_000,
    );

    println!("devices                 {n}");
    println!(
        "index build             {} ({:.0} devices/s)",
        millis(build),
        n as f64 / build.as_secs_f64()
    );
    println!(
        "index memory            {:.1} MB counted ({:.0} B/device), RSS +{:.1} MB ({:.0} B/device)",
        heap as f64 / 1e6,
        heap as f64 / n as f64,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / n as f64
    );
    println!(
        "entry size              {} B",
        std::mem::size_of::<otau_operator::engine::DeviceEntry>()
    );
    println!(
        "step: wave 1 starts     {} ({wrote_first} notifications)",
        millis(first.took)
    );
    println!("apply + fold writes     {}", millis(apply_first));
    println!(
        "step: wave 2 starts     {} ({wrote_wave} notifications)",
        millis(wave.took)
    );
    println!(
        "step: steady state      {} ({} notifications, {} in flight)",
        millis(steady.took),
        steady.decision.notifications.len(),
        steady.decision.status.totals.notified + steady.decision.status.totals.in_progress
    );
    println!();
}

fn main() -> ExitCode {
    let Some(args) = support::bench_args() else {
        support::not_a_bench_run("engine-bench");
        return ExitCode::SUCCESS;
    };
    let sizes: Vec<usize> = match args.as_slice() {
        [] => vec![100_000, 1_000_000],
        [flag, n] if flag == "--devices" => match n.replace('_', "").parse() {
            Ok(n) => vec![n],
            Err(_) => {
                eprintln!("--devices needs a number, got {n:?}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("usage: engine-bench [--devices N]");
            return ExitCode::FAILURE;
        }
    };
    for n in sizes {
        bench(n);
    }
    ExitCode::SUCCESS
}
