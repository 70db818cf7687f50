//! Outcomes on fixed seeds, each expected number derived from the profile and the policy.

use crate::harness::{
    PACKAGE, cumulative, group, identity, ordered, profile, rollout, simulate, write,
};

fn waves(percents: &[u64]) -> String {
    percents
        .iter()
        .map(|p| format!("    - percent: {p}\n"))
        .collect()
}

fn int(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_healthy_fleet_completes_every_wave_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 500;
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        &profile(1, &[group("ok", n, "ok-", "{}")]),
    );
    let spec = rollout(&waves(&[10, 50, 100]), "    deviceTimeout: 10m\n", None);
    let file = write(dir.path(), "r.yaml", &format!("{spec}---\n{PACKAGE}"));
    let run = simulate(&["-f", &file, "--profile", &fleet, "--output", "json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    assert_eq!(r["result"]["phase"], "Complete");
    assert_eq!(r["result"]["reason"], "AllWavesSucceeded");
    let covered = cumulative(n, &[10, 50, 100]);
    let mut before = 0;
    let mut previous_end = 0;
    for (i, wave) in r["waves"].as_array().expect("waves").iter().enumerate() {
        let size = covered[i] - before;
        before = covered[i];
        assert_eq!(int(&wave["size"]), size, "wave {}", i + 1);
        assert_eq!(int(&wave["counts"]["succeeded"]), size, "wave {}", i + 1);
        let started = int(&wave["startedSeconds"]);
        let completed = int(&wave["completedSeconds"]);
        assert!(started >= previous_end && completed > started, "{wave}");
        previous_end = completed;
    }
    assert_eq!(int(&r["totals"]["succeeded"]), n);
    // The counts of docs/rollouts.md "Busy and foreign devices" are in the report: the
    // simulated connector holds no other manifest, and no device re-runs the update.
    for count in ["busy", "foreign", "reruns"] {
        assert_eq!(int(&r["totals"][count]), 0, "totals.{count}");
        for wave in r["waves"].as_array().expect("waves") {
            assert_eq!(int(&wave["counts"][count]), 0, "{count} in {wave}");
        }
    }
    assert_eq!(int(&r["configOtauWrites"]), n, "one write per device");
    assert_eq!(int(&r["successRecords"]), 0, "no re-run, no success record");
    assert_eq!(r["successRate"], "100.0%");
}

/// Guide-loop devices run the update again after installing it: while the first wave soaks,
/// the simulated operator writes each re-running device's success record once (as the
/// controller does, docs/rollouts.md "Where each fact lives"); `recordReruns: false` writes
/// none. Either way every device is written `config_otau` once and counts succeeded. The
/// devices wait 40 s between reports and runs, so a 30 s poll sees each install (simulate
/// has no push).
#[test]
fn re_running_devices_get_their_success_record_once_unless_switched_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 40;
    let group = format!(
        "  - name: loop\n    count: {n}\n    identity_prefix: loop-\n    version: \"1.0.0\"\n    tags: [{{name: fleet, value: t}}]\n    behaviour: {{ guide_loop: 1, durations: {{ step: 40s, test: 300ms, download: 500ms, install: 1s, reboot: 500ms }} }}\n"
    );
    let fleet = write(dir.path(), "fleet.yaml", &profile(3, &[group]));
    let waves = "    - percent: 50\n      soak: 20m\n    - percent: 100\n";
    let mut records = Vec::new();
    for switch in ["", "    recordReruns: false\n"] {
        let policy = format!("    deviceTimeout: 10m\n{switch}");
        let spec = rollout(waves, &policy, None);
        let file = write(dir.path(), "r.yaml", &format!("{spec}---\n{PACKAGE}"));
        let run = simulate(&["-f", &file, "--profile", &fleet, "--output", "json"]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        let r = run.json();
        assert_eq!(int(&r["totals"]["succeeded"]), n, "{}", r["totals"]);
        assert_eq!(int(&r["configOtauWrites"]), n, "one write per device");
        records.push(int(&r["successRecords"]));
    }
    // Every first-wave device re-ran during the 20-minute soak; none is recorded twice.
    assert!(
        (n / 2..=n).contains(&records[0]),
        "records with the default: {records:?}"
    );
    assert_eq!(records[1], 0, "recordReruns: false");
}

/// A fleet of 75 healthy devices and 25 that always fail to install, and the first order seed
/// (searched here, from the order's definition) whose first wave (10 devices) holds no failing
/// device and whose second wave (30 devices) holds more than 20 % of the 40 devices of waves
/// 1 and 2 (the threshold judges the started waves together).
struct FailingScenario {
    order_seed: String,
    failing_in_wave_2: u64,
}

const HEALTHY: u64 = 75;
const FAILING: u64 = 25;

fn failing_scenario() -> FailingScenario {
    let mut all: Vec<String> = (0..HEALTHY).map(|i| identity("ok-", HEALTHY, i)).collect();
    all.extend((0..FAILING).map(|i| identity("bad-", FAILING, i)));
    let sizes = cumulative(HEALTHY + FAILING, &[10, 40, 100]);
    for k in 0..5000 {
        let seed = format!("seed-{k}");
        let order = ordered(&seed, all.clone());
        let bad = |range: std::ops::Range<usize>| {
            order[range]
                .iter()
                .filter(|id| id.starts_with("bad-"))
                .count() as u64
        };
        let in_1 = bad(0..sizes[0] as usize);
        let in_2 = bad(sizes[0] as usize..sizes[1] as usize);
        if in_1 == 0 && in_2 * 100 > 20 * sizes[1] {
            return FailingScenario {
                order_seed: seed,
                failing_in_wave_2: in_2,
            };
        }
    }
    panic!("no order seed puts the failures where the test wants them");
}

fn failing_run(on_failure: &str) -> (serde_json::Value, i32, FailingScenario) {
    let s = failing_scenario();
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        &profile(
            3,
            &[
                group("ok", HEALTHY, "ok-", "{}"),
                group("bad", FAILING, "bad-", "{install_error: 1}"),
            ],
        ),
    );
    let policy = format!(
        "    deviceTimeout: 10m\n    failureThreshold: {{percent: 20, minFinished: 5}}\n    onFailure: {on_failure}\n"
    );
    let spec = rollout(&waves(&[10, 40, 100]), &policy, Some(&s.order_seed));
    let file = write(dir.path(), "r.yaml", &format!("{spec}---\n{PACKAGE}"));
    let run = simulate(&["-f", &file, "--profile", &fleet, "--output", "json"]);
    let code = run.code;
    assert!(
        run.stderr.is_empty() || !run.stderr.contains("panicked"),
        "{}",
        run.stderr
    );
    (run.json(), code, s)
}

