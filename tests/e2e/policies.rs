//! Policies end to end: device timeouts and the threshold's `countTimeouts`, the soak between
//! waves, late joiners (during a wave and after Complete), devices already at the version.
//! Expected numbers come from the fleet profile, the spec and the documented wave order
//! (`rollout_order`), never from the operator's output.

use std::collections::BTreeSet;

use kube::api::Api;
use otau_operator::api::Rollout;

use crate::harness::{
    DEADLINE, Emu, Group, Operator, VERSION, apply, base_yaml, condition, has, identities, micros,
    profile_of, rollout_for, rollout_order, wait_rollout,
};
use crate::support::{ControlPlane, wait_for};

fn group<'a>(prefix: &'a str, count: u64, fleet: &'a str, outcomes: &'a str) -> Group<'a> {
    Group {
        prefix,
        count,
        version: "1.0.0",
        fleet,
        outcomes,
    }
}

/// The set of devices written so far.
fn written(emu: &Emu) -> BTreeSet<String> {
    emu.writes().into_keys().collect()
}

/// Asserts that exactly `expected` were written, each once, with attempt 1.
fn assert_written_once(emu: &Emu, expected: &BTreeSet<String>) {
    let writes = emu.writes();
    let got: BTreeSet<String> = writes.keys().cloned().collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "devices written: got {}, expected {}",
        got.len(),
        expected.len()
    );
    assert_eq!(&got, expected, "the devices written");
    let repeated: Vec<_> = writes
        .iter()
        .filter(|(_, w)| w != &&vec![Some(1)])
        .collect();
    assert!(
        repeated.is_empty(),
        "not exactly one write of attempt 1: {repeated:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_devices_time_out_and_trip_the_threshold_only_when_timeouts_count() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-timeout").await;
    // Two fleets side by side: 180 + 20 silent devices for each of two rollouts.
    let emu = Emu::start(&profile_of(
        41,
        &[
            group("ok-", 180, "tolerant", ""),
            group("mute-", 20, "tolerant", "silence: 1"),
            group("sok-", 180, "strict", ""),
            group("smute-", 20, "strict", "silence: 1"),
        ],
    ))
    .await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));

    // The strict rollout's order seed puts at least 8 silent devices in wave 1 (100 devices),
    // so wave 1 fails by more than 5 % once they time out.
    let strict_ids: Vec<String> = [identities("sok-", 180), identities("smute-", 20)].concat();
    let (strict_seed, strict_wave1) = (0..1000)
        .map(|i| format!("strict-{i}"))
        .map(|seed| {
            let order = rollout_order(&seed, &strict_ids);
            (seed, order[..100].to_vec())
        })
        .find(|(_, w1)| w1.iter().filter(|id| id.starts_with("smute-")).count() >= 8)
        .expect("an order seed with at least 8 silent devices in wave 1");
    let silent_in_wave1 = strict_wave1
        .iter()
        .filter(|id| id.starts_with("smute-"))
        .count() as i64;

    let waves = "  waves:\n    - percent: 50\n    - percent: 100\n";
    let tolerant = format!(
        "{waves}  orderSeed: tolerant\n  policy:\n    deviceTimeout: 2s\n    failureThreshold:\n      percent: 5\n      countTimeouts: false\n"
    );
    let strict = format!(
        "{waves}  orderSeed: {strict_seed}\n  policy:\n    deviceTimeout: 2s\n    failureThreshold:\n      percent: 5\n      minFinished: 10\n"
    );
    apply(cp, &ns, &rollout_for("tolerant", "tolerant", &tolerant));
    // The strict rollout delivers a package of its own: a device holding a package's
    // manifest counts as notified for every rollout of that package (docs/rollouts.md).
    apply(cp, &ns, STRICT_PACKAGE);
    let strict_rollout = strict_rollout_for("strict", "strict", &strict);
    apply(cp, &ns, &strict_rollout);
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    // Timeouts not counted: the rollout completes with the silent devices timed out, and says
    // it completed with failures.
    let r = wait_rollout(&api, "tolerant", "Complete", |r| {
        has(r, "Complete", "True", "CompletedWithFailures")
    })
    .await;
    let s = r.status.expect("status");
    let t = &s.totals;
    assert_eq!(
        (t.targeted, t.succeeded, t.timed_out, t.failed, t.pending),
        (200, 180, 20, 0, 0)
    );
    // 180 / (180 + 20): timed-out devices are in the success rate.
    assert_eq!(s.success_rate.as_deref(), Some("90.0%"));
    let tolerant_ids: Vec<String> = [identities("ok-", 180), identities("mute-", 20)].concat();
    let order = rollout_order("tolerant", &tolerant_ids);
    let mute_in_wave1 = order[..100]
        .iter()
        .filter(|id| id.starts_with("mute-"))
        .count() as i64;
    let per_wave: Vec<i64> = s.waves.iter().map(|w| w.counts.timed_out).collect();
    assert_eq!(per_wave, vec![mute_in_wave1, 20 - mute_in_wave1]);
    assert!(
        s.recent_failures
            .iter()
            .any(|f| f.status == "Timeout" && f.identity.starts_with("mute-")),
        "{:?}",
        s.recent_failures
    );

    // Timeouts counted: wave 1 trips once enough of its silent devices timed out.
    let r = wait_rollout(&api, "strict", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!(s.current_wave, 1);
    let message = condition(&r, "Paused").expect("Paused").message;
    let (failed, finished) = parse_failed_of_finished(&message)
        .unwrap_or_else(|| panic!("no numbers in the pause message: {message}"));
    assert!(message.starts_with("wave 1: "), "{message}");
    assert!(failed * 100 > 5 * finished, "{message}");
    assert!(failed <= silent_in_wave1 && finished <= 100, "{message}");
    // Every silent device of wave 1 times out; nothing of wave 2 is ever written.
    let r = wait_rollout(&api, "strict", "wave 1 all finished", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.waves
                .first()
                .is_some_and(|w| w.counts.timed_out == silent_in_wave1)
        })
    })
    .await;
    assert!(has(&r, "Paused", "True", "FailureThresholdExceeded"));
    let s = r.status.expect("status");
    assert_eq!(s.waves[0].counts.succeeded, 100 - silent_in_wave1);
    let strict_written: BTreeSet<String> = written(&emu)
        .into_iter()
        .filter(|id| id.starts_with('s'))
        .collect();
    assert_eq!(
        strict_written,
        strict_wave1.iter().cloned().collect::<BTreeSet<_>>(),
        "exactly wave 1 of the strict rollout is written"
    );
    // Tolerant devices: each once, the silent ones too (no retries configured).
    let writes = emu.writes();
    let tolerant_writes: Vec<_> = writes
        .iter()
        .filter(|(id, _)| !id.starts_with('s'))
        .collect();
    assert_eq!(tolerant_writes.len(), 200);
    assert!(tolerant_writes.iter().all(|(_, w)| *w == &vec![Some(1)]));
}

