//! Devices that hold another manifest when their turn comes (docs/rollouts.md, "Busy and
//! foreign devices"): scenarios and properties over the fake fleet.

use proptest::prelude::*;

use crate::api::conditions::{COMPLETE, TRUE, find_condition};
use crate::api::rollout::{BusyDevices, ForeignManifests};
use crate::engine::foreign_finished;
use crate::otau::{Manifest, Report, Status};

use super::fleet::{Fleet, MINUTE, Run, SEED, SimDevice, T0, manifest, spec};

/// The previous version of the package, rolled out earlier by a package of the connector.
fn v1() -> Manifest {
    Manifest::url_list("1.0", "Firmware", "", vec!["fw-1.0.bin".into()])
}

/// A manifest nobody on the connector made (e.g. deployed from the ExoSense UI).
fn foreign() -> Manifest {
    Manifest::url_list("7.7", "Vendor tool", "", vec!["tool-7.7.bin".into()])
}

/// The device timeout of [`spec`].
const TIMEOUT: i64 = 10 * MINUTE;

fn completed(run: &Run) -> bool {
    find_condition(&run.status.conditions, COMPLETE).is_some_and(|c| c.status == TRUE)
}

/// Steps the run, a minute at a time, until it completes (at most `steps`); returns every
/// notification with the step's time.
fn run_to_completion(run: &mut Run, steps: usize) -> Vec<(i64, String)> {
    let mut written = Vec::new();
    for _ in 0..steps {
        let d = run.step();
        written.extend(
            d.notifications
                .iter()
                .map(|n| (run.fleet.now, n.identity.clone())),
        );
        if completed(run) {
            break;
        }
        run.wait(MINUTE);
    }
    written
}

#[test]
fn an_upgrade_from_the_previous_version_writes_every_device_once() {
    // v1 was rolled out by this operator: its manifest is still in config_otau and every
    // device reported INSTALLED_VERSION 1.0 (some with an attempt of a retry).
    let done = Report::new("1.0", Status::parse("INSTALLED_VERSION"), "").to_json();
    let fleet = Fleet::ordered(30, SEED, |p, d| {
        let attempt = 1 + (p % 3) as u32;
        d.config = Some(crate::engine::ResourceState::set(
            v1().with_attempt(attempt).to_json(),
            T0 - 60 * MINUTE,
        ));
        d.report = Some(crate::engine::ResourceState::written_by_device(
            done.clone(),
            T0 - 50 * MINUTE,
        ));
    });
    let mut run = Run::new(spec(&[10, 50, 100]), fleet);
    run.connector_manifests = vec![v1(), manifest()];
    let first = run.decide();
    assert_eq!(first.status.totals.foreign, 0, "{:?}", first.status.totals);
    assert_eq!(first.status.totals.busy, 0, "{:?}", first.status.totals);
    run_to_completion(&mut run, 200);
    assert!(completed(&run), "{:?}", run.status.conditions);
    for d in &run.fleet.devices {
        assert_eq!(d.writes, vec![1], "{}", d.identity);
    }
    assert_eq!(run.status.totals.succeeded, 30);
}

#[test]
fn a_busy_device_waits_counted_busy_and_is_written_when_its_update_ends() {
    let other = v1();
    let ends = T0 + 5 * MINUTE;
    let fleet = Fleet::ordered(4, SEED, |p, d| {
        if p == 0 {
            *d = SimDevice::new(d.identity.clone()).installing_other(&other, T0 - MINUTE, ends);
        }
    });
    let busy_id = fleet.devices[0].identity.clone();
    let mut run = Run::new(spec(&[100]), fleet);
    run.connector_manifests = vec![other.clone(), manifest()];
    let first = run.step();
    assert_eq!(first.status.totals.busy, 1, "{:?}", first.status.totals);
    assert_eq!(first.notifications.len(), 3);
    assert!(first.notifications.iter().all(|n| n.identity != busy_id));
    // The step asks to look again when the wait would end by time alone.
    assert!(first.requeue.at.is_some());
    let written = run_to_completion(&mut run, 60);
    let (at, _) = written
        .iter()
        .find(|(_, id)| *id == busy_id)
        .expect("the busy device is written once its update ended");
    assert!(*at >= ends, "written at {at}, its update ended at {ends}");
    assert_eq!(run.fleet.device(&busy_id).writes, vec![1]);
    assert_eq!(run.status.totals.succeeded, 4);
    assert_eq!(run.status.totals.busy, 0);
}