fn assert_tripped_in_wave_2(r: &serde_json::Value, s: &FailingScenario) {
    let wave_2 = 30;
    let waves_1_2 = 40;
    let t = &r["thresholdExceeded"];
    assert_eq!(int(&t["wave"]), 2, "{r}");
    assert_eq!(int(&t["failed"]), s.failing_in_wave_2, "{r}");
    assert_eq!(int(&t["finished"]), waves_1_2, "{r}");
    assert_eq!(int(&t["thresholdPercent"]), 20);
    let message = r["result"]["message"].as_str().expect("message");
    assert!(
        message.contains(&format!(
            "waves 1-2: {} of {waves_1_2} finished devices failed",
            s.failing_in_wave_2
        )),
        "{message}"
    );
    let waves = r["waves"].as_array().expect("waves");
    assert_eq!(int(&waves[0]["counts"]["succeeded"]), 10);
    assert_eq!(int(&waves[0]["counts"]["failed"]), 0);
    assert_eq!(int(&waves[1]["counts"]["failed"]), s.failing_in_wave_2);
    assert_eq!(
        int(&waves[1]["counts"]["succeeded"]),
        wave_2 - s.failing_in_wave_2
    );
    assert!(
        waves[2].get("startedSeconds").is_none(),
        "wave 3 never starts"
    );
    assert_eq!(
        int(&r["configOtauWrites"]),
        40,
        "waves 1 and 2 only, no retries"
    );
}

#[test]
fn a_failing_wave_pauses_the_rollout_with_the_numbers_that_tripped_it() {
    let (r, code, s) = failing_run("Pause");
    assert_eq!(code, 2, "{r}");
    assert_eq!(r["result"]["phase"], "Paused");
    assert_eq!(r["result"]["reason"], "FailureThresholdExceeded");
    assert_eq!(r["thresholdExceeded"]["action"], "Pause");
    assert_tripped_in_wave_2(&r, &s);
}

#[test]
fn on_failure_abort_aborts_at_the_same_wave() {
    let (r, code, s) = failing_run("Abort");
    assert_eq!(code, 3, "{r}");
    assert_eq!(r["result"]["phase"], "Aborted");
    assert_eq!(r["thresholdExceeded"]["action"], "Abort");
    assert_tripped_in_wave_2(&r, &s);
}

