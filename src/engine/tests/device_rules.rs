//! Table tests of the per-device rules ([`crate::engine::evaluate`]).

use crate::engine::{
    DeviceEntry, DeviceState, EvalContext, ReportCode, SetKind, busy_until, evaluate,
};

const SET_AT: i64 = 1_000;
const TIMEOUT: i64 = 500;

fn ctx(
    now: i64,
    max_attempts: u8,
    retries_allowed: bool,
    rollout_started_at: Option<i64>,
) -> EvalContext {
    EvalContext {
        now,
        timeout: TIMEOUT,
        timeout_total: 4 * TIMEOUT,
        max_attempts,
        retries_allowed,
        rollout_started_at,
        rollout_created_at: None,
        take_over_busy: false,
        skip_foreign: false,
    }
}

#[test]
fn device_state_table() {
    use DeviceState::*;
    use ReportCode as R;
    use SetKind as S;
    let fresh = SET_AT + 10;
    let stale = SET_AT - 10;
    let before_timeout = SET_AT + TIMEOUT - 1;
    let after_timeout = SET_AT + TIMEOUT;
    // A progress report for the attempt starts the device timeout again.
    let after_progress_timeout = fresh + TIMEOUT;
    // (set kind, attempt, report, report_at, now, max attempts, retries allowed, wave start, expected)
    type Case = (S, u8, R, i64, i64, u8, bool, Option<i64>, DeviceState);
    let cases: Vec<Case> = vec![
        // Not notified.
        (S::Absent, 0, R::None, 0, SET_AT, 1, true, None, Pending),
        (
            S::Absent,
            0,
            R::Succeeded,
            fresh,
            SET_AT,
            1,
            true,
            None,
            Skipped,
        ),
        (
            S::OtherManifest,
            0,
            R::CurrentVersion,
            fresh,
            SET_AT,
            1,
            true,
            None,
            Pending,
        ),
        (
            S::OtherManifest,
            0,
            R::InProgress,
            fresh,
            SET_AT,
            1,
            true,
            None,
            Pending,
        ),
        (
            S::Absent,
            0,
            R::Malformed,
            fresh,
            SET_AT,
            1,
            true,
            None,
            Pending,
        ),
        (
            S::Absent,
            0,
            R::InstallError,
            fresh,
            SET_AT,
            1,
            true,
            None,
            Pending,
        ),
        // Notified, reports for this attempt.
        (
            S::Ours,
            1,
            R::None,
            0,
            before_timeout,
            1,
            true,
            None,
            Notified,
        ),
        (
            S::Ours,
            1,
            R::CurrentVersion,
            stale,
            before_timeout,
            1,
            true,
            None,
            Notified,
        ),
        (
            S::Ours,
            1,
            R::OtherVersion,
            fresh,
            before_timeout,
            1,
            true,
            None,
            Notified,
        ),
        (
            S::Ours,
            1,
            R::InProgress,
            fresh,
            before_timeout,
            1,
            true,
            None,
            InProgress,
        ),
        (
            S::Ours,
            1,
            R::InProgressUnknown,
            fresh,
            before_timeout,
            1,
            true,
            None,
            InProgress,
        ),
        (
            S::Ours,
            1,
            R::Succeeded,
            fresh,
            before_timeout,
            1,
            true,
            None,
            Succeeded,
        ),
        (
            S::Ours,
            1,
            R::Succeeded,
            stale,
            after_timeout,
            1,
            true,
            None,
            Succeeded,
        ),
        (
            S::Ours,
            1,
            R::InstallError,
            fresh,
            before_timeout,
            1,
            true,
            None,
            Failed,
        ),
        (
            S::Ours,
            1,
            R::TestError,
            fresh,
            before_timeout,
            2,
            true,
            None,
            RetryDue { next: 2 },
        ),
        (
            S::Ours,
            2,
            R::DownloadError,
            fresh,
            before_timeout,
            2,
            true,
            None,
            Failed,
        ),
        (
            S::Ours,
            1,
            R::InstallError,
            fresh,
            before_timeout,
            3,
            false,
            None,
            Failed,
        ),
        (
            S::Ours,
            1,
            R::Aborted,
            fresh,
            before_timeout,
            3,
            true,
            None,
            Aborted,
        ),
        (
            S::Ours,
            1,
            R::Malformed,
            fresh,
            before_timeout,
            3,
            true,
            None,
            Invalid,
        ),
        // A final report older than the set value is about an earlier attempt.
        (
            S::Ours,
            2,
            R::InstallError,
            stale,
            before_timeout,
            3,
            true,
            None,
            Notified,
        ),
        (
            S::Ours,
            2,
            R::Aborted,
            stale,
            before_timeout,
            3,
            true,
            None,
            Notified,
        ),
        (
            S::Ours,
            2,
            R::Malformed,
            stale,
            before_timeout,
            3,
            true,
            None,
            Notified,
        ),
        (
            S::Ours,
            2,
            R::InstallError,
            stale,
            after_timeout,
            3,
            true,
            None,
            RetryDue { next: 3 },
        ),
        // Timeouts.
        (
            S::Ours,
            1,
            R::None,
            0,
            after_timeout,
            1,
            true,
            None,
            TimedOut,
        ),
        (
            S::Ours,
            1,
            R::InProgress,
            fresh,
            after_progress_timeout,
            1,
            true,
            None,
            TimedOut,
        ),
        (
            S::Ours,
            1,
            R::InProgress,
            fresh,
            after_progress_timeout,
            2,
            true,
            None,
            RetryDue { next: 2 },
        ),
        (
            S::Ours,
            1,
            R::InProgress,
            fresh,
            after_progress_timeout,
            2,
            false,
            None,
            TimedOut,
        ),
        // A literal ACK (not a manifest).
        (
            S::Foreign,
            0,
            R::None,
            0,
            before_timeout,
            3,
            true,
            Some(SET_AT - 1),
            Notified,
        ),
        (
            S::Foreign,
            0,
            R::None,
            0,
            before_timeout,
            3,
            true,
            Some(SET_AT + 1),
            Pending,
        ),
        (
            S::Foreign,
            0,
            R::None,
            0,
            before_timeout,
            3,
            true,
            None,
            Pending,
        ),
        (
            S::Foreign,
            0,
            R::InProgress,
            fresh,
            before_timeout,
            3,
            true,
            None,
            InProgress,
        ),
        (
            S::Foreign,
            0,
            R::InstallError,
            fresh,
            before_timeout,
            3,
            true,
            None,
            Failed,
        ),
        (
            S::Foreign,
            0,
            R::None,
            0,
            after_timeout,
            3,
            true,
            Some(SET_AT),
            TimedOut,
        ),
        (
            S::Foreign,
            0,
            R::Succeeded,
            fresh,
            before_timeout,
            3,
            true,
            Some(SET_AT),
            Succeeded,
        ),
        (
            S::Foreign,
            0,
            R::Succeeded,
            fresh,
            before_timeout,
            3,
            true,
            None,
            Skipped,
        ),
    ];
    for (i, (kind, attempt, report, report_at, now, max, retries, start, expected)) in
        cases.into_iter().enumerate()
    {
        let entry = DeviceEntry::bare(kind, attempt, SET_AT, report, report_at);
        let got = evaluate(&entry, &ctx(now, max, retries, start));
        assert_eq!(
            got, expected,
            "case {i}: {kind:?} a{attempt} {report:?}@{report_at} now={now}"
        );
    }
}

