//! The same Rollout, fleet profile and seed through `otau-operator simulate` (virtual time,
//! the built binary with `--output json`) and through the operator against the emulator (real
//! time, HTTP, the control plane) reach the same outcome: paused by the failure threshold in
//! wave 2, with the same devices written and the same counts once the devices in flight have
//! reported. A second pair runs a fleet of the field behaviours of docs/fleet-profiles.md,
//! the operator's devices over the device HTTP API: both complete with the same counts.
//!
//! Why both runs draw the same device behaviours: a simulated device's randomness is seeded by
//! (fleet seed, identity) and, per run, by the manifest's version and attempt
//! (src/emulator/fleet/seed.rs), so the same profile file (same seed, groups, identities) and
//! the same package version give every device the same outcome in both runs. The wave order
//! is the hash order of `spec.orderSeed`, set explicitly so the namespace (which differs
//! between the runs) does not enter it. What timing can change is only *when* the threshold
//! is judged: see [`trip_numbers_within_noise`].

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::api::rollout::DeviceCounts;
use otau_operator::emulator::fleet::Profile;

use crate::harness::{
    Emu, Operator, VERSION, apply, base_yaml, condition, has, identities, rollout_order,
    rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

const FLEET_SEED: u64 = 41;
const HEALTHY: u64 = 300;
const FAILING: u64 = 100;
const ORDER_SEED: &str = "equivalence-1";
const NAME: &str = "fw-eq";
/// Waves of 5 %, 50 % and 100 % of 400 devices: 20, 200, 400 covered.
const COVERED: [i64; 3] = [20, 200, 400];
/// Wave 1 (20 devices) can never reach it, so the threshold is first judged in wave 2.
const MIN_FINISHED: i64 = 30;
const PERCENT: i64 = 10;

/// The fleet profile both runs use, as the YAML file simulate reads.
fn fleet_yaml() -> String {
    let durations = "{step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}";
    format!(
        "seed: {FLEET_SEED}\ngroups:\n\
         \x20 - name: healthy\n    count: {HEALTHY}\n    identity_prefix: ok-\n    version: \"1.0.0\"\n    tags: [{{name: fleet, value: e2e}}]\n    behaviour:\n      durations: {durations}\n\
         \x20 - name: failing\n    count: {FAILING}\n    identity_prefix: bad-\n    version: \"1.0.0\"\n    tags: [{{name: fleet, value: e2e}}]\n    behaviour:\n      outcomes: {{install_error: 1}}\n      durations: {durations}\n"
    )
}

fn rollout_spec() -> String {
    format!(
        "  orderSeed: {ORDER_SEED}\n  waves:\n    - percent: 5\n    - percent: 50\n    - percent: 100\n  policy:\n    deviceTimeout: 10m\n    retries: 0\n    failureThreshold:\n      percent: {PERCENT}\n      minFinished: {MIN_FINISHED}\n    onFailure: Pause\n"
    )
}

/// The package of harness::base_yaml, alone (simulate needs it next to the Rollout).
fn package_yaml() -> String {
    format!(
        "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw\nspec:\n  connectorRef:\n    name: emulator\n  version: {VERSION}\n  links:\n    - https://vendor.example.com/fw/{VERSION}/fw.img\n"
    )
}

/// Failing devices among the first `covered` of the wave order, derived from the order's
/// definition and the profile (not from either run).
fn failing_in_first(covered: i64) -> i64 {
    let mut all = identities("ok-", HEALTHY);
    all.extend(identities("bad-", FAILING));
    rollout_order(ORDER_SEED, &all)
        .iter()
        .take(covered as usize)
        .filter(|id| id.starts_with("bad-"))
        .count() as i64
}

fn count(v: &serde_json::Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// (failed, finished) from "waves 1-2: 9 of 100 finished devices failed ...".
fn trip_numbers(message: &str) -> (i64, i64) {
    let rest = message
        .split_once(": ")
        .map(|(_, r)| r)
        .unwrap_or_else(|| panic!("no numbers in {message:?}"));
    let words: Vec<&str> = rest.split_whitespace().collect();
    let failed = words[0].parse().expect("failed count");
    let finished = words[2].parse().expect("finished count");
    (failed, finished)
}

/// The timing noise of the profile: every device of waves 1 and 2 is written at once when
/// wave 2 starts and reports within about 0.3 s (its step durations add up to 270 ms), while
/// the operator polls every second and simulate every 30 virtual seconds. So the step that
/// judges the threshold sees anywhere from `minFinished` finished devices (the earliest it may
/// judge) to all 200 of waves 1 and 2; the failures it counts are at most the failing devices
/// of those waves, and over the threshold. Simulate, whose poll is 100 times longer than a
/// device's run, sees all 200.
fn trip_numbers_within_noise(failed: i64, finished: i64, failing: i64) {
    assert!(
        (MIN_FINISHED..=COVERED[1]).contains(&finished),
        "judged over {finished} finished devices, outside [{MIN_FINISHED}, {}]",
        COVERED[1]
    );
    assert!(
        failed <= failing && failed * 100 > PERCENT * finished,
        "{failed} of {finished} failed (waves 1-2 hold {failing} failing devices)"
    );
}

fn totals_of(v: &serde_json::Value) -> DeviceCounts {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("counts {v}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_and_the_operator_pause_in_the_same_wave_with_the_same_counts() {
    let failing = failing_in_first(COVERED[1]);
    // Wave 1 (20 devices) stays under minFinished by construction; waves 1-2 must exceed the
    // threshold once all their devices reported, so the pause is certain in wave 2.
    assert!(
        failing * 100 > PERCENT * COVERED[1],
        "the order seed must put more than {PERCENT}% failures in waves 1-2 ({failing})"
    );

    // Simulate: the built binary, the same files a person would pass.
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_file = dir.path().join("fleet.yaml");
    std::fs::write(&fleet_file, fleet_yaml()).expect("write fleet");
    let rollout_file = dir.path().join("rollout.yaml");
    std::fs::write(
        &rollout_file,
        format!(
            "{}---\n{}",
            rollout_yaml(NAME, &rollout_spec()),
            package_yaml()
        ),
    )
    .expect("write rollout");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otau-operator"))
        .arg("simulate")
        .arg("-f")
        .arg(&rollout_file)
        .arg("--profile")
        .arg(&fleet_file)
        .args(["--output", "json"])
        .output()
        .expect("run simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "simulate exits 2 (paused)\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sim: serde_json::Value = serde_json::from_str(&stdout).expect("simulate JSON");
    assert_eq!(sim["result"]["phase"], "Paused");
    assert_eq!(sim["result"]["reason"], "FailureThresholdExceeded");
    let trip = &sim["thresholdExceeded"];
    assert_eq!(count(trip, "wave"), 2, "{sim}");
    trip_numbers_within_noise(count(trip, "failed"), count(trip, "finished"), failing);
    let sim_totals = totals_of(&sim["totals"]);
    let sim_waves: Vec<DeviceCounts> = sim["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| totals_of(&w["counts"]))
        .collect();
    assert_eq!(count(&sim, "configOtauWrites"), COVERED[1]);

    // The operator against the emulator, with the same profile.
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-equivalence").await;
    let profile = Profile::from_yaml(&fleet_yaml()).expect("profile");
    let emu = Emu::start(&profile).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &rollout_yaml(NAME, &rollout_spec()));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, NAME, "the automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.current_wave), Some(2));
    let message = condition(&r, "Paused").expect("Paused").message;
    assert!(message.starts_with("waves 1-2: "), "{message}");
    let (failed, finished) = trip_numbers(&message);
    trip_numbers_within_noise(failed, finished, failing);

    // Once the devices in flight have reported, the counts are those of simulate, wave by
    // wave: no timing is left in them.
    let settled = wait_rollout(&api, NAME, "every written device reported", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.totals.notified + s.totals.in_progress == 0
                && s.totals.succeeded + s.totals.failed == COVERED[1]
        })
    })
    .await;
    let s = settled.status.clone().expect("status");
    assert_eq!(s.totals, sim_totals, "totals: operator vs simulate");
    let op_waves: Vec<DeviceCounts> = s.waves.iter().map(|w| w.counts.clone()).collect();
    assert_eq!(op_waves, sim_waves[..op_waves.len()], "per-wave counts");
    assert_eq!(s.totals.failed, failing);
    assert_eq!(s.totals.pending, COVERED[2] - COVERED[1]);
    assert!(has(&settled, "Paused", "True", "FailureThresholdExceeded"));
    // The same devices were written, once each: the first 200 of the order.
    let mut all = identities("ok-", HEALTHY);
    all.extend(identities("bad-", FAILING));
    let mut expected: Vec<String> = rollout_order(ORDER_SEED, &all)[..COVERED[1] as usize].to_vec();
    expected.sort();
    let writes = emu.writes();
    let written: Vec<String> = writes.keys().cloned().collect();
    assert_eq!(
        written, expected,
        "the devices of waves 1 and 2, nothing else"
    );
    assert!(
        writes.values().all(|w| w.len() == 1),
        "one write per device"
    );
}

/// How a group of the field-behaviour fleet ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Succeeded,
    Failed,
    TimedOut,
}

