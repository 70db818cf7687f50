//! Statuses written by the previous release, read by this one (docs/install.md "Upgrading"):
//! the fixtures in tests/fixtures/upgrade were written by the previous release's engine (its
//! spec, status, memory and ground-truth writes), before refusals and unreadable reports
//! counted toward the failure threshold. Each test drives the same fleet to the same point with
//! this release's engine under the previous counting (`countAborted`/`countInvalid` false:
//! the same decisions, so the same writes, which the test checks against the fixture), then
//! hands it the previous release's status and memory and the stored spec as this release reads
//! it (the new switches defaulted to true), and takes one step.
//!
//! How the fixtures were made: at the previous release's commit, a test calling
//! `drive(kind, spec(&[25, 100]))` (the code of `upgrade_drive.rs`, unchanged) for each of
//! `KINDS` wrote `{spec, generation, status, memory, now, writes}` as JSON to
//! `fixture_path(kind)`. Running that against this release would write this release's
//! statuses, so the generator is not kept here.

use std::collections::BTreeMap;

use crate::api::conditions::{COMPLETE, PAUSED, find_condition};
use crate::api::rollout::{RolloutPhase, RolloutSpec, RolloutStatus};
use crate::engine::tests::fleet::*;
use crate::engine::{Decision, EngineMemory, reason};

include!("upgrade_drive.rs");

/// One fixture: what the previous release stored.
struct Stored {
    spec: RolloutSpec,
    generation: i64,
    status: RolloutStatus,
    memory: EngineMemory,
    now: i64,
    writes: BTreeMap<String, Vec<u32>>,
}

fn stored(kind: &str) -> Stored {
    let text = std::fs::read_to_string(fixture_path(kind)).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let field = |name: &str| v[name].clone();
    Stored {
        spec: serde_json::from_value(field("spec")).expect("spec"),
        generation: field("generation").as_i64().expect("generation"),
        status: serde_json::from_value(field("status")).expect("status"),
        memory: serde_json::from_value(field("memory")).expect("memory"),
        now: field("now").as_i64().expect("now"),
        writes: serde_json::from_value(field("writes")).expect("writes"),
    }
}

/// The fleet at the fixture's moment, with the previous release's status and memory, under
/// `spec`; the ground truth is checked against the fixture.
fn upgraded(kind: &str, spec: RolloutSpec) -> (Run, Stored) {
    let old = stored(kind);
    // The spec as it was when the drive began (the `aborted` drive sets `abort` itself).
    let mut previous_counting = old.spec.clone();
    previous_counting.abort = false;
    previous_counting.policy.failure_threshold.count_aborted = false;
    previous_counting.policy.failure_threshold.count_invalid = false;
    let mut run = drive(kind, previous_counting);
    assert_eq!(
        writes(&run),
        old.writes,
        "{kind}: the fleet is not the fixture's"
    );
    assert_eq!(run.fleet.now, old.now);
    assert_eq!(run.generation, old.generation);
    run.spec = spec;
    run.status = old.status.clone();
    run.memory = old.memory.clone();
    (run, old)
}

fn step_writes_nothing(run: &mut Run, kind: &str) -> Decision {
    let before = writes(run);
    let d = run.step();
    assert!(d.notifications.is_empty(), "{kind}: {:?}", d.notifications);
    assert_eq!(writes(run), before);
    d
}

fn wave_times(status: &RolloutStatus) -> Vec<String> {
    status
        .waves
        .iter()
        .map(|w| format!("{:?} {:?} {:?}", w.started_at, w.completed_at, w.soak_until))
        .collect()
}

/// The stored spec has no `countAborted`/`countInvalid`: this release reads them as true.
#[test]
fn stored_specs_read_the_new_switches_as_true() {
    for kind in KINDS {
        let t = &stored(kind).spec.policy.failure_threshold;
        assert!(t.count_aborted && t.count_invalid, "{kind}");
    }
}

/// A Complete Rollout is judged no more: no write, no Event, the decisions kept; only the
/// reason says now that devices refused or sent garbage.
#[test]
fn a_complete_rollout_stays_complete_and_says_with_failures() {
    let old = stored("complete");
    assert_eq!(
        find_condition(&old.status.conditions, COMPLETE)
            .unwrap()
            .reason,
        "AllWavesSucceeded"
    );
    let (mut run, old) = upgraded("complete", old.spec.clone());
    let d = step_writes_nothing(&mut run, "complete");
    assert!(d.events.is_empty(), "{:?}", reasons(&d));
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
    let complete = find_condition(&d.status.conditions, COMPLETE).unwrap();
    assert_eq!(complete.reason, "CompletedWithFailures");
    assert_eq!(d.memory, old.memory);
    assert_eq!(wave_times(&d.status), wave_times(&old.status));
    assert_eq!(d.status.totals, old.status.totals);
}