#[test]
fn finished_in_flight_and_notified_partition_the_states() {
    use DeviceState::*;
    let table = [
        (Pending, false, false, false),
        (RetryDue { next: 2 }, false, false, true),
        (Notified, false, true, true),
        (InProgress, false, true, true),
        (Succeeded, true, false, true),
        (Rerun, true, false, true),
        (Failed, true, false, true),
        (Aborted, true, false, true),
        (TimedOut, true, false, true),
        (Skipped, true, false, false),
        (Invalid, true, false, true),
        (Busy, false, false, false),
        (Foreign, false, false, false),
        (ForeignSkipped, true, false, false),
        (Superseded, true, false, false),
    ];
    for (state, finished, in_flight, notified) in table {
        assert_eq!(state.is_finished(), finished, "{state:?}");
        assert_eq!(state.is_in_flight(), in_flight, "{state:?}");
        assert_eq!(state.is_notified(), notified, "{state:?}");
    }
}

/// The device timeout, the total cap and the attribution as the table above, for one entry.
fn state(entry: DeviceEntry, now: i64, max_attempts: u8, started: Option<i64>) -> DeviceState {
    evaluate(&entry, &ctx(now, max_attempts, true, started))
}

#[test]
fn a_late_ack_does_not_hide_the_failure_of_the_attempt_it_acknowledges() {
    use ReportCode as R;
    let started = Some(SET_AT - 100);
    // Written at SET_AT, failed at +10, acked at +20: the one timestamp is the ack's.
    let failed = DeviceEntry::bare(SetKind::Ours, 1, SET_AT + 20, R::InstallError, SET_AT + 10);
    // The index saw the write before the ack and kept its time.
    let known = failed.with_ack(true, true);
    let mut remembered = known;
    remembered.set_at = SET_AT;
    assert_eq!(
        state(remembered, SET_AT + 30, 1, started),
        DeviceState::Failed
    );
    // First seen acknowledged (a restarted operator): attempt 1 takes the rollout's start.
    let restarted = failed.with_ack(true, false);
    assert_eq!(
        state(restarted, SET_AT + 30, 1, started),
        DeviceState::Failed
    );
    assert_eq!(
        state(restarted, SET_AT + 30, 2, started),
        DeviceState::RetryDue { next: 2 }
    );
    // A failure from before the rollout started is still not this attempt's.
    let old = DeviceEntry::bare(SetKind::Ours, 1, SET_AT + 20, R::InstallError, SET_AT - 200)
        .with_ack(true, false);
    assert_eq!(state(old, SET_AT + 30, 1, started), DeviceState::Notified);
    // Not acknowledged: the timestamp is the write's, as before.
    let unacked = DeviceEntry::bare(SetKind::Ours, 1, SET_AT + 20, R::InstallError, SET_AT + 10);
    assert_eq!(
        state(unacked, SET_AT + 30, 1, started),
        DeviceState::Notified
    );
}

