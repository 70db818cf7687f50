//! One step of the rollout: [`reconcile`] (device state readable) and [`reconcile_blocked`]
//! (a prerequisite is missing). docs/rollouts.md states the rules in prose.

use crate::api::conditions::{
    self, FALSE, PROGRESSING, READY, UNKNOWN, new_condition, rollout_phase, set_condition,
};
use crate::api::rollout::{PauseInfo, RolloutStatus, WavePlan, success_rate, wave_progress};

use super::control::{paused_by, read_control, user_pause_events};
use super::counts::{attributed_counts, held_by_wave, held_in_plan, sum_counts};
use super::device::{DeviceState, EvalContext, evaluate};
use super::failures::recent_failures;
use super::index::DeviceIndex;
use super::memory::AbortCause;
use super::notify::{NotifyInput, choose_notifications};
use super::observation::Micros;
use super::order::order_seed;
use super::outcome::{
    OverallInput, PauseInput, RequeueInput, approval_event, completion_event, last_progress_at,
    overall, requeue, shown_pause,
};
use super::policy::{ParsedPolicy, StepJudge, StepStart, judge_at_step_start};
use super::status::{Overall, set_conditions, time_from_micros};
use super::waves::{AdvanceInput, Holds, Progression, advance, cumulative_sizes, positional_wave};
use super::{Blocker, Decision, EngineError, EngineInput, PollHint, Requeue};

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
/// same decision; see the crate docs for what it returns. Reads as: control actions, device
/// states, the threshold, the waves, the notifications, then the status that renders them.
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
    let mut progression = Progression::from_status(spec, prev);
    let order = index.ordered();
    let n = order.len() as u64;
    let sizes = cumulative_sizes(&spec.waves, n);
    let starts = progression.starts();
    let mut ctx = EvalContext {
        now,
        timeout: policy.timeout,
        max_attempts: policy.max_attempts,
        retries_allowed: !control.aborted(),
        rollout_started_at: None,
    };
    let mut pass = evaluate_all(index, &order, &sizes, &starts, ctx);
    let judged_waves = progression.current;
    let held_now = held_by_wave(&pass.states, &sizes, judged_waves);

    // The threshold over the waves started before this step.
    let judge = StepJudge {
        states: &pass.states,
        sizes: &sizes,
        threshold: &policy.threshold,
    };
    let verdict = judge_at_step_start(
        &judge,
        &policy,
        StepStart {
            started: judged_waves,
            auto_pause: auto_pause_of(prev),
            resume: control.resume,
            generation: input.generation,
            aborted: control.aborted(),
            all_done_before: progression.all_done(n_waves),
            baselines: &control.memory.baselines,
            now: &now_t,
        },
    );
    events.extend(verdict.events);
    control.memory.baselines = verdict.baselines;
    if let Some(record) = verdict.abort {
        control.memory.aborted = Some(record);
    }

    // The waves: complete the current one, soak, approval gate, start the next (each start
    // judged before anything else moves).
    let user_paused = spec.paused || control.memory.paused_by_annotation_since.is_some();
    let aborted = control.aborted();
    let previous_reason = prev.pause.as_ref().map(|p| p.reason.as_str());
    events.extend(user_pause_events(
        user_paused,
        aborted,
        verdict.auto_pause.is_some(),
        previous_reason,
        paused_by(spec),
    ));
    let mut holds = Holds {
        hold: aborted || verdict.auto_pause.is_some() || user_paused,
        auto_pause: verdict.auto_pause,
        aborted,
        abort: None,
    };
    let stop = advance(
        &AdvanceInput {
            spec,
            policy: &policy,
            sizes: &sizes,
            targets: n,
            now,
            now_t: &now_t,
            approved_wave: control.approved_wave,
            unfinished: &pass.unfinished,
            unfinished_notified: &pass.unfinished_notified,
            judge: &judge,
            baselines: &control.memory.baselines,
            judged_waves,
            generation: input.generation,
        },
        &mut progression,
        &mut holds,
        &mut events,
    );
    if let Some(record) = holds.abort.take() {
        control.memory.aborted = Some(record);
    }
    if holds.aborted && ctx.retries_allowed {
        // Aborted in this step: no retry will follow, so failed attempts are final now.
        ctx.retries_allowed = false;
        pass = evaluate_all(index, &order, &sizes, &starts, ctx);
    }

    // Recent failures, from the states before this step's writes (a retry being written now
    // still shows the failure that caused it).
    let recent_failures = recent_failures(index, &order, &pass.states, &policy, &ctx);
    let current = progression.current;
    let notifications = if holds.hold || current == 0 {
        Vec::new()
    } else {
        let batch = input.max_notifications.unwrap_or(usize::MAX);
        choose_notifications(
            &NotifyInput {
                index,
                order: &order,
                covered: sizes[current - 1],
                policy: &policy,
                in_flight: pass.in_flight,
                batch,
            },
            &mut pass.states,
        )
    };

    // The status that renders this step's decisions: counts after the writes first.
    let buckets = attributed_counts(&pass.states, &sizes, current);
    for (i, wave) in progression.waves.iter_mut().enumerate() {
        wave.counts = buckets[i + 1].clone();
    }
    let totals = sum_counts(&buckets);
    let pause = shown_pause(&PauseInput {
        aborted: holds.aborted,
        auto_pause: holds.auto_pause.as_ref(),
        user_paused,
        paused_by_annotation_since: control.memory.paused_by_annotation_since.as_ref(),
        previous: prev.pause.as_ref(),
        stop: &stop,
        now: &now_t,
        generation: input.generation,
    });
    events.extend(approval_event(
        &stop,
        pause.as_ref(),
        prev.pause.as_ref(),
        n_waves,
    ));
    let judge = StepJudge {
        states: &pass.states,
        sizes: &sizes,
        threshold: &policy.threshold,
    };
    let overall = overall(&OverallInput {
        abort: control.memory.aborted.as_ref(),
        auto_paused: holds.auto_pause.is_some(),
        all_done: progression.all_done(n_waves),
        user_paused,
        paused_by: paused_by(spec),
        stop: &stop,
        current,
        n_waves,
        totals: &totals,
        buckets: &buckets,
        judge: &judge,
        baselines: &control.memory.baselines,
        threshold: &policy.threshold,
    });
    let mut conds = prev.conditions.clone();
    set_conditions(&mut conds, &overall, user_paused, input.generation, &now_t);
    events.extend(completion_event(
        &overall,
        &prev.conditions,
        n_waves,
        &totals,
    ));
    let requeue = requeue(&RequeueInput {
        earliest_timeout: pass.earliest_timeout,
        notified: !notifications.is_empty(),
        stop: &stop,
        aborted: holds.aborted,
        in_flight_after: totals.notified + totals.in_progress,
        now,
        timeout: policy.timeout,
    });
    let status = RolloutStatus {
        phase: Some(rollout_phase(&conds)),
        conditions: conds,
        observed_generation: input.generation,
        current_wave: current as i32,
        wave_progress: Some(wave_progress(current as i32, n_waves)),
        plan: Some(WavePlan {
            targets: n as i64,
            cumulative: sizes.iter().map(|&s| s as i64).collect(),
            held: held_in_plan(prev.plan.as_ref(), &held_now, judged_waves, n_waves),
        }),
        waves: progression.waves,
        success_rate: success_rate(&totals),
        last_progress_at: last_progress_at(
            &totals,
            &prev.totals,
            prev.last_progress_at.as_ref(),
            current >= 1,
            &now_t,
        ),
        totals,
        recent_failures,
        pause,
        acted_on: control.acted_on,
        decisions: control.memory.clone().bounded(),
    };
    Ok(Decision {
        notifications,
        status,
        memory: control.memory,
        events,
        requeue,
    })
}

/// The automatic pause in a status, if the threshold holds it.
fn auto_pause_of(status: &RolloutStatus) -> Option<PauseInfo> {
    status
        .pause
        .as_ref()
        .filter(|p| p.reason == conditions::reason::FAILURE_THRESHOLD_EXCEEDED)
        .cloned()
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