/// Groups of the field-behaviour fleet: (prefix, count, behaviour, how it ends). The guide
/// loop and the out-of-order statuses are left out: a device that installed the version stays
/// succeeded once the operator saw the install, so with listings alone when a listing looks
/// is timing (tests/e2e/devices.rs proves both with every report pushed).
const FIELD: [(&str, u64, &str, End); 6] = [
    ("ok-", 20, "", End::Succeeded),
    (
        "ackfail-",
        10,
        "ack: {echo_immediately: 0, echo_after_outcome: 1}, outcomes: {install_error: 1}",
        End::Failed,
    ),
    (
        "drop-",
        10,
        "outcomes: {offline_mid_download: 1}, offline: {mid_download_for: 500ms}",
        End::Succeeded,
    ),
    ("unkerr-", 10, "outcomes: {unknown_error: 1}", End::Failed),
    ("other-", 10, "outcomes: {other_version: 1}", End::TimedOut),
    (
        "oob-",
        10,
        "out_of_band: {fraction: 1, version: 1.5.0-oob, duration: 1s}",
        End::Succeeded,
    ),
];

fn field_fleet_yaml() -> String {
    let durations =
        "durations: {step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}";
    let mut yaml = "seed: 43\ngroups:\n".to_string();
    for (i, (prefix, count, behaviour, _)) in FIELD.iter().enumerate() {
        let sep = if behaviour.is_empty() { "" } else { ", " };
        yaml.push_str(&format!(
            "  - {{name: g{i}, count: {count}, identity_prefix: {prefix}, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], behaviour: {{{behaviour}{sep}{durations}}}}}\n"
        ));
    }
    yaml
}