#[test]
fn a_retry_first_seen_acknowledged_leaves_the_failure_before_the_ack_to_the_earlier_attempt() {
    use ReportCode as R;
    let started = Some(SET_AT - 100);
    // Attempt 2 acked at SET_AT; the INSTALL_ERROR on record (+-10) called for it.
    let retry = DeviceEntry::bare(SetKind::Ours, 2, SET_AT, R::InstallError, SET_AT - 10)
        .with_ack(true, false);
    assert_eq!(state(retry, SET_AT + 30, 3, started), DeviceState::Notified);
    // ...and its own silence times out.
    assert_eq!(
        state(retry, SET_AT + TIMEOUT, 3, started),
        DeviceState::RetryDue { next: 3 }
    );
    // With its write time known (written at SET_AT - 50, acked later), the same report after
    // the write is the retry's failure.
    let mut known = retry.with_ack(true, true);
    known.set_at = SET_AT - 50;
    assert_eq!(
        state(known, SET_AT + 30, 3, started),
        DeviceState::RetryDue { next: 3 }
    );
}

#[test]
fn a_device_that_installed_the_target_stays_succeeded_and_a_rerun_is_shown() {
    use ReportCode as R;
    let installed = |report, at| {
        DeviceEntry::bare(SetKind::Ours, 1, SET_AT, report, at)
            .with_ack(true, true)
            .with_installed()
    };
    let late = SET_AT + 100 * TIMEOUT;
    for report in [
        R::InProgress,
        R::InProgressUnknown,
        R::InstallError,
        R::OtherError,
        R::Aborted,
        R::Malformed,
    ] {
        assert_eq!(
            state(installed(report, SET_AT + 10), late, 3, None),
            DeviceState::Rerun,
            "{report:?}"
        );
    }
    for report in [R::Succeeded, R::CurrentVersion, R::OtherVersion, R::None] {
        assert_eq!(
            state(installed(report, SET_AT + 10), late, 3, None),
            DeviceState::Succeeded,
            "{report:?}"
        );
    }
    // Another value replaced the manifest since (a package applied out of band): still
    // succeeded for this rollout, so it is never written again.
    let mut replaced = installed(R::OtherVersion, SET_AT + 10);
    replaced.set_kind = SetKind::OtherManifest;
    assert_eq!(state(replaced, late, 3, None), DeviceState::Succeeded);
    // Never installed: the same progress report is in progress, then times out.
    let running = DeviceEntry::bare(SetKind::Ours, 1, SET_AT, R::InProgress, SET_AT + 10);
    assert_eq!(
        state(running, SET_AT + 20, 1, None),
        DeviceState::InProgress
    );
    assert_eq!(state(running, late, 1, None), DeviceState::TimedOut);
}

