//! How a step ends, rendered into status: the pause shown, the overall state behind the
//! conditions (and its messages), the completion and approval Events, the progress time and
//! when to look again. Decisions are taken before (waves, threshold, notifications); this only
//! renders them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::conditions;
use crate::api::rollout::{DeviceCounts, FailureThreshold, PauseInfo, success_rate};

use super::events::{EngineEvent, reason};
use super::memory::{AbortRecord, ThresholdBaseline};
use super::observation::Micros;
use super::policy::{StepJudge, finished, percent_text, started_waves_text};
use super::status::{Overall, counts_text, micros_of, was_complete};
use super::waves::Stop;
use super::{PollHint, Requeue};

/// What decides the pause shown in status.
pub struct PauseInput<'a> {
    /// Aborted: no pause is shown.
    pub aborted: bool,
    /// The automatic pause, if the threshold holds the rollout.
    pub auto_pause: Option<&'a PauseInfo>,
    /// `spec.paused` or the pause annotation.
    pub user_paused: bool,
    /// Since when the pause annotation holds.
    pub paused_by_annotation_since: Option<&'a Time>,
    /// The pause in the previous status.
    pub previous: Option<&'a PauseInfo>,
    /// Where the wave progression stopped.
    pub stop: &'a Stop,
    /// The step's time.
    pub now: &'a Time,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

/// The pause shown in status: the threshold's, a person's, or the approval wait (keeping the
/// time it began).
pub fn shown_pause(input: &PauseInput<'_>) -> Option<PauseInfo> {
    let since_previous = |reason: &str| {
        input
            .previous
            .filter(|p| p.reason == reason)
            .map(|p| p.since.clone())
    };
    let pause = |reason: &str, since: Time| PauseInfo {
        reason: reason.into(),
        since,
        generation: input.generation,
    };
    if input.aborted {
        None
    } else if let Some(p) = input.auto_pause {
        Some(p.clone())
    } else if input.user_paused {
        let since = input
            .paused_by_annotation_since
            .cloned()
            .or_else(|| since_previous(conditions::reason::PAUSED_BY_USER))
            .unwrap_or_else(|| input.now.clone());
        Some(pause(conditions::reason::PAUSED_BY_USER, since))
    } else if let Stop::Approval(_) = input.stop {
        let since = since_previous(conditions::reason::WAITING_FOR_APPROVAL)
            .unwrap_or_else(|| input.now.clone());
        Some(pause(conditions::reason::WAITING_FOR_APPROVAL, since))
    } else {
        None
    }
}

/// The `WaitingForApproval` Event when the wait for wave `k` begins in this step.
pub fn approval_event(
    stop: &Stop,
    pause: Option<&PauseInfo>,
    previous: Option<&PauseInfo>,
    n_waves: usize,
) -> Option<EngineEvent> {
    let Stop::Approval(k) = *stop else {
        return None;
    };
    let waiting = conditions::reason::WAITING_FOR_APPROVAL;
    let now_waiting = pause.is_some_and(|p| p.reason == waiting);
    let was_waiting = previous.is_some_and(|p| p.reason == waiting);
    (now_waiting && !was_waiting).then(|| {
        EngineEvent::normal(
            reason::WAITING_FOR_APPROVAL,
            format!(
                "wave {k}/{n_waves} waits for approval: set spec.approvedWaves to {k} or annotate otau.dev/approve={k}:<nonce>"
            ),
        )
        .about_wave(k)
    })
}

/// What decides the overall state.
pub struct OverallInput<'a> {
    /// The abort record, once aborted.
    pub abort: Option<&'a AbortRecord>,
    /// Whether the threshold holds the rollout.
    pub auto_paused: bool,
    /// Every wave completed.
    pub all_done: bool,
    /// `spec.paused` or the pause annotation.
    pub user_paused: bool,
    /// `spec.paused` or `the otau.dev/pause annotation`, for messages.
    pub paused_by: &'a str,
    /// Where the wave progression stopped.
    pub stop: &'a Stop,
    /// The current wave.
    pub current: usize,
    /// Waves in the spec.
    pub n_waves: usize,
    /// Counts over all targets.
    pub totals: &'a DeviceCounts,
    /// Counts per wave (index = wave from 1).
    pub buckets: &'a [DeviceCounts],
    /// The threshold over this step's states, for the pause message.
    pub judge: &'a StepJudge<'a>,
    /// Devices the selectors pick that `targets.exclude` removes.
    pub excluded: usize,
    /// The baselines in force.
    pub baselines: &'a [ThresholdBaseline],
    /// The threshold.
    pub threshold: &'a FailureThreshold,
}