#[test]
fn take_over_writes_a_busy_device_at_once() {
    let fleet = Fleet::ordered(2, SEED, |p, d| {
        if p == 0 {
            *d = SimDevice::new(d.identity.clone()).installing_other(
                &v1(),
                T0 - MINUTE,
                T0 + 60 * MINUTE,
            );
        }
    });
    let mut run = Run::new(spec(&[100]), fleet);
    run.connector_manifests = vec![v1(), manifest()];
    run.spec.policy.busy_devices = BusyDevices::TakeOver;
    let first = run.step();
    assert_eq!(first.notifications.len(), 2);
    assert_eq!(first.status.totals.busy, 0);
}

#[test]
fn foreign_devices_are_counted_and_written_or_skipped_by_policy() {
    let done = Report::new("7.7", Status::parse("INSTALLED_VERSION"), "").to_json();
    let make = || {
        Fleet::ordered(6, SEED, |p, d| {
            if p % 2 == 0 {
                d.config = Some(crate::engine::ResourceState::set(
                    foreign().to_json(),
                    T0 - 60 * MINUTE,
                ));
                d.report = Some(crate::engine::ResourceState::written_by_device(
                    done.clone(),
                    T0 - 50 * MINUTE,
                ));
            }
        })
    };
    // Notify (default): counted foreign until written, then like any device.
    let mut run = Run::new(spec(&[100]), make());
    let before = run.decide();
    assert_eq!(before.status.totals.foreign, 0, "written in the same step");
    assert_eq!(before.notifications.len(), 6);
    let mut held = Run::new(spec(&[50, 100]), make());
    held.spec.paused = true;
    let paused = held.decide();
    assert_eq!(
        paused.status.totals.foreign, 3,
        "{:?}",
        paused.status.totals
    );
    // Not finished under Notify: they still hold their wave.
    let notify = ForeignManifests::Notify;
    assert_eq!(foreign_finished(&paused.status.totals, notify), 0);
    run_to_completion(&mut run, 30);
    assert!(run.fleet.devices.iter().all(|d| d.writes == vec![1]));
    // Skip: counted foreign, never written, finished.
    let mut skip = Run::new(spec(&[100]), make());
    skip.spec.policy.foreign_manifests = ForeignManifests::Skip;
    run_to_completion(&mut skip, 30);
    assert!(completed(&skip), "{:?}", skip.status.conditions);
    assert_eq!(skip.status.totals.foreign, 3);
    assert_eq!(skip.status.totals.succeeded, 3);
    // Finished under Skip: with the succeeded and skipped devices they are every target of the
    // completed Rollout (what the fleet-progress panel adds up).
    let t = &skip.status.totals;
    let finished = t.finished() + t.skipped + foreign_finished(t, ForeignManifests::Skip);
    assert_eq!(
        (foreign_finished(t, ForeignManifests::Skip), finished),
        (3, t.targeted)
    );
    for (p, d) in skip.fleet.devices.iter().enumerate() {
        let expected: Vec<u32> = if p % 2 == 0 { vec![] } else { vec![1] };
        assert_eq!(d.writes, expected, "{}", d.identity);
    }
}

/// What a device of the property test holds when the Rollout starts.
#[derive(Clone, Debug)]
enum Holds {
    /// Nothing.
    Nothing,
    /// Another manifest of the connector, its update running for this many minutes more.
    Produced(i64),
    /// A foreign manifest, its update running for this many minutes more (0: already over).
    Foreign(i64),
}

fn holds() -> impl Strategy<Value = Holds> {
    prop_oneof![
        2 => Just(Holds::Nothing),
        2 => (0i64..30).prop_map(Holds::Produced),
        2 => (0i64..30).prop_map(Holds::Foreign),
    ]
}

/// When device `d` stops being busy: its update ends, or stalls a device timeout after its
/// progress report (at `T0 - MINUTE + 1`).
fn not_busy_from(h: &Holds) -> i64 {
    let stall = T0 - MINUTE + 1 + TIMEOUT;
    match h {
        Holds::Nothing => T0,
        Holds::Produced(m) | Holds::Foreign(m) => (T0 + m * MINUTE).min(stall),
    }
}

fn fleet_holding(states: &[Holds], n: usize) -> Fleet {
    Fleet::ordered(n, SEED, |p, d| {
        let started = T0 - MINUTE;
        match &states[p % states.len()] {
            Holds::Nothing => {}
            Holds::Produced(m) => {
                *d = SimDevice::new(d.identity.clone()).installing_other(
                    &v1(),
                    started,
                    T0 + m * MINUTE,
                );
            }
            Holds::Foreign(m) => {
                *d = SimDevice::new(d.identity.clone()).installing_other(
                    &foreign(),
                    started,
                    T0 + m * MINUTE,
                );
            }
        }
    })
}

