//! One step of the rollout with device state readable: [`reconcile`] (a step held by a missing
//! prerequisite is [`super::reconcile_blocked`]). docs/rollouts.md states the rules in prose.

use crate::api::conditions::{self, rollout_phase};
use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::rollout::{
    BusyDevices, DeviceFailure, ForeignManifests, HeldDevices, PauseInfo, RolloutStatus, WavePlan,
    success_rate, wave_progress,
};

use super::control::{Control, paused_by, read_control, user_pause_events};
use super::counts::{attributed_counts, held_by_wave, held_in_plan, sum_counts};
use super::device::{DeviceState, EvalContext, busy_until, evaluate, times_out_at};
use super::events::EngineEvent;
use super::failures::recent_failures;
use super::index::DeviceIndex;
use super::notify::{NotifyInput, choose_notifications};
use super::observation::Micros;
use super::order::order_seed;
use super::outcome::{
    OverallInput, PauseInput, RequeueInput, approval_event, completion_event, last_progress_at,
    overall, requeue, shown_pause,
};
use super::policy::{ParsedPolicy, StepJudge, StepStart, judge_at_step_start};
use super::record::choose_success_records;
use super::status::{set_conditions, time_from_micros};
use super::waves::{
    AdvanceInput, Holds, Progression, Stop, advance, cumulative_sizes, positional_wave,
};
use super::{Decision, EngineError, EngineInput, Notification};

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
        let due_by_time = if state.is_in_flight() {
            pass.in_flight += 1;
            Some(times_out_at(entry, &ctx))
        } else if state == DeviceState::Busy {
            busy_until(entry, &ctx)
        } else {
            None
        };
        if let Some(at) = due_by_time {
            pass.earliest_timeout = Some(pass.earliest_timeout.map_or(at, |e| e.min(at)));
        }
        pass.states.push(state);
    }
    pass
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
/// same decision; see the crate docs for what it returns. Reads as: control actions and device
/// states, the threshold and the waves, the notifications, then the status that renders them.
pub fn reconcile(
    input: &EngineInput<'_>,
    index: &DeviceIndex,
    now: Micros,
) -> Result<Decision, EngineError> {
    let policy = ParsedPolicy::parse(input.spec)?;
    check_index(input, index)?;
    let mut step = begin_step(input, index, &policy, now);
    let stop = advance_waves(input, index, &policy, &mut step);
    let notifications = notify(input, index, &policy, &mut step);
    let records = success_records(input, index, &policy, &step);
    let mut decision = finish_step(input, &policy, step, &stop, notifications);
    decision.success_records = records;
    Ok(decision)
}

/// What a step has decided so far.
struct Step<'i> {
    now: Micros,
    now_t: Time,
    control: Control,
    events: Vec<EngineEvent>,
    progression: Progression,
    /// Index entries in rollout order (borrowed from the index when it keeps the order).
    order: Cow<'i, [u32]>,
    sizes: Vec<u64>,
    starts: Vec<Option<Micros>>,
    ctx: EvalContext,
    pass: Pass,
    /// The waves started before this step (judged at its start).
    judged_waves: usize,
    held_now: Vec<HeldDevices>,
    /// Devices the selectors pick that the exclusions remove.
    excluded: usize,
    user_paused: bool,
    holds: Holds,
    /// The newest failures, from the states before this step's writes.
    recent_failures: Vec<DeviceFailure>,
}

