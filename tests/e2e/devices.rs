//! Field device behaviours end to end over the device HTTP API: the operator as a process, the
//! apiserver, the emulator, and an HTTP fleet whose devices activate, long-poll `config_otau`,
//! ack and report over loopback (docs/fleet-profiles.md). One test per behaviour, each with
//! per-device checks against the emulator's ground truth. Expected outcomes follow the
//! operator's rules of docs/rollouts.md ("How each device behaviour is counted", whose table
//! names these tests) and exosite-platform.md §1.4, §2.5.

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::api::rollout::DeviceCounts;
use otau_operator::emulator::fleet::Profile;
use otau_operator::otau::{CONFIG_OTAU, Manifest, Report};

use crate::harness::{
    Emu, Operator, VERSION, WEBHOOK_KEY, apply, base_yaml, rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

/// Devices of the behaviour under test, beside [`PLAIN`] plain ones.
const N: u64 = 4;
/// Plain devices that succeed, in every fleet.
const PLAIN: u64 = 2;

/// A profile of [`PLAIN`] plain devices `ok-` and [`N`] devices `dev-` with `behaviour` (YAML
/// flow mapping content), tagged `fleet=e2e`, with short steps.
fn fleet(seed: u64, behaviour: &str) -> Profile {
    let durations =
        "durations: {step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}";
    let yaml = format!(
        "seed: {seed}\ngroups:\n  - {{name: plain, count: {PLAIN}, identity_prefix: ok-, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], behaviour: {{{durations}}}}}\n  - {{name: field, count: {N}, identity_prefix: dev-, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], behaviour: {{{behaviour}, {durations}}}}}\n"
    );
    Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"))
}

/// The behaviour's devices.
fn field_ids() -> Vec<String> {
    (0..N).map(|i| format!("dev-{i:06}")).collect()
}

/// Runs one Rollout (one wave, 3 s device timeout, a threshold that never trips) of [`VERSION`]
/// to the fleet over HTTP until `Complete`; returns the emulator and the final totals.
async fn roll_out(name: &str, seed: u64, behaviour: &str) -> (Emu, DeviceCounts) {
    let (emu, totals, _) = roll_out_and(name, seed, behaviour, false).await;
    (emu, totals)
}

/// As [`roll_out`]; with `push`, the emulator also delivers every device write to the
/// operator's push receiver (so it sees each report, not only those a listing catches).
async fn roll_out_and(
    name: &str,
    seed: u64,
    behaviour: &str,
    push: bool,
) -> (Emu, DeviceCounts, Api<Rollout>) {
    let cp = ControlPlane::get();
    let ns = cp.namespace(name).await;
    let mut emu = Emu::start_http(&fleet(seed, behaviour)).await;
    let op = Operator::start(cp, &ns, &[]).await;
    if push {
        emu.push_to(op.push_addr, WEBHOOK_KEY);
    }
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 3s\n    failureThreshold:\n      percent: 100\n";
    apply(cp, &ns, &rollout_yaml("fw", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, "fw", "Complete", |r| {
        crate::harness::condition(r, "Complete").is_some_and(|c| c.status == "True")
    })
    .await;
    let totals = r.status.expect("status").totals;
    assert_eq!(totals.targeted, (N + PLAIN) as i64);
    // The plain devices succeed, each written once.
    let writes = emu.writes();
    for id in ["ok-000000", "ok-000001"] {
        assert_eq!(writes.get(id), Some(&vec![Some(1)]), "{id}");
        assert_eq!(
            status_of(&emu, id),
            Some(("INSTALLED_VERSION".into(), VERSION.into()))
        );
    }
    (emu, totals, api)
}

/// The status and version of a device's last `otau_in` report.
pub(crate) fn status_of(emu: &Emu, id: &str) -> Option<(String, String)> {
    let r = Report::parse(&emu.reported(id, "otau_in")?).ok()?;
    Some((r.status.as_str().to_string(), r.version))
}

/// Whether the device's ack (`config_otau` reported) equals what the operator wrote.
pub(crate) fn acked(emu: &Emu, id: &str) -> bool {
    let state = emu.conn().state(id).expect("state");
    let c = state.get("config_otau").expect("config_otau");
    c.reported.is_some() && c.reported == c.set
}

fn counts(t: &DeviceCounts) -> (i64, i64, i64, i64) {
    (
        t.succeeded,
        t.failed,
        t.timed_out,
        t.in_progress + t.notified + t.pending,
    )
}

/// An ack after a failed install: the device reports `INSTALL_ERROR`, then echoes the
/// manifest. The echo moves `config_otau`'s one timestamp (last write of either value,
/// exosite-platform.md §1.3) past the report; the report still belongs to the attempt it was
/// written after (the write time the operator kept through the ack), so the device is
/// counted failed, not timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_after_a_failed_install_counts_the_failure() {
    let (emu, t) = roll_out(
        "e2e-dev-ackfail",
        61,
        "ack: {echo_immediately: 0, echo_after_outcome: 1}, outcomes: {install_error: 1}",
    )
    .await;
    assert_eq!(counts(&t), (PLAIN as i64, N as i64, 0, 0), "{t:?}");
    for id in field_ids() {
        assert_eq!(
            status_of(&emu, &id),
            Some(("INSTALL_ERROR".into(), VERSION.into())),
            "{id}"
        );
        assert!(acked(&emu, &id), "{id}: acked after the failure");
        assert_eq!(emu.writes().get(&id), Some(&vec![Some(1)]), "{id}");
    }
}

/// Offline in the middle of the download, back 500 ms later: the device boots, reads
/// `config_otau` once and runs the update again to the target; the operator counts it
/// succeeded without writing it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mid_download_devices_come_back_and_succeed() {
    let (emu, t) = roll_out(
        "e2e-dev-drop",
        62,
        "outcomes: {offline_mid_download: 1}, offline: {mid_download_for: 500ms}",
    )
    .await;
    assert_eq!(counts(&t), ((N + PLAIN) as i64, 0, 0, 0), "{t:?}");
    for id in field_ids() {
        assert_eq!(
            status_of(&emu, &id),
            Some(("INSTALLED_VERSION".into(), VERSION.into())),
            "{id}"
        );
        assert_eq!(emu.writes().get(&id), Some(&vec![Some(1)]), "{id}");
    }
    let summary = emu.http_summary();
    assert_eq!(summary.finished.offline_mid_download, N, "{summary}");
}

