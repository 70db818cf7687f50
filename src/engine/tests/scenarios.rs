//! Scenario tests: each branch of the step, driven against the fake fleet.

use crate::api::conditions::{self, COMPLETE, PAUSED, PROGRESSING, READY, STALLED, find_condition};
use crate::api::rollout::{
    ANNOTATION_ABORT, ANNOTATION_APPROVE, ANNOTATION_PAUSE, ANNOTATION_RESUME, FailureAction,
    RolloutPhase,
};
use crate::api::{DeviceTag, GoDuration};
use crate::engine::tests::fleet::*;
use crate::engine::{AbortCause, Blocker, EngineError, PollHint, reason, reconcile};

fn cond<'a>(d: &'a crate::engine::Decision, type_: &str) -> (&'a str, &'a str) {
    let c = find_condition(&d.status.conditions, type_).expect(type_);
    (c.status.as_str(), c.reason.as_str())
}

fn sizes(d: &crate::engine::Decision) -> usize {
    d.notifications.len()
}

#[test]
fn waves_run_in_order_and_complete() {
    let mut run = Run::new(spec(&[10, 50, 100]), Fleet::ordered(100, SEED, |_, _| {}));
    let mut per_step = Vec::new();
    for _ in 0..5 {
        let d = run.step();
        per_step.push(sizes(&d));
        run.wait(2 * MINUTE);
    }
    assert_eq!(per_step, vec![10, 40, 50, 0, 0]);
    // Wave 1 is exactly the first 10 devices of the published order.
    let first: Vec<&str> = run.fleet.devices[..10]
        .iter()
        .map(|d| d.identity.as_str())
        .collect();
    assert!(
        first
            .iter()
            .all(|id| run.fleet.device(id).writes == vec![1])
    );
    let s = &run.status;
    assert_eq!(s.phase, Some(RolloutPhase::Complete));
    assert_eq!(s.totals.succeeded, 100);
    assert_eq!(s.success_rate.as_deref(), Some("100.0%"));
    assert_eq!(s.current_wave, 3);
    assert_eq!(s.wave_progress.as_deref(), Some("3/3"));
    assert_eq!(s.plan.as_ref().unwrap().cumulative, vec![10, 50, 100]);
    assert_eq!(
        s.waves
            .iter()
            .map(|w| w.counts.succeeded)
            .collect::<Vec<_>>(),
        vec![10, 40, 50]
    );
    assert!(
        s.waves
            .iter()
            .all(|w| w.started_at.is_some() && w.completed_at.is_some())
    );
}

#[test]
fn events_and_conditions_along_the_way() {
    let mut run = Run::new(spec(&[50, 100]), Fleet::ordered(4, SEED, |_, _| {}));
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::WAVE_STARTED]);
    assert_eq!(
        cond(&d, PROGRESSING),
        ("True", conditions::reason::WAVE_IN_PROGRESS)
    );
    assert_eq!(cond(&d, READY).0, "False");
    assert_eq!(d.requeue.poll, PollHint::Active);
    assert_eq!(d.requeue.at, Some(T0 + 10 * MINUTE), "the device timeout");
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(
        reasons(&d),
        vec![reason::WAVE_COMPLETED, reason::WAVE_STARTED]
    );
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(
        reasons(&d),
        vec![reason::WAVE_COMPLETED, reason::ROLLOUT_COMPLETE]
    );
    assert_eq!(
        cond(&d, COMPLETE),
        ("True", conditions::reason::ALL_WAVES_SUCCEEDED)
    );
    assert_eq!(
        cond(&d, READY),
        ("True", conditions::reason::ALL_WAVES_SUCCEEDED)
    );
    assert_eq!(cond(&d, STALLED).0, "False");
    assert_eq!(d.requeue.poll, PollHint::Idle);
    assert!(
        d.status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    let again = run.step();
    assert!(again.events.is_empty(), "{:?}", again.events);
}

#[test]
fn devices_at_the_target_version_are_skipped() {
    let fleet = Fleet::ordered(10, SEED, |p, d| {
        if p % 3 == 0 {
            *d = d.clone().at_target();
        }
    });
    let mut run = Run::new(spec(&[100]), fleet);
    let d = run.step();
    assert_eq!(sizes(&d), 6);
    assert_eq!(d.status.totals.skipped, 4);
    assert_eq!(d.status.totals.notified + d.status.totals.skipped, 10);
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
    assert_eq!((d.status.totals.succeeded, d.status.totals.skipped), (6, 4));
    assert_eq!(d.status.success_rate.as_deref(), Some("100.0%"));
    assert!(
        run.fleet
            .devices
            .iter()
            .filter(|d| d.writes.is_empty())
            .count()
            == 4
    );
}

#[test]
fn in_flight_cap_limits_writes() {
    let mut s = spec(&[100]);
    s.policy.max_in_flight = Some(5);
    let mut run = Run::new(s, Fleet::ordered(20, SEED, |_, _| {}));
    let mut writes = Vec::new();
    for _ in 0..6 {
        let d = run.step();
        let t = &d.status.totals;
        assert!(t.notified + t.in_progress <= 5, "{t:?}");
        writes.push(sizes(&d));
        // Half-way: nothing finished yet, so nothing more is written.
        run.wait(MINUTE / 2);
        assert_eq!(sizes(&run.step()), 0);
        run.wait(MINUTE);
    }
    assert_eq!(writes, vec![5, 5, 5, 5, 0, 0]);
    assert_eq!(run.status.phase, Some(RolloutPhase::Complete));
}

