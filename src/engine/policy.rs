//! The policy in engine units, and the failure-threshold judgement.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::conditions;
use crate::api::duration::{DEVICE_TIMEOUT, DEVICE_TIMEOUT_TOTAL, SOAK};
use crate::api::rollout::{
    DEFAULT_DEVICE_TIMEOUT_TOTAL_FACTOR, DeviceCounts, FailureAction, FailureThreshold,
    ForeignManifests, PauseInfo, RolloutSpec,
};

use super::EngineError;
use super::control::ResumeRequest;
use super::counts::{attributed_counts, sum_counts};
use super::device::DeviceState;
use super::events::{EngineEvent, ThresholdTrip, reason};
use super::memory::{AbortCause, AbortRecord, ThresholdBaseline};
use super::observation::Micros;

/// `spec.policy` and the wave soaks, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedPolicy {
    /// Device timeout (µs).
    pub timeout: Micros,
    /// The total cap of one attempt (µs): `deviceTimeoutTotal`, by default 4 × the timeout.
    pub timeout_total: Micros,
    /// `retries + 1`, the most notifications one device gets.
    pub max_attempts: u8,
    /// The in-flight cap, if any.
    pub max_in_flight: Option<u64>,
    /// The failure threshold.
    pub threshold: FailureThreshold,
    /// What a tripped threshold does.
    pub on_failure: FailureAction,
    /// The soak after each wave (µs), in wave order.
    pub soaks: Vec<Option<Micros>>,
    /// Whether a re-running device's success is recorded on the platform (`recordReruns`).
    pub record_reruns: bool,
}

fn micros(d: std::time::Duration) -> Micros {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl ParsedPolicy {
    /// Parses the policy; a malformed duration is an [`EngineError::InvalidSpec`] naming the
    /// field.
    pub fn parse(spec: &RolloutSpec) -> Result<Self, EngineError> {
        let policy = &spec.policy;
        // The same ranges the schema enforces (`DurationRange`), so a Rollout the apiserver
        // accepted always runs.
        let timeout = policy
            .device_timeout
            .to_std_in(&DEVICE_TIMEOUT)
            .map_err(|e| EngineError::InvalidSpec(format!("spec.policy.deviceTimeout: {e}")))?;
        let timeout_total = match &policy.device_timeout_total {
            None => timeout.saturating_mul(DEFAULT_DEVICE_TIMEOUT_TOTAL_FACTOR),
            Some(d) => d.to_std_in(&DEVICE_TIMEOUT_TOTAL).map_err(|e| {
                EngineError::InvalidSpec(format!("spec.policy.deviceTimeoutTotal: {e}"))
            })?,
        };
        if timeout_total < timeout {
            return Err(EngineError::InvalidSpec(
                "spec.policy.deviceTimeoutTotal: must not be shorter than deviceTimeout".into(),
            ));
        }
        let mut soaks = Vec::with_capacity(spec.waves.len());
        for (i, wave) in spec.waves.iter().enumerate() {
            let soak = match &wave.soak {
                None => None,
                Some(d) => Some(micros(d.to_std_in(&SOAK).map_err(|e| {
                    EngineError::InvalidSpec(format!("spec.waves[{i}].soak: {e}"))
                })?)),
            };
            soaks.push(soak);
        }
        if spec.waves.is_empty() {
            return Err(EngineError::InvalidSpec(
                "spec.waves must list at least one wave (the last one percent: 100)".into(),
            ));
        }
        Ok(Self {
            timeout: micros(timeout),
            timeout_total: micros(timeout_total),
            max_attempts: (policy.retries.clamp(0, 10) + 1) as u8,
            max_in_flight: policy.max_in_flight.map(|m| m.max(1) as u64),
            threshold: policy.failure_threshold.clone(),
            on_failure: policy.on_failure,
            soaks,
            record_reruns: policy.record_reruns,
        })
    }
}

/// The threshold judgement of one wave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// Finished devices judged (succeeded + failed + aborted + timed out + invalid, minus the
    /// baseline).
    pub finished: i64,
    /// Of those, the failures ([`failures`]).
    pub failed: i64,
    /// Whether the threshold is exceeded (judged only once `minFinished` is reached).
    pub tripped: bool,
}