#[test]
fn an_undocumented_error_status_fails_the_attempt() {
    let entry = DeviceEntry::bare(
        SetKind::Ours,
        1,
        SET_AT,
        ReportCode::OtherError,
        SET_AT + 10,
    );
    assert_eq!(state(entry, SET_AT + 20, 1, None), DeviceState::Failed);
    assert_eq!(
        state(entry, SET_AT + 20, 2, None),
        DeviceState::RetryDue { next: 2 }
    );
}

#[test]
fn progress_restarts_the_device_timeout_up_to_the_total_cap() {
    use crate::engine::times_out_at;
    let c = ctx(SET_AT, 1, true, None);
    let silent = DeviceEntry::bare(SetKind::Ours, 1, SET_AT, ReportCode::None, 0);
    assert_eq!(times_out_at(&silent, &c), SET_AT + TIMEOUT);
    let progress = |at| DeviceEntry::bare(SetKind::Ours, 1, SET_AT, ReportCode::InProgress, at);
    assert_eq!(
        times_out_at(&progress(SET_AT + 300), &c),
        SET_AT + 300 + TIMEOUT
    );
    // The cap: 4 × TIMEOUT after the write, however late the progress.
    assert_eq!(
        times_out_at(&progress(SET_AT + 3 * TIMEOUT), &c),
        SET_AT + 4 * TIMEOUT
    );
    assert_eq!(
        state(
            progress(SET_AT + 3 * TIMEOUT),
            SET_AT + 4 * TIMEOUT - 1,
            1,
            None
        ),
        DeviceState::InProgress
    );
    assert_eq!(
        state(
            progress(SET_AT + 3 * TIMEOUT),
            SET_AT + 4 * TIMEOUT,
            1,
            None
        ),
        DeviceState::TimedOut
    );
    // A progress report older than the attempt (the previous attempt's) does not count.
    assert_eq!(times_out_at(&progress(SET_AT - 5), &c), SET_AT + TIMEOUT);
    // An ack does not restart it: the write time is kept.
    let acked = progress(0).with_ack(true, true);
    assert_eq!(times_out_at(&acked, &c), SET_AT + TIMEOUT);
}

#[test]
fn a_device_excluded_after_its_notification_keeps_its_outcome_and_gets_no_retry() {
    let failed = DeviceEntry::bare(
        SetKind::Ours,
        1,
        SET_AT,
        ReportCode::InstallError,
        SET_AT + 10,
    );
    assert_eq!(
        state(failed, SET_AT + 20, 3, None),
        DeviceState::RetryDue { next: 2 }
    );
    assert_eq!(
        state(failed.with_excluded(), SET_AT + 20, 3, None),
        DeviceState::Failed
    );
    let silent = DeviceEntry::bare(SetKind::Ours, 1, SET_AT, ReportCode::None, 0).with_excluded();
    assert_eq!(state(silent, SET_AT + 1, 3, None), DeviceState::Notified);
    assert_eq!(
        state(silent, SET_AT + TIMEOUT, 3, None),
        DeviceState::TimedOut
    );
}