#[test]
fn a_failed_device_is_retried_with_the_next_attempt() {
    let fleet = Fleet::ordered(1, SEED, |_, d| {
        d.outcomes = vec![Outcome::Fail, Outcome::Succeed]
    });
    let mut s = spec(&[100]);
    s.policy.retries = 2;
    let mut run = Run::new(s, fleet);
    let d = run.step();
    assert_eq!(d.notifications[0].attempt, 1);
    assert!(!d.notifications[0].manifest.contains("attempt"));
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(d.notifications.len(), 1);
    assert_eq!(d.notifications[0].attempt, 2);
    assert!(d.notifications[0].manifest.contains(r#""attempt":2"#));
    assert_eq!((d.status.totals.failed, d.status.totals.notified), (0, 1));
    assert_eq!(d.status.recent_failures[0].status, "INSTALL_ERROR");
    // The device sent no message: only the attempt is said, no dangling separator.
    assert_eq!(
        d.status.recent_failures[0].message.as_deref(),
        Some("(attempt 1 of 3); retrying with attempt 2")
    );
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(d.status.totals.succeeded, 1);
    assert_eq!(run.fleet.devices[0].writes, vec![1, 2]);
}

#[test]
fn stale_failure_does_not_judge_the_retry_and_the_last_attempt_times_out() {
    let fleet = Fleet::ordered(1, SEED, |_, d| {
        d.outcomes = vec![Outcome::Fail, Outcome::Silent]
    });
    let mut s = spec(&[100]);
    s.policy.retries = 1;
    let mut run = Run::new(s, fleet);
    run.step();
    run.wait(2 * MINUTE);
    assert_eq!(run.step().notifications[0].attempt, 2);
    run.wait(2 * MINUTE);
    // The INSTALL_ERROR on record is older than attempt 2's write.
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!((d.status.totals.notified, d.status.totals.failed), (1, 0));
    assert_eq!(d.requeue.at, Some(T0 + 2 * MINUTE + 10 * MINUTE));
    run.wait(10 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.totals.timed_out, 1);
    assert_eq!(d.status.recent_failures[0].status, "Timeout");
    assert_eq!(run.fleet.devices[0].writes, vec![1, 2]);
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
}

/// 20 devices, waves 50/100; the first `failing` devices of the order fail.
fn failing_run(failing: usize, action: FailureAction) -> Run {
    let fleet = Fleet::ordered(20, SEED, |p, d| {
        if p < failing {
            d.outcomes = vec![Outcome::Fail];
        }
    });
    let mut s = spec(&[50, 100]);
    s.policy.failure_threshold.percent = 10;
    s.policy.failure_threshold.min_finished = 5;
    s.policy.on_failure = action;
    Run::new(s, fleet)
}

#[test]
fn threshold_pauses_and_a_resume_token_accepts_the_failures_so_far() {
    let mut run = failing_run(3, FailureAction::Pause);
    assert_eq!(sizes(&run.step()), 10);
    run.wait(2 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(
        reasons(&d),
        vec![reason::AUTO_PAUSED, reason::WAVE_COMPLETED]
    );
    let msg = &d.events[0].message;
    assert!(
        msg.contains("wave 1: 3 of 10 finished devices failed (30.0%)"),
        "{msg}"
    );
    assert_eq!(
        cond(&d, PAUSED),
        ("True", conditions::reason::FAILURE_THRESHOLD_EXCEEDED)
    );
    assert_eq!(
        cond(&d, STALLED),
        ("True", conditions::reason::FAILURE_THRESHOLD_EXCEEDED)
    );
    assert_eq!(cond(&d, PROGRESSING).0, "False");
    assert_eq!(d.status.phase, Some(RolloutPhase::Paused));
    assert_eq!(d.status.success_rate.as_deref(), Some("70.0%"));
    // Unrelated spec edit: judged again, still over: stays paused, no event.
    run.edit(|s| s.policy.device_timeout = GoDuration::new("20m"));
    let d = run.step();
    assert!(
        d.notifications.is_empty() && d.events.is_empty(),
        "{:?}",
        d.events
    );
    assert_eq!(d.status.pause.as_ref().unwrap().generation, Some(2));
    // A new resume token: resumes, the 3 failures are accepted, wave 2 starts.
    run.edit(|s| s.resume_token = Some("r1".into()));
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::RESUMED, reason::WAVE_STARTED]);
    assert_eq!(sizes(&d), 10);
    assert_eq!(
        run.memory.baseline(1).map(|b| (b.finished, b.failed)),
        Some((10, 3))
    );
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
    assert_eq!(d.status.totals.failed, 3);
    // The same token again does nothing.
    assert!(run.step().events.is_empty());
}

#[test]
fn a_spec_change_that_passes_the_threshold_resumes() {
    let mut run = failing_run(3, FailureAction::Pause);
    run.step();
    run.wait(2 * MINUTE);
    run.step();
    run.edit(|s| s.policy.failure_threshold.percent = 50);
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::RESUMED, reason::WAVE_STARTED]);
    assert!(d.events[0].message.contains("generation 2"));
}