/// Reads the control actions and every device's state, and judges the waves started before
/// this step against the threshold.
fn begin_step<'i>(
    input: &EngineInput<'_>,
    index: &'i DeviceIndex,
    policy: &ParsedPolicy,
    now: Micros,
) -> Step<'i> {
    let (spec, prev) = (input.spec, input.status);
    let now_t = time_from_micros(now);
    let mut control = read_control(
        spec,
        input.annotations,
        &prev.acted_on,
        input.memory,
        &now_t,
    );
    let mut events = std::mem::take(&mut control.events);
    let progression = Progression::from_status(spec, prev);
    let order = index.ordered();
    let sizes = cumulative_sizes(&spec.waves, order.len() as u64);
    let starts = progression.starts();
    let ctx = EvalContext {
        now,
        timeout: policy.timeout,
        timeout_total: policy.timeout_total,
        max_attempts: policy.max_attempts,
        retries_allowed: !control.aborted(),
        rollout_started_at: None,
        rollout_created_at: input.created_at,
        take_over_busy: spec.policy.busy_devices == BusyDevices::TakeOver,
        skip_foreign: spec.policy.foreign_manifests == ForeignManifests::Skip,
    };
    let pass = evaluate_all(index, &order, &sizes, &starts, ctx);
    let judged_waves = progression.current;
    let judge = StepJudge {
        states: &pass.states,
        sizes: &sizes,
        threshold: &policy.threshold,
    };
    let verdict = judge_at_step_start(
        &judge,
        policy,
        StepStart {
            started: judged_waves,
            auto_pause: auto_pause_of(prev),
            resume: control.resume,
            generation: input.generation,
            aborted: control.aborted(),
            all_done_before: progression.all_done(spec.waves.len()),
            baselines: &control.memory.baselines,
            now: &now_t,
        },
    );
    events.extend(verdict.events);
    control.memory.baselines = verdict.baselines;
    if let Some(record) = verdict.abort {
        control.memory.aborted = Some(record);
    }
    let user_paused = spec.paused || control.memory.paused_by_annotation_since.is_some();
    let aborted = control.aborted();
    events.extend(user_pause_events(
        user_paused,
        aborted,
        verdict.auto_pause.is_some(),
        prev.pause.as_ref().map(|p| p.reason.as_str()),
        paused_by(spec),
    ));
    Step {
        now,
        now_t,
        held_now: held_by_wave(&pass.states, &sizes, judged_waves),
        excluded: index.excluded(),
        holds: Holds {
            hold: aborted || verdict.auto_pause.is_some() || user_paused,
            auto_pause: verdict.auto_pause,
            aborted,
            abort: None,
        },
        control,
        events,
        progression,
        order,
        sizes,
        starts,
        ctx,
        pass,
        judged_waves,
        user_paused,
        recent_failures: Vec::new(),
    }
}

/// The waves: complete the current one, soak, approval gate, start the next (each start
/// judged before anything else moves). An abort by the threshold makes failures final.
fn advance_waves(
    input: &EngineInput<'_>,
    index: &DeviceIndex,
    policy: &ParsedPolicy,
    step: &mut Step<'_>,
) -> Stop {
    let judge = StepJudge {
        states: &step.pass.states,
        sizes: &step.sizes,
        threshold: &policy.threshold,
    };
    let stop = advance(
        &AdvanceInput {
            spec: input.spec,
            policy,
            sizes: &step.sizes,
            targets: step.order.len() as u64,
            now: step.now,
            now_t: &step.now_t,
            approved_wave: step.control.approved_wave,
            unfinished: &step.pass.unfinished,
            unfinished_notified: &step.pass.unfinished_notified,
            judge: &judge,
            baselines: &step.control.memory.baselines,
            judged_waves: step.judged_waves,
            generation: input.generation,
        },
        &mut step.progression,
        &mut step.holds,
        &mut step.events,
    );
    if let Some(record) = step.holds.abort.take() {
        step.control.memory.aborted = Some(record);
    }
    if step.holds.aborted && step.ctx.retries_allowed {
        // Aborted in this step: no retry will follow, so failed attempts are final now.
        step.ctx.retries_allowed = false;
        step.pass = evaluate_all(index, &step.order, &step.sizes, &step.starts, step.ctx);
    }
    // Before this step's writes: a retry being written now still shows the failure that
    // caused it.
    step.recent_failures =
        recent_failures(index, &step.order, &step.pass.states, policy, &step.ctx);
    stop
}

/// The writes of this step (none while held or before the first wave).
fn notify(
    input: &EngineInput<'_>,
    index: &DeviceIndex,
    policy: &ParsedPolicy,
    step: &mut Step<'_>,
) -> Vec<Notification> {
    let current = step.progression.current;
    if step.holds.hold || current == 0 {
        return Vec::new();
    }
    choose_notifications(
        &NotifyInput {
            index,
            order: &step.order,
            covered: step.sizes[current - 1],
            policy,
            in_flight: step.pass.in_flight,
            batch: input.max_notifications.unwrap_or(usize::MAX),
        },
        &mut step.pass.states,
    )
}