/// Devices that count as finished for the success rate and the threshold
/// ([`DeviceCounts::finished`]).
pub fn finished(counts: &DeviceCounts) -> i64 {
    counts.finished()
}

/// The `foreign` devices of `counts` that are finished: every one under
/// `policy.foreignManifests: Skip` (never written, so done for the Rollout and not holding
/// their wave), none under `Notify` (written when their wave comes). The one place that says
/// so outside the device states ([`DeviceState::is_finished`] of `ForeignSkipped`), for what
/// shows progress over `status` counts (the `foreign_skipped` metric series).
pub fn foreign_finished(counts: &DeviceCounts, foreign: ForeignManifests) -> i64 {
    match foreign {
        ForeignManifests::Skip => counts.foreign,
        ForeignManifests::Notify => 0,
    }
}

/// Devices that count as failures for the threshold: every failed device, and the devices
/// that timed out, refused (`INSTALL_ABORTED`) or sent an unreadable report unless the
/// threshold's `countTimeouts`, `countAborted` or `countInvalid` leaves them out. This is the
/// one place that decides what a failure is.
pub fn failures(counts: &DeviceCounts, threshold: &FailureThreshold) -> i64 {
    let counted = |switch: bool, n: i64| if switch { n } else { 0 };
    counts.failed
        + counted(threshold.count_timeouts, counts.timed_out)
        + counted(threshold.count_aborted, counts.aborted)
        + counted(threshold.count_invalid, counts.invalid)
}

/// Judges one wave: tripped when at least `minFinished` devices finished since the baseline
/// and more than `percent` % of them failed.
pub fn judge(
    counts: &DeviceCounts,
    baseline: Option<&ThresholdBaseline>,
    threshold: &FailureThreshold,
) -> Judgement {
    let (base_finished, base_failed) = baseline.map_or((0, 0), |b| (b.finished, b.failed));
    let finished = (finished(counts) - base_finished).max(0);
    let failed = (failures(counts, threshold) - base_failed).clamp(0, finished);
    let min = i64::from(threshold.min_finished.max(0));
    let percent = i64::from(threshold.percent.clamp(0, 100));
    let tripped = finished >= min && finished > 0 && failed * 100 > percent * finished;
    Judgement {
        finished,
        failed,
        tripped,
    }
}

/// The failures accepted by resumes after automatic pauses, as one baseline over the started
/// waves. A resume records a single baseline; should a status hold several (one per wave, as
/// an earlier version wrote), they are added up.
pub fn accepted_baseline(baselines: &[ThresholdBaseline]) -> Option<ThresholdBaseline> {
    let first = baselines.first()?;
    Some(ThresholdBaseline {
        wave: baselines.iter().map(|b| b.wave).max().unwrap_or(first.wave),
        finished: baselines.iter().map(|b| b.finished).sum(),
        failed: baselines.iter().map(|b| b.failed).sum(),
    })
}

/// Judges the started waves together: the counts of every started wave added up, minus what a
/// resume accepted. Judging the sum (not each wave on its own) keeps the judgement invariant
/// when late joiners move a notified device from one started wave's count to another's, so a
/// wave that starts cannot trip the threshold without a new failure.
pub fn judge_started_waves<'a>(
    waves: impl IntoIterator<Item = &'a DeviceCounts>,
    baselines: &[ThresholdBaseline],
    threshold: &FailureThreshold,
) -> Judgement {
    let mut total = DeviceCounts::default();
    for c in waves {
        total.succeeded += c.succeeded;
        total.failed += c.failed;
        total.aborted += c.aborted;
        total.timed_out += c.timed_out;
        total.invalid += c.invalid;
    }
    judge(&total, accepted_baseline(baselines).as_ref(), threshold)
}

/// What a tripped failure threshold does to the Rollout (`spec.policy.onFailure`).
#[derive(Clone, Debug, PartialEq)]
pub enum TripAction {
    /// Pause: no new device is notified until a person resumes.
    Pause(PauseInfo),
    /// Abort: nothing more is written, ever.
    Abort(AbortRecord),
}