#[test]
fn threshold_abort_stops_every_write_but_keeps_counting() {
    let mut run = failing_run(3, FailureAction::Abort);
    // One device of wave 1 is slow: still in flight at the abort.
    let slow = run.fleet.devices[9].identity.clone();
    run.fleet.devices[9].delay = 5 * MINUTE;
    run.step();
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::ABORTED]);
    assert!(d.notifications.is_empty());
    assert_eq!(cond(&d, STALLED), ("True", conditions::reason::ABORTED));
    assert_eq!(d.status.phase, Some(RolloutPhase::Aborted));
    assert_eq!(
        d.memory.aborted.as_ref().unwrap().cause,
        AbortCause::FailureThreshold
    );
    assert_eq!(d.status.totals.in_progress, 1);
    assert_eq!(d.status.totals.pending, 10, "wave 2 never notified");
    assert_eq!(d.requeue.poll, PollHint::Active);
    run.wait(5 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty() && d.events.is_empty());
    assert_eq!(d.status.totals.succeeded, 7);
    assert_eq!(run.fleet.device(&slow).writes, vec![1]);
    assert_eq!(d.requeue.poll, PollHint::None);
    // Resume attempts change nothing after an abort.
    run.edit(|s| s.resume_token = Some("again".into()));
    run.annotations.insert(ANNOTATION_RESUME.into(), "x".into());
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.phase, Some(RolloutPhase::Aborted));
}

#[test]
fn spec_paused_holds_new_writes_while_devices_in_flight_carry_on() {
    let mut s = spec(&[100]);
    s.policy.max_in_flight = Some(2);
    let mut run = Run::new(s, Fleet::ordered(4, SEED, |_, _| {}));
    assert_eq!(sizes(&run.step()), 2);
    run.edit(|s| s.paused = true);
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::PAUSED]);
    assert_eq!(
        cond(&d, PAUSED),
        ("True", conditions::reason::PAUSED_BY_USER)
    );
    assert_eq!(d.status.phase, Some(RolloutPhase::Paused));
    run.wait(2 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty() && d.events.is_empty());
    assert_eq!(
        d.status.totals.succeeded, 2,
        "in-flight devices still report"
    );
    run.edit(|s| s.paused = false);
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::RESUMED]);
    assert_eq!(sizes(&d), 2);
}

#[test]
fn annotation_nonces_act_once() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(3, SEED, |_, _| {}));
    run.annotations.insert(ANNOTATION_PAUSE.into(), "p1".into());
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(reasons(&d), vec![reason::PAUSED]);
    assert_eq!(d.status.acted_on.pause.as_deref(), Some("p1"));
    // Same nonce: nothing new.
    let d = run.step();
    assert!(d.notifications.is_empty() && d.events.is_empty());
    run.annotations
        .insert(ANNOTATION_RESUME.into(), "r1".into());
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::RESUMED, reason::WAVE_STARTED]);
    assert_eq!(sizes(&d), 3);
    // A GitOps tool removes both annotations, then someone re-applies the old ones: nothing.
    run.annotations.clear();
    assert!(run.step().events.is_empty());
    run.annotations.insert(ANNOTATION_PAUSE.into(), "p1".into());
    let d = run.step();
    assert!(d.events.is_empty());
    assert!(d.status.pause.is_none());
    // A resume annotation while not paused is consumed, so it cannot resume a later pause.
    run.annotations
        .insert(ANNOTATION_RESUME.into(), "r2".into());
    run.step();
    assert_eq!(run.status.acted_on.resume.as_deref(), Some("r2"));
}

#[test]
fn abort_annotation_is_terminal() {
    let mut run = Run::new(spec(&[50, 100]), Fleet::ordered(4, SEED, |_, _| {}));
    run.step();
    run.annotations.insert(ANNOTATION_ABORT.into(), "a1".into());
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::ABORTED]);
    assert_eq!(
        d.memory.aborted.as_ref().unwrap().cause,
        AbortCause::Annotation
    );
    run.annotations.clear();
    run.wait(2 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.phase, Some(RolloutPhase::Aborted));
    assert_eq!(d.status.totals.succeeded, 2);
    assert_eq!(d.status.totals.pending, 2);
}

#[test]
fn approval_gate_waits_and_opens_by_annotation_or_spec() {
    for by_annotation in [true, false] {
        let mut s = spec(&[50, 100]);
        s.waves[1].require_approval = true;
        let mut run = Run::new(s, Fleet::ordered(4, SEED, |_, _| {}));
        assert_eq!(sizes(&run.step()), 2);
        run.wait(2 * MINUTE);
        let d = run.step();
        assert!(d.notifications.is_empty());
        assert_eq!(
            reasons(&d),
            vec![reason::WAVE_COMPLETED, reason::WAITING_FOR_APPROVAL]
        );
        assert_eq!(
            cond(&d, PAUSED),
            ("True", conditions::reason::WAITING_FOR_APPROVAL)
        );
        assert_eq!(d.status.phase, Some(RolloutPhase::Paused));
        assert!(run.step().events.is_empty());
        if by_annotation {
            run.annotations
                .insert(ANNOTATION_APPROVE.into(), "oops".into());
            let d = run.step();
            assert_eq!(reasons(&d), vec![reason::INVALID_ANNOTATION]);
            run.annotations
                .insert(ANNOTATION_APPROVE.into(), "2:n1".into());
        } else {
            run.edit(|s| s.approved_waves = 2);
        }
        let d = run.step();
        let expected = if by_annotation {
            vec![reason::WAVE_APPROVED, reason::WAVE_STARTED]
        } else {
            vec![reason::WAVE_STARTED]
        };
        assert_eq!(reasons(&d), expected);
        assert_eq!(sizes(&d), 2);
    }
}

