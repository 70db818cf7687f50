//! One step of the rollout: [`reconcile`] (device state readable) and [`reconcile_blocked`]
//! (a prerequisite is missing). docs/rollouts.md states the rules in prose.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions::{
    self, FALSE, PROGRESSING, READY, UNKNOWN, new_condition, rollout_phase, set_condition,
};
use crate::api::rollout::{
    DeviceCounts, DeviceFailure, FailureAction, PauseInfo, RolloutStatus, WavePlan, WaveStatus,
    success_rate, wave_progress,
};

use super::control::{ResumeRequest, read_control};
use super::device::{DeviceState, EvalContext, evaluate, report_is_fresh};
use super::events::{EngineEvent, reason};
use super::index::{DeviceIndex, ReportCode};
use super::memory::{AbortCause, AbortRecord, ThresholdBaseline};
use super::observation::Micros;
use super::order::order_seed;
use super::policy::{
    Judgement, ParsedPolicy, failures, finished, judge_started_waves, percent_text,
    started_waves_text,
};
use super::status::{
    FailureCandidate, Overall, RecentFailures, count, counts_text, micros_of, set_conditions,
    time_from_micros, time_from_micros_ceil, truncate, was_complete,
};
use super::waves::{cumulative_sizes, positional_wave};
use super::{Blocker, Decision, EngineError, EngineInput, Notification, PollHint, Requeue};

/// Why the wave progression stopped in this step.
#[derive(Clone, Debug, PartialEq)]
enum Stop {
    /// No device matches the targets yet.
    NoDevices,
    /// Paused or aborted.
    Hold,
    /// The wave (from 1) waits for approval.
    Approval(usize),
    /// The current wave has devices not finished.
    InProgress,
    /// Soaking until this time.
    Soaking(Time),
    /// The last wave completed.
    Done,
}

/// Per-device states of one pass, with what the wave logic needs.
struct Pass {
    states: Vec<DeviceState>,
    /// Unfinished devices per positional wave (index = wave, 1-based).
    unfinished: Vec<u64>,
    /// Unfinished devices holding a notification, per positional wave.
    unfinished_notified: Vec<u64>,
    in_flight: u64,
    earliest_timeout: Option<Micros>,
}

fn evaluate_all(
    index: &DeviceIndex,
    order: &[u32],
    sizes: &[u64],
    starts: &[Option<Micros>],
    ctx: EvalContext,
) -> Pass {
    let buckets = sizes.len() + 2;
    let mut pass = Pass {
        states: Vec::with_capacity(order.len()),
        unfinished: vec![0; buckets],
        unfinished_notified: vec![0; buckets],
        in_flight: 0,
        earliest_timeout: None,
    };
    for (p, &i) in order.iter().enumerate() {
        let entry = index.entry(i);
        let pw = positional_wave(sizes, p as u64);
        let ctx = EvalContext {
            rollout_started_at: starts.first().copied().flatten(),
            ..ctx
        };
        let state = evaluate(entry, &ctx);
        if !state.is_finished() {
            pass.unfinished[pw] += 1;
            if state.is_notified() {
                pass.unfinished_notified[pw] += 1;
            }
        }
        if state.is_in_flight() {
            pass.in_flight += 1;
            let at = entry.set_at.saturating_add(ctx.timeout);
            pass.earliest_timeout = Some(pass.earliest_timeout.map_or(at, |e| e.min(at)));
        }
        pass.states.push(state);
    }
    pass
}

/// Counts per wave (index = wave from 1; the last bucket holds devices no wave covers). A
/// device counts in its positional wave, except a notified device beyond the current wave
/// (moved back by late joiners), which counts in the current wave.
fn attributed_counts(states: &[DeviceState], sizes: &[u64], current: usize) -> Vec<DeviceCounts> {
    let mut counts = vec![DeviceCounts::default(); sizes.len() + 2];
    for (p, &state) in states.iter().enumerate() {
        let pw = positional_wave(sizes, p as u64);
        let wave = if state.is_notified() && pw > current && current >= 1 {
            current
        } else {
            pw
        };
        count(&mut counts[wave], state);
    }
    counts
}