#[test]
fn a_former_target_keeps_its_outcome_and_gets_no_retry() {
    let failed = DeviceEntry::bare(
        SetKind::Ours,
        1,
        SET_AT,
        ReportCode::InstallError,
        SET_AT + 10,
    )
    .with_former_target();
    assert!(failed.writes_stopped());
    assert_eq!(state(failed, SET_AT + 20, 3, None), DeviceState::Failed);
    let silent =
        DeviceEntry::bare(SetKind::Ours, 1, SET_AT, ReportCode::None, 0).with_former_target();
    assert_eq!(state(silent, SET_AT + 1, 3, None), DeviceState::Notified);
    assert_eq!(
        state(silent, SET_AT + TIMEOUT, 3, None),
        DeviceState::TimedOut
    );
}

/// A device not notified by this rollout whose `config_otau` holds version `1.5` of another
/// package (of the connector when `produced`), written at [`SET_AT`], with a latest report at
/// `report_at` that is a non-final status of `running` (`None`: final).
fn holding(produced: bool, running: Option<&str>, report_at: i64) -> DeviceEntry {
    DeviceEntry::bare(
        SetKind::OtherManifest,
        0,
        SET_AT,
        ReportCode::OtherVersion,
        report_at,
    )
    .holding_other("1.5", produced, running)
}

fn policy_ctx(now: i64, take_over_busy: bool, skip_foreign: bool) -> EvalContext {
    EvalContext {
        take_over_busy,
        skip_foreign,
        ..ctx(now, 1, true, Some(0))
    }
}