#[test]
fn soak_holds_the_next_wave_until_it_ends() {
    let mut s = spec(&[50, 100]);
    s.waves[0].soak = Some(GoDuration::new("1h"));
    let mut run = Run::new(s, Fleet::ordered(4, SEED, |_, _| {}));
    run.step();
    run.wait(2 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(cond(&d, PROGRESSING), ("True", conditions::reason::SOAKING));
    let until = T0 + 2 * MINUTE + 60 * MINUTE;
    assert_eq!(d.requeue.at, Some(until));
    assert_eq!(
        d.status.waves[0]
            .soak_until
            .as_ref()
            .map(|t| t.0.as_microsecond()),
        Some(until)
    );
    run.wait(30 * MINUTE);
    assert!(run.step().notifications.is_empty());
    run.wait(30 * MINUTE);
    assert_eq!(sizes(&run.step()), 2);
}

#[test]
fn late_joiners_are_notified_after_completion_and_target_edits_redefine_the_counted_devices() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(3, SEED, |_, _| {}));
    run.step();
    run.wait(2 * MINUTE);
    assert_eq!(run.step().status.phase, Some(RolloutPhase::Complete));
    run.fleet.add(SimDevice::new("late-1"));
    let d = run.step();
    assert_eq!(
        d.notifications
            .iter()
            .map(|n| n.identity.as_str())
            .collect::<Vec<_>>(),
        ["late-1"]
    );
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
    assert!(!reasons(&d).contains(&reason::ROLLOUT_COMPLETE));
    // Edit the targets: a new tag selects other devices; the old ones (notified, holding this
    // Rollout's marked manifest) keep counting as former targets, a device of the old tag
    // never notified leaves, and nothing is written to the old ones again.
    let stale_index = run.index();
    run.edit(|s| s.targets.tags = vec![DeviceTag::new("fleet", "b")]);
    let err = reconcile(&run.input(), &stale_index, run.fleet.now).unwrap_err();
    assert!(matches!(err, EngineError::IndexMismatch(_)), "{err}");
    let mut b = SimDevice::new("b-1");
    b.tags = vec![DeviceTag::new("fleet", "b")];
    run.fleet.add(b);
    let mut unnotified = SimDevice::new("a-unnotified");
    unnotified.tags = vec![DeviceTag::new("fleet", "a")];
    run.fleet.add(unnotified);
    let d = run.step();
    assert_eq!(
        d.notifications
            .iter()
            .map(|n| n.identity.as_str())
            .collect::<Vec<_>>(),
        ["b-1"]
    );
    assert_eq!(
        (
            d.status.totals.targeted,
            d.status.totals.succeeded,
            d.status.totals.notified + d.status.totals.in_progress
        ),
        (5, 3, 2),
        "b-1 and the 4 notified fleet-a devices (3 succeeded, late-1 in flight); a-unnotified is no longer selected"
    );
    assert!(
        run.fleet
            .devices
            .iter()
            .filter(|d| d.identity != "b-1")
            .all(|d| d.writes.len() <= 1),
        "no device left out by the edit is written again"
    );
}

#[test]
fn literal_ack_counts_as_notified_and_is_never_rewritten() {
    let fleet = Fleet::ordered(2, SEED, |_, d| {
        d.literal_ack = true;
        d.delay = 3 * MINUTE;
    });
    let mut s = spec(&[100]);
    s.policy.retries = 2;
    let mut run = Run::new(s, fleet);
    assert_eq!(sizes(&run.step()), 2);
    run.wait(MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.totals.in_progress, 2);
    run.wait(3 * MINUTE);
    let d = run.step();
    assert_eq!(d.status.totals.succeeded, 2);
    assert!(run.fleet.devices.iter().all(|d| d.writes == vec![1]));
}

#[test]
fn malformed_reports_are_counted_and_shown() {
    let fleet = Fleet::ordered(3, SEED, |p, d| {
        if p == 0 {
            d.outcomes = vec![Outcome::Malformed];
        }
        if p == 1 {
            // Garbage on record before the rollout: the device is still notified.
            d.report = Some(crate::engine::ResourceState::written_by_device(
                "garbage",
                T0 - MINUTE,
            ));
        }
    });
    let mut run = Run::new(spec(&[100]), fleet);
    assert_eq!(sizes(&run.step()), 3);
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!((d.status.totals.invalid, d.status.totals.succeeded), (1, 2));
    let f = &d.status.recent_failures[0];
    assert_eq!(f.status, "InvalidReport");
    assert!(
        f.message.as_deref().unwrap().contains("not valid JSON"),
        "{f:?}"
    );
    // One unreadable report of three finished devices is over the default 10%, but only
    // once minFinished (10) devices finished: the rollout completes, with failures.
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
    assert_eq!(
        d.status.success_rate.as_deref(),
        Some("66.7%"),
        "an unreadable report is a finished device that did not install the version"
    );
    let complete = find_condition(&d.status.conditions, COMPLETE).unwrap();
    assert_eq!(complete.reason, "CompletedWithFailures");
    assert!(
        complete.message.contains("success rate 66.7%"),
        "{complete:?}"
    );
}

