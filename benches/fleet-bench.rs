//! Measures an in-process simulated fleet: wall time and memory for N devices (default
//! 1,000,000) to boot and finish one OTAU flow driven in virtual time against the emulator's
//! model. Not a test: run it with
//! `cargo bench --bench fleet-bench -- [--devices N] [--profile FILE] [--seed S]`.
#![forbid(unsafe_code)]

mod support;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use otau_operator::emulator::clock::{Clock, ManualClock};
use otau_operator::emulator::fleet::{FleetCore, InProcessFleet, Profile};
use otau_operator::emulator::model::{ContentItem, Model, ModelConfig};
use otau_operator::otau::{CONFIG_OTAU, Manifest};

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

struct Args {
    devices: u64,
    profile: Option<String>,
    seed: Option<u64>,
}

fn parse_args(argv: Vec<String>) -> Result<Args, String> {
    let mut args = Args {
        devices: 1_000_000,
        profile: None,
        seed: None,
    };
    let mut it = argv.into_iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--devices" => {
                args.devices = value()?.parse().map_err(|e| format!("--devices: {e}"))?
            }
            "--profile" => args.profile = Some(value()?),
            "--seed" => args.seed = Some(value()?.parse().map_err(|e| format!("--seed: {e}"))?),
            "-h" | "--help" => {
                return Err("usage: fleet-bench [--devices N] [--profile FILE] [--seed S]".into());
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let Some(argv) = support::bench_args() else {
        support::not_a_bench_run("fleet-bench");
        return ExitCode::SUCCESS;
    };
    let args = match parse_args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let profile = match &args.profile {
        Some(path) => match Profile::from_file(std::path::Path::new(path)) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        },
        None => Profile::all_succeed("dev-", "1.0.0", args.devices),
    };
    let rss_start = rss_kib();
    let t0 = Instant::now();

    let clock = Arc::new(ManualClock::new(1_700_000_000_000_000));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let model = Model::new(ModelConfig::default(), dyn_clock.clone());
    let connector = match model.add_connector("benchconnector0") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let image = Bytes::from(vec![0x5a_u8; 256 * 1024]);
    let put = connector.content().put(ContentItem {
        id: "fw-2.0.0.bin".into(),
        content_type: "application/octet-stream".into(),
        data: image.clone(),
        tags: BTreeMap::new(),
        last_modified: clock.now_micros(),
    });
    if let Err(e) = put {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    let core = match FleetCore::new(&profile, Some(args.devices), args.seed) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let n = core.len();
    let rss_core = rss_kib();
    let mut fleet = match InProcessFleet::new(core, connector.clone(), dyn_clock) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let t_created = t0.elapsed();
    let rss_created = rss_kib();

    let t1 = Instant::now();
    fleet.run_virtual(&clock, None);
    let t_boot = t1.elapsed();
    let rss_booted = rss_kib();

    let manifest =
        Manifest::url_list("2.0.0", "Firmware update", "", vec!["fw-2.0.0.bin".into()]).to_json();
    let t2 = Instant::now();
    let values = [(CONFIG_OTAU.to_string(), manifest)];
    for i in 0..n as u32 {
        if let Err(e) = connector.set_state(fleet.core().identity(i), &values, "fleet-bench") {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    let t_writes = t2.elapsed();
    let rss_written = rss_kib();
    let virtual_start = clock.now_micros();
    let t3 = Instant::now();
    let summary = fleet.run_virtual(&clock, None);
    let t_flow = t3.elapsed();
    let rss_end = rss_kib();
    let mib = |kib: u64| kib as f64 / 1024.0;

    println!("devices                      {n}");
    println!(
        "create fleet + model ids     {:.2} s",
        t_created.as_secs_f64()
    );
    println!("boot (INSTALLED_VERSION)     {:.2} s", t_boot.as_secs_f64());
    println!(
        "cloud writes of config_otau  {:.2} s ({:.0}/s)",
        t_writes.as_secs_f64(),
        n as f64 / t_writes.as_secs_f64()
    );
    println!(
        "flow to INSTALLED_VERSION    {:.2} s wall, {:.0} s virtual, {:.0} device-steps/s",
        t_flow.as_secs_f64(),
        (clock.now_micros() - virtual_start) as f64 / 1e6,
        (summary.actions.reports + summary.actions.acks + summary.actions.downloads) as f64
            / t_flow.as_secs_f64()
    );
    println!(
        "total wall time              {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    println!(
        "RSS MiB: start {:.0}, model + fleet core {:.0} (+{:.0}), + model identities {:.0} (+{:.0}), \
         after boot reports {:.0}, after cloud writes {:.0}, end of flow {:.0}",
        mib(rss_start),
        mib(rss_core),
        mib(rss_core.saturating_sub(rss_start)),
        mib(rss_created),
        mib(rss_created.saturating_sub(rss_core)),
        mib(rss_booted),
        mib(rss_written),
        mib(rss_end)
    );
    println!(
        "outcomes: success {} (finished {}), reports {}, acks {}, downloads {} ({} MiB), errors {}",
        summary.finished.success,
        summary.finished.total(),
        summary.actions.reports,
        summary.actions.acks,
        summary.actions.downloads,
        summary.actions.bytes / (1024 * 1024),
        summary.actions.errors
    );
    if summary.finished.total() != n as u64 || summary.busy != 0 {
        eprintln!("not every device finished: {summary:?}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