/// An aborted Rollout stays aborted with its abort record; nothing is written.
#[test]
fn an_aborted_rollout_stays_aborted_with_its_record() {
    let old = stored("aborted");
    assert!(old.memory.aborted.is_some());
    let (mut run, old) = upgraded("aborted", old.spec.clone());
    let d = step_writes_nothing(&mut run, "aborted");
    assert_eq!(d.status.phase, Some(RolloutPhase::Aborted));
    assert_eq!(d.memory, old.memory);
    assert_eq!(wave_times(&d.status), wave_times(&old.status));
    assert!(!reasons(&d).contains(&reason::AUTO_PAUSED));
}

/// A Rollout mid-wave whose started waves hold refusals pauses under the new defaults (the
/// documented upgrade effect), writing nothing and keeping its wave records; with both
/// switches set to false (the documented way to avoid it) it goes on as before.
#[test]
fn a_rollout_mid_wave_pauses_under_the_new_counting_unless_switched_off() {
    let old = stored("mid-wave");
    let (mut run, old) = upgraded("mid-wave", old.spec.clone());
    let d = step_writes_nothing(&mut run, "mid-wave");
    assert_eq!(reasons(&d), vec![reason::AUTO_PAUSED]);
    let paused = find_condition(&d.status.conditions, PAUSED).unwrap();
    assert_eq!(
        (paused.status.as_str(), paused.reason.as_str()),
        ("True", "FailureThresholdExceeded")
    );
    assert!(
        paused
            .message
            .starts_with("waves 1-2: 3 of 10 finished devices failed (30.0%)"),
        "{paused:?}"
    );
    assert_eq!(wave_times(&d.status), wave_times(&old.status));
    assert_eq!(d.status.current_wave, old.status.current_wave);

    let mut lenient = old.spec.clone();
    lenient.policy.failure_threshold.count_aborted = false;
    lenient.policy.failure_threshold.count_invalid = false;
    let (mut run, old) = upgraded("mid-wave", lenient);
    let d = step_writes_nothing(&mut run, "mid-wave, previous counting");
    assert!(d.events.is_empty(), "{:?}", reasons(&d));
    assert_eq!(d.status.phase, Some(RolloutPhase::Progressing));
    assert_eq!(d.memory, old.memory);
    assert_eq!(wave_times(&d.status), wave_times(&old.status));
    // The wave 2 devices finish: the rollout completes as the previous release would have,
    // with failures.
    run.wait(2 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(
        find_condition(&d.status.conditions, COMPLETE)
            .unwrap()
            .reason,
        "CompletedWithFailures"
    );
}

/// The previous release wrote no `rollout` marker: a device holding its manifest is this
/// Rollout's notified device all the same. With every written value stripped of its marker,
/// each stored Rollout decides exactly as over the marked values: the same writes (none to a
/// device already written), the same counts.
#[test]
fn devices_holding_the_previous_releases_unmarked_manifest_are_never_rewritten() {
    use crate::otau::Manifest;
    for kind in KINDS {
        let old = stored(kind);
        let (mut run, _) = upgraded(kind, old.spec.clone());
        let marked = run.decide();
        let mut unmarked = 0;
        for c in run
            .fleet
            .devices
            .iter_mut()
            .filter_map(|d| d.config.as_mut())
        {
            for value in [c.set.as_mut(), c.reported.as_mut()].into_iter().flatten() {
                if let Ok(m) = Manifest::parse(value) {
                    assert!(m.rollout.is_some(), "{kind}: this release marks its writes");
                    *value = m.with_rollout(None).to_json();
                    unmarked += 1;
                }
            }
        }
        assert!(unmarked > 0, "{kind}: the fleet holds written values");
        let d = run.decide();
        let written = writes(&run);
        for n in &d.notifications {
            assert!(
                written[&n.identity].is_empty(),
                "{kind}: {} written again",
                n.identity
            );
        }
        assert_eq!(d.notifications, marked.notifications, "{kind}");
        assert_eq!(d.status.totals, marked.status.totals, "{kind}");
    }
}
