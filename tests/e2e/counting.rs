//! How devices count toward the failure threshold, end to end (docs/rollouts.md "How each
//! device behaviour is counted"): unreadable reports count by default, a device kept busy by
//! progress reports does not time out before `deviceTimeoutTotal`, and a notified device that an
//! exclusion removes keeps counting. Expected numbers come from the fleet profile and the spec,
//! per device against the emulator's ground truth.

use std::collections::BTreeSet;

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::emulator::fleet::Profile;

use crate::harness::{
    Emu, Group, Operator, apply, base_yaml, condition, has, identities, profile_of, rollout_for,
    wait_rollout,
};
use crate::policies::{STRICT_PACKAGE, strict_rollout_for};
use crate::support::ControlPlane;

/// Asserts every device of `ids` was written exactly once, with attempt 1.
fn written_once(emu: &Emu, ids: &[String]) {
    let writes = emu.writes();
    for id in ids {
        assert_eq!(writes.get(id), Some(&vec![Some(1)]), "{id}: one write");
    }
}

/// Devices that send `otau_in` values that cannot be read are failures by default: with the
/// default threshold (10 %, judged once 10 devices finished) the Rollout pauses after its first
/// wave, counted `invalid`, and no device of wave 2 is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_reports_count_as_failures_and_pause_the_rollout() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-unreadable").await;
    let emu = Emu::start(&profile_of(
        47,
        &[Group {
            prefix: "bad-",
            count: 40,
            version: "1.0.0",
            fleet: "garbled",
            outcomes: "malformed_reports: 1",
        }],
    ))
    .await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let waves = "  orderSeed: garbled\n  waves:\n    - percent: 25\n    - percent: 100\n";
    apply(cp, &ns, &rollout_for("garbled", "garbled", waves));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, "garbled", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!((s.totals.invalid, s.totals.succeeded), (10, 0), "{s:?}");
    assert_eq!(s.current_wave, 1);
    let paused = condition(&r, "Paused").expect("Paused");
    assert!(
        paused
            .message
            .starts_with("wave 1: 10 of 10 finished devices failed (100.0%)"),
        "{paused:?}"
    );
    assert_eq!(emu.writes().len(), 10, "only wave 1 is written");
}

/// A fleet whose update runs about 7 s with a progress report every second: with
/// `deviceTimeout: 3s` each progress report restarts the timeout, so every device succeeds and
/// the Rollout completes without a pause (a timeout would trip the default threshold at once).
/// The same fleet under a total cap of 4 s times out and pauses: the cap bounds how long
/// progress can hold a device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_restarts_the_device_timeout_until_the_total_cap() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-progress").await;
    let mut yaml = "seed: 48\ngroups:\n".to_string();
    for (prefix, fleet) in [("slow-", "slow"), ("capped-", "capped")] {
        yaml.push_str(&format!(
            "  - name: {fleet}\n    count: 10\n    identity_prefix: {prefix}\n    version: \"1.0.0\"\n    tags: [{{name: fleet, value: {fleet}}}]\n    behaviour:\n      durations: {{step: 1s, test: 1s, download: 1s, install: 1s, reboot: 1s}}\n"
        ));
    }
    let profile = Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"));
    let emu = Emu::start(&profile).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, STRICT_PACKAGE);
    let policy = |total: &str| {
        format!(
            "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 3s\n    deviceTimeoutTotal: {total}\n"
        )
    };
    apply(cp, &ns, &rollout_for("slow", "slow", &policy("1m")));
    apply(
        cp,
        &ns,
        &strict_rollout_for("capped", "capped", &policy("4s")),
    );
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let r = wait_rollout(&api, "slow", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!(
        (s.totals.succeeded, s.totals.timed_out, s.totals.failed),
        (10, 0, 0),
        "{s:?}"
    );
    assert!(s.pause.is_none(), "never paused: {:?}", s.pause);
    written_once(&emu, &identities("slow-", 10));

    let r = wait_rollout(&api, "capped", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    // Paused by timeouts (judged when the devices timed out; they may still install
    // afterwards): the only difference from the fleet above is the total cap.
    let s = r.status.clone().expect("status");
    assert!(s.pause.is_some(), "{s:?}");
    written_once(&emu, &identities("capped-", 10));
}

/// A notified device that an exclusion removes keeps counting toward the threshold: ten
/// silent devices are notified, then excluded; they still time out, are never retried
/// (`retries: 1` would write them again), and their timeouts pause the Rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_excluded_notified_device_keeps_counting_and_is_not_retried() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-excluded").await;
    let emu = Emu::start(&profile_of(
        49,
        &[
            Group {
                prefix: "mute-",
                count: 10,
                version: "1.0.0",
                fleet: "edited",
                outcomes: "silence: 1",
            },
            Group {
                prefix: "ok-",
                count: 10,
                version: "1.0.0",
                fleet: "edited",
                outcomes: "",
            },
        ],
    ))
    .await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 4s\n    retries: 1\n";
    apply(cp, &ns, &rollout_for("edited", "edited", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let mute = identities("mute-", 10);
    crate::support::wait_for(
        crate::harness::DEADLINE,
        "every silent device written",
        || {
            let writes = emu.writes();
            let done = mute.iter().all(|id| writes.contains_key(id));
            async move { done }
        },
    )
    .await;
    let listed = mute
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let edited = rollout_for("edited", "edited", spec).replace(
        "  targets:\n",
        &format!("  targets:\n    exclude:\n      identities: [{listed}]\n"),
    );
    assert!(edited.contains("exclude"));
    apply(cp, &ns, &edited);

    let r = wait_rollout(&api, "edited", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!((s.totals.timed_out, s.totals.succeeded), (10, 10), "{s:?}");
    // One write each: the exclusion stopped the retries the policy would have written.
    written_once(&emu, &mute);
    written_once(&emu, &identities("ok-", 10));
    let ever: BTreeSet<String> = emu.writes().into_keys().collect();
    assert_eq!(ever.len(), 20);
}
