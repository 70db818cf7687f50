//! Success records: a device that re-runs the update it installed gets the `otau-installed`
//! tag once, and an operator that starts again (a new index from the platform alone) still
//! counts it succeeded while it re-runs.

use super::fleet::{Fleet, MINUTE, Run, SEED, spec};
use crate::engine::DeviceIndex;

/// Three devices, all notified and succeeded, on an index the "operator" keeps.
fn installed_fleet(record_reruns: bool) -> (Run, DeviceIndex) {
    let mut s = spec(&[100]);
    s.policy.record_reruns = record_reruns;
    let mut run = Run::new(s, Fleet::ordered(3, SEED, |_, _| {}));
    let mut index = run.index();
    let d = run.step_on(&mut index);
    assert_eq!(d.notifications.len(), 3);
    run.wait(MINUTE);
    let d = run.step_on(&mut index);
    assert_eq!(d.status.totals.succeeded, 3, "{:?}", d.status.totals);
    assert!(d.success_records.is_empty(), "nothing re-runs yet");
    (run, index)
}

/// A minute later, the first device starts the update again; its identity.
fn rerun_first(run: &mut Run) -> String {
    let first = run.fleet.devices[0].identity.clone();
    run.wait(MINUTE);
    run.fleet.rerun(&first);
    first
}

#[test]
fn a_rerun_is_recorded_once_and_counts_succeeded_after_a_restart() {
    let (mut run, mut index) = installed_fleet(true);
    let first = rerun_first(&mut run);
    let d = run.step_on(&mut index);
    assert_eq!(
        d.success_records,
        vec![first.clone()],
        "recorded at first sight"
    );
    assert_eq!((d.status.totals.succeeded, d.status.totals.reruns), (3, 1));
    let tag = index.success_record().clone();
    assert!(run.fleet.device(&first).tags.contains(&tag));
    assert!(run.step_on(&mut index).success_records.is_empty(), "once");

    // A restart: an index built from the platform alone, the device still mid-re-run.
    let d = run.step();
    let t = &d.status.totals;
    assert_eq!(
        (t.succeeded, t.reruns, t.in_progress),
        (3, 1, 0),
        "the record keeps its success: {t:?}"
    );
    assert!(
        d.success_records.is_empty(),
        "the record is on the platform"
    );
    assert!(d.notifications.is_empty());
}

#[test]
fn without_records_a_restart_mid_rerun_counts_the_device_in_progress() {
    let (mut run, mut index) = installed_fleet(false);
    rerun_first(&mut run);
    let d = run.step_on(&mut index);
    assert!(
        d.success_records.is_empty(),
        "recordReruns: false writes no tag"
    );
    assert_eq!(
        d.status.totals.reruns, 1,
        "still a re-run while the index remembers"
    );
    let t = run.step().status.totals;
    assert_eq!((t.succeeded, t.in_progress), (2, 1), "{t:?}");
}

#[test]
fn a_record_removed_on_the_platform_is_written_again_and_a_foreign_record_means_nothing() {
    let (mut run, mut index) = installed_fleet(true);
    let first = rerun_first(&mut run);
    assert_eq!(run.step_on(&mut index).success_records, vec![first.clone()]);
    let tag = index.success_record().clone();
    // Someone removes the tag: the next listing shows it gone, and it is written again.
    run.fleet.devices[0].tags.retain(|t| t != &tag);
    assert_eq!(run.step_on(&mut index).success_records, vec![first.clone()]);

    // Another Rollout's (or version's) record does not make a device succeeded.
    let second = run.fleet.devices[1].identity.clone();
    let other = crate::engine::success_record("tests/other", super::fleet::VERSION);
    assert_ne!(other, tag);
    run.fleet.devices[1].tags.push(other);
    run.fleet.rerun(&second);
    let t = run.step().status.totals;
    assert_eq!((t.succeeded, t.in_progress), (2, 1), "{t:?}");
}

/// Three installed devices; `edit(spec, first device)` is applied and stepped (on an index
/// built afresh for the edited targets), then the first device re-runs: that step's decision.
fn rerun_after_an_edit(
    edit: impl FnOnce(&mut crate::api::rollout::RolloutSpec, &str),
) -> crate::engine::Decision {
    let (mut run, _) = installed_fleet(true);
    let first = run.fleet.devices[0].identity.clone();
    run.edit(|s| edit(s, &first));
    let mut index = run.index();
    run.step_on(&mut index);
    run.wait(MINUTE);
    run.fleet.rerun(&first);
    run.step_on(&mut index)
}

#[test]
fn an_aborted_rollout_writes_no_record() {
    let d = rerun_after_an_edit(|s, _| s.abort = true);
    assert!(
        d.success_records.is_empty(),
        "aborted: nothing more is written"
    );
    assert_eq!(d.status.totals.reruns, 1);
}

#[test]
fn an_excluded_device_that_re_runs_gets_no_record() {
    let d = rerun_after_an_edit(|s, first| {
        s.targets.exclude = Some(crate::api::rollout::Exclusions {
            identities: vec![first.to_owned()],
            ..Default::default()
        })
    });
    assert!(
        d.success_records.is_empty(),
        "an exclusion stops every write"
    );
    assert_eq!((d.status.totals.succeeded, d.status.totals.reruns), (3, 1));
}