/// A tripped threshold: what it does and the Warning that says so, with the numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Trip {
    /// The pause or the abort.
    pub action: TripAction,
    /// The `AutoPaused` or `Aborted` Event.
    pub event: EngineEvent,
}

/// The consequence of the threshold tripping over waves `1..=started` with `judgement`.
pub fn trip(
    policy: &ParsedPolicy,
    started: usize,
    judgement: Judgement,
    now: &Time,
    generation: Option<i64>,
) -> Trip {
    let threshold = &policy.threshold;
    let data = ThresholdTrip {
        started_waves: u32::try_from(started).unwrap_or(u32::MAX),
        failed: judgement.failed,
        finished: judgement.finished,
    };
    let numbers = format!(
        "{}: {} of {} finished devices failed ({}), over the threshold of {}% (judged once {} finished)",
        started_waves_text(started),
        judgement.failed,
        judgement.finished,
        percent_text(judgement.failed, judgement.finished),
        threshold.percent,
        threshold.min_finished
    );
    match policy.on_failure {
        FailureAction::Pause => Trip {
            action: TripAction::Pause(PauseInfo {
                reason: conditions::reason::FAILURE_THRESHOLD_EXCEEDED.into(),
                since: now.clone(),
                generation,
            }),
            event: EngineEvent::warning(
                reason::AUTO_PAUSED,
                format!(
                    "{numbers}; paused: no new device is notified. Resume with a new spec.resumeToken or the otau.dev/resume annotation"
                ),
            )
            .about_wave(started)
            .with_threshold(data),
        },
        FailureAction::Abort => Trip {
            action: TripAction::Abort(AbortRecord {
                cause: AbortCause::FailureThreshold,
                at: now.clone(),
            }),
            event: EngineEvent::warning(
                reason::ABORTED,
                format!("{numbers}; aborted (onFailure: Abort): nothing more is written"),
            )
            .about_wave(started)
            .with_threshold(data),
        },
    }
}

/// The failure threshold over the device states of one step.
pub struct StepJudge<'a> {
    /// Every targeted device's state, in order.
    pub states: &'a [DeviceState],
    /// The cumulative wave sizes.
    pub sizes: &'a [u64],
    /// The threshold.
    pub threshold: &'a FailureThreshold,
}

impl StepJudge<'_> {
    /// The counts of waves `1..=started` added up (devices moved back by late joiners and
    /// devices of later waves already notified count with wave `started`).
    pub fn started_counts(&self, started: usize) -> DeviceCounts {
        let counts = attributed_counts(self.states, self.sizes, started);
        sum_counts(counts.get(1..=started).unwrap_or_default())
    }

    /// The judgement over waves `1..=started` when it is exceeded. Nothing is judged before a
    /// wave has started.
    pub fn exceeded(&self, started: usize, baselines: &[ThresholdBaseline]) -> Option<Judgement> {
        if started == 0 {
            return None;
        }
        let counts = attributed_counts(self.states, self.sizes, started);
        let judgement = judge_started_waves(&counts[1..=started], baselines, self.threshold);
        judgement.tripped.then_some(judgement)
    }
}

/// What the step knows when it judges the threshold for the waves started before it.
pub struct StepStart<'a> {
    /// The waves started before this step.
    pub started: usize,
    /// The automatic pause in the previous status, if any.
    pub auto_pause: Option<PauseInfo>,
    /// A resume asked for in this step.
    pub resume: Option<ResumeRequest>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Aborted (before or in this step): nothing is judged.
    pub aborted: bool,
    /// Every wave was complete before this step: nothing is judged any more.
    pub all_done_before: bool,
    /// The baselines accepted by earlier resumes.
    pub baselines: &'a [ThresholdBaseline],
    /// The step's time.
    pub now: &'a Time,
}

/// Where the threshold leaves the Rollout at the start of a step.
#[derive(Debug, Default)]
pub struct StepStartVerdict {
    /// The automatic pause that holds after this judgement.
    pub auto_pause: Option<PauseInfo>,
    /// The baselines from now on (a resume replaces them).
    pub baselines: Vec<ThresholdBaseline>,
    /// An abort by the threshold (`onFailure: Abort`).
    pub abort: Option<AbortRecord>,
    /// Resumed or tripped Events.
    pub events: Vec<EngineEvent>,
}

