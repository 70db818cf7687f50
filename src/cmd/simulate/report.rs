//! The report of a run: a [`Report`] (the `--output json` document) and its text rendering.
//! Everything in it comes from virtual time and the run itself, never from the wall clock, so
//! the same inputs and seed print the same bytes.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use otau_operator::api::rollout::{DeviceCounts, DeviceFailure, FailureAction, HeldDevices};
use otau_operator::engine::{percent_text, started_waves_text};

use super::sim::{End, Outcome, Scenario};

/// The JSON report (`--output json`); field names are camelCase like the Rollout's status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `<namespace>/<name>` of the Rollout.
    pub rollout: String,
    /// The SoftwarePackage's name.
    pub package: String,
    /// The version rolled out.
    pub version: String,
    /// The simulated fleet.
    pub fleet: FleetReport,
    /// How the run ended.
    pub result: ResultReport,
    /// The failure threshold that tripped, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_exceeded: Option<TripReport>,
    /// Virtual start, RFC 3339.
    pub start: String,
    /// Virtual end, RFC 3339.
    pub end: String,
    /// Virtual time elapsed, in seconds.
    pub elapsed_seconds: i64,
    /// Virtual time elapsed, as text (`3d 01:02:03`).
    pub elapsed: String,
    /// Engine steps (poll + reconcile + writes).
    pub steps: u64,
    /// `config_otau` writes made.
    pub config_otau_writes: u64,
    /// `config_otau` writes the platform refused (0 in a healthy run).
    pub config_otau_write_errors: u64,
    /// Devices in scope of the Rollout when the run ended.
    pub targets: i64,
    /// Every wave of the spec, started or not.
    pub waves: Vec<WaveReport>,
    /// Counts over all waves.
    pub totals: DeviceCounts,
    /// Succeeded / finished, e.g. `96.5%`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<String>,
    /// The most recent failures (newest first, as in the Rollout's status).
    pub recent_failures: Vec<DeviceFailure>,
    /// Engine Events and simulator notes, in order.
    pub timeline: Vec<TimelineReport>,
    /// Distinct devices this run wrote `config_otau` to.
    pub devices_written: u64,
    /// Success records (the `otau-installed` identity tag on a device that re-ran the update
    /// it installed, `policy.recordReruns`) this run wrote.
    pub success_records: u64,
    /// The runs before this one, oldest first (`--reapply`: the run before the Rollout was
    /// deleted and applied again); absent without `--reapply`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier_runs: Vec<Report>,
}

/// The simulated fleet.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetReport {
    /// The profile file as given.
    pub profile: String,
    /// Devices in the fleet.
    pub devices: u64,
    /// The fleet's seed.
    pub seed: u64,
    /// The simulated connector's id.
    pub connector: String,
}

/// How the run ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultReport {
    /// `Complete`, `Paused`, `Aborted` or `Stopped`.
    pub phase: String,
    /// The reason (`AllWavesSucceeded`, `CompletedWithFailures`, `FailureThresholdExceeded`, `WaitingForApproval`,
    /// `PausedByUser`, `Aborted`, `Stalled`, `LimitReached`).
    pub reason: String,
    /// What it means, with the numbers.
    pub message: String,
    /// The process exit code.
    pub exit_code: u8,
}

/// The judgement that tripped the failure threshold.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TripReport {
    /// The wave in progress when it tripped (from 1); the threshold judges waves 1 to this
    /// one together.
    pub wave: usize,
    /// Failures of the started waves, since any resume: failed devices, plus timed-out,
    /// refusing and unreadable ones when `countTimeouts`, `countAborted`, `countInvalid`.
    pub failed: i64,
    /// Finished devices judged.
    pub finished: i64,
    /// `failed / finished`, e.g. `25.0%`.
    pub failure_rate: String,
    /// `failureThreshold.percent`.
    pub threshold_percent: i32,
    /// `failureThreshold.minFinished`.
    pub min_finished: i32,
    /// `failureThreshold.countTimeouts`.
    pub count_timeouts: bool,
    /// `failureThreshold.countAborted`.
    pub count_aborted: bool,
    /// `failureThreshold.countInvalid`.
    pub count_invalid: bool,
    /// `Pause` or `Abort`.
    pub action: String,
    /// Virtual time of the trip, seconds after the start.
    pub at_seconds: i64,
}