#[test]
fn aborted_install_is_final_and_not_retried() {
    let fleet = Fleet::ordered(1, SEED, |_, d| d.outcomes = vec![Outcome::Abort]);
    let mut s = spec(&[100]);
    s.policy.retries = 3;
    let mut run = Run::new(s, fleet);
    run.step();
    run.wait(2 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.totals.aborted, 1);
    assert_eq!(d.status.success_rate.as_deref(), Some("0.0%"));
}

/// A fleet that refuses every update trips the default threshold: the first wave pauses and
/// the second is never written.
#[test]
fn a_fleet_that_refuses_everything_pauses() {
    let fleet = Fleet::ordered(40, SEED, |_, d| d.outcomes = vec![Outcome::Abort]);
    let mut run = Run::new(spec(&[50, 100]), fleet);
    assert_eq!(run.step().notifications.len(), 20);
    run.wait(2 * MINUTE);
    let d = run.step();
    assert!(d.notifications.is_empty(), "wave 2 is not written");
    assert_eq!(d.status.totals.aborted, 20);
    assert_eq!(cond(&d, PAUSED), ("True", "FailureThresholdExceeded"));
    let paused = find_condition(&d.status.conditions, PAUSED).unwrap();
    assert!(
        paused.message.contains("20 of 20 finished devices failed"),
        "{paused:?}"
    );
    assert!(run.fleet.devices[20..].iter().all(|d| d.writes.is_empty()));
}

/// `countAborted: false` leaves refusals out of the threshold: the same fleet completes, and
/// `Complete` says it did with failures, with the success rate.
#[test]
fn refusals_left_out_complete_with_failures() {
    let fleet = Fleet::ordered(40, SEED, |_, d| d.outcomes = vec![Outcome::Abort]);
    let mut s = spec(&[50, 100]);
    s.policy.failure_threshold.count_aborted = false;
    let mut run = Run::new(s, fleet);
    run.step();
    run.wait(2 * MINUTE);
    assert_eq!(run.step().notifications.len(), 20, "wave 2 starts");
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(d.status.totals.aborted, 40);
    assert_eq!(cond(&d, COMPLETE), ("True", "CompletedWithFailures"));
    assert_eq!(cond(&d, READY), ("True", "CompletedWithFailures"));
    let complete = find_condition(&d.status.conditions, COMPLETE).unwrap();
    assert!(
        complete
            .message
            .contains("0/40 succeeded, 40 aborted; success rate 0.0%"),
        "{complete:?}"
    );
}

#[test]
fn blocked_steps_write_nothing_and_say_why() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(2, SEED, |_, _| {}));
    let d = run.step_blocked(Blocker::PackageNotReady("uploading 1/2 files".into()));
    assert_eq!(
        cond(&d, READY),
        ("False", conditions::reason::PACKAGE_NOT_READY)
    );
    assert_eq!(
        cond(&d, PROGRESSING),
        ("False", conditions::reason::PACKAGE_NOT_READY)
    );
    assert_eq!(d.status.phase, Some(RolloutPhase::Pending));
    run.step();
    run.wait(2 * MINUTE);
    let before = run.status.totals.clone();
    let d = run.step_blocked(Blocker::PlatformUnavailable(
        "503 from the management API".into(),
    ));
    assert_eq!(
        cond(&d, READY),
        ("Unknown", conditions::reason::PLATFORM_UNAVAILABLE)
    );
    assert_eq!(d.status.totals, before);
    assert!(d.notifications.is_empty());
    let d = run.step();
    assert_eq!(d.status.totals.succeeded, 2);
    assert_eq!(cond(&d, READY).0, "True");
}

/// A missing content item holds the wave about to start: nothing is written, the conditions
/// name the item, one Warning is emitted (not again while it holds), and once the content is
/// back the wave starts.
#[test]
fn missing_content_holds_the_next_wave_and_warns_once() {
    let mut run = Run::new(spec(&[50, 100]), Fleet::ordered(4, SEED, |_, _| {}));
    run.step();
    run.wait(2 * MINUTE);
    let missing = "content item ns_fw_fw.img (file fw.img) of SoftwarePackage fw is missing";
    let d = run.step_blocked(Blocker::ContentMissing(missing.into()));
    assert!(d.notifications.is_empty());
    assert_eq!(
        cond(&d, READY),
        ("False", conditions::reason::CONTENT_MISSING)
    );
    assert_eq!(
        cond(&d, PROGRESSING),
        ("False", conditions::reason::CONTENT_MISSING)
    );
    let ready = find_condition(&d.status.conditions, READY).unwrap();
    assert!(ready.message.contains("ns_fw_fw.img"), "{ready:?}");
    assert_eq!(reasons(&d), vec![reason::CONTENT_MISSING]);
    let d = run.step_blocked(Blocker::ContentMissing(missing.into()));
    assert!(d.events.is_empty(), "warned once: {:?}", reasons(&d));
    let d = run.step();
    assert_eq!(
        d.notifications.len(),
        2,
        "wave 2 starts once the content is back"
    );
}