/// Statuses out of order: `INSTALL_SUCCESS` arrives after `INSTALLED_VERSION`, so the last
/// report is a progress report. The operator saw the `INSTALLED_VERSION` (pushed): the device
/// stays succeeded, shown as a re-run, and does not time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_statuses_stay_succeeded_as_reruns() {
    let (emu, t, _) = roll_out_and("e2e-dev-order", 63, "outcomes: {out_of_order: 1}", true).await;
    assert_eq!(counts(&t), ((N + PLAIN) as i64, 0, 0, 0), "{t:?}");
    assert_eq!(t.reruns, N as i64, "{t:?}");
    for id in field_ids() {
        assert_eq!(
            status_of(&emu, &id),
            Some(("INSTALL_SUCCESS".into(), VERSION.into())),
            "{id}"
        );
    }
}

/// An undocumented `*_ERROR` status (`VERIFY_ERROR`) is a failure (exosite-platform.md
/// §2.5): the device is counted failed at once, not timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_error_status_counts_as_failed() {
    let (emu, t) = roll_out("e2e-dev-unkerr", 64, "outcomes: {unknown_error: 1}").await;
    assert_eq!(counts(&t), (PLAIN as i64, N as i64, 0, 0), "{t:?}");
    for id in field_ids() {
        assert_eq!(
            status_of(&emu, &id),
            Some(("VERIFY_ERROR".into(), VERSION.into())),
            "{id}"
        );
    }
}

/// Reports for another version: reports whose version is not the target are ignored
/// (exosite-platform.md §2.5), so the device times out although it runs the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_for_another_version_time_out() {
    let (emu, t) = roll_out("e2e-dev-other", 65, "outcomes: {other_version: 1}").await;
    assert_eq!(counts(&t), (PLAIN as i64, 0, N as i64, 0), "{t:?}");
    for id in field_ids() {
        let other = format!("{VERSION}-other");
        assert_eq!(
            status_of(&emu, &id),
            Some(("INSTALLED_VERSION".into(), other)),
            "{id}"
        );
    }
}

/// The client name the out-of-band writes carry in the emulator's ground truth.
const EXOSENSE: &str = "exosense-ui";