/// Half-width of the acceptance band around `p * n`: five standard deviations of a binomial.
fn band(n: u64, p: f64) -> f64 {
    5.0 * (n as f64 * p * (1.0 - p)).sqrt()
}

#[test]
fn retries_raise_the_success_rate_as_the_profile_predicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n: u64 = 2000;
    let q = 0.3; // probability that one attempt fails, independent per attempt
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        &profile(
            11,
            &[group(
                "flaky",
                n,
                "flaky-",
                &format!("{{install_error: {q}}}"),
            )],
        ),
    );
    let run_with = |retries: u32| {
        let policy = format!(
            "    deviceTimeout: 10m\n    retries: {retries}\n    failureThreshold: {{percent: 100}}\n"
        );
        let spec = rollout(&waves(&[100]), &policy, None);
        let file = write(
            dir.path(),
            &format!("r{retries}.yaml"),
            &format!("{spec}---\n{PACKAGE}"),
        );
        let run = simulate(&["-f", &file, "--profile", &fleet, "--output", "json"]);
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        run.json()
    };
    let once = run_with(0);
    let twice = run_with(1);
    let succeeded = |r: &serde_json::Value| int(&r["totals"]["succeeded"]) as f64;
    let failed = |r: &serde_json::Value| int(&r["totals"]["failed"]);

    // One attempt: success with probability 1 - q.
    let p1 = 1.0 - q;
    assert!(
        (succeeded(&once) - p1 * n as f64).abs() <= band(n, p1),
        "one attempt: {} of {n} succeeded, expected about {}",
        succeeded(&once),
        p1 * n as f64
    );
    // Two attempts: fails only if both fail, probability q^2.
    let p2 = 1.0 - q * q;
    assert!(
        (succeeded(&twice) - p2 * n as f64).abs() <= band(n, p2),
        "two attempts: {} of {n} succeeded, expected about {}",
        succeeded(&twice),
        p2 * n as f64
    );
    assert!(succeeded(&twice) > succeeded(&once));
    assert_eq!(int(&once["totals"]["succeeded"]) + failed(&once), n);
    assert_eq!(int(&twice["totals"]["succeeded"]) + failed(&twice), n);
    // A device's first attempt has the same outcome in both runs (same fleet seed, identity,
    // version and attempt), so exactly the devices that failed once are notified again.
    assert_eq!(int(&twice["configOtauWrites"]), n + failed(&once));
    assert!(failed(&twice) <= failed(&once));
}

#[test]
fn three_soaks_of_a_day_complete_in_virtual_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 200;
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        &profile(5, &[group("ok", n, "ok-", "{}")]),
    );
    let waves = "    - {percent: 10, soak: 24h}\n    - {percent: 30, soak: 24h}\n    - {percent: 60, soak: 24h}\n    - {percent: 100}\n";
    let spec = rollout(waves, "    deviceTimeout: 1h\n", None);
    let file = write(dir.path(), "r.yaml", &format!("{spec}---\n{PACKAGE}"));
    let run = simulate(&["-f", &file, "--profile", &fleet, "--output", "json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let r = run.json();
    let day = 24 * 3600;
    assert!(int(&r["elapsedSeconds"]) > 3 * day, "{}", r["elapsed"]);
    let waves = r["waves"].as_array().expect("waves");
    for k in 0..3 {
        let completed = int(&waves[k]["completedSeconds"]);
        assert_eq!(int(&waves[k]["soakUntilSeconds"]), completed + day);
        assert!(int(&waves[k + 1]["startedSeconds"]) >= completed + day);
    }
    assert_eq!(int(&r["totals"]["succeeded"]), n);
}

/// `--reapply` over a canary that failed: the Rollout is deleted and applied again (as a GitOps
/// re-create does) and finds its canary holding failure reports for the same manifest. The
/// second run pauses on them before any other wave starts: across both runs no device beyond
/// the canary is ever written.
fn reapplied_over_a_failed_canary(retries: u32) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 100;
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        &profile(5, &[group("bad", n, "bad-", "{install_error: 1}")]),
    );
    let policy = format!(
        "    deviceTimeout: 10m\n    retries: {retries}\n    failureThreshold: {{percent: 10, minFinished: 3}}\n"
    );
    let spec = rollout(&waves(&[5, 50, 100]), &policy, None);
    let file = write(dir.path(), "r.yaml", &format!("{spec}---\n{PACKAGE}"));
    let run = simulate(&[
        "-f",
        &file,
        "--profile",
        &fleet,
        "--output",
        "json",
        "--reapply",
    ]);
    assert_eq!(run.code, 2, "{}\n{}", run.stdout, run.stderr);
    run.json()
}