/// One wave.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaveReport {
    /// Its number (from 1).
    pub number: usize,
    /// Its name, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Devices this wave adds (from the plan).
    pub size: i64,
    /// Devices covered once it is done (from the plan).
    pub cumulative: i64,
    /// Seconds after the start when it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_seconds: Option<i64>,
    /// Seconds after the start when every device finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_seconds: Option<i64>,
    /// Seconds after the start when its soak ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak_until_seconds: Option<i64>,
    /// Its counts (empty until it starts).
    pub counts: DeviceCounts,
    /// Succeeded / finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<String>,
    /// Devices of this wave that already carried the package's manifest before it started
    /// (`status.plan.held`), when any did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldDevices>,
}

/// One timeline entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineReport {
    /// Seconds after the start.
    pub at_seconds: i64,
    /// `Normal`, `Warning` or `Simulate`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
}

/// Exit code: every wave completed.
pub const EXIT_COMPLETE: u8 = 0;
/// Exit code: bad input.
pub const EXIT_BAD_INPUT: u8 = 1;
/// Exit code: paused (failure threshold, waiting for approval, paused by the user).
pub const EXIT_PAUSED: u8 = 2;
/// Exit code: aborted.
pub const EXIT_ABORTED: u8 = 3;
/// Exit code: stopped without an outcome (a limit was reached, or nothing could happen).
pub const EXIT_STOPPED: u8 = 4;

/// Virtual µs as `[Nd ]HH:MM:SS`.
pub fn duration_text(micros: i64) -> String {
    let s = micros.max(0) / 1_000_000;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

fn rfc3339(micros: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(micros.div_euclid(1_000_000))
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn seconds_after(start: i64, t: &Option<Time>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.0.as_second() - start.div_euclid(1_000_000))
}

/// Succeeded of finished devices, rounded to a tenth (`None` before any device finished):
/// the status' `successRate`.
fn success_rate(counts: &DeviceCounts) -> Option<String> {
    otau_operator::api::rollout::success_rate(counts)
}

/// "timeouts counted, refusals counted, unreadable reports not counted".
fn counted_text(t: &TripReport) -> String {
    let counted = |yes: bool, what: &str| {
        if yes {
            format!("{what} counted")
        } else {
            format!("{what} not counted")
        }
    };
    [
        counted(t.count_timeouts, "timeouts"),
        counted(t.count_aborted, "refusals"),
        counted(t.count_invalid, "unreadable reports"),
    ]
    .join(", ")
}

fn result(outcome: &Outcome, trip: Option<&TripReport>) -> ResultReport {
    let condition_message = |type_: &str| {
        outcome
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.message.clone())
            .unwrap_or_default()
    };
    let complete_reason = outcome
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .map_or_else(|| "AllWavesSucceeded".to_owned(), |c| c.reason.clone());
    let trip_text = trip.map(|t| {
        format!(
            "{}: {} of {} finished devices failed ({}), over the threshold of {}% (judged once {} finished; {})",
            started_waves_text(t.wave),
            t.failed,
            t.finished,
            t.failure_rate,
            t.threshold_percent,
            t.min_finished,
            counted_text(t)
        )
    });
    let (phase, reason, message, exit_code) = match &outcome.end {
        End::Complete => (
            "Complete",
            complete_reason.as_str(),
            condition_message("Complete"),
            EXIT_COMPLETE,
        ),
        End::AutoPaused => (
            "Paused",
            "FailureThresholdExceeded",
            trip_text.map_or_else(
                || condition_message("Paused"),
                |t| format!("{t}; paused: no new device is notified"),
            ),
            EXIT_PAUSED,
        ),
        End::PausedByUser => (
            "Paused",
            "PausedByUser",
            condition_message("Paused"),
            EXIT_PAUSED,
        ),
        End::WaitingForApproval(k) => (
            "Paused",
            "WaitingForApproval",
            format!(
                "wave {k} waits for approval (spec.approvedWaves >= {k}); run again with --auto-approve to let every gated wave start"
            ),
            EXIT_PAUSED,
        ),
        End::Aborted => (
            "Aborted",
            "Aborted",
            match trip_text {
                Some(t) => format!("{t}; aborted (onFailure: Abort): nothing more is written"),
                None => condition_message("Ready"),
            },
            EXIT_ABORTED,
        ),
        End::Stalled(why) => ("Stopped", "Stalled", why.clone(), EXIT_STOPPED),
        End::Bound(why) => ("Stopped", "LimitReached", why.clone(), EXIT_STOPPED),
    };
    ResultReport {
        phase: phase.into(),
        reason: reason.into(),
        message,
        exit_code,
    }
}

