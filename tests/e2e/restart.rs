//! Crash safety: the operator is killed with SIGKILL at named points, each found from the
//! emulator's ground truth or the operator's own state, and started again. After each restart
//! no device is written twice for an attempt, none is left out, and the rollout ends as it
//! would have without the kill. The restarted process has only the platform and the Rollout's
//! status to go by (docs/architecture.md §2): an operator that kept what it wrote in memory, or
//! trusted the status over the platform, would write devices again and fail these tests.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::controller::failpoint;

use crate::harness::{
    DEADLINE, Emu, Group, Operator, apply, base_yaml, event_reasons, has, identities, kubectl,
    metric_value, micros, profile_of, rollout_for, rollout_order, wait_rollout,
};
use crate::support::ControlPlane;

fn fleet<'a>(prefix: &'a str, count: u64, outcomes: &'a str) -> Group<'a> {
    Group {
        prefix,
        count,
        version: "1.0.0",
        fleet: "e2e",
        outcomes,
    }
}

/// Polls `condition` every 20 ms (a kill trigger must not overshoot) until it holds; panics
/// naming `what` after [`DEADLINE`].
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that exactly `expected` were written, each once, with attempt 1.
fn assert_written_once(emu: &Emu, expected: &[String]) {
    let writes = emu.writes();
    let expected: BTreeSet<&String> = expected.iter().collect();
    let got: BTreeSet<&String> = writes.keys().collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    let extra: Vec<_> = got.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} never written (e.g. {:?}), {} written but not expected (e.g. {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
    let twice: Vec<_> = writes
        .iter()
        .filter(|(_, w)| w != &&vec![Some(1)])
        .collect();
    assert!(
        twice.is_empty(),
        "{} devices not written exactly once with attempt 1, e.g. {:?}",
        twice.len(),
        twice.first()
    );
}

/// How many complete device listings the operator made (a new process starts from 0).
async fn listings(op: &Operator) -> f64 {
    metric_value(
        &op.metrics().await,
        r#"otau_device_listings_total{outcome="success"}"#,
    )
    .unwrap_or(0.0)
}

/// Waits until the operator completed `n` more listings than `after`.
async fn more_listings(op: &Operator, after: f64, n: f64) {
    let started = Instant::now();
    while listings(op).await < after + n {
        assert!(started.elapsed() < DEADLINE, "no new device listing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_wave_it_writes_only_the_rest_of_the_wave() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-kill-midwave").await;
    let emu = Emu::start(&profile_of(51, &[fleet("dev-", 300, "")])).await;
    let mut op = Operator::start(cp, &ns, &[]).await;
    // 40 requests a second: wave 2 (210 writes) takes about 5 s, time enough to kill inside it.
    let slow = base_yaml(&emu).replace(
        "requestsPerSecond: 5000\n    burst: 5000",
        "requestsPerSecond: 40\n    burst: 5",
    );
    assert_ne!(slow, base_yaml(&emu), "the rate limit was not lowered");
    apply(cp, &ns, &slow);
    let spec = "  orderSeed: midwave\n  waves:\n    - percent: 30\n    - percent: 100\n";
    apply(cp, &ns, &rollout_for("fw-mid", "e2e", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    // Ground truth: 40 devices of wave 2 written.
    until("40 writes of wave 2", || emu.writes().len() >= 90 + 40).await;
    op.sigkill();
    let at_kill = emu.writes().len();
    assert!(
        at_kill < 300,
        "every device was written before the kill ({at_kill})"
    );
    let ids = identities("dev-", 300);
    let order = rollout_order("midwave", &ids);
    let wave1: BTreeSet<&String> = order[..90].iter().collect();
    let records = emu.write_records();
    assert!(
        wave1.iter().all(|id| records.contains_key(*id)),
        "wave 1 was not fully written before wave 2"
    );

    let _op = Operator::start(cp, &ns, &[]).await;
    let r = wait_rollout(&api, "fw-mid", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let s = r.status.expect("status");
    assert_eq!(
        (s.totals.targeted, s.totals.succeeded, s.current_wave),
        (300, 300, 2)
    );
    assert_written_once(&emu, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_write_before_the_status_patch_it_does_not_write_again() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-kill-afterwrite").await;
    let emu = Emu::start(&profile_of(52, &[fleet("dev-", 200, "")])).await;
    // The 110th write of the process (the 10th of wave 2) blocks its task: the write reached
    // the platform, the status patch after the wave's writes never happens.
    let mut op =
        Operator::start_with_env(cp, &ns, &[], &[(failpoint::ENV, "after-write:110")]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  orderSeed: afterwrite\n  waves:\n    - percent: 50\n    - percent: 100\n";
    apply(cp, &ns, &rollout_for("fw-aw", "e2e", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    op.wait_log(failpoint::MARKER, DEADLINE).await;
    let r = api.get("fw-aw").await.expect("get");
    let status_wave = r.status.as_ref().map_or(0, |s| s.current_wave);
    let at_kill = emu.writes().len();
    op.sigkill();
    // The platform has wave 2's writes; the status never heard of wave 2.
    assert!(at_kill >= 110, "{at_kill} writes at the failpoint");
    assert_eq!(status_wave, 1, "the status recorded wave 2 before the kill");

    let _op = Operator::start(cp, &ns, &[]).await;
    let r = wait_rollout(&api, "fw-aw", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let s = r.status.expect("status");
    assert_eq!(
        (s.totals.targeted, s.totals.succeeded, s.current_wave),
        (200, 200, 2)
    );
    assert_written_once(&emu, &identities("dev-", 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_soak_the_soak_still_holds_the_next_wave() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-kill-soak").await;
    let emu = Emu::start(&profile_of(53, &[fleet("dev-", 200, "")])).await;
    let mut op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    // The soak outlasts a restart, so a restarted operator that forgot it would start wave 2
    // early.
    let spec =
        "  orderSeed: soak\n  waves:\n    - percent: 40\n      soak: 6s\n    - percent: 100\n";
    apply(cp, &ns, &rollout_for("fw-soak", "e2e", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let r = wait_rollout(&api, "fw-soak", "soaking", |r| {
        has(r, "Progressing", "True", "Soaking")
    })
    .await;
    op.sigkill();
    let wave1 = r.status.expect("status").waves[0].clone();
    let soak_until = micros(wave1.soak_until.as_ref().expect("soakUntil"));
    assert_eq!(
        emu.writes().len(),
        80,
        "only wave 1 written before the kill"
    );

    let _op = Operator::start(cp, &ns, &[]).await;
    let r = wait_rollout(&api, "fw-soak", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let s = r.status.expect("status");
    assert_eq!((s.totals.targeted, s.totals.succeeded), (200, 200));
    // Wave 1's times survived the restart.
    assert_eq!(s.waves[0].completed_at, wave1.completed_at);
    assert_eq!(s.waves[0].soak_until, wave1.soak_until);
    let ids = identities("dev-", 200);
    let order = rollout_order("soak", &ids);
    let records = emu.write_records();
    let first_of_wave2 = order[80..]
        .iter()
        .filter_map(|id| records.get(id).map(|w| w[0].at))
        .min()
        .expect("wave 2 written");
    assert!(
        first_of_wave2 >= soak_until,
        "wave 2 written at {first_of_wave2} µs, before the soak ended at {soak_until} µs"
    );
    assert_written_once(&emu, &ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_an_auto_pause_it_stays_paused_until_resumed() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-kill-paused").await;
    // 3 devices fail to install; the order seed puts all of them in wave 1 (50 devices), so
    // wave 1 trips the 5 % threshold and wave 2 has no failure.
    let ids: Vec<String> = [identities("ok-", 197), identities("bad-", 3)].concat();
    let seed = (0..10_000)
        .map(|i| format!("paused-{i}"))
        .find(|seed| {
            rollout_order(seed, &ids)[..50]
                .iter()
                .filter(|id| id.starts_with("bad-"))
                .count()
                == 3
        })
        .expect("an order seed with every failing device in wave 1");
    let emu = Emu::start(&profile_of(
        54,
        &[fleet("ok-", 197, ""), fleet("bad-", 3, "install_error: 1")],
    ))
    .await;
    let mut op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let spec = format!(
        "  orderSeed: {seed}\n  waves:\n    - percent: 25\n    - percent: 100\n  policy:\n    failureThreshold:\n      percent: 5\n      minFinished: 10\n"
    );
    apply(cp, &ns, &rollout_for("fw-pause", "e2e", &spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    wait_rollout(&api, "fw-pause", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    op.sigkill();
    let at_kill = emu.writes();
    assert_eq!(at_kill.len(), 50, "only wave 1 written");

    // The restarted operator reads the pause back: it stays paused, writes nothing and does
    // not announce the pause again.
    let op = Operator::start(cp, &ns, &[]).await;
    more_listings(&op, 0.0, 2.0).await;
    let r = wait_rollout(&api, "fw-pause", "still paused", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.current_wave), Some(1));
    let after = listings(&op).await;
    more_listings(&op, after, 1.0).await;
    assert_eq!(
        emu.writes(),
        at_kill,
        "a write while paused after the restart"
    );
    let paused_events = event_reasons(cp, &ns, "fw-pause")
        .into_iter()
        .filter(|r| r == "AutoPaused")
        .count();
    assert_eq!(paused_events, 1, "the pause was announced again");

    // Resume: wave 2 runs (no failures there) and the rollout completes.
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "rollout.otau.dev/fw-pause",
            "otau.dev/resume=after-restart",
        ],
    );
    let r = wait_rollout(&api, "fw-pause", "Complete", |r| {
        has(r, "Complete", "True", "CompletedWithFailures")
    })
    .await;
    let s = r.status.expect("status");
    let t = &s.totals;
    assert_eq!(
        (t.targeted, t.succeeded, t.failed, t.pending),
        (200, 197, 3, 0)
    );
    // 197 / 200 = 98.5 %.
    assert_eq!(s.success_rate.as_deref(), Some("98.5%"));
    assert_written_once(&emu, &ids);
}