/// A package deployed out of band (as from the ExoSense UI: a cloud write of its manifest to
/// `config_otau`) is installing when the Rollout starts: the device holds that manifest and
/// reports `INSTALL` of its version. Under the default `busyDevices: Wait` it is counted busy
/// and not written while that update runs (the status shows it busy while the ground truth
/// holds no operator write); once it ends the device is written once and runs ours to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_device_waits_counted_busy_then_succeeds() {
    const OOB: &str = "1.5.0-oob";
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-dev-busy").await;
    let behaviour = format!("out_of_band: {{fraction: 1, version: {OOB}, duration: 30s}}");
    let emu = Emu::start_http(&fleet(66, &behaviour)).await;
    let conn = emu.conn();
    let other = Manifest::url_list(
        OOB,
        "Vendor tool",
        "",
        vec![format!("https://vendor.example.com/tool/{OOB}.img")],
    );
    for id in field_ids() {
        crate::support::wait_for(crate::harness::DEADLINE, "the out-of-band install", || {
            let installing = status_of(&emu, &id) == Some(("INSTALL".into(), OOB.into()));
            async move { installing }
        })
        .await;
        conn.set_state(&id, &[(CONFIG_OTAU.into(), other.to_json())], EXOSENSE)
            .expect("out-of-band write");
    }
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 60s\n    failureThreshold:\n      percent: 100\n";
    apply(cp, &ns, &rollout_yaml("fw", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    wait_rollout(&api, "fw", "the field devices counted busy", |r| {
        r.status.as_ref().is_some_and(|s| s.totals.busy == N as i64)
    })
    .await;
    let ours = |id: &str| -> Vec<i64> {
        conn.ground_truth(id)
            .iter()
            .filter(|w| w.client != EXOSENSE)
            .map(|w| w.at)
            .collect()
    };
    let seen_busy = conn.now_micros();
    for id in field_ids() {
        assert_eq!(ours(&id), Vec::<i64>::new(), "{id} written while busy");
    }
    let r = wait_rollout(&api, "fw", "Complete", |r| {
        crate::harness::condition(r, "Complete").is_some_and(|c| c.status == "True")
    })
    .await;
    let t = r.status.expect("status").totals;
    assert_eq!(counts(&t), ((N + PLAIN) as i64, 0, 0, 0), "{t:?}");
    assert_eq!((t.busy, t.foreign), (0, 0), "{t:?}");
    for id in field_ids() {
        assert_eq!(
            status_of(&emu, &id),
            Some(("INSTALLED_VERSION".into(), VERSION.into())),
            "{id}"
        );
        assert!(acked(&emu, &id), "{id}");
        let written = ours(&id);
        assert_eq!(written.len(), 1, "{id}: {written:?}");
        assert!(
            written[0] >= seen_busy,
            "{id} written at {} before {seen_busy}",
            written[0]
        );
        let truth = conn.ground_truth(&id);
        assert_eq!(
            truth.last().map(|w| w.attempt),
            Some(Some(1)),
            "{id}: {truth:?}"
        );
    }
}

/// The OTA guide's loop: after each install the device polls with `If-Modified-Since: 0`,
/// gets the same manifest at once and installs it again. The operator writes it once; the
/// device keeps reinstalling the target. It is counted succeeded at its first install (seen
/// pushed) and stays so while it loops: the Rollout completes with the loops still running,
/// long before the device timeout would have ended them, and the later runs show as re-runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_loop_devices_count_succeeded_at_their_first_install_and_rerun_after() {
    let (mut emu, t, api) = roll_out_and("e2e-dev-guide", 67, "guide_loop: 1", true).await;
    assert_eq!(counts(&t), ((N + PLAIN) as i64, 0, 0, 0), "{t:?}");
    // Mid-run later, they are shown as re-runs and still counted succeeded, Complete stays.
    let r = wait_rollout(&api, "fw", "re-runs shown", |r| {
        r.status.as_ref().is_some_and(|s| s.totals.reruns >= 1)
    })
    .await;
    let later = r.status.as_ref().expect("status").totals.clone();
    assert_eq!(counts(&later), ((N + PLAIN) as i64, 0, 0, 0), "{later:?}");
    assert!(
        crate::harness::condition(&r, "Complete").is_some_and(|c| c.status == "True"),
        "still Complete"
    );
    // Still looping after Complete: every device keeps running the update again.
    let runs = emu.http_summary().started.success;
    crate::support::wait_for(crate::harness::DEADLINE, "more runs after Complete", || {
        let now = emu.http_summary().started.success;
        async move { now > runs + N }
    })
    .await;
    let summary = emu.stop_http().await;
    for id in field_ids() {
        assert_eq!(emu.writes().get(&id), Some(&vec![Some(1)]), "{id}");
        assert!(acked(&emu, &id), "{id}");
        assert_eq!(
            status_of(&emu, &id).map(|s| s.1),
            Some(VERSION.to_string()),
            "{id}"
        );
    }
    assert!(
        summary.started.success > N + PLAIN + N,
        "reinstalled again and again: {summary}"
    );
}