/// A first visit before the devices are listed: every condition Unknown, `Initializing`; a
/// condition already there is left as it is.
#[test]
fn a_first_visit_before_the_listing_is_initializing() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(2, SEED, |_, _| {}));
    let d = run.step_blocked(Blocker::FirstListing("reading the devices".into()));
    for type_ in [READY, PROGRESSING, PAUSED, COMPLETE, STALLED] {
        assert_eq!(
            cond(&d, type_),
            ("Unknown", conditions::reason::INITIALIZING),
            "{type_}"
        );
    }
    assert!(d.events.is_empty() && d.notifications.is_empty());
    let d = run.step();
    assert_eq!(cond(&d, PROGRESSING).0, "True");
    let d = run.step_blocked(Blocker::FirstListing("reading the devices again".into()));
    assert_eq!(cond(&d, PROGRESSING).0, "True", "a known condition stays");
}

/// Waiting for an older Rollout over the same devices: every condition False with
/// `TargetConflict`, one Event when the wait starts (not at every step), counts kept.
#[test]
fn waiting_for_another_rollout_says_so_once() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(2, SEED, |_, _| {}));
    let waiting = || Blocker::TargetConflict("2 targeted devices are also targets of r0".into());
    let d = run.step_blocked(waiting());
    for type_ in [READY, PROGRESSING, PAUSED, COMPLETE, STALLED] {
        assert_eq!(
            cond(&d, type_),
            ("False", conditions::reason::TARGET_CONFLICT),
            "{type_}"
        );
    }
    assert_eq!(d.status.phase, Some(RolloutPhase::Pending));
    assert_eq!(
        d.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec![reason::TARGET_CONFLICT]
    );
    assert!(d.notifications.is_empty());
    let d = run.step_blocked(waiting());
    assert!(d.events.is_empty(), "{:?}", d.events);
    let d = run.step();
    assert_eq!(sizes(&d), 2, "the older one is gone: it starts");
}

/// Some writes of a step failed: Ready says so (Unknown, `PlatformUnavailable`) with the
/// numbers, a Warning Event carries the same sentence, and the rest of the status stays.
#[test]
fn failed_writes_show_in_ready_and_a_warning() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(4, SEED, |_, _| {}));
    let mut d = run.step();
    let progressing = cond(&d, PROGRESSING).1.to_owned();
    let phase = d.status.phase;
    crate::engine::writes_failed(
        &mut d,
        crate::engine::WriteShortfall {
            error: "503 from the management API",
            decided: 4,
            written: 1,
        },
        Some(1),
        run.fleet.now,
    );
    assert_eq!(
        cond(&d, READY),
        ("Unknown", conditions::reason::PLATFORM_UNAVAILABLE)
    );
    assert_eq!(cond(&d, PROGRESSING).1, progressing);
    assert_eq!(d.status.phase, phase);
    let warning = d.events.last().expect("a warning");
    assert_eq!(warning.type_, crate::engine::EventType::Warning);
    assert_eq!(
        warning.message,
        "config_otau writes fail: 503 from the management API; 1 of 4 written in this pass, the \
         rest are written when the platform accepts them"
    );
    let ready = find_condition(&d.status.conditions, READY).expect("ready");
    assert_eq!(ready.message, warning.message);
}

#[test]
fn no_matching_device_waits_instead_of_completing() {
    let mut run = Run::new(spec(&[100]), Fleet::new(vec![]));
    let d = run.step();
    assert_eq!(d.status.current_wave, 0);
    assert_eq!(cond(&d, COMPLETE).0, "False");
    assert!(cond(&d, PROGRESSING) == ("True", conditions::reason::WAVE_IN_PROGRESS));
    run.fleet.add(SimDevice::new("first"));
    let d = run.step();
    assert_eq!(sizes(&d), 1);
}

#[test]
fn a_bad_duration_is_a_clear_error() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(1, SEED, |_, _| {}));
    run.spec.policy.device_timeout = GoDuration::new("soon");
    let err = reconcile(&run.input(), &run.index(), T0).unwrap_err();
    assert!(
        err.to_string().contains("spec.policy.deviceTimeout"),
        "{err}"
    );
}

#[test]
fn a_write_batch_notifies_a_wave_over_several_steps_and_counts_only_what_was_written() {
    let mut run = Run::new(spec(&[100]), Fleet::ordered(10, SEED, |_, _| {}));
    run.max_notifications = Some(4);
    let d = run.step();
    assert_eq!(d.notifications.len(), 4);
    assert_eq!((d.status.totals.notified, d.status.totals.pending), (4, 6));
    assert_eq!(run.step().notifications.len(), 4);
    let d = run.step();
    assert_eq!(d.notifications.len(), 2);
    assert_eq!(d.status.totals.pending, 0);
    assert!(run.step().notifications.is_empty());
    // Notified in wave order, each device exactly once.
    assert!(run.fleet.devices.iter().all(|d| d.writes == vec![1]));
    run.wait(2 * MINUTE);
    let d = run.step();
    assert_eq!(d.status.totals.succeeded, 10);
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
}