/// A second links-only package on the same connector.
/// Refusals count by default: a fleet whose every device answers `INSTALL_ABORTED` pauses after
/// its first wave with the default policy, and no device of wave 2 is written. Next to it, the
/// same fleet behaviour with `countAborted: false` runs every wave and completes with
/// `CompletedWithFailures`, which kstatus reads as Current and Argo CD as Healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_that_refuses_everything_pauses_unless_refusals_are_left_out() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-refusals").await;
    let emu = Emu::start(&profile_of(
        46,
        &[
            group("no-", 40, "refusing", "install_aborted: 1"),
            group("lno-", 20, "lenient", "install_aborted: 1"),
            group("lok-", 20, "lenient", ""),
        ],
    ))
    .await;
    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    // Default policy: threshold 10 %, judged once 10 devices finished; wave 1 is 10 devices.
    let waves = "  orderSeed: refusing
  waves:
    - percent: 25
    - percent: 100
";
    apply(cp, &ns, &rollout_for("refusing", "refusing", waves));
    apply(cp, &ns, STRICT_PACKAGE);
    let lenient = strict_rollout_for(
        "lenient",
        "lenient",
        &format!(
            "{waves}  policy:
    failureThreshold:
      countAborted: false
"
        ),
    );
    apply(cp, &ns, &lenient);
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let r = wait_rollout(&api, "refusing", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!((s.totals.aborted, s.totals.succeeded), (10, 0));
    assert_eq!(s.current_wave, 1);
    let paused = condition(&r, "Paused").expect("Paused");
    assert!(
        paused
            .message
            .starts_with("wave 1: 10 of 10 finished devices failed (100.0%)"),
        "{paused:?}"
    );
    assert_eq!(
        cp.gitops_verdicts(&ns, "rollout.otau.dev", "refusing"),
        ("Failed".to_owned(), "Degraded".to_owned())
    );

    let r = wait_rollout(&api, "lenient", "Complete", |r| {
        has(r, "Complete", "True", "CompletedWithFailures")
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!(
        (s.totals.targeted, s.totals.succeeded, s.totals.aborted),
        (40, 20, 20)
    );
    assert_eq!(s.success_rate.as_deref(), Some("50.0%"));
    let complete = condition(&r, "Complete").expect("Complete");
    assert!(
        complete.message.ends_with("; success rate 50.0%"),
        "{complete:?}"
    );
    assert_eq!(
        cp.gitops_verdicts(&ns, "rollout.otau.dev", "lenient"),
        ("Current".to_owned(), "Healthy".to_owned())
    );

    // The paused rollout stays at wave 1: after two more complete listings only its 10
    // devices (and the lenient fleet's 40) were ever written.
    let listings = op.two_more_listings(0.0).await;
    op.two_more_listings(listings).await;
    let ids = identities("no-", 40);
    let refusing_ids: BTreeSet<String> = ids.iter().cloned().collect();
    let wave1: BTreeSet<String> = rollout_order("refusing", &ids)[..10]
        .iter()
        .cloned()
        .collect();
    let written_refusing: BTreeSet<String> =
        written(&emu).intersection(&refusing_ids).cloned().collect();
    assert_eq!(written_refusing, wave1, "only wave 1 of the refusing fleet");
    assert_eq!(written(&emu).len(), 50);
}

pub(crate) const STRICT_PACKAGE: &str = "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw-strict\nspec:\n  connectorRef:\n    name: emulator\n  version: 2.0.1\n  links:\n    - https://vendor.example.com/fw/2.0.1/fw.img\n";

/// `rollout_for` of the [`STRICT_PACKAGE`] instead of `fw`.
pub(crate) fn strict_rollout_for(name: &str, fleet: &str, rest: &str) -> String {
    let yaml = rollout_for(name, fleet, rest).replace(
        "packageRef:\n    name: fw\n",
        "packageRef:\n    name: fw-strict\n",
    );
    assert!(yaml.contains("fw-strict"));
    yaml
}

/// `(failed, finished)` from "wave 1: 9 of 100 finished devices failed ...".
fn parse_failed_of_finished(message: &str) -> Option<(i64, i64)> {
    let rest = message.split_once(": ")?.1;
    let mut words = rest.split_whitespace();
    let failed = words.next()?.parse().ok()?;
    (words.next()? == "of").then_some(())?;
    let finished = words.next()?.parse().ok()?;
    Some((failed, finished))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_wave_starts_only_after_the_soak() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-soak").await;
    let emu = Emu::start(&profile_of(42, &[group("dev-", 200, "e2e", "")])).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec =
        "  orderSeed: soak\n  waves:\n    - percent: 50\n      soak: 3s\n    - percent: 100\n";
    apply(cp, &ns, &rollout_for("fw-soak", "e2e", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let r = wait_rollout(&api, "fw-soak", "soaking", |r| {
        has(r, "Progressing", "True", "Soaking")
    })
    .await;
    let wave1 = r.status.expect("status").waves[0].clone();
    let completed = micros(wave1.completed_at.as_ref().expect("wave 1 completedAt"));
    let soak_until = micros(wave1.soak_until.as_ref().expect("wave 1 soakUntil"));
    // Completion + 3 s, rounded up to the second.
    assert!(
        (completed + 3_000_000..=completed + 4_000_000).contains(&soak_until),
        "completedAt {completed} soakUntil {soak_until}"
    );

    let r = wait_rollout(&api, "fw-soak", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let s = r.status.expect("status");
    assert_eq!((s.totals.targeted, s.totals.succeeded), (200, 200));
    let ids = identities("dev-", 200);
    let order = rollout_order("soak", &ids);
    let records = emu.write_records();
    let first_of_wave2 = order[100..]
        .iter()
        .map(|id| records.get(id).expect("a wave 2 device written")[0].at)
        .min()
        .expect("wave 2 devices");
    let last_of_wave1 = order[..100]
        .iter()
        .map(|id| records.get(id).expect("a wave 1 device written")[0].at)
        .max()
        .expect("wave 1 devices");
    assert!(
        last_of_wave1 < completed + 1_000_000,
        "wave 1 written after it completed"
    );
    assert!(
        first_of_wave2 >= soak_until,
        "wave 2 written at {first_of_wave2} µs, before the soak ended at {soak_until} µs"
    );
    assert_written_once(&emu, &ids.into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiners_are_written_during_a_wave_and_after_complete() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-late").await;
    let emu = Emu::start(&profile_of(43, &[group("dev-", 200, "e2e", "")])).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    // The gate on wave 2 holds the rollout in wave 1 while devices join.
    let gated = "  orderSeed: late\n  waves:\n    - percent: 50\n    - percent: 100\n      requireApproval: true\n";
    apply(cp, &ns, &rollout_for("fw-late", "e2e", gated));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    wait_rollout(&api, "fw-late", "waiting for approval", |r| {
        has(r, "Paused", "True", "WaitingForApproval")
    })
    .await;
    let first: Vec<String> = identities("dev-", 200);
    let wave1_before: BTreeSet<String> = rollout_order("late", &first)[..100]
        .iter()
        .cloned()
        .collect();
    assert_eq!(written(&emu), wave1_before);

    // 50 devices join: wave 1 now covers the first ⌈250 · 50 %⌉ = 125 of the new order, plus
    // every device already notified.
    let _joined = emu.join(&profile_of(44, &[group("late-", 50, "e2e", "")]));
    let all: Vec<String> = [first.clone(), identities("late-", 50)].concat();
    let mut wave1_after = wave1_before.clone();
    wave1_after.extend(rollout_order("late", &all)[..125].iter().cloned());
    assert!(
        wave1_after.iter().any(|id| id.starts_with("late-")),
        "the order puts no late joiner in wave 1; pick another seed"
    );
    wait_rollout(&api, "fw-late", "250 targets", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.plan.as_ref().is_some_and(|p| p.targets == 250))
    })
    .await;
    wait_for(DEADLINE, "the late joiners of wave 1 to be written", || {
        let n = written(&emu).len();
        let want = wave1_after.len();
        async move { n >= want }
    })
    .await;
    assert_eq!(written(&emu), wave1_after, "wave 1 after the join");
    let r = api.get("fw-late").await.expect("get");
    assert!(has(&r, "Paused", "True", "WaitingForApproval"));

    // Approve: everything is written once and the rollout completes.
    apply(
        cp,
        &ns,
        &rollout_for("fw-late", "e2e", &format!("{gated}  approvedWaves: 2\n")),
    );
    let r = wait_rollout(&api, "fw-late", "Complete with 250", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
            && r.status.as_ref().is_some_and(|s| s.totals.succeeded == 250)
    })
    .await;
    assert_eq!(r.status.expect("status").totals.targeted, 250);
    assert_written_once(&emu, &all.iter().cloned().collect());

    // 30 more join after Complete: they get the update too.
    let _later = emu.join(&profile_of(45, &[group("later-", 30, "e2e", "")]));
    let r = wait_rollout(&api, "fw-late", "280 succeeded", |r| {
        r.status.as_ref().is_some_and(|s| s.totals.succeeded == 280)
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!((s.totals.targeted, s.totals.pending), (280, 0));
    assert!(has(&r, "Complete", "True", "AllWavesSucceeded"));
    let everyone: Vec<String> = [all, identities("later-", 30)].concat();
    assert_written_once(&emu, &everyone.iter().cloned().collect());
    let classes = emu.report_classes(&everyone);
    assert_eq!(classes.get("succeeded").copied(), Some(280), "{classes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_already_at_the_version_are_skipped_and_never_written() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-skip").await;
    let emu = Emu::start(&profile_of(
        46,
        &[
            group("old-", 150, "e2e", ""),
            Group {
                prefix: "new-",
                count: 50,
                version: VERSION,
                fleet: "e2e",
                outcomes: "",
            },
        ],
    ))
    .await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  orderSeed: skip\n  waves:\n    - percent: 50\n    - percent: 100\n";
    apply(cp, &ns, &rollout_for("fw-skip", "e2e", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let r = wait_rollout(&api, "fw-skip", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let s = r.status.expect("status");
    let t = &s.totals;
    assert_eq!(
        (t.targeted, t.succeeded, t.skipped, t.pending, t.failed),
        (200, 150, 50, 0, 0)
    );
    assert_eq!(s.success_rate.as_deref(), Some("100.0%"));
    // Skipped devices keep their place in their wave.
    let all: Vec<String> = [identities("old-", 150), identities("new-", 50)].concat();
    let order = rollout_order("skip", &all);
    let new_in_wave1 = order[..100]
        .iter()
        .filter(|id| id.starts_with("new-"))
        .count() as i64;
    let per_wave: Vec<(i64, i64)> = s
        .waves
        .iter()
        .map(|w| (w.counts.targeted, w.counts.skipped))
        .collect();
    assert_eq!(
        per_wave,
        vec![(100, new_in_wave1), (100, 50 - new_in_wave1)]
    );
    assert_written_once(&emu, &identities("old-", 150).into_iter().collect());
}