fn sum_counts(buckets: &[DeviceCounts]) -> DeviceCounts {
    let mut t = DeviceCounts::default();
    for c in buckets {
        t.targeted += c.targeted;
        t.pending += c.pending;
        t.notified += c.notified;
        t.in_progress += c.in_progress;
        t.succeeded += c.succeeded;
        t.failed += c.failed;
        t.aborted += c.aborted;
        t.timed_out += c.timed_out;
        t.skipped += c.skipped;
        t.invalid += c.invalid;
    }
    t
}

fn check_index(input: &EngineInput<'_>, index: &DeviceIndex) -> Result<(), EngineError> {
    let seed = order_seed(input.spec, input.namespace, input.name);
    if index.config().seed != seed {
        return Err(EngineError::IndexMismatch(format!(
            "it was built for order seed {:?}, the Rollout's is {seed:?}",
            index.config().seed
        )));
    }
    if index.config().targets != input.spec.targets {
        return Err(EngineError::IndexMismatch(
            "spec.targets changed since it was built".into(),
        ));
    }
    Ok(())
}

/// One step with device state available. Pure: the same input, index and `now` (µs) give the
/// same decision; see the crate docs for what it returns.
pub fn reconcile(
    input: &EngineInput<'_>,
    index: &DeviceIndex,
    now: Micros,
) -> Result<Decision, EngineError> {
    let spec = input.spec;
    let policy = ParsedPolicy::parse(spec)?;
    check_index(input, index)?;
    let now_t = time_from_micros(now);
    let prev = input.status;
    let n_waves = spec.waves.len();

    let mut control = read_control(
        spec,
        input.annotations,
        &prev.acted_on,
        input.memory,
        &now_t,
    );
    let mut events = std::mem::take(&mut control.events);

    // The waves started so far, as persisted (trusted up to the spec's number of waves).
    let mut waves: Vec<WaveStatus> = prev.waves.clone();
    let mut current = (prev.current_wave.max(0) as usize)
        .min(waves.len())
        .min(n_waves);
    waves.truncate(current);
    for (i, w) in waves.iter_mut().enumerate() {
        w.number = i as i32 + 1;
        w.name = spec.waves[i].name.clone();
    }

    let order = index.ordered();
    let n = order.len() as u64;
    let sizes = cumulative_sizes(&spec.waves, n);
    let starts: Vec<Option<Micros>> = waves
        .iter()
        .map(|w| w.started_at.as_ref().map(micros_of))
        .collect();
    let mut ctx = EvalContext {
        now,
        timeout: policy.timeout,
        max_attempts: policy.max_attempts,
        retries_allowed: !control.aborted(),
        rollout_started_at: None,
    };
    let mut pass = evaluate_all(index, &order, &sizes, &starts, ctx);

    // The failure threshold, judged over the started waves together (invariant when late
    // joiners move a notified device from one started wave's count to another's).
    let threshold = &policy.threshold;
    let was_auto_paused = prev
        .pause
        .as_ref()
        .filter(|p| p.reason == conditions::reason::FAILURE_THRESHOLD_EXCEEDED)
        .cloned();
    let mut auto_pause = if control.aborted() {
        None
    } else {
        was_auto_paused.clone()
    };
    let all_done_before =
        current == n_waves && waves.last().is_some_and(|w| w.completed_at.is_some());
    let judged_counts = attributed_counts(&pass.states, &sizes, current);
    let started_counts = judged_counts.get(1..=current).unwrap_or_default();
    let mut baselines = control.memory.baselines.clone();
    let judged_waves = current;
    let first_trip = move |baselines: &[ThresholdBaseline]| -> Option<(usize, Judgement)> {
        if judged_waves == 0 {
            return None;
        }
        let j = judge_started_waves(started_counts, baselines, threshold);
        j.tripped.then_some((judged_waves, j))
    };
    if let Some(pause) = auto_pause.clone() {
        let newer_generation = input.generation.unwrap_or(0) > pause.generation.unwrap_or(0);
        if let Some(request) = control.resume {
            // One baseline over the started waves, judged the same way: the failures so far
            // are accepted, later waves add to the same sum.
            let so_far = sum_counts(started_counts);
            baselines = vec![ThresholdBaseline {
                wave: current.max(1) as i32,
                finished: finished(&so_far),
                failed: failures(&so_far, threshold),
            }];
            auto_pause = None;
            let by = match request {
                ResumeRequest::Annotation => "the otau.dev/resume annotation",
                ResumeRequest::Token => "a new spec.resumeToken",
            };
            events.push(EngineEvent::normal(
                reason::RESUMED,
                format!(
                    "resumed by {by}: the failures so far are accepted; the threshold is judged again over the devices that finish from now on"
                ),
            ));
        } else if newer_generation {
            match first_trip(&baselines) {
                None => {
                    auto_pause = None;
                    events.push(EngineEvent::normal(
                        reason::RESUMED,
                        format!(
                            "resumed: the spec changed (generation {}) and no wave exceeds the failure threshold any more",
                            input.generation.unwrap_or(0)
                        ),
                    ));
                }
                Some(_) => {
                    auto_pause = Some(PauseInfo {
                        generation: input.generation,
                        ..pause
                    });
                }
            }
        }
    } else if !control.aborted()
        && !all_done_before
        && let Some((w, j)) = first_trip(&baselines)
    {
        let numbers = format!(
            "{}: {} of {} finished devices failed ({}), over the threshold of {}% (judged once {} finished)",
            started_waves_text(w),
            j.failed,
            j.finished,
            percent_text(j.failed, j.finished),
            threshold.percent,
            threshold.min_finished
        );
        match policy.on_failure {
            FailureAction::Pause => {
                auto_pause = Some(PauseInfo {
                    reason: conditions::reason::FAILURE_THRESHOLD_EXCEEDED.into(),
                    since: now_t.clone(),
                    generation: input.generation,
                });
                events.push(EngineEvent::warning(
                    reason::AUTO_PAUSED,
                    format!(
                        "{numbers}; paused: no new device is notified. Resume with a new spec.resumeToken or the otau.dev/resume annotation"
                    ),
                ));
            }
            FailureAction::Abort => {
                control.memory.aborted = Some(AbortRecord {
                    cause: AbortCause::FailureThreshold,
                    at: now_t.clone(),
                });
                events.push(EngineEvent::warning(
                    reason::ABORTED,
                    format!("{numbers}; aborted (onFailure: Abort): nothing more is written"),
                ));
            }
        }
    }
    control.memory.baselines = baselines;
    let aborted = control.aborted();
    if aborted && ctx.retries_allowed {
        // Aborted in this step: no retry will follow, so failed attempts are final now.
        ctx.retries_allowed = false;
        pass = evaluate_all(index, &order, &sizes, &starts, ctx);
    }

    // Waves: complete the current one, soak, approval gate, start the next.
    let user_paused = spec.paused || control.memory.paused_by_annotation_since.is_some();
    let hold = aborted || auto_pause.is_some() || user_paused;
    let prev_reason = prev.pause.as_ref().map(|p| p.reason.as_str());
    let by_user = conditions::reason::PAUSED_BY_USER;
    let by_spec_text = if spec.paused {
        "spec.paused"
    } else {
        "the otau.dev/pause annotation"
    };
    if user_paused && !aborted && auto_pause.is_none() && prev_reason != Some(by_user) {
        events.push(EngineEvent::normal(
            reason::PAUSED,
            format!(
                "paused by {by_spec_text}: no new device is notified; devices in flight carry on"
            ),
        ));
    }
    if prev_reason == Some(by_user) && !user_paused && !aborted {
        events.push(EngineEvent::normal(
            reason::RESUMED,
            "resumed by the user".to_owned(),
        ));
    }
    let approved =
        |k: usize| !spec.waves[k - 1].require_approval || control.approved_wave >= k as i32;
    let stop = loop {
        if aborted {
            // Terminal: wave bookkeeping stops with the abort; counts keep updating.
            break Stop::Hold;
        }
        if current == 0 {
            if n == 0 {
                break Stop::NoDevices;
            }
            if hold {
                break Stop::Hold;
            }
            if !approved(1) {
                break Stop::Approval(1);
            }
        } else {
            let k = current;
            if waves[k - 1].completed_at.is_none() {
                let open: u64 = pass.unfinished[1..=k].iter().sum::<u64>()
                    + pass.unfinished_notified[k + 1..].iter().sum::<u64>();
                if open > 0 {
                    break Stop::InProgress;
                }
                let soak_until = policy.soaks[k - 1]
                    .map(|soak| time_from_micros_ceil(micros_of(&now_t).saturating_add(soak)));
                let wave = &mut waves[k - 1];
                wave.completed_at = Some(now_t.clone());
                wave.soak_until = soak_until.clone();
                let counts = &attributed_counts(&pass.states, &sizes, k)[k];
                let soak_text = soak_until
                    .map(|t| format!("; soaking until {}", t.0))
                    .unwrap_or_default();
                events.push(EngineEvent::normal(
                    reason::WAVE_COMPLETED,
                    format!(
                        "wave {k}/{n_waves} completed: {}{soak_text}",
                        counts_text(counts)
                    ),
                ));
            }
            if k == n_waves {
                break Stop::Done;
            }
            if let Some(until) = &waves[k - 1].soak_until
                && micros_of(until) > now
            {
                break Stop::Soaking(until.clone());
            }
            if hold {
                break Stop::Hold;
            }
            if !approved(k + 1) {
                break Stop::Approval(k + 1);
            }
        }
        // Start the next wave.
        let k = current + 1;
        let covered_before = if current == 0 { 0 } else { sizes[current - 1] };
        waves.push(WaveStatus {
            number: k as i32,
            name: spec.waves[k - 1].name.clone(),
            started_at: Some(now_t.clone()),
            ..WaveStatus::default()
        });
        current = k;
        let name = spec.waves[k - 1]
            .name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        events.push(EngineEvent::normal(
            reason::WAVE_STARTED,
            format!(
                "wave {k}/{n_waves}{name} started: {} more devices, {} of {n} covered",
                sizes[k - 1].saturating_sub(covered_before),
                sizes[k - 1]
            ),
        ));
    };

    // Recent failures, from the states before this step's writes (a retry being written now
    // still shows the failure that caused it).
    let recent_failures = recent_failures(index, &order, &pass.states, &policy, &ctx);

    // Notifications: covered devices not notified yet, and retries, up to the in-flight cap.
    let mut notifications = Vec::new();
    if !hold && current >= 1 {
        let covered = sizes[current - 1];
        let mut budget = policy
            .max_in_flight
            .map(|cap| cap.saturating_sub(pass.in_flight));
        let mut values: Vec<Option<Arc<str>>> = vec![None; usize::from(policy.max_attempts) + 1];
        let batch = input.max_notifications.unwrap_or(usize::MAX);
        for (p, &i) in order.iter().enumerate() {
            if budget == Some(0) || notifications.len() >= batch {
                break;
            }
            let attempt = match pass.states[p] {
                DeviceState::Pending if (p as u64) < covered => 1u8,
                DeviceState::RetryDue { next } => next,
                _ => continue,
            };
            let slot = usize::from(attempt).min(values.len() - 1);
            let manifest = values[slot]
                .get_or_insert_with(|| Arc::from(index.manifest_value(attempt)))
                .clone();
            notifications.push(Notification {
                identity: index.identity(index.entry(i)).to_owned(),
                attempt: u32::from(attempt),
                manifest,
            });
            pass.states[p] = DeviceState::Notified;
            if let Some(b) = budget.as_mut() {
                *b -= 1;
            }
        }
    }

    // Counts after this step's writes.
    let buckets = attributed_counts(&pass.states, &sizes, current);
    for (i, wave) in waves.iter_mut().enumerate() {
        wave.counts = buckets[i + 1].clone();
    }
    let totals = sum_counts(&buckets);

    // Pause shown in status, and the pause/resume events derived from its change.
    let pause = if aborted {
        None
    } else if let Some(p) = auto_pause.clone() {
        Some(p)
    } else if user_paused {
        let since = control
            .memory
            .paused_by_annotation_since
            .clone()
            .or_else(|| {
                prev.pause
                    .as_ref()
                    .filter(|p| p.reason == conditions::reason::PAUSED_BY_USER)
                    .map(|p| p.since.clone())
            })
            .unwrap_or_else(|| now_t.clone());
        Some(PauseInfo {
            reason: conditions::reason::PAUSED_BY_USER.into(),
            since,
            generation: input.generation,
        })
    } else if let Stop::Approval(_) = stop {
        let since = prev
            .pause
            .as_ref()
            .filter(|p| p.reason == conditions::reason::WAITING_FOR_APPROVAL)
            .map_or_else(|| now_t.clone(), |p| p.since.clone());
        Some(PauseInfo {
            reason: conditions::reason::WAITING_FOR_APPROVAL.into(),
            since,
            generation: input.generation,
        })
    } else {
        None
    };
    let new_reason = pause.as_ref().map(|p| p.reason.as_str());
    if let Stop::Approval(k) = stop
        && new_reason == Some(conditions::reason::WAITING_FOR_APPROVAL)
        && prev_reason != new_reason
    {
        events.push(EngineEvent::normal(
            reason::WAITING_FOR_APPROVAL,
            format!(
                "wave {k}/{n_waves} waits for approval: set spec.approvedWaves to {k} or annotate otau.dev/approve={k}:<nonce>"
            ),
        ));
    }

    // Conditions.
    let all_done = current == n_waves && waves.last().is_some_and(|w| w.completed_at.is_some());
    let wave_text = |k: usize| {
        if k == 0 {
            counts_text(&totals)
        } else {
            format!("wave {k}/{n_waves}: {}", counts_text(&buckets[k]))
        }
    };
    let overall = if let Some(record) = &control.memory.aborted {
        Overall::Aborted(format!(
            "aborted by {} at {}: nothing more is written; {}",
            record.cause.describe(),
            record.at.0,
            counts_text(&totals)
        ))
    } else if auto_pause.is_some() {
        let detail = match first_trip(&control.memory.baselines) {
            Some((w, j)) => format!(
                "{}: {} of {} finished devices failed ({}), over {}%",
                started_waves_text(w),
                j.failed,
                j.finished,
                percent_text(j.failed, j.finished),
                threshold.percent
            ),
            None => "failures exceeded the threshold".to_owned(),
        };
        Overall::FailureThresholdExceeded(format!(
            "{detail}; paused: resume with a new spec.resumeToken or the otau.dev/resume annotation"
        ))
    } else if all_done {
        Overall::Complete(format!(
            "all {n_waves} waves complete: {}",
            counts_text(&totals)
        ))
    } else if user_paused {
        Overall::PausedByUser(format!("paused by {by_spec_text}; {}", wave_text(current)))
    } else {
        match &stop {
            Stop::Approval(k) => Overall::WaitingForApproval(format!(
                "wave {k}/{n_waves} waits for approval (spec.approvedWaves >= {k} or otau.dev/approve={k}:<nonce>); {}",
                wave_text(current)
            )),
            Stop::Soaking(until) => {
                Overall::Soaking(format!("{}; soaking until {}", wave_text(current), until.0))
            }
            Stop::NoDevices => Overall::WaveInProgress(
                "waiting for devices: no device matches the targets yet".to_owned(),
            ),
            _ => Overall::WaveInProgress(wave_text(current)),
        }
    };
    let mut conds = prev.conditions.clone();
    set_conditions(&mut conds, &overall, user_paused, input.generation, &now_t);
    if matches!(overall, Overall::Complete(_)) && !was_complete(&prev.conditions) {
        events.push(EngineEvent::normal(
            reason::ROLLOUT_COMPLETE,
            format!(
                "all {n_waves} waves complete: {} (success rate {})",
                counts_text(&totals),
                success_rate(&totals).unwrap_or_else(|| "n/a".into())
            ),
        ));
    }

    // Progress: more devices left `pending` (notified by this step or before), more reported
    // in progress, or more finished. A notification whose write fails is no progress: the
    // controller decides again on the unchanged index, which counts the same devices as this
    // step's notifications again, so the counts stay where the last status had them.
    let moved = |c: &DeviceCounts| {
        let done = finished(c) + c.skipped + c.invalid;
        [c.targeted - c.pending, c.in_progress + done, done]
    };
    let (moved_now, moved_before) = (moved(&totals), moved(&prev.totals));
    let moved_forward = moved_now
        .iter()
        .zip(moved_before)
        .any(|(now, was)| *now > was);
    // A started rollout always has a time, so one whose first writes already fail can stall.
    let last_progress_at = if moved_forward {
        Some(now_t.clone())
    } else {
        prev.last_progress_at
            .clone()
            .or_else(|| (current >= 1).then(|| now_t.clone()))
    };

    let in_flight_after = totals.notified + totals.in_progress;
    let mut next_at = pass.earliest_timeout;
    if !notifications.is_empty() {
        let at = now.saturating_add(policy.timeout);
        next_at = Some(next_at.map_or(at, |e| e.min(at)));
    }
    if let Stop::Soaking(until) = &stop {
        let at = micros_of(until);
        next_at = Some(next_at.map_or(at, |e| e.min(at)));
    }
    let poll = if aborted && in_flight_after == 0 {
        next_at = None;
        PollHint::None
    } else if in_flight_after > 0 || !notifications.is_empty() || stop == Stop::InProgress {
        PollHint::Active
    } else {
        PollHint::Idle
    };

    let status = RolloutStatus {
        phase: Some(rollout_phase(&conds)),
        conditions: conds,
        observed_generation: input.generation,
        current_wave: current as i32,
        wave_progress: Some(wave_progress(current as i32, n_waves)),
        plan: Some(WavePlan {
            targets: n as i64,
            cumulative: sizes.iter().map(|&s| s as i64).collect(),
        }),
        waves,
        success_rate: success_rate(&totals),
        totals,
        recent_failures,
        pause,
        acted_on: control.acted_on,
        last_progress_at,
        decisions: control.memory.clone().bounded(),
    };
    Ok(Decision {
        notifications,
        status,
        memory: control.memory,
        events,
        requeue: Requeue { at: next_at, poll },
    })
}