#[test]
fn last_progress_moves_with_the_devices_not_with_writes_that_fail() {
    let mut run = Run::new(spec(&[10, 100]), Fleet::ordered(100, SEED, |_, _| {}));
    // The first step decides wave 1: the rollout's first progress.
    let first = run.decide();
    assert_eq!(first.notifications.len(), 10);
    let started = first
        .status
        .last_progress_at
        .clone()
        .expect("progress at the start");
    run.status = first.status.clone();
    // Its writes never reach the platform: the next step decides the same ten again, which is
    // no progress (so RolloutStalled can fire while the platform refuses every write).
    run.wait(MINUTE);
    let again = run.decide();
    assert_eq!(again.notifications.len(), 10);
    assert_eq!(again.status.last_progress_at.as_ref(), Some(&started));
    run.status = again.status.clone();
    // The writes land, then the devices report: progress moves on.
    run.wait(MINUTE);
    run.step();
    run.wait(2 * MINUTE);
    let moved = run.step();
    let later = moved.status.last_progress_at.expect("progress");
    assert!(later.0 > started.0, "{later:?} after {started:?}");
    assert!(moved.status.totals.in_progress + moved.status.totals.succeeded > 0);
}

#[test]
fn deciding_no_notification_counts_only_what_the_index_shows() {
    // What the controller decides after its writes failed: nothing new, the devices not
    // written still pending, and the start of the rollout as its progress time.
    let mut run = Run::new(spec(&[10, 100]), Fleet::ordered(100, SEED, |_, _| {}));
    run.max_notifications = Some(0);
    let d = run.decide();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.current_wave, 1);
    assert_eq!(d.status.totals.notified, 0);
    assert_eq!(d.status.totals.pending, 100);
    assert!(d.status.last_progress_at.is_some());
    // The next decision with a batch notifies the first wave.
    run.max_notifications = Some(4);
    assert_eq!(run.decide().notifications.len(), 4);
}

/// A Rollout re-created over devices an earlier Rollout of the same package already notified:
/// its canary holds failure reports for this manifest (the order comes from
/// `<namespace>/<name>`, so the re-created Rollout gets the same canary).
fn recreated_over_a_failed_canary(retries: i32) -> Run {
    let mut s = spec(&[5, 50, 100]);
    s.policy.retries = retries;
    s.policy.failure_threshold.min_finished = 3;
    let fleet = Fleet::ordered(100, SEED, |p, d| {
        if p < 5 {
            d.config = Some(crate::engine::ResourceState::written_by_device(
                manifest().with_attempt(1).to_json(),
                T0 - 10 * MINUTE,
            ));
            d.report = Some(crate::engine::ResourceState::written_by_device(
                crate::otau::Report::new(VERSION, crate::otau::Status::parse("INSTALL_ERROR"), "")
                    .to_json(),
                T0 - 5 * MINUTE,
            ));
        }
    });
    Run::new(s, fleet)
}

#[test]
fn a_recreated_rollout_pauses_on_its_failed_canary_before_any_other_wave() {
    let mut run = recreated_over_a_failed_canary(0);
    let d = run.step();
    assert_eq!(
        reasons(&d),
        vec![
            reason::WAVE_STARTED,
            reason::AUTO_PAUSED,
            reason::WAVE_COMPLETED
        ],
        "{:?}",
        d.events
    );
    assert!(d.notifications.is_empty(), "{:?}", d.notifications);
    let s = &run.status;
    assert_eq!(s.current_wave, 1, "wave 2 never starts");
    assert_eq!(
        s.pause.as_ref().map(|p| p.reason.as_str()),
        Some(conditions::reason::FAILURE_THRESHOLD_EXCEEDED)
    );
    assert_eq!(s.waves[0].counts.failed, 5);
    let auto_paused = &d.events[1].message;
    assert!(
        auto_paused.starts_with("wave 1: 5 of 5 finished devices failed (100.0%)"),
        "{auto_paused}"
    );
    assert_eq!(
        s.plan.as_ref().unwrap().held[0],
        crate::api::rollout::HeldDevices {
            failed: 5,
            ..Default::default()
        },
        "the plan shows what the canary already held when it started"
    );
    // Steps later nothing moves until a person resumes.
    for _ in 0..3 {
        run.wait(5 * MINUTE);
        assert!(run.step().notifications.is_empty());
    }
    assert!(run.fleet.devices.iter().all(|d| d.writes.is_empty()));
}

#[test]
fn a_recreated_rollout_with_retries_left_retries_its_canary_but_starts_nothing_else() {
    // Attempt 1 of 2 failed earlier: the failures are not final, so the canary is retried (it
    // is wave 1's own devices), and nothing beyond it is written.
    let mut run = recreated_over_a_failed_canary(1);
    let d = run.step();
    assert_eq!(reasons(&d), vec![reason::WAVE_STARTED]);
    assert_eq!(d.notifications.len(), 5);
    assert!(d.notifications.iter().all(|n| n.attempt == 2));
    assert_eq!(run.status.current_wave, 1);
}

#[test]
fn held_devices_of_waves_not_started_are_counted_live_and_frozen_when_their_wave_starts() {
    // Devices 5..10 (wave 2) already succeeded with this manifest; the canary is fresh.
    let fleet = Fleet::ordered(100, SEED, |p, d| {
        if (5..10).contains(&p) {
            *d = d.clone().at_target();
            d.config = Some(crate::engine::ResourceState::written_by_device(
                manifest().to_json(),
                T0 - 10 * MINUTE,
            ));
        }
    });
    let mut run = Run::new(spec(&[5, 50, 100]), fleet);
    run.step();
    let held = run.status.plan.clone().unwrap().held;
    assert_eq!(held.len(), 3);
    assert_eq!(held[0].total(), 0);
    assert_eq!(held[1].succeeded, 5);
    run.wait(2 * MINUTE);
    run.step();
    assert_eq!(run.status.current_wave, 2);
    assert_eq!(
        run.status.plan.clone().unwrap().held,
        held,
        "kept once started"
    );
}