/// Builds the report of a run.
pub fn build(s: &Scenario, profile_path: &str, outcome: &Outcome) -> Report {
    let status = &outcome.status;
    let spec = &outcome.spec;
    let start = outcome.start;
    let threshold = &spec.policy.failure_threshold;
    let trip = outcome.trip.as_ref().map(|t| TripReport {
        wave: t.wave,
        failed: t.failed,
        finished: t.finished,
        failure_rate: percent_text(t.failed, t.finished),
        threshold_percent: threshold.percent,
        min_finished: threshold.min_finished,
        count_timeouts: threshold.count_timeouts,
        count_aborted: threshold.count_aborted,
        count_invalid: threshold.count_invalid,
        action: match spec.policy.on_failure {
            FailureAction::Pause => "Pause".into(),
            FailureAction::Abort => "Abort".into(),
        },
        at_seconds: (t.at - start) / 1_000_000,
    });
    let cumulative = status
        .plan
        .as_ref()
        .map(|p| p.cumulative.clone())
        .unwrap_or_default();
    let held = status
        .plan
        .as_ref()
        .map(|p| p.held.clone())
        .unwrap_or_default();
    let waves = spec
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let covered = cumulative.get(i).copied().unwrap_or(0);
            let before = if i == 0 {
                0
            } else {
                cumulative.get(i - 1).copied().unwrap_or(0)
            };
            let started = status.waves.get(i);
            let counts = started.map(|w| w.counts.clone()).unwrap_or_default();
            WaveReport {
                number: i + 1,
                name: w.name.clone(),
                size: covered - before,
                cumulative: covered,
                started_seconds: started.and_then(|w| seconds_after(start, &w.started_at)),
                completed_seconds: started.and_then(|w| seconds_after(start, &w.completed_at)),
                soak_until_seconds: started.and_then(|w| seconds_after(start, &w.soak_until)),
                success_rate: success_rate(&counts),
                counts,
                held: held.get(i).filter(|h| h.total() > 0).cloned(),
            }
        })
        .collect();
    let elapsed = outcome.end_at - start;
    Report {
        rollout: format!(
            "{}/{}",
            s.rollout.metadata.namespace.clone().unwrap_or_default(),
            s.rollout.metadata.name.clone().unwrap_or_default()
        ),
        package: s.package.metadata.name.clone().unwrap_or_default(),
        version: outcome.manifest.version.clone(),
        fleet: FleetReport {
            profile: profile_path.to_owned(),
            devices: outcome.fleet_devices,
            seed: outcome.fleet_seed,
            connector: s.connector_id.clone(),
        },
        result: result(outcome, trip.as_ref()),
        threshold_exceeded: trip,
        start: rfc3339(start),
        end: rfc3339(outcome.end_at),
        elapsed_seconds: elapsed / 1_000_000,
        elapsed: duration_text(elapsed),
        steps: outcome.steps,
        config_otau_writes: outcome.writes,
        config_otau_write_errors: outcome.write_errors.0,
        targets: status.plan.as_ref().map_or(0, |p| p.targets),
        waves,
        totals: status.totals.clone(),
        success_rate: success_rate(&status.totals),
        recent_failures: status.recent_failures.clone(),
        timeline: outcome
            .timeline
            .iter()
            .map(|e| TimelineReport {
                at_seconds: (e.at - start) / 1_000_000,
                kind: e.kind.to_owned(),
                reason: e.reason.clone(),
                message: e.message.clone(),
            })
            .collect(),
        devices_written: outcome.devices_written,
        success_records: outcome.success_records,
        earlier_runs: Vec::new(),
    }
}