/// The overall state the step ends in, with its message.
pub fn overall(input: &OverallInput<'_>) -> Overall {
    let (n_waves, current) = (input.n_waves, input.current);
    let wave_text = |k: usize| {
        if k == 0 {
            counts_text(input.totals)
        } else {
            format!("wave {k}/{n_waves}: {}", counts_text(&input.buckets[k]))
        }
    };
    if let Some(record) = input.abort {
        Overall::Aborted(format!(
            "aborted by {} at {}: nothing more is written; {}",
            record.cause.describe(),
            record.at.0,
            counts_text(input.totals)
        ))
    } else if input.auto_paused {
        Overall::FailureThresholdExceeded(format!(
            "{}; paused: resume with a new spec.resumeToken or the otau.dev/resume annotation",
            threshold_detail(input)
        ))
    } else if input.all_done {
        completed(n_waves, input.totals)
    } else if input.user_paused {
        Overall::PausedByUser(format!(
            "paused by {}; {}",
            input.paused_by,
            wave_text(current)
        ))
    } else {
        match input.stop {
            Stop::Approval(k) => Overall::WaitingForApproval(format!(
                "wave {k}/{n_waves} waits for approval (spec.approvedWaves >= {k} or otau.dev/approve={k}:<nonce>); {}",
                wave_text(current)
            )),
            Stop::Soaking(until) => {
                Overall::Soaking(format!("{}; soaking until {}", wave_text(current), until.0))
            }
            Stop::NoDevices if input.excluded > 0 => Overall::AllTargetsExcluded(format!(
                "no device to update: the targets select {} device(s) and spec.targets.exclude \
                 removes every one; change spec.targets (or its exclude list)",
                input.excluded
            )),
            Stop::NoDevices => Overall::WaveInProgress(
                "waiting for devices: no device matches the targets yet".to_owned(),
            ),
            _ => Overall::WaveInProgress(wave_text(current)),
        }
    }
}

/// The overall state of a rollout whose waves all completed: `CompletedWithFailures` when a
/// finished device did not install the version (failed, refused, timed out or sent an
/// unreadable report), with the success rate; else `Complete`.
pub fn completed(n_waves: usize, totals: &DeviceCounts) -> Overall {
    let text = format!("all {n_waves} waves complete: {}", counts_text(totals));
    if totals.unsuccessful() > 0 {
        Overall::CompletedWithFailures(format!(
            "{text}; success rate {}",
            success_rate(totals).unwrap_or_else(|| "n/a".into())
        ))
    } else {
        Overall::Complete(text)
    }
}

/// "waves 1-2: 5 of 40 finished devices failed (12.5%), over 10%".
fn threshold_detail(input: &OverallInput<'_>) -> String {
    match input.judge.exceeded(input.current, input.baselines) {
        Some(j) => format!(
            "{}: {} of {} finished devices failed ({}), over {}%",
            started_waves_text(input.current),
            j.failed,
            j.finished,
            percent_text(j.failed, j.finished),
            input.threshold.percent
        ),
        None => "failures exceeded the threshold".to_owned(),
    }
}

/// The `RolloutComplete` Event when the rollout completes in this step.
pub fn completion_event(
    overall: &Overall,
    previous: &[Condition],
    n_waves: usize,
    totals: &DeviceCounts,
) -> Option<EngineEvent> {
    let complete = matches!(
        overall,
        Overall::Complete(_) | Overall::CompletedWithFailures(_)
    );
    (complete && !was_complete(previous)).then(|| {
        EngineEvent::normal(
            reason::ROLLOUT_COMPLETE,
            format!(
                "all {n_waves} waves complete: {} (success rate {})",
                counts_text(totals),
                success_rate(totals).unwrap_or_else(|| "n/a".into())
            ),
        )
    })
}

/// `lastProgressAt`: now when more devices left `pending` (notified by this step or before),
/// more reported in progress, or more finished; else as before (a started rollout always has
/// a time, so one whose first writes already fail can stall). A notification whose write
/// fails is no progress: the controller decides again on the unchanged index, which counts the
/// same devices as this step's notifications again, so the counts stay where they were.
pub fn last_progress_at(
    totals: &DeviceCounts,
    previous: &DeviceCounts,
    previous_at: Option<&Time>,
    started: bool,
    now: &Time,
) -> Option<Time> {
    let moved = |c: &DeviceCounts| {
        let done = finished(c) + c.skipped;
        [c.targeted - c.pending, c.in_progress + done, done]
    };
    let moved_forward = moved(totals)
        .iter()
        .zip(moved(previous))
        .any(|(now, was)| *now > was);
    if moved_forward {
        Some(now.clone())
    } else {
        previous_at
            .cloned()
            .or_else(|| started.then(|| now.clone()))
    }
}

/// What decides when to look again.
pub struct RequeueInput<'a> {
    /// The earliest device timeout of the devices in flight before the step's writes, or end
    /// of a busy device's wait (whichever comes first).
    pub earliest_timeout: Option<Micros>,
    /// Whether this step notified devices.
    pub notified: bool,
    /// Where the wave progression stopped.
    pub stop: &'a Stop,
    /// Aborted.
    pub aborted: bool,
    /// Devices notified or in progress after the step.
    pub in_flight_after: i64,
    /// The step's time (µs).
    pub now: Micros,
    /// The device timeout (µs).
    pub timeout: Micros,
}

/// The next moment something is due by time alone, and which poll interval applies.
pub fn requeue(input: &RequeueInput<'_>) -> Requeue {
    let earliest = |a: Option<Micros>, b: Micros| Some(a.map_or(b, |e| e.min(b)));
    let mut at = input.earliest_timeout;
    if input.notified {
        at = earliest(at, input.now.saturating_add(input.timeout));
    }
    if let Stop::Soaking(until) = input.stop {
        at = earliest(at, micros_of(until));
    }
    let poll = if input.aborted && input.in_flight_after == 0 {
        at = None;
        PollHint::None
    } else if input.in_flight_after > 0 || input.notified || *input.stop == Stop::InProgress {
        PollHint::Active
    } else {
        PollHint::Idle
    };
    Requeue { at, poll }
}