/// The success records to write: while the policy asks for them and the rollout is not
/// aborted (an aborted rollout writes nothing more), bounded by the caller's write batch.
fn success_records(
    input: &EngineInput<'_>,
    index: &DeviceIndex,
    policy: &ParsedPolicy,
    step: &Step<'_>,
) -> Vec<String> {
    if !policy.record_reruns || step.holds.aborted {
        return Vec::new();
    }
    let batch = input.max_notifications.unwrap_or(usize::MAX);
    choose_success_records(index, &step.order, &step.pass.states, batch)
}

/// The status that renders this step's decisions, and the decision.
fn finish_step(
    input: &EngineInput<'_>,
    policy: &ParsedPolicy,
    mut step: Step<'_>,
    stop: &Stop,
    notifications: Vec<Notification>,
) -> Decision {
    let prev = input.status;
    let n_waves = input.spec.waves.len();
    let current = step.progression.current;
    let buckets = attributed_counts(&step.pass.states, &step.sizes, current);
    for (i, wave) in step.progression.waves.iter_mut().enumerate() {
        wave.counts = buckets[i + 1].clone();
    }
    let totals = sum_counts(&buckets);
    let pause = shown_pause(&PauseInput {
        aborted: step.holds.aborted,
        auto_pause: step.holds.auto_pause.as_ref(),
        user_paused: step.user_paused,
        paused_by_annotation_since: step.control.memory.paused_by_annotation_since.as_ref(),
        previous: prev.pause.as_ref(),
        stop,
        now: &step.now_t,
        generation: input.generation,
    });
    step.events.extend(approval_event(
        stop,
        pause.as_ref(),
        prev.pause.as_ref(),
        n_waves,
    ));
    let overall = overall(&OverallInput {
        abort: step.control.memory.aborted.as_ref(),
        auto_paused: step.holds.auto_pause.is_some(),
        all_done: step.progression.all_done(n_waves),
        user_paused: step.user_paused,
        paused_by: paused_by(input.spec),
        stop,
        current,
        n_waves,
        totals: &totals,
        buckets: &buckets,
        judge: &StepJudge {
            states: &step.pass.states,
            sizes: &step.sizes,
            threshold: &policy.threshold,
        },
        baselines: &step.control.memory.baselines,
        threshold: &policy.threshold,
        excluded: step.excluded,
    });
    let mut conds = prev.conditions.clone();
    set_conditions(
        &mut conds,
        &overall,
        step.user_paused,
        input.generation,
        &step.now_t,
    );
    step.events.extend(completion_event(
        &overall,
        &prev.conditions,
        n_waves,
        &totals,
    ));
    let requeue = requeue(&RequeueInput {
        earliest_timeout: step.pass.earliest_timeout,
        notified: !notifications.is_empty(),
        stop,
        aborted: step.holds.aborted,
        in_flight_after: totals.notified + totals.in_progress,
        now: step.now,
        timeout: policy.timeout,
    });
    let status = RolloutStatus {
        phase: Some(rollout_phase(&conds)),
        conditions: conds,
        observed_generation: input.generation,
        current_wave: current as i32,
        wave_progress: Some(wave_progress(current as i32, n_waves)),
        plan: Some(WavePlan {
            targets: step.order.len() as i64,
            cumulative: step.sizes.iter().map(|&s| s as i64).collect(),
            held: held_in_plan(
                prev.plan.as_ref(),
                &step.held_now,
                step.judged_waves,
                n_waves,
            ),
        }),
        waves: step.progression.waves,
        success_rate: success_rate(&totals),
        last_progress_at: last_progress_at(
            &totals,
            &prev.totals,
            prev.last_progress_at.as_ref(),
            current >= 1,
            &step.now_t,
        ),
        totals,
        recent_failures: step.recent_failures,
        pause,
        acted_on: step.control.acted_on,
        decisions: step.control.memory.clone().bounded(),
    };
    Decision {
        notifications,
        success_records: Vec::new(),
        status,
        memory: step.control.memory,
        events: step.events,
        requeue,
    }
}

/// The automatic pause in a status, if the threshold holds it.
fn auto_pause_of(status: &RolloutStatus) -> Option<PauseInfo> {
    status
        .pause
        .as_ref()
        .filter(|p| p.reason == conditions::reason::FAILURE_THRESHOLD_EXCEEDED)
        .cloned()
}