/// Judges the waves started before this step: keeps or lifts an automatic pause (a resume
/// accepts the failures so far; a new generation lifts it when nothing trips any more), or
/// trips the threshold.
pub fn judge_at_step_start(
    judge: &StepJudge<'_>,
    policy: &ParsedPolicy,
    start: StepStart<'_>,
) -> StepStartVerdict {
    let mut verdict = StepStartVerdict {
        auto_pause: if start.aborted {
            None
        } else {
            start.auto_pause.clone()
        },
        baselines: start.baselines.to_vec(),
        ..StepStartVerdict::default()
    };
    let started = start.started;
    if let Some(pause) = verdict.auto_pause.clone() {
        let newer_generation = start.generation.unwrap_or(0) > pause.generation.unwrap_or(0);
        if let Some(request) = start.resume {
            verdict.baselines = vec![resume_baseline(judge, started)];
            verdict.auto_pause = None;
            verdict.events.push(resumed_event(request));
        } else if newer_generation {
            if judge.exceeded(started, &verdict.baselines).is_none() {
                verdict.auto_pause = None;
                verdict.events.push(EngineEvent::normal(
                    reason::RESUMED,
                    format!(
                        "resumed: the spec changed (generation {}) and no wave exceeds the failure threshold any more",
                        start.generation.unwrap_or(0)
                    ),
                ));
            } else {
                verdict.auto_pause = Some(PauseInfo {
                    generation: start.generation,
                    ..pause
                });
            }
        }
    } else if !start.aborted
        && !start.all_done_before
        && let Some(judgement) = judge.exceeded(started, &verdict.baselines)
    {
        let trip = trip(policy, started, judgement, start.now, start.generation);
        verdict.events.push(trip.event);
        match trip.action {
            TripAction::Pause(pause) => verdict.auto_pause = Some(pause),
            TripAction::Abort(record) => verdict.abort = Some(record),
        }
    }
    verdict
}

/// One baseline over the started waves, judged the same way: the failures so far are
/// accepted, later waves add to the same sum.
fn resume_baseline(judge: &StepJudge<'_>, started: usize) -> ThresholdBaseline {
    let so_far = judge.started_counts(started);
    ThresholdBaseline {
        wave: started.max(1) as i32,
        finished: finished(&so_far),
        failed: failures(&so_far, judge.threshold),
    }
}

fn resumed_event(request: ResumeRequest) -> EngineEvent {
    let by = match request {
        ResumeRequest::Annotation => "the otau.dev/resume annotation",
        ResumeRequest::Token => "a new spec.resumeToken",
    };
    EngineEvent::normal(
        reason::RESUMED,
        format!(
            "resumed by {by}: the failures so far are accepted; the threshold is judged again over the devices that finish from now on"
        ),
    )
}

/// The waves a judgement covers in messages: "wave 1" or "waves 1-3".
pub fn started_waves_text(started: usize) -> String {
    if started <= 1 {
        "wave 1".to_owned()
    } else {
        format!("waves 1-{started}")
    }
}

