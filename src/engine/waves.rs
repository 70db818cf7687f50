//! The split of the ordered targets into waves (docs/architecture.md §2): wave k covers the first
//! ⌈N·percent_k/100⌉ devices (or `count_k`, capped at N), never fewer than the wave before.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::rollout::{PauseInfo, RolloutSpec, RolloutStatus, Wave, WaveStatus};

use super::counts::attributed_counts;
use super::events::{EngineEvent, reason};
use super::memory::{AbortRecord, ThresholdBaseline};
use super::observation::Micros;
use super::policy::{ParsedPolicy, StepJudge, TripAction, trip};
use super::status::{counts_text, micros_of, time_from_micros_ceil};

/// Cumulative number of devices covered after each wave, for `n` targets.
pub fn cumulative_sizes(waves: &[Wave], n: u64) -> Vec<u64> {
    let mut previous = 0u64;
    waves
        .iter()
        .map(|wave| {
            let own = match (wave.percent, wave.count) {
                (Some(p), _) => {
                    let p = u128::from(p.clamp(0, 100) as u32);
                    (u128::from(n) * p).div_ceil(100) as u64
                }
                (None, Some(c)) => c.max(0) as u64,
                (None, None) => 0,
            };
            previous = own.max(previous).min(n);
            previous
        })
        .collect()
}

/// The wave (from 1) whose prefix first contains `position`; `sizes.len() + 1` when no wave
/// covers it (only possible when the last wave is below 100 %).
pub fn positional_wave(sizes: &[u64], position: u64) -> usize {
    sizes.partition_point(|&c| c <= position) + 1
}

/// Why the wave progression stopped in this step.
#[derive(Clone, Debug, PartialEq)]
pub enum Stop {
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

/// The started waves and the current one.
#[derive(Clone, Debug)]
pub struct Progression {
    /// The started waves, in order (their counts are filled in at the end of the step).
    pub waves: Vec<WaveStatus>,
    /// The wave being delivered or last delivered (from 1; 0 before the first).
    pub current: usize,
}

impl Progression {
    /// The waves started so far, as persisted (trusted up to the spec's number of waves).
    pub fn from_status(spec: &RolloutSpec, status: &RolloutStatus) -> Self {
        let mut waves = status.waves.clone();
        let current = (status.current_wave.max(0) as usize)
            .min(waves.len())
            .min(spec.waves.len());
        waves.truncate(current);
        for (i, w) in waves.iter_mut().enumerate() {
            w.number = i as i32 + 1;
            w.name = spec.waves[i].name.clone();
        }
        Self { waves, current }
    }

    /// Whether the last of `n_waves` waves completed.
    pub fn all_done(&self, n_waves: usize) -> bool {
        self.current == n_waves && self.waves.last().is_some_and(|w| w.completed_at.is_some())
    }