fn check_busy_and_foreign(
    n: usize,
    states: Vec<Holds>,
    percents: Vec<i32>,
    take_over: bool,
    skip: bool,
    waits: Vec<i64>,
) -> Result<(), TestCaseError> {
    let mut fleet_spec = spec(&percents);
    if take_over {
        fleet_spec.policy.busy_devices = BusyDevices::TakeOver;
    }
    if skip {
        fleet_spec.policy.foreign_manifests = ForeignManifests::Skip;
    }
    let mut run = Run::new(fleet_spec, fleet_holding(&states, n));
    run.connector_manifests = vec![v1(), manifest()];
    let held_by = |p: usize| &states[p % states.len()];
    let position: std::collections::HashMap<String, usize> = run
        .fleet
        .devices
        .iter()
        .enumerate()
        .map(|(p, d)| (d.identity.clone(), p))
        .collect();
    for wait in waits.iter().cycle().take(80) {
        let d = run.step();
        let t = &d.status.totals;
        let sum = t.pending
            + t.notified
            + t.in_progress
            + t.succeeded
            + t.failed
            + t.aborted
            + t.timed_out
            + t.skipped
            + t.invalid
            + t.busy
            + t.foreign;
        prop_assert_eq!(sum, t.targeted);
        for note in &d.notifications {
            let p = position[&note.identity];
            let h = held_by(p);
            // Under Wait, a device is never written while its other update runs.
            if !take_over {
                prop_assert!(
                    run.fleet.now >= not_busy_from(h),
                    "{} written at {} while busy until {} ({h:?})",
                    note.identity,
                    run.fleet.now - T0,
                    not_busy_from(h) - T0
                );
            }
            // Under Skip, a foreign device is never written.
            prop_assert!(
                !(skip && matches!(h, Holds::Foreign(_))),
                "skipped foreign device {} written",
                note.identity
            );
        }
        if completed(&run) {
            break;
        }
        run.wait(wait * MINUTE);
    }
    prop_assert!(completed(&run), "not complete: {:?}", run.status.conditions);
    for (p, d) in run.fleet.devices.iter().enumerate() {
        let expected: Vec<u32> = match held_by(p) {
            Holds::Foreign(_) if skip => vec![],
            _ => vec![1],
        };
        prop_assert_eq!(&d.writes, &expected, "{} ({:?})", d.identity, held_by(p));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_261_206),
        ..ProptestConfig::default()
    })]

    /// A busy device is never written while busy under `Wait`; every device, foreign ones
    /// included, is written exactly once (never, for a foreign one under `Skip`), and the
    /// counts, busy and foreign included, always add up to the targets.
    #[test]
    fn busy_devices_wait_and_foreign_devices_are_written_once(
        n in 1usize..25,
        states in prop::collection::vec(holds(), 1..8),
        percents in prop_oneof![Just(vec![100]), Just(vec![20, 100]), Just(vec![10, 40, 100])],
        take_over in any::<bool>(),
        skip in any::<bool>(),
        waits in prop::collection::vec(1i64..6, 1..6),
    ) {
        check_busy_and_foreign(n, states, percents, take_over, skip, waits)?;
    }
}

#[test]
fn a_complete_rollout_never_writes_the_devices_a_newer_rollout_took_over() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(8, SEED, |_, _| {}));
    run_to_completion(&mut run, 30);
    assert!(completed(&run), "{:?}", run.status.conditions);
    // A newer Rollout of the next version wrote every device, and they installed it.
    let next = Manifest::url_list("3.0", "Firmware", "", vec!["fw-3.0.bin".into()]);
    let done = Report::new("3.0", Status::parse("INSTALLED_VERSION"), "").to_json();
    let now = run.fleet.now;
    for d in &mut run.fleet.devices {
        d.config = Some(crate::engine::ResourceState::set(next.to_json(), now));
        d.report = Some(crate::engine::ResourceState::written_by_device(
            done.clone(),
            now + 1,
        ));
    }
    run.wait(MINUTE);
    run.connector_manifests = vec![manifest(), next.clone()];
    // Without knowing the newer Rollout, the complete one would take every device back.
    assert_eq!(run.decide().notifications.len(), 8);
    run.newer_rollout_manifests = vec![next];
    let d = run.step();
    assert!(d.notifications.is_empty(), "{:?}", d.notifications);
    assert_eq!(d.status.totals.skipped, 8, "{:?}", d.status.totals);
    assert!(completed(&run), "{:?}", run.status.conditions);
    assert!(run.fleet.devices.iter().all(|d| d.writes == vec![1]));
}