#[test]
fn busy_and_foreign_devices_by_policy() {
    use DeviceState::*;
    let report_at = SET_AT + 100;
    // The wait ends a device timeout after the later of the manifest's write and the report.
    let waiting = report_at + TIMEOUT - 1;
    let stalled = report_at + TIMEOUT;
    // (produced by the connector's packages, running, now, take over, skip, expected)
    type Case = (bool, Option<&'static str>, i64, bool, bool, DeviceState);
    let cases: [Case; 16] = [
        // Installing 1.5 right now: waits under Wait, whoever produced the manifest.
        (true, Some("1.5"), waiting, false, false, Busy),
        (false, Some("1.5"), waiting, false, false, Busy),
        // ... until the update stalls for the device timeout.
        (true, Some("1.5"), stalled, false, false, Pending),
        (false, Some("1.5"), stalled, false, false, Foreign),
        // TakeOver: due at once.
        (true, Some("1.5"), waiting, true, false, Pending),
        (false, Some("1.5"), waiting, true, false, Foreign),
        // Skip: a foreign manifest is never written, busy or not.
        (false, Some("1.5"), waiting, false, true, ForeignSkipped),
        (false, None, waiting, false, true, ForeignSkipped),
        (false, None, waiting, true, true, ForeignSkipped),
        // Skip leaves the connector's own manifests alone.
        (true, None, waiting, false, true, Pending),
        (true, Some("1.5"), waiting, false, true, Busy),
        // A final report for 1.5 (the update ended): not busy.
        (true, None, waiting, false, false, Pending),
        (false, None, waiting, false, false, Foreign),
        // A non-final report for another version than the manifest's: not busy with it.
        (true, Some("1.6"), waiting, false, false, Pending),
        (false, Some("1.6"), waiting, false, false, Foreign),
        (false, Some("2.0"), waiting, true, false, Foreign),
    ];
    for (i, (produced, running, now, take_over, skip, expected)) in cases.into_iter().enumerate() {
        let entry = holding(produced, running, report_at);
        let got = evaluate(&entry, &policy_ctx(now, take_over, skip));
        assert_eq!(
            got, expected,
            "case {i}: produced={produced} running={running:?} now={now} take_over={take_over} skip={skip}"
        );
    }
}

#[test]
fn the_busy_wait_restarts_on_progress_and_is_measured_from_platform_timestamps() {
    // A report before the manifest's write: the wait runs from the write.
    let early = holding(true, Some("1.5"), SET_AT - 50);
    let ctx = policy_ctx(SET_AT, false, false);
    assert_eq!(busy_until(&early, &ctx), Some(SET_AT + TIMEOUT));
    // A later progress report moves the end of the wait.
    let later = holding(true, Some("1.5"), SET_AT + 300);
    assert_eq!(busy_until(&later, &ctx), Some(SET_AT + 300 + TIMEOUT));
    // Past it: not busy any more.
    let past = policy_ctx(SET_AT + 300 + TIMEOUT, false, false);
    assert_eq!(busy_until(&later, &past), None);
    // Progress for ever: the total cap from the manifest's value ends the wait.
    let endless = holding(true, Some("1.5"), SET_AT + 4 * TIMEOUT - 1);
    let capped = policy_ctx(SET_AT + 4 * TIMEOUT - 1, false, false);
    assert_eq!(busy_until(&endless, &capped), Some(SET_AT + 4 * TIMEOUT));
    let over = policy_ctx(SET_AT + 4 * TIMEOUT, false, false);
    assert_eq!(busy_until(&endless, &over), None);
    assert_eq!(evaluate(&endless, &over), DeviceState::Pending);
    // Only another manifest can make a device busy.
    let ours = DeviceEntry::bare(SetKind::Ours, 1, SET_AT, ReportCode::InProgress, SET_AT + 1);
    assert_eq!(busy_until(&ours, &ctx), None);
}

#[test]
fn a_device_already_at_the_target_is_skipped_whatever_it_holds() {
    let entry = DeviceEntry::bare(
        SetKind::OtherManifest,
        0,
        SET_AT,
        ReportCode::Succeeded,
        SET_AT + 1,
    )
    .holding_other("1.5", false, None);
    assert_eq!(
        evaluate(&entry, &policy_ctx(SET_AT + 2, false, true)),
        DeviceState::Skipped
    );
}

#[test]
fn the_rollouts_creation_bounds_a_first_write_the_status_lost() {
    use ReportCode as R;
    // Written at about SET_AT - 50 (the status write that recorded the wave's start was lost
    // to a crash), failed at SET_AT - 10, acked at SET_AT: the one timestamp is the ack's.
    let acked = DeviceEntry::bare(SetKind::Ours, 1, SET_AT, R::InstallError, SET_AT - 10)
        .with_ack(true, false);
    let created = |created: Option<i64>, started: Option<i64>| EvalContext {
        rollout_created_at: created,
        ..ctx(SET_AT + 30, 1, true, started)
    };
    // No start on record: without the creation the failure looks older than the write.
    assert_eq!(
        evaluate(&acked, &created(None, None)),
        DeviceState::Notified
    );
    // The Rollout was created before its first write: the failure is this attempt's.
    assert_eq!(
        evaluate(&acked, &created(Some(SET_AT - 200), None)),
        DeviceState::Failed
    );
    // A restarted operator that started the wave again records a later start; the creation
    // still bounds the write.
    assert_eq!(
        evaluate(&acked, &created(Some(SET_AT - 200), Some(SET_AT + 20))),
        DeviceState::Failed
    );
    // A report from before the Rollout existed is never this rollout's.
    let older = DeviceEntry::bare(SetKind::Ours, 1, SET_AT, R::InstallError, SET_AT - 300)
        .with_ack(true, false);
    assert_eq!(
        evaluate(&older, &created(Some(SET_AT - 200), None)),
        DeviceState::Notified
    );
}