    /// The start (µs) of each started wave.
    pub fn starts(&self) -> Vec<Option<Micros>> {
        self.waves
            .iter()
            .map(|w| w.started_at.as_ref().map(micros_of))
            .collect()
    }
}

/// What holds the progression; a threshold trip in the loop adds to it.
#[derive(Clone, Debug, Default)]
pub struct Holds {
    /// Nothing new starts and nothing is written.
    pub hold: bool,
    /// The automatic pause, if the threshold holds the rollout.
    pub auto_pause: Option<PauseInfo>,
    /// Aborted (before or in this step).
    pub aborted: bool,
    /// An abort by the threshold decided in the loop.
    pub abort: Option<AbortRecord>,
}

/// What the wave progression reads.
pub struct AdvanceInput<'a> {
    /// The spec (wave names and gates).
    pub spec: &'a RolloutSpec,
    /// The parsed policy (soaks, threshold action).
    pub policy: &'a ParsedPolicy,
    /// Cumulative wave sizes.
    pub sizes: &'a [u64],
    /// Targeted devices.
    pub targets: u64,
    /// The step's time (µs and as a status time).
    pub now: Micros,
    /// The step's time as a status time.
    pub now_t: &'a Time,
    /// The highest wave approved (spec or annotation).
    pub approved_wave: i32,
    /// Unfinished devices per positional wave.
    pub unfinished: &'a [u64],
    /// Unfinished devices holding a notification, per positional wave.
    pub unfinished_notified: &'a [u64],
    /// The threshold over this step's states.
    pub judge: &'a StepJudge<'a>,
    /// The baselines in force.
    pub baselines: &'a [ThresholdBaseline],
    /// Waves already judged at the start of the step.
    pub judged_waves: usize,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

/// Moves the waves on as far as this step allows: completes the current wave when every
/// device it covers finished (recording the soak), and starts the next one unless a soak, an
/// approval gate or a hold stops it. A wave started in this step is judged against the
/// threshold with the devices it found already finished before anything else moves.
pub fn advance(
    input: &AdvanceInput<'_>,
    progression: &mut Progression,
    holds: &mut Holds,
    events: &mut Vec<EngineEvent>,
) -> Stop {
    loop {
        if holds.aborted {
            // Terminal: wave bookkeeping stops with the abort; counts keep updating.
            return Stop::Hold;
        }
        if progression.current > input.judged_waves && holds.auto_pause.is_none() {
            judge_started_in_step(input, progression.current, holds, events);
            if holds.aborted {
                return Stop::Hold;
            }
        }
        if let Some(stop) = why_no_next_wave(input, progression, holds.hold, events) {
            return stop;
        }
        events.push(start_next_wave(input, progression));
    }
}

/// Judges waves `1..=current` after a wave started in this step; a trip holds the rollout.
fn judge_started_in_step(
    input: &AdvanceInput<'_>,
    current: usize,
    holds: &mut Holds,
    events: &mut Vec<EngineEvent>,
) {
    let Some(judgement) = input.judge.exceeded(current, input.baselines) else {
        return;
    };
    let trip = trip(
        input.policy,
        current,
        judgement,
        input.now_t,
        input.generation,
    );
    events.push(trip.event);
    holds.hold = true;
    match trip.action {
        TripAction::Pause(pause) => holds.auto_pause = Some(pause),
        TripAction::Abort(record) => {
            holds.abort = Some(record);
            holds.aborted = true;
        }
    }
}

/// Why the next wave cannot start now (completing the current wave on the way), or `None`
/// when it can.
fn why_no_next_wave(
    input: &AdvanceInput<'_>,
    progression: &mut Progression,
    hold: bool,
    events: &mut Vec<EngineEvent>,
) -> Option<Stop> {
    let approved =
        |k: usize| !input.spec.waves[k - 1].require_approval || input.approved_wave >= k as i32;
    let k = progression.current;
    if k == 0 {
        if input.targets == 0 {
            return Some(Stop::NoDevices);
        }
        if hold {
            return Some(Stop::Hold);
        }
        return (!approved(1)).then_some(Stop::Approval(1));
    }
    if progression.waves[k - 1].completed_at.is_none() {
        let open: u64 = input.unfinished[1..=k].iter().sum::<u64>()
            + input.unfinished_notified[k + 1..].iter().sum::<u64>();
        if open > 0 {
            return Some(Stop::InProgress);
        }
        events.push(complete_wave(input, progression, k));
    }
    if k == input.spec.waves.len() {
        return Some(Stop::Done);
    }
    if let Some(until) = &progression.waves[k - 1].soak_until
        && micros_of(until) > input.now
    {
        return Some(Stop::Soaking(until.clone()));
    }
    if hold {
        return Some(Stop::Hold);
    }
    (!approved(k + 1)).then_some(Stop::Approval(k + 1))
}

/// Records wave `k` complete now, with the end of its soak; the `WaveCompleted` event.
fn complete_wave(input: &AdvanceInput<'_>, progression: &mut Progression, k: usize) -> EngineEvent {
    let n_waves = input.spec.waves.len();
    let soak_until = input.policy.soaks[k - 1]
        .map(|soak| time_from_micros_ceil(micros_of(input.now_t).saturating_add(soak)));
    let wave = &mut progression.waves[k - 1];
    wave.completed_at = Some(input.now_t.clone());
    wave.soak_until = soak_until.clone();
    let counts = &attributed_counts(input.judge.states, input.sizes, k)[k];
    let soak_text = soak_until
        .map(|t| format!("; soaking until {}", t.0))
        .unwrap_or_default();
    EngineEvent::normal(
        reason::WAVE_COMPLETED,
        format!(
            "wave {k}/{n_waves} completed: {}{soak_text}",
            counts_text(counts)
        ),
    )
    .about_wave(k)
}

/// Starts the wave after the current one now; the `WaveStarted` event.
fn start_next_wave(input: &AdvanceInput<'_>, progression: &mut Progression) -> EngineEvent {
    let n_waves = input.spec.waves.len();
    let current = progression.current;
    let k = current + 1;
    let covered_before = if current == 0 {
        0
    } else {
        input.sizes[current - 1]
    };
    let spec_wave = &input.spec.waves[k - 1];
    progression.waves.push(WaveStatus {
        number: k as i32,
        name: spec_wave.name.clone(),
        started_at: Some(input.now_t.clone()),
        ..WaveStatus::default()
    });
    progression.current = k;
    let name = spec_wave
        .name
        .as_ref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    EngineEvent::normal(
        reason::WAVE_STARTED,
        format!(
            "wave {k}/{n_waves}{name} started: {} more devices, {} of {} covered",
            input.sizes[k - 1].saturating_sub(covered_before),
            input.sizes[k - 1],
            input.targets
        ),
    )
    .about_wave(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct(p: i32) -> Wave {
        Wave {
            percent: Some(p),
            ..Wave::default()
        }
    }

    fn count(c: i64) -> Wave {
        Wave {
            count: Some(c),
            ..Wave::default()
        }
    }

    #[test]
    fn sizes_round_up_grow_and_cap() {
        let cases: Vec<(Vec<Wave>, u64, Vec<u64>)> = vec![
            (
                vec![pct(1), pct(10), pct(50), pct(100)],
                1000,
                vec![10, 100, 500, 1000],
            ),
            (vec![pct(1), pct(10), pct(100)], 7, vec![1, 1, 7]),
            (vec![pct(33), pct(100)], 10, vec![4, 10]),
            (vec![count(5), pct(10), pct(100)], 20, vec![5, 5, 20]),
            (vec![count(50), pct(100)], 20, vec![20, 20]),
            (vec![pct(100)], 0, vec![0]),
            (
                vec![count(1), count(10), pct(100)],
                1_000_000,
                vec![1, 10, 1_000_000],
            ),
        ];
        for (waves, n, expected) in cases {
            assert_eq!(cumulative_sizes(&waves, n), expected, "n={n}");
        }
    }

    #[test]
    fn positional_wave_is_the_first_covering_prefix() {
        let sizes = [10, 100, 100, 1000];
        assert_eq!(positional_wave(&sizes, 0), 1);
        assert_eq!(positional_wave(&sizes, 9), 1);
        assert_eq!(positional_wave(&sizes, 10), 2);
        assert_eq!(positional_wave(&sizes, 99), 2);
        assert_eq!(positional_wave(&sizes, 100), 4);
        assert_eq!(positional_wave(&sizes, 999), 4);
        assert_eq!(positional_wave(&sizes, 1000), 5);
    }
}
