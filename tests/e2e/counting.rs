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
    Emu, Group, Operator, WEBHOOK_KEY, apply, base_yaml, condition, has, identities, profile_of,
    rollout_for, wait_rollout,
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

/// A fleet of ten devices that fail their install (slowly enough that an edit lands between
/// the write and the failure) and ten that succeed, all tagged `fleet=edited`.
fn failing_and_succeeding(seed: u64) -> Profile {
    let group = |name: &str, outcomes: &str| {
        format!(
            "  - {{name: {name}, count: 10, identity_prefix: {name}-, version: '1.0.0', tags: [{{name: fleet, value: edited}}], behaviour: {{outcomes: {{{outcomes}}}, durations: {{step: 20ms, test: 50ms, download: 1500ms, install: 3000ms, reboot: 50ms}}}}}}\n"
        )
    };
    let yaml = format!(
        "seed: {seed}\ngroups:\n{}{}",
        group("bad", "install_error: 1"),
        group("ok", "")
    );
    Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"))
}

/// A Rollout of `fw` to `ids` by identity, one wave, one retry, the default threshold.
fn rollout_to_identities(name: &str, ids: &[String]) -> String {
    let listed = ids
        .iter()
        .map(|id| format!("\"{id}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: {name}\nspec:\n  packageRef:\n    name: fw\n  targets:\n    identities: [{listed}]\n  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 60s\n    retries: 1\n"
    )
}

/// The marker docs/rollouts.md tells a reader to recompute (`printf '<ns>/<name>' | sha256sum
/// | cut -c1-16`), computed here, not by the operator.
fn marker_of(namespace: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Ground truth: each of `ids` holds a `config_otau` set value carrying `marker`.
fn hold_marker(emu: &Emu, ids: &[String], marker: &str) {
    for id in ids {
        let state = emu.conn().state(id).expect("state");
        let set = state
            .get("config_otau")
            .and_then(|c| c.set.clone())
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&set).expect("a manifest");
        assert_eq!(value["rollout"], marker, "{id}: {set}");
    }
}

/// Ground truth: every device of `ids` has reported `status` about 2.0.0.
fn all_report(emu: &Emu, ids: &[String], status: &str) -> bool {
    ids.iter().all(|id| {
        crate::devices::status_of(emu, id).is_some_and(|(s, v)| s == status && v == "2.0.0")
    })
}

/// Waits until the Rollout has judged its current generation to a pause or completion, with
/// every device it counts finished.
async fn judged(api: &Api<Rollout>, name: &str) -> Rollout {
    wait_rollout(
        api,
        name,
        "the edited spec judged, every device finished",
        |r| {
            let generation = r.metadata.generation;
            let judged = ["Paused", "Complete"].iter().any(|t| {
                condition(r, t)
                    .is_some_and(|c| c.status == "True" && c.observed_generation == generation)
            });
            let finished = r.status.as_ref().is_some_and(|s| {
                let t = &s.totals;
                t.targeted > 0 && t.succeeded + t.failed == t.targeted
            });
            judged && finished
        },
    )
    .await
}

/// A notified device that an edit of `targets.identities` leaves out keeps counting: ten
/// devices are written, then removed from `identities` before they fail; their failures still
/// count, pause the Rollout, and are never retried (`retries: 1` would write them again). The
/// operator lists the devices when it starts and when the edit rebuilds the Rollout's index,
/// and polls no more (1 h): reports after that arrive by push only. Each device holds the
/// Rollout's marker, recomputed here from docs/rollouts.md.
/// Waits (ground truth) until every `bad` device reported `INSTALL_ERROR` and every `ok` one
/// `INSTALLED_VERSION`.
async fn every_outcome(emu: &Emu, bad: &[String], ok: &[String]) {
    crate::support::wait_for(crate::harness::DEADLINE, "every outcome", || {
        let done =
            all_report(emu, bad, "INSTALL_ERROR") && all_report(emu, ok, "INSTALLED_VERSION");
        async move { done }
    })
    .await;
}

/// Asserts the Rollout `former` paused by the threshold with the ten edited-out failures still
/// counted, every device written once and holding the Rollout's marker.
async fn paused_with_the_former_targets_counted(
    api: &Api<Rollout>,
    emu: &Emu,
    ns: &str,
    all: &[String],
) {
    let r = judged(api, "former").await;
    let s = r.status.clone().expect("status");
    assert!(
        has(&r, "Paused", "True", "FailureThresholdExceeded"),
        "{s:?}"
    );
    assert_eq!(
        (s.totals.targeted, s.totals.failed, s.totals.succeeded),
        (20, 10, 10),
        "{s:?}"
    );
    written_once(emu, all);
    hold_marker(emu, all, &marker_of(ns, "former"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_device_edited_out_of_identities_keeps_counting_and_pauses_the_rollout() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-former").await;
    let mut emu = Emu::start(&failing_and_succeeding(50)).await;
    let op = Operator::start_push_only(cp, &ns).await;
    emu.push_to(op.push_addr, WEBHOOK_KEY);
    apply(cp, &ns, &base_yaml(&emu));
    let (bad, ok) = (identities("bad-", 10), identities("ok-", 10));
    let all: Vec<String> = bad.iter().chain(&ok).cloned().collect();
    apply(cp, &ns, &rollout_to_identities("former", &all));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    crate::support::wait_for(crate::harness::DEADLINE, "every device written", || {
        let writes = emu.writes();
        let done = all.iter().all(|id| writes.contains_key(id));
        async move { done }
    })
    .await;
    apply(cp, &ns, &rollout_to_identities("former", &ok));
    every_outcome(&emu, &bad, &ok).await;

    paused_with_the_former_targets_counted(&api, &emu, &ns, &all).await;
}

/// The same across a SIGKILL: the operator is killed once every device was written, the edit
/// and the failures happen while no operator runs, and a new operator (which never saw the
/// devices selected) finds the ten former targets on the platform by their marker: counted
/// failed, the Rollout paused, nothing written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_device_edited_out_of_identities_keeps_counting_across_a_sigkill() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-former-kill").await;
    let emu = Emu::start(&failing_and_succeeding(51)).await;
    let mut op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let (bad, ok) = (identities("bad-", 10), identities("ok-", 10));
    let all: Vec<String> = bad.iter().chain(&ok).cloned().collect();
    apply(cp, &ns, &rollout_to_identities("former", &all));
    crate::support::wait_for(crate::harness::DEADLINE, "every device written", || {
        let writes = emu.writes();
        let done = all.iter().all(|id| writes.contains_key(id));
        async move { done }
    })
    .await;
    op.sigkill();
    apply(cp, &ns, &rollout_to_identities("former", &ok));
    every_outcome(&emu, &bad, &ok).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    paused_with_the_former_targets_counted(&api, &emu, &ns, &all).await;
}