/// Groups of the mixed fleet: (identity prefix, count, behaviour). 200 HTTP devices.
const MIXED: [(&str, u64, &str); 8] = [
    ("ok-", 60, ""),
    ("guide-", 20, "guide_loop: 1"),
    (
        "ackfail-",
        20,
        "ack: {echo_immediately: 0, echo_after_outcome: 1}, outcomes: {install_error: 1}",
    ),
    (
        "drop-",
        20,
        "outcomes: {offline_mid_download: 1}, offline: {mid_download_for: 500ms}",
    ),
    ("order-", 20, "outcomes: {out_of_order: 1}"),
    ("unkerr-", 20, "outcomes: {unknown_error: 1}"),
    ("other-", 20, "outcomes: {other_version: 1}"),
    (
        "oob-",
        20,
        "out_of_band: {fraction: 1, version: 1.5.0-oob, duration: 1s}",
    ),
];

/// The guide-faithful Python devices of the mixed fleet.
const PYTHON: [&str; 2] = ["py-guide-0", "py-guide-1"];

fn mixed_profile() -> Profile {
    let durations =
        "durations: {step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}";
    let mut yaml = "seed: 70\ngroups:\n".to_string();
    for (i, (prefix, count, behaviour)) in MIXED.iter().enumerate() {
        let sep = if behaviour.is_empty() { "" } else { ", " };
        yaml.push_str(&format!(
            "  - {{name: g{i}, count: {count}, identity_prefix: {prefix}, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], behaviour: {{{behaviour}{sep}{durations}}}}}\n"
        ));
    }
    Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"))
}

/// Starts a guide-faithful Python device (tests/python/otau_device.py --guide) that installs
/// the update three times and exits.
fn python_guide(emu: &Emu, identity: &str) -> tokio::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otau_device.py");
    tokio::process::Command::new("python3")
        .args([
            script,
            "--url",
            &emu.base,
            "--identity",
            identity,
            "--version",
            "1.0.0",
        ])
        .args([
            "--guide",
            "--updates",
            "3",
            "--deadline",
            "120",
            "--poll-ms",
            "5000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs")
}