fn wave_starts(report: &serde_json::Value) -> Vec<String> {
    report["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["reason"] == "WaveStarted")
        .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_reapplied_rollout_pauses_on_its_failed_canary_and_writes_nothing_beyond_it() {
    let canary = cumulative(100, &[5])[0];
    for retries in [0, 1] {
        let r = reapplied_over_a_failed_canary(retries);
        let earlier = &r["earlierRuns"][0];
        assert_eq!(
            earlier["result"]["reason"], "FailureThresholdExceeded",
            "{r}"
        );
        assert_eq!(
            int(&earlier["devicesWritten"]),
            canary,
            "run 1 wrote the canary"
        );
        assert_eq!(r["result"]["reason"], "FailureThresholdExceeded", "{r}");
        assert!(
            int(&r["devicesWritten"]) <= canary,
            "run 2 wrote beyond the canary: {r}"
        );
        if retries == 0 {
            assert_eq!(int(&r["configOtauWrites"]), 0, "final failures: {r}");
        }
        for report in [earlier, &r] {
            let starts = wave_starts(report);
            assert_eq!(starts.len(), 1, "only wave 1 ever starts: {starts:?}");
            assert!(starts[0].starts_with("wave 1/3"), "{starts:?}");
        }
        let waves = r["waves"].as_array().expect("waves");
        assert_eq!(int(&waves[1]["counts"]["notified"]), 0);
        assert_eq!(int(&waves[0]["held"]["failed"]), canary, "{}", waves[0]);
        let message = r["result"]["message"].as_str().expect("message");
        assert!(
            message.starts_with(&format!(
                "wave 1: {canary} of {canary} finished devices failed"
            )),
            "{message}"
        );
    }
}

/// A run of a fleet whose every device refuses the update (`INSTALL_ABORTED`), with the given
/// extra threshold lines.
fn refusing_run(threshold: &str) -> (serde_json::Value, i32) {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 200;
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        &profile(3, &[group("refusing", n, "no-", "{install_aborted: 1}")]),
    );
    let policy =
        format!("    deviceTimeout: 10m\n    failureThreshold:\n      percent: 10\n{threshold}");
    let spec = rollout(&waves(&[10, 50, 100]), &policy, None);
    let file = write(dir.path(), "r.yaml", &format!("{spec}---\n{PACKAGE}"));
    let run = simulate(&["-f", &file, "--profile", &fleet, "--output", "json"]);
    (run.json(), run.code)
}

/// Refusals count by default: a fleet that refuses everything pauses after its first wave
/// (20 devices, every one aborted), and no device of wave 2 is written.
#[test]
fn a_fleet_that_refuses_everything_pauses_after_the_first_wave() {
    let (r, code) = refusing_run("");
    assert_eq!(code, 2, "{r}");
    assert_eq!(r["result"]["phase"], "Paused");
    assert_eq!(r["result"]["reason"], "FailureThresholdExceeded");
    assert_eq!(int(&r["thresholdExceeded"]["failed"]), 20, "{r}");
    assert_eq!(int(&r["thresholdExceeded"]["finished"]), 20, "{r}");
    assert_eq!(r["thresholdExceeded"]["countAborted"], true);
    assert_eq!(int(&r["totals"]["aborted"]), 20);
    assert_eq!(int(&r["configOtauWrites"]), 20, "only wave 1 is written");
    let message = r["result"]["message"].as_str().expect("message");
    assert!(message.contains("refusals counted"), "{message}");
}

/// `countAborted: false` leaves refusals out: every wave runs, and the run completes with
/// `CompletedWithFailures` and a success rate of 0.0%.
#[test]
fn refusals_left_out_complete_with_failures_and_the_success_rate() {
    let (r, code) = refusing_run("      countAborted: false\n");
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["result"]["phase"], "Complete");
    assert_eq!(r["result"]["reason"], "CompletedWithFailures");
    let message = r["result"]["message"].as_str().expect("message");
    assert!(message.contains("success rate 0.0%"), "{message}");
    assert_eq!(int(&r["totals"]["aborted"]), 200);
    assert_eq!(r["successRate"], "0.0%");
}