/// The newest failures (failed, retrying, timed out, invalid), newest first.
fn recent_failures(
    index: &DeviceIndex,
    order: &[u32],
    states: &[DeviceState],
    policy: &ParsedPolicy,
    ctx: &EvalContext,
) -> Vec<DeviceFailure> {
    let mut recent = RecentFailures::default();
    let failure_time = |p: usize| -> Option<Micros> {
        let e = index.entry(order[p]);
        let by_report =
            (e.report.is_failure() || e.report == ReportCode::Malformed) && report_is_fresh(e);
        match states[p] {
            DeviceState::Failed | DeviceState::Invalid => Some(e.report_at),
            DeviceState::TimedOut => Some(e.set_at.saturating_add(ctx.timeout)),
            DeviceState::RetryDue { .. } if by_report => Some(e.report_at),
            DeviceState::RetryDue { .. } => Some(e.set_at.saturating_add(ctx.timeout)),
            _ => None,
        }
    };
    for p in 0..states.len() {
        if let Some(at) = failure_time(p) {
            recent.offer(FailureCandidate {
                at,
                position: p as u32,
            });
        }
    }
    recent
        .into_sorted()
        .into_iter()
        .map(|c| {
            let p = c.position as usize;
            let e = index.entry(order[p]);
            let identity = index.identity(e);
            let timed_out = matches!(states[p], DeviceState::TimedOut)
                || (matches!(states[p], DeviceState::RetryDue { .. })
                    && !(e.report.is_failure() && report_is_fresh(e)));
            let attempt = match e.set_kind {
                super::index::SetKind::Ours => {
                    format!("attempt {} of {}", e.attempt, policy.max_attempts)
                }
                _ => {
                    "attempt unknown: the device acknowledged with a non-manifest value".to_owned()
                }
            };
            let (status, mut message) = if timed_out {
                (
                    "Timeout".to_owned(),
                    format!("no final report within the device timeout ({attempt})"),
                )
            } else {
                // "checksum mismatch (attempt 1 of 2)", or just "(attempt 1 of 2)" when the
                // device sent no message.
                let note = index.note(identity, e.report_at).unwrap_or("").trim();
                let message = if note.is_empty() {
                    format!("({attempt})")
                } else {
                    format!("{note} ({attempt})")
                };
                (e.report.status_text().to_owned(), message)
            };
            if let DeviceState::RetryDue { next } = states[p] {
                message.push_str(&format!("; retrying with attempt {next}"));
            }
            DeviceFailure {
                identity: truncate(identity.to_owned(), 128),
                status,
                message: Some(truncate(message, 256)),
                at: time_from_micros(c.at),
            }
        })
        .collect()
}