/// Percentages in messages use the same rounding as the status' `successRate`.
pub use crate::api::rollout::percent_text;

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(succeeded: i64, failed: i64, aborted: i64, timed_out: i64) -> DeviceCounts {
        DeviceCounts {
            succeeded,
            failed,
            aborted,
            timed_out,
            ..DeviceCounts::default()
        }
    }

    fn threshold(percent: i32, min_finished: i32, count_timeouts: bool) -> FailureThreshold {
        FailureThreshold {
            percent,
            min_finished,
            count_timeouts,
            ..FailureThreshold::default()
        }
    }

    /// A refusal (`INSTALL_ABORTED`) and an unreadable report are failures by default; each
    /// switch leaves its kind out of the failures, never out of the finished devices.
    #[test]
    fn refusals_and_unreadable_reports_count_unless_switched_off() {
        let refused = DeviceCounts {
            aborted: 10,
            ..DeviceCounts::default()
        };
        let garbage = DeviceCounts {
            succeeded: 8,
            invalid: 2,
            ..DeviceCounts::default()
        };
        let default = FailureThreshold::default();
        assert!(default.count_aborted && default.count_invalid);
        let j = judge(&refused, None, &default);
        assert_eq!((j.finished, j.failed, j.tripped), (10, 10, true));
        let j = judge(&garbage, None, &default);
        assert_eq!((j.finished, j.failed, j.tripped), (10, 2, true));
        let lenient = FailureThreshold {
            count_aborted: false,
            count_invalid: false,
            ..FailureThreshold::default()
        };
        let j = judge(&refused, None, &lenient);
        assert_eq!((j.finished, j.failed, j.tripped), (10, 0, false));
        let j = judge(&garbage, None, &lenient);
        assert_eq!((j.finished, j.failed, j.tripped), (10, 0, false));
        // Each switch leaves out its own kind only.
        let both = DeviceCounts {
            aborted: 3,
            invalid: 4,
            timed_out: 5,
            failed: 1,
            ..DeviceCounts::default()
        };
        let only = |count_aborted, count_invalid, count_timeouts| FailureThreshold {
            count_aborted,
            count_invalid,
            count_timeouts,
            ..FailureThreshold::default()
        };
        assert_eq!(failures(&both, &only(true, false, false)), 4);
        assert_eq!(failures(&both, &only(false, true, false)), 5);
        assert_eq!(failures(&both, &only(false, false, true)), 6);
        assert_eq!(failures(&both, &only(true, true, true)), 13);
        assert_eq!(finished(&both), 13);
    }

    #[test]
    fn judgement_table() {
        // (counts, baseline (finished, failed), threshold, expected finished, failed, tripped)
        let cases = [
            (
                counts(9, 1, 0, 0),
                None,
                threshold(10, 10, true),
                10,
                1,
                false,
            ),
            (
                counts(8, 2, 0, 0),
                None,
                threshold(10, 10, true),
                10,
                2,
                true,
            ),
            (
                counts(0, 5, 0, 0),
                None,
                threshold(10, 10, true),
                5,
                5,
                false,
            ),
            (
                counts(7, 1, 0, 2),
                None,
                threshold(10, 10, true),
                10,
                3,
                true,
            ),
            (
                counts(7, 1, 0, 2),
                None,
                threshold(10, 10, false),
                10,
                1,
                false,
            ),
            (
                counts(8, 0, 2, 0),
                None,
                threshold(10, 10, true),
                10,
                2,
                true,
            ),
            (
                counts(9, 0, 1, 0),
                None,
                threshold(10, 10, true),
                10,
                1,
                false,
            ),
            (counts(0, 1, 0, 0), None, threshold(0, 1, true), 1, 1, true),
            (counts(1, 0, 0, 0), None, threshold(0, 0, true), 1, 0, false),
            (counts(0, 0, 0, 0), None, threshold(0, 0, true), 0, 0, false),
            (
                counts(0, 50, 0, 0),
                None,
                threshold(100, 1, true),
                50,
                50,
                false,
            ),
            (
                counts(10, 10, 0, 0),
                Some((10, 10)),
                threshold(10, 5, true),
                10,
                0,
                false,
            ),
            (
                counts(10, 12, 0, 0),
                Some((10, 10)),
                threshold(10, 20, true),
                12,
                2,
                false,
            ),
            (
                counts(10, 12, 0, 0),
                Some((10, 10)),
                threshold(10, 5, true),
                12,
                2,
                true,
            ),
            (
                counts(10, 14, 0, 0),
                Some((15, 10)),
                threshold(10, 5, true),
                9,
                4,
                true,
            ),
        ];
        for (c, base, t, finished, failed, tripped) in cases {
            let base = base.map(|(f, x)| ThresholdBaseline {
                wave: 1,
                finished: f,
                failed: x,
            });
            let j = judge(&c, base.as_ref(), &t);
            assert_eq!(
                j,
                Judgement {
                    finished,
                    failed,
                    tripped
                },
                "{c:?} {base:?} {t:?}"
            );
        }
    }

    #[test]
    fn parse_reports_the_bad_field() {
        let mut spec: RolloutSpec = serde_json::from_value(serde_json::json!({
            "packageRef": {"name": "p"}, "targets": {"identities": ["a"]},
            "waves": [{"percent": 50, "soak": "10m"}, {"percent": 100}],
            "policy": {"deviceTimeout": "90s", "retries": 2, "maxInFlight": 5}
        }))
        .unwrap();
        let p = ParsedPolicy::parse(&spec).unwrap();
        assert_eq!(p.timeout, 90_000_000);
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.max_in_flight, Some(5));
        assert_eq!(p.soaks, vec![Some(600_000_000), None]);
        spec.waves[1].soak = Some(crate::api::GoDuration::new("ten minutes"));
        let err = ParsedPolicy::parse(&spec).unwrap_err().to_string();
        assert!(err.contains("spec.waves[1].soak"), "{err}");
        spec.waves[1].soak = None;
        spec.policy.device_timeout = crate::api::GoDuration::new("");
        let err = ParsedPolicy::parse(&spec).unwrap_err().to_string();
        assert!(err.contains("spec.policy.deviceTimeout"), "{err}");
    }

    /// The engine runs exactly the durations the schema accepts: the bounds of each range are
    /// in, one nanosecond beyond is out with the schema's message, and a value past Go's
    /// clock (which the schema let through before) is out of range, not unparseable.
    #[test]
    fn parse_accepts_the_schema_ranges_and_nothing_beyond() {
        let mut spec: RolloutSpec = serde_json::from_value(serde_json::json!({
            "packageRef": {"name": "p"}, "targets": {"identities": ["a"]},
            "waves": [{"percent": 50, "soak": "0s"}, {"percent": 100, "soak": "8760h"}],
            "policy": {"deviceTimeout": "1s"}
        }))
        .unwrap();
        let p = ParsedPolicy::parse(&spec).unwrap();
        assert_eq!(p.timeout, 1_000_000);
        assert_eq!(p.soaks, vec![Some(0), Some(8760 * 3_600_000_000)]);
        spec.policy.device_timeout = crate::api::GoDuration::new("8760h");
        assert!(ParsedPolicy::parse(&spec).is_ok());
        for (timeout, soak) in [
            ("999999999ns", "1h"),
            ("8760h1ns", "1h"),
            ("1h", "8760h0.001s"),
            ("1h", "2562048h"),
        ] {
            spec.policy.device_timeout = crate::api::GoDuration::new(timeout);
            spec.waves[0].soak = Some(crate::api::GoDuration::new(soak));
            let err = ParsedPolicy::parse(&spec).unwrap_err().to_string();
            let field = if timeout == "1h" {
                SOAK
            } else {
                DEVICE_TIMEOUT
            };
            assert!(err.contains(&field.message()), "{timeout} {soak}: {err}");
        }
    }

    #[test]
    fn started_waves_are_judged_together_and_moves_between_them_change_nothing() {
        let t = threshold(50, 0, true);
        // One success and one timeout in wave 1: 50%, not over.
        let w1 = counts(1, 0, 0, 1);
        let j = judge_started_waves([&w1], &[], &t);
        assert_eq!((j.finished, j.failed, j.tripped), (2, 1, false));
        // The success moves to wave 2 (late joiners): per wave it would be 100% in wave 1,
        // together it is the same 50%.
        let (a, b) = (counts(0, 0, 0, 1), counts(1, 0, 0, 0));
        assert_eq!(judge_started_waves([&a, &b], &[], &t), j);
        // A resume accepted one failure of two: judged over what finishes after it.
        let base = [ThresholdBaseline {
            wave: 1,
            finished: 2,
            failed: 1,
        }];
        let later = counts(3, 2, 0, 1);
        let j = judge_started_waves([&later], &base, &t);
        assert_eq!((j.finished, j.failed, j.tripped), (4, 2, false));
        let j = judge_started_waves([&later, &counts(0, 1, 0, 0)], &base, &t);
        assert_eq!((j.finished, j.failed, j.tripped), (5, 3, true));
        assert_eq!(started_waves_text(1), "wave 1");
        assert_eq!(started_waves_text(3), "waves 1-3");
    }
}