/// The field behaviours (docs/fleet-profiles.md) through simulate and through the operator
/// with the fleet over the device HTTP API: both complete with the same totals and per-wave
/// counts, and those are what the behaviours lead to (tests/e2e/devices.rs says why): the
/// succeeding groups succeed, a failure acked late and an undocumented `*_ERROR` fail,
/// reports about another version time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_and_the_operator_agree_on_a_fleet_of_field_behaviours() {
    let spec = "  orderSeed: equivalence-field\n  waves:\n    - percent: 50\n    - percent: 100\n  policy:\n    deviceTimeout: 5s\n    failureThreshold:\n      percent: 100\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet_file = dir.path().join("fleet.yaml");
    std::fs::write(&fleet_file, field_fleet_yaml()).expect("write fleet");
    let rollout_file = dir.path().join("rollout.yaml");
    std::fs::write(
        &rollout_file,
        format!("{}---\n{}", rollout_yaml(NAME, spec), package_yaml()),
    )
    .expect("write rollout");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_otau-operator"))
        .arg("simulate")
        .arg("-f")
        .arg(&rollout_file)
        .arg("--profile")
        .arg(&fleet_file)
        .args(["--output", "json"])
        .output()
        .expect("run simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "simulate completes\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sim: serde_json::Value = serde_json::from_str(&stdout).expect("simulate JSON");
    let sim_totals = totals_of(&sim["totals"]);
    let sim_waves: Vec<DeviceCounts> = sim["waves"]
        .as_array()
        .expect("waves")
        .iter()
        .map(|w| totals_of(&w["counts"]))
        .collect();
    let all: u64 = FIELD.iter().map(|g| g.1).sum();
    let ending = |end: End| -> i64 {
        FIELD
            .iter()
            .filter(|g| g.3 == end)
            .map(|g| g.1 as i64)
            .sum()
    };
    assert_eq!(
        (
            sim_totals.targeted,
            sim_totals.succeeded,
            sim_totals.failed,
            sim_totals.timed_out
        ),
        (
            all as i64,
            ending(End::Succeeded),
            ending(End::Failed),
            ending(End::TimedOut)
        ),
        "{sim_totals:?}"
    );

    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-equivalence-field").await;
    let profile = Profile::from_yaml(&field_fleet_yaml()).expect("profile");
    let emu = Emu::start_http(&profile).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &rollout_yaml(NAME, spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, NAME, "Complete", |r| {
        condition(r, "Complete").is_some_and(|c| c.status == "True")
    })
    .await;
    let s = r.status.expect("status");
    assert_eq!(s.totals, sim_totals, "totals: operator vs simulate");
    let op_waves: Vec<DeviceCounts> = s.waves.iter().map(|w| w.counts.clone()).collect();
    assert_eq!(op_waves, sim_waves, "per-wave counts");
    assert_eq!(count(&sim, "configOtauWrites"), all as i64);
    let writes = emu.writes();
    assert_eq!(writes.len() as u64, all);
    assert!(
        writes.values().all(|w| w == &vec![Some(1)]),
        "one write each"
    );
}