#[test]
fn exclusions_that_remove_every_device_stall_with_a_reason_instead_of_waiting() {
    let mut spec = spec(&[50, 100]);
    spec.targets.exclude = Some(crate::api::rollout::Exclusions {
        tags: vec![DeviceTag::new("fleet", "a")],
        ..Default::default()
    });
    let mut run = Run::new(spec, Fleet::ordered(3, SEED, |_, _| {}));
    let d = run.step();
    assert!(d.notifications.is_empty());
    let all_excluded = conditions::reason::ALL_TARGETS_EXCLUDED;
    assert_eq!(cond(&d, STALLED), ("True", all_excluded));
    assert_eq!(cond(&d, READY), ("False", all_excluded));
    assert_eq!(cond(&d, PROGRESSING), ("False", all_excluded));
    let message = &find_condition(&d.status.conditions, READY).unwrap().message;
    assert!(
        message.contains("select 3 device(s)") && message.contains("spec.targets.exclude"),
        "{message}"
    );
    assert_eq!(d.status.phase, Some(RolloutPhase::Pending));
    // With no device at all there is nothing to exclude: the Rollout waits for devices.
    let mut empty = Run::new(run.spec.clone(), Fleet::new(Vec::new()));
    let d = empty.step();
    assert_eq!(
        cond(&d, PROGRESSING),
        ("True", conditions::reason::WAVE_IN_PROGRESS)
    );
    assert_eq!(cond(&d, STALLED).0, "False");
    // Narrowing the exclusion gives the devices back: the first wave starts.
    run.edit(|s| s.targets.exclude = None);
    let d = run.step();
    assert_eq!(sizes(&d), 2);
    assert_eq!(
        cond(&d, STALLED),
        ("False", conditions::reason::WAVE_IN_PROGRESS)
    );
}

/// A status as the release before `reruns` wrote it: the same JSON without that count.
fn as_previous_release_wrote(
    status: &crate::api::rollout::RolloutStatus,
) -> crate::api::rollout::RolloutStatus {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("reruns");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(status).unwrap();
    strip(&mut value);
    assert!(!value.to_string().contains("reruns"));
    serde_json::from_value(value).expect("the previous status reads")
}

/// Upgrade: a Rollout mid-wave (with a device that failed and acked after the failure, which
/// the previous release left in flight), an aborted one and a Complete one, their status as
/// the previous release wrote it, are read with no write to any device and no decision lost.
#[test]
fn statuses_written_by_the_previous_release_are_read_with_no_write_and_no_lost_decision() {
    // Mid-wave: wave 1 of 2 in flight, one device failed then acked.
    let mut s = spec(&[50, 100]);
    s.policy.failure_threshold.percent = 100;
    let mut run = Run::new(s, Fleet::ordered(4, SEED, |_, d| d.delay = 5 * MINUTE));
    assert_eq!(sizes(&run.step()), 2);
    run.wait(MINUTE);
    let late = run.fleet.devices[0].identity.clone();
    {
        let d = &mut run.fleet.devices[0];
        let value = d.config.as_ref().unwrap().set.clone().unwrap();
        d.report = Some(crate::engine::ResourceState::written_by_device(
            crate::otau::Report::new(VERSION, crate::otau::Status::parse("INSTALL_ERROR"), "")
                .to_json(),
            T0 + MINUTE - 10,
        ));
        d.due = None;
        d.config = Some(crate::engine::ResourceState::written_by_device(
            value,
            T0 + MINUTE - 5,
        ));
    }
    run.status = as_previous_release_wrote(&run.status);
    let memory = run.memory.clone();
    let d = run.step();
    assert!(
        d.notifications.is_empty(),
        "no write: {:?}",
        d.notifications
    );
    assert_eq!(d.status.current_wave, 1);
    assert_eq!(
        (d.status.totals.failed, d.status.totals.in_progress),
        (1, 1),
        "{late}"
    );
    assert_eq!(d.memory, memory);

    // Aborted: nothing is written again.
    let mut run = Run::new(spec(&[50, 100]), Fleet::ordered(4, SEED, |_, _| {}));
    run.step();
    run.edit(|s| s.abort = true);
    run.step();
    run.status = as_previous_release_wrote(&run.status);
    let memory = run.memory.clone();
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.phase, Some(RolloutPhase::Aborted));
    assert_eq!(d.memory, memory);

    // Complete: stays Complete, nothing written.
    let mut run = Run::new(spec(&[100]), Fleet::ordered(4, SEED, |_, _| {}));
    run.step();
    run.wait(2 * MINUTE);
    assert_eq!(run.step().status.phase, Some(RolloutPhase::Complete));
    run.status = as_previous_release_wrote(&run.status);
    let d = run.step();
    assert!(d.notifications.is_empty());
    assert_eq!(d.status.phase, Some(RolloutPhase::Complete));
    assert_eq!(d.status.totals.succeeded, 4);
}