/// Waits (at most 120 s) for a Python test device to exit, asserts it succeeded, returns its
/// stdout (its JSON summary).
pub(crate) async fn python_device_output(id: &str, child: tokio::process::Child) -> String {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{id}: the Python device ends"))
    .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{id}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Every behaviour at once: 200 HTTP devices in eight groups and two guide-faithful Python
/// devices, one Rollout to its end, every device write pushed to the operator. The Rollout
/// completes while the guide loops still run (they count succeeded at their first install).
/// Each device is written once; each group ends where its behaviour leads (the per-behaviour
/// tests above say why), per device against the emulator's state; the totals add up to those
/// groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_fleet_of_every_behaviour_and_python_guide_devices_runs_to_its_end() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-dev-mixed").await;
    let mut emu = Emu::start_http(&mixed_profile()).await;
    let tags = vec![otau_operator::emulator::model::Tag::new("fleet", "e2e")];
    emu.conn()
        .add_identities_bulk(PYTHON.iter().map(|id| (id.to_string(), tags.clone())))
        .expect("whitelist");
    let pythons: Vec<_> = PYTHON.iter().map(|id| python_guide(&emu, id)).collect();
    let op = Operator::start(cp, &ns, &[]).await;
    emu.push_to(op.push_addr, WEBHOOK_KEY);
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 3s\n    failureThreshold:\n      percent: 100\n";
    apply(cp, &ns, &rollout_yaml("fw", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let all: u64 = MIXED.iter().map(|g| g.1).sum::<u64>() + PYTHON.len() as u64;
    let r = wait_rollout(&api, "fw", "Complete", |r| {
        crate::harness::condition(r, "Complete").is_some_and(|c| c.status == "True")
    })
    .await;
    let t = r.status.expect("status").totals;
    assert_eq!(t.targeted, all as i64, "{t:?}");
    // The guide loops ran on after Complete; stop them where they are.
    let summary = emu.stop_http().await;
    // Successes of ok-, drop- (its second run) and oob-, and more than one per guide device.
    assert!(
        summary.started.success > MIXED[0].1 + MIXED[3].1 + MIXED[7].1 + MIXED[1].1,
        "the guide devices reinstalled: {summary}"
    );

    // The Python devices installed three times and exited.
    for (id, child) in PYTHON.iter().zip(pythons) {
        let stdout = python_device_output(id, child).await;
        assert!(stdout.contains("\"updates\": 3"), "{id}: {stdout}");
        assert_eq!(
            status_of(&emu, id),
            Some(("INSTALLED_VERSION".into(), VERSION.into())),
            "{id}"
        );
    }

    // Per device, against the emulator: one write each, and the end its behaviour leads to.
    let writes = emu.writes();
    assert_eq!(writes.len() as u64, all, "devices written");
    assert!(
        writes.values().all(|w| w == &vec![Some(1)]),
        "one write of attempt 1 each"
    );
    let target = |status: &str| Some((status.to_string(), VERSION.to_string()));
    let (mut succeeded, mut failed, mut timed_out) = (PYTHON.len() as i64, 0, 0);
    for (prefix, count, _) in MIXED {
        for i in 0..count {
            let id = format!("{prefix}{i:06}");
            let last = status_of(&emu, &id);
            match prefix {
                "ok-" | "drop-" | "oob-" => assert_eq!(last, target("INSTALLED_VERSION"), "{id}"),
                "ackfail-" => assert_eq!(last, target("INSTALL_ERROR"), "{id}"),
                "order-" => assert_eq!(last, target("INSTALL_SUCCESS"), "{id}"),
                "unkerr-" => assert_eq!(last, target("VERIFY_ERROR"), "{id}"),
                "other-" => assert_eq!(
                    last,
                    Some(("INSTALLED_VERSION".into(), format!("{VERSION}-other"))),
                    "{id}"
                ),
                // Guide loops are anywhere in their next run.
                _ => assert_eq!(last.map(|l| l.1), Some(VERSION.to_string()), "{id}"),
            }
            if prefix != "order-" && prefix != "unkerr-" && prefix != "other-" {
                assert!(acked(&emu, &id), "{id}");
            }
        }
        match prefix {
            "ok-" | "drop-" | "oob-" | "guide-" | "order-" => succeeded += count as i64,
            "ackfail-" | "unkerr-" => failed += count as i64,
            _ => timed_out += count as i64,
        }
    }
    assert_eq!(
        (t.succeeded, t.failed, t.timed_out),
        (succeeded, failed, timed_out),
        "{t:?}"
    );
    // Every out-of-order device shows as a re-run (its last report came after its install).
    assert!(t.reruns >= MIXED[4].1 as i64, "{t:?}");
    assert_eq!((t.pending, t.in_progress, t.notified), (0, 0, 0), "{t:?}");
}

/// Waits (ground truth) until every field device reported `INSTALL_ERROR` and then acked.
async fn every_failure_then_its_ack(emu: &Emu) {
    crate::support::wait_for(
        crate::harness::DEADLINE,
        "every failure, then its ack",
        || {
            let done = field_ids().iter().all(|id| {
                acked(emu, id)
                    && status_of(emu, id) == Some(("INSTALL_ERROR".into(), VERSION.into()))
            });
            async move { done }
        },
    )
    .await;
}

/// Waits for `fw` to complete, asserts every field device counted failed and written once
/// (attempt 1), and stops the fleet.
async fn completes_with_every_device_failed_and_written_once(api: &Api<Rollout>, emu: &mut Emu) {
    let r = wait_rollout(api, "fw", "Complete", |r| {
        crate::harness::condition(r, "Complete").is_some_and(|c| c.status == "True")
    })
    .await;
    let t = r.status.expect("status").totals;
    assert_eq!(counts(&t), (0, N as i64, 0, 0), "{t:?}");
    for id in field_ids() {
        assert_eq!(
            emu.writes().get(&id),
            Some(&vec![Some(1)]),
            "{id}: written once"
        );
    }
    emu.stop_http().await;
}

/// A restart between two reports of the same device: the operator is killed with SIGKILL
/// once every field device reported progress, the devices then fail and ack after the
/// failure while no operator runs, and a new operator (which never saw the write before its
/// ack) still attributes each failure to the attempt it acknowledges: counted failed, not
/// timed out. The fact lives on the platform (the report and the ack) and in the Rollout's
/// creation time, nothing per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_acked_failure_is_counted_failed_across_a_sigkill_between_two_reports() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-dev-killack").await;
    // Long enough downloads and installs that the kill lands between INIT and the failure.
    let durations =
        "durations: {step: 20ms, test: 50ms, download: 1500ms, install: 1500ms, reboot: 50ms}";
    let yaml = format!(
        "seed: 68\ngroups:\n  - {{name: field, count: {N}, identity_prefix: dev-, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], behaviour: {{ack: {{echo_immediately: 0, echo_after_outcome: 1}}, outcomes: {{install_error: 1}}, {durations}}}}}\n"
    );
    let profile = Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"));
    let mut emu = Emu::start_http(&profile).await;
    let mut op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 30s\n    failureThreshold:\n      percent: 100\n";
    apply(cp, &ns, &rollout_yaml("fw", spec));
    let in_progress = |emu: &Emu| {
        field_ids().iter().all(|id| {
            status_of(emu, id).is_some_and(|(status, version)| {
                version == VERSION && !status.ends_with("_ERROR") && status != "INSTALLED_VERSION"
            })
        })
    };
    crate::support::wait_for(
        crate::harness::DEADLINE,
        "every field device's progress",
        || {
            let ready = in_progress(&emu);
            async move { ready }
        },
    )
    .await;
    op.sigkill();
    for id in field_ids() {
        assert!(!acked(&emu, &id), "{id}: not acked yet at the kill");
    }
    // Ground truth while no operator runs: each device fails, then acks.
    every_failure_then_its_ack(&emu).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    completes_with_every_device_failed_and_written_once(&api, &mut emu).await;
}

/// The same late-acked failures when the crash also lost the status write that recorded the
/// first wave's start: the operator's last `config_otau` write of the wave blocks its task
/// (failpoint), so the status never hears of the wave; the devices fail and ack after the
/// failure; the operator is killed with SIGKILL and a new one starts the wave again at its own,
/// later time. The Rollout's creation still bounds when the devices were written, so each
/// failure is counted failed, not timed out, and no device is written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_acked_failure_is_counted_failed_when_the_crash_lost_the_wave_start() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-dev-lostart").await;
    let yaml = format!(
        "seed: 71\ngroups:\n  - {{name: field, count: {N}, identity_prefix: dev-, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], behaviour: {{ack: {{echo_immediately: 0, echo_after_outcome: 1}}, outcomes: {{install_error: 1}}, durations: {{step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}}}}}}\n"
    );
    let profile = Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"));
    let mut emu = Emu::start_http(&profile).await;
    let failpoint = format!("after-write:{N}");
    let mut op = Operator::start_with_env(
        cp,
        &ns,
        &[],
        &[(
            otau_operator::controller::failpoint::ENV,
            failpoint.as_str(),
        )],
    )
    .await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 20s\n    failureThreshold:\n      percent: 100\n";
    apply(cp, &ns, &rollout_yaml("fw", spec));
    op.wait_log(
        otau_operator::controller::failpoint::MARKER,
        crate::harness::DEADLINE,
    )
    .await;
    // Ground truth while the operator hangs: each device fails, then acks.
    every_failure_then_its_ack(&emu).await;
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let before = api.get("fw").await.expect("get");
    let started = before
        .status
        .as_ref()
        .and_then(|s| s.waves.first())
        .and_then(|w| w.started_at.clone());
    assert_eq!(started, None, "the status never recorded the wave's start");
    op.sigkill();

    let _op = Operator::start(cp, &ns, &[]).await;
    completes_with_every_device_failed_and_written_once(&api, &mut emu).await;
}