fn offset(seconds: Option<i64>) -> String {
    seconds.map_or_else(
        || "-".to_owned(),
        |s| format!("+{}", duration_text(s * 1_000_000)),
    )
}

/// How many recent failures the text report shows.
const TEXT_FAILURES: usize = 5;

/// The report as text for a person.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    for (k, earlier) in r.earlier_runs.iter().enumerate() {
        let _ = writeln!(out, "Run {} of {}:", k + 1, r.earlier_runs.len() + 1);
        out.push_str(&run_text(earlier));
        let _ = writeln!(
            out,
            "\n--reapply: the Rollout was deleted and applied again at +{}; run {} starts from the platform state run {} left.\n",
            duration_text((earlier.elapsed_seconds) * 1_000_000),
            k + 2,
            k + 1
        );
    }
    if !r.earlier_runs.is_empty() {
        let _ = writeln!(
            out,
            "Run {} of {}:",
            r.earlier_runs.len() + 1,
            r.earlier_runs.len() + 1
        );
    }
    out.push_str(&run_text(r));
    out
}

/// One wave's held devices: `5 (4 failed, 1 in flight)`.
fn held_text(h: &HeldDevices) -> String {
    let parts: Vec<String> = [
        (h.succeeded, "succeeded"),
        (h.failed, "failed"),
        (h.in_flight, "in flight"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    format!("{} ({})", h.total(), parts.join(", "))
}

/// The report of one run as text: the summary, the wave table, the devices held before their
/// wave, the recent failures and the timeline.
fn run_text(r: &Report) -> String {
    let mut out = summary_text(r);
    out.push('\n');
    out.push_str(&wave_table_text(r));
    out.push_str(&held_section(r));
    out.push_str(&failures_section(r));
    out.push_str(&timeline_section(r));
    out
}

/// The Rollout, the fleet, how the run ended and what it took in virtual time.
fn summary_text(r: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "Rollout {} (package {}, version {}) on {} simulated devices",
        r.rollout, r.package, r.version, r.fleet.devices
    );
    let _ = writeln!(
        w,
        "  profile {}, seed {}, connector {}; {} devices targeted",
        r.fleet.profile, r.fleet.seed, r.fleet.connector, r.targets
    );
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "Result: {} ({}), exit code {}",
        r.result.phase.to_uppercase(),
        r.result.reason,
        r.result.exit_code
    );
    let _ = writeln!(w, "  {}", r.result.message);
    let _ = writeln!(
        w,
        "  virtual time: {} elapsed ({} -> {}), {} steps, {} config_otau writes",
        r.elapsed, r.start, r.end, r.steps, r.config_otau_writes
    );
    if r.config_otau_write_errors > 0 {
        let _ = writeln!(
            w,
            "  {} config_otau writes refused",
            r.config_otau_write_errors
        );
    }
    out
}

/// The wave table's columns: header, width, and whether cells align left (else right).
const WAVE_COLUMNS: [(&str, usize, bool); 15] = [
    ("wave", 4, false),
    ("name", 12, true),
    ("size", 8, false),
    ("started", 13, false),
    ("completed", 13, false),
    ("soak until", 13, false),
    ("succeeded", 9, false),
    ("failed", 7, false),
    ("timeout", 6, false),
    ("aborted", 7, false),
    ("skipped", 7, false),
    ("invalid", 7, false),
    ("in flight", 9, false),
    ("pending", 7, false),
    ("success", 8, false),
];

/// One line of the wave table: each cell in its column's width, one space between columns.
fn wave_table_line(cells: [String; 15]) -> String {
    let cells: Vec<String> = WAVE_COLUMNS
        .iter()
        .zip(cells)
        .map(|(&(_, width, left), cell)| {
            if left {
                format!("{cell:<width$}")
            } else {
                format!("{cell:>width$}")
            }
        })
        .collect();
    cells.join(" ") + "\n"
}