/// One step while a prerequisite is missing: nothing is written and no one-shot annotation is
/// acted on (they act at the next step with readable device state); the previous counts stay
/// and the conditions say what is missing.
pub fn reconcile_blocked(input: &EngineInput<'_>, blocker: &Blocker, now: Micros) -> Decision {
    let now_t = time_from_micros(now);
    let prev = input.status;
    let mut status = prev.clone();
    let mut conds = prev.conditions.clone();
    let generation = input.generation;
    let mut set = |type_: &str, st: &str, r: &str, m: &str| {
        set_condition(
            &mut conds,
            new_condition(type_, st, r, m, generation, now_t.clone()),
        );
    };
    let aborted = input.memory.aborted.is_some() || input.spec.abort;
    match blocker {
        Blocker::PlatformUnavailable(m) => {
            let m = format!("device state cannot be read: {m}; the wave holds, nothing is written");
            set(READY, UNKNOWN, conditions::reason::PLATFORM_UNAVAILABLE, &m);
            if conditions::find_condition(&prev.conditions, PROGRESSING).is_none() {
                set(
                    PROGRESSING,
                    FALSE,
                    conditions::reason::PLATFORM_UNAVAILABLE,
                    &m,
                );
            }
        }
        Blocker::PackageNotReady(m) | Blocker::ConnectorNotReady(m) if !aborted => {
            let r = match blocker {
                Blocker::PackageNotReady(_) => conditions::reason::PACKAGE_NOT_READY,
                _ => conditions::reason::CONNECTOR_NOT_READY,
            };
            set(READY, FALSE, r, m);
            set(PROGRESSING, FALSE, r, m);
        }
        Blocker::PackageNotReady(_) | Blocker::ConnectorNotReady(_) => {
            let cause = input
                .memory
                .aborted
                .as_ref()
                .map_or(AbortCause::Spec, |a| a.cause);
            let overall = Overall::Aborted(format!(
                "aborted by {}: nothing more is written",
                cause.describe()
            ));
            set_conditions(&mut conds, &overall, false, generation, &now_t);
        }
    }
    conditions::set_reconciling(&mut conds, generation, now_t);
    status.phase = Some(rollout_phase(&conds));
    status.conditions = conds;
    status.observed_generation = input.generation;
    Decision {
        notifications: Vec::new(),
        status,
        memory: input.memory.clone(),
        events: Vec::new(),
        requeue: Requeue {
            at: None,
            poll: PollHint::Idle,
        },
    }
}