/// A restart mid-re-run: guide-loop devices install the target and start it again; the
/// operator records each one's success with the `otau-installed` identity tag the first time
/// it sees it re-run (ground truth: the tag on the emulator, one tag write per device). The
/// operator is then killed with SIGKILL, the devices are stopped mid-run while no operator
/// runs (their install no longer among the platform's latest values), and a new operator
/// counts every one succeeded, the stopped ones as re-runs and none in progress, from its
/// first pass, with no write to any device. The fact lives on the platform: one tag per
/// re-running device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerunning_device_stays_succeeded_across_a_sigkill_mid_rerun() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-dev-killrerun").await;
    // Long downloads and installs: a looping device is mid-run almost all the time.
    let durations =
        "durations: {step: 20ms, test: 50ms, download: 800ms, install: 800ms, reboot: 50ms}";
    let yaml = format!(
        "seed: 69\ngroups:\n  - {{name: field, count: {N}, identity_prefix: dev-, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], behaviour: {{guide_loop: 1, {durations}}}}}\n"
    );
    let profile = Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"));
    let mut emu = Emu::start_http(&profile).await;
    let mut op = Operator::start(cp, &ns, &[]).await;
    emu.push_to(op.push_addr, WEBHOOK_KEY);
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 20s\n    failureThreshold:\n      percent: 100\n";
    apply(cp, &ns, &rollout_yaml("fw", spec));
    let record = otau_operator::engine::success_record(&format!("{ns}/fw"), VERSION);
    let recorded = |emu: &Emu, id: &str| {
        let tags = emu.conn().identity(id).expect("identity").tags;
        tags.iter()
            .any(|t| t.name == record.name && t.value == record.value)
    };
    crate::support::wait_for(
        crate::harness::DEADLINE,
        "the success record on every device",
        || {
            let done = field_ids().iter().all(|id| recorded(&emu, id));
            async move { done }
        },
    )
    .await;
    op.sigkill();
    // While no operator runs, stop the devices where they are: mid-run.
    let mid_run = |emu: &Emu| {
        field_ids()
            .into_iter()
            .filter(|id| {
                status_of(emu, id).is_some_and(|(status, version)| {
                    version == VERSION && status != "INSTALLED_VERSION"
                })
            })
            .count()
    };
    crate::support::wait_for(crate::harness::DEADLINE, "every device mid-run", || {
        let all = mid_run(&emu) == N as usize;
        async move { all }
    })
    .await;
    emu.stop_http().await;
    let stopped = mid_run(&emu);
    assert!(stopped >= 1, "devices stopped mid-run");
    let writes = emu.writes();
    assert!(writes.values().all(|w| w == &vec![Some(1)]), "{writes:?}");
    let tag_writes = |emu: &Emu| {
        emu.log()
            .iter()
            .filter(|l| l.method == "PATCH" && l.path.contains("/device2/identity/dev-"))
            .filter(|l| !l.path.ends_with("/state"))
            .count()
    };
    assert_eq!(tag_writes(&emu), N as usize, "one tag write per device");

    let op = Operator::start(cp, &ns, &[]).await;
    let series = |state: &str| {
        format!(r#"otau_rollout_devices{{namespace="{ns}",rollout="fw",state="{state}",wave="1"}}"#)
    };
    // The new operator's gauges come from its own passes only.
    crate::support::wait_for(
        crate::harness::DEADLINE,
        "the new operator's first counts",
        || async {
            let text = op.metrics().await;
            crate::harness::metric_value(&text, &series("targeted")) == Some(N as f64)
        },
    )
    .await;
    let text = op.metrics().await;
    let value = |state: &str| crate::harness::metric_value(&text, &series(state));
    assert_eq!(
        (value("succeeded"), value("reruns"), value("in_progress")),
        (Some(N as f64), Some(stopped as f64), Some(0.0)),
        "{text}"
    );
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, "fw", "the re-runs counted succeeded", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.totals.reruns == stopped as i64)
    })
    .await;
    assert!(
        crate::harness::condition(&r, "Complete").is_some_and(|c| c.status == "True"),
        "still Complete"
    );
    let t = r.status.expect("status").totals;
    assert_eq!(counts(&t), (N as i64, 0, 0, 0), "{t:?}");
    assert_eq!(emu.writes(), writes, "no write to any device");
    assert_eq!(tag_writes(&emu), N as usize, "no tag written again");
}