/// The count cells of a wave table line, from `succeeded` to `pending`.
fn count_cells(c: &DeviceCounts) -> [String; 8] {
    [
        c.succeeded,
        c.failed,
        c.timed_out,
        c.aborted,
        c.skipped,
        c.invalid,
        c.notified + c.in_progress,
        c.pending,
    ]
    .map(|n| n.to_string())
}

/// Every wave of the spec with its times and counts, then the totals.
fn wave_table_text(r: &Report) -> String {
    let mut out = wave_table_line(WAVE_COLUMNS.map(|(header, _, _)| header.to_owned()));
    for wave in &r.waves {
        let times = [
            offset(wave.started_seconds),
            offset(wave.completed_seconds),
            offset(wave.soak_until_seconds),
        ];
        out.push_str(&counted_line(
            [
                wave.number.to_string(),
                wave.name.as_deref().unwrap_or("-").to_owned(),
                wave.size.to_string(),
            ],
            times,
            &wave.counts,
            wave.success_rate.as_deref(),
        ));
    }
    let all = [
        "all".to_owned(),
        String::new(),
        r.totals.targeted.to_string(),
    ];
    out.push_str(&counted_line(
        all,
        Default::default(),
        &r.totals,
        r.success_rate.as_deref(),
    ));
    out
}

/// One line of the wave table: who (number, name, size), when (started, completed, soak),
/// the counts and the success rate.
fn counted_line(
    who: [String; 3],
    when: [String; 3],
    counts: &DeviceCounts,
    success_rate: Option<&str>,
) -> String {
    let mut cells = who.into_iter().chain(when).chain(count_cells(counts));
    let mut line: [String; 15] = std::array::from_fn(|_| cells.next().unwrap_or_default());
    line[14] = success_rate.unwrap_or("-").to_owned();
    wave_table_line(line)
}

/// The devices that already held the package's manifest when their wave started, per wave;
/// empty when none did.
fn held_section(r: &Report) -> String {
    let held: Vec<String> = r
        .waves
        .iter()
        .filter_map(|wave| {
            wave.held
                .as_ref()
                .map(|h| format!("wave {}: {}", wave.number, held_text(h)))
        })
        .collect();
    if held.is_empty() {
        return String::new();
    }
    format!(
        "\nAlready holding this package's manifest when their wave started (an earlier Rollout wrote it; counted by their reports, judged with the started waves): {}\n",
        held.join("; ")
    )
}

/// The most recent failures, at most [`TEXT_FAILURES`]; empty when there are none.
fn failures_section(r: &Report) -> String {
    let mut out = String::new();
    if r.recent_failures.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nRecent failures (newest first, {} of {} kept):",
        r.recent_failures.len().min(TEXT_FAILURES),
        r.recent_failures.len()
    );
    for f in r.recent_failures.iter().take(TEXT_FAILURES) {
        let _ = writeln!(
            out,
            "  {} {} {}",
            f.identity,
            f.status,
            f.message.as_deref().unwrap_or("")
        );
    }
    out
}

/// The engine Events and simulator notes in order, at their virtual time after the start.
fn timeline_section(r: &Report) -> String {
    let mut out = String::from("\nTimeline (virtual time after the start):\n");
    for e in &r.timeline {
        let _ = writeln!(
            out,
            "  +{:<12} {:<8} {:<20} {}",
            duration_text(e.at_seconds * 1_000_000),
            e.kind,
            e.reason,
            e.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_days_and_clock_time() {
        assert_eq!(duration_text(0), "00:00:00");
        assert_eq!(duration_text(3_723_000_000), "01:02:03");
        assert_eq!(
            duration_text(3 * 86_400_000_000 + 61_000_000),
            "3d 00:01:01"
        );
        assert_eq!(
            rfc3339(super::super::sim::START_MICROS),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(percent_text(1, 3), "33.3%");
        let counts = DeviceCounts {
            succeeded: 1,
            failed: 5,
            ..DeviceCounts::default()
        };
        assert_eq!(success_rate(&counts).as_deref(), Some("16.7%"));
        assert_eq!(success_rate(&DeviceCounts::default()), None);
    }
}
