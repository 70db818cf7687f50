//! The state of one device, computed afresh at every step from its index entry, the policy
//! and the time. The entry holds what the platform lists (values, acks, timestamps) plus two
//! facts the index keeps while it runs (a value's write time through its ack, and that the
//! device installed the target); docs/rollouts.md "Where each fact lives" says what a restart
//! recomputes.

use super::index::{DeviceEntry, ReportCode, SetKind};
use super::observation::Micros;

/// Where one device stands. Each device is in exactly one state; the counts in status map
/// them one to one, except that [`DeviceState::RetryDue`] counts as `pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceState {
    /// Not notified yet.
    Pending,
    /// Its attempt `next - 1` failed or timed out and a retry with attempt `next` is due.
    RetryDue {
        /// The attempt the retry writes.
        next: u8,
    },
    /// Notified, no report for this attempt yet.
    Notified,
    /// Reporting progress for the target version.
    InProgress,
    /// `INSTALLED_VERSION` of the target after a notification.
    Succeeded,
    /// Installed the target after a notification, and has reported about the target again
    /// since (it runs the update again, or a progress report arrived late): still succeeded,
    /// counted in `succeeded` and in `reruns`.
    Rerun,
    /// Its last allowed attempt failed.
    Failed,
    /// Reported `INSTALL_ABORTED` (never retried: the device refused on purpose).
    Aborted,
    /// Its last allowed attempt got no final report within the device timeout.
    TimedOut,
    /// Already at the target version before it was notified; never notified.
    Skipped,
    /// Notified, then sent a report that cannot be parsed.
    Invalid,
    /// Not notified: installing another manifest right now (`policy.busyDevices: Wait`); due
    /// once that update ends or stalls ([`busy_until`]). Holds its wave.
    Busy,
    /// Not notified, holding a manifest no SoftwarePackage of the connector produced; due when
    /// its wave comes, like [`DeviceState::Pending`] (`policy.foreignManifests: Notify`).
    Foreign,
    /// Holding such a manifest with `policy.foreignManifests: Skip`: never notified, finished.
    ForeignSkipped,
    /// Holding the manifest of a package a newer Rollout on the connector rolls out: that
    /// Rollout's device now, never written by this one; finished, counted `skipped`.
    Superseded,
}

impl DeviceState {
    /// Whether the device is done for this rollout (wave completion waits for these).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            DeviceState::Succeeded
                | DeviceState::Rerun
                | DeviceState::Failed
                | DeviceState::Aborted
                | DeviceState::TimedOut
                | DeviceState::Skipped
                | DeviceState::Invalid
                | DeviceState::ForeignSkipped
                | DeviceState::Superseded
        )
    }

    /// Whether the device holds a notification and has not finished (the in-flight cap).
    pub fn is_in_flight(self) -> bool {
        matches!(self, DeviceState::Notified | DeviceState::InProgress)
    }

    /// Whether the device carries one of this rollout's notifications (or an ack of one).
    pub fn is_notified(self) -> bool {
        !matches!(
            self,
            DeviceState::Pending
                | DeviceState::Skipped
                | DeviceState::Busy
                | DeviceState::Foreign
                | DeviceState::ForeignSkipped
                | DeviceState::Superseded
        )
    }

    /// Whether the device is due for its first notification once its wave covers it.
    pub fn awaits_first_notification(self) -> bool {
        matches!(self, DeviceState::Pending | DeviceState::Foreign)
    }
}

/// What the evaluation of a device needs besides its entry.
#[derive(Clone, Copy, Debug)]
pub struct EvalContext {
    /// The time of this step (µs).
    pub now: Micros,
    /// The device timeout (µs): the most time between the attempt's write (or its latest
    /// progress report) and the next report.
    pub timeout: Micros,
    /// The total cap (µs) from the attempt's write, however often it reports progress.
    pub timeout_total: Micros,
    /// `retries + 1`.
    pub max_attempts: u8,
    /// False once aborted: nothing more is written, so no attempt is followed by another.
    pub retries_allowed: bool,
    /// The start (µs) of the rollout's first wave, once it has started: a non-manifest
    /// `config_otau` value (a literal `ACK`) written since then is this rollout's notification,
    /// acknowledged. (Not the device's own wave: late joiners can move a device into a later
    /// wave after it was notified, and it must not be notified again.)
    pub rollout_started_at: Option<Micros>,
    /// When the Rollout was created ([`crate::engine::EngineInput::created_at`]): the earliest
    /// time any of its writes can have, known even when the status lost the first wave's start.
    pub rollout_created_at: Option<Micros>,
    /// `policy.busyDevices: TakeOver`: a device installing another manifest is due at once.
    pub take_over_busy: bool,
    /// `policy.foreignManifests: Skip`: a device holding a foreign manifest is never written.
    pub skip_foreign: bool,
}

/// The attempt a device was notified with, if it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notification {
    /// Our manifest with this attempt.
    Attempt(u8),
    /// Acknowledged with a value that no longer tells the attempt: treated as the last one.
    AttemptUnknown,
}

fn report_is_about_target(report: ReportCode) -> bool {
    matches!(
        report,
        ReportCode::Succeeded
            | ReportCode::InProgress
            | ReportCode::InProgressUnknown
            | ReportCode::TestError
            | ReportCode::DownloadError
            | ReportCode::InstallError
            | ReportCode::OtherError
            | ReportCode::Aborted
    )
}

fn notification(entry: &DeviceEntry, ctx: &EvalContext) -> Option<Notification> {
    match entry.set_kind {
        SetKind::Ours => Some(Notification::Attempt(entry.attempt.max(1))),
        // exosite-platform.md §1.4: a literal ACK replaces the manifest; the device counts as
        // notified when it reports the target version, or when the ACK was written after its
        // wave started (an ack of our write; it then reports nothing yet).
        SetKind::Foreign => {
            let acked_our_write = ctx.rollout_started_at.is_some_and(|s| entry.set_at >= s);
            let reports_target =
                report_is_about_target(entry.report) && entry.report != ReportCode::Succeeded;
            (acked_our_write || reports_target).then_some(Notification::AttemptUnknown)
        }
        SetKind::Absent | SetKind::OtherManifest => None,
    }
}

/// When the device's current attempt was written (µs), as far as the platform and the index
/// tell: the `config_otau` timestamp while the value is not acknowledged, or the write time the
/// index kept through the ack. An ack moves the one platform timestamp (exosite-platform.md
/// §1.3), so for a value first seen acknowledged (after an operator restart) the write lies
/// somewhere between the rollout's creation and the ack:
/// - attempt 1 (or a non-manifest ack): the Rollout's creation is taken (else the first wave's
///   start in the status). No earlier attempt of this rollout can have reported, so every
///   report since is about it; unlike the wave start, the creation time survives a status
///   write lost to a crash right after the first writes.
/// - a retry: the ack is taken. A report between the two may be the failure that called for
///   the retry (the device acked the retry and reported nothing since) or the retry's own
///   failure acked late; the platform cannot tell them apart, and counting the first again
///   would spend an attempt on a report already acted on. So it counts for the earlier
///   attempt, and the retry's late-acked failure is caught by the device timeout instead.
pub fn attempt_written_at(entry: &DeviceEntry, ctx: &EvalContext) -> Micros {
    if entry.write_time_known() || (entry.set_kind == SetKind::Ours && entry.attempt > 1) {
        return entry.set_at;
    }
    ctx.rollout_created_at
        .or(ctx.rollout_started_at)
        .map_or(entry.set_at, |bound| bound.min(entry.set_at))
}

/// Whether the device's last report belongs to its current attempt: it was written strictly
/// after the attempt (whatever an ack did to the `config_otau` timestamp since). A report
/// older than the attempt is about an earlier attempt (or from before this rollout). A report
/// with the very same timestamp is taken as older too: the operator writes a retry only after
/// it has read the failure that called for it, so counting that failure again would fail the
/// new attempt at once; a genuine report at the same microsecond is still caught by the device
/// timeout. Each report so belongs to exactly one attempt: the latest written before it.
pub fn report_belongs_to_attempt(entry: &DeviceEntry, ctx: &EvalContext) -> bool {
    entry.report_at > attempt_written_at(entry, ctx)
}

/// When the device's current attempt times out (µs): [`EvalContext::timeout`] after its write
/// or after its latest progress report for this attempt, whichever is later, and never later
/// than [`EvalContext::timeout_total`] after the write. Both from platform timestamps, so a
/// restarted operator computes the same time.
pub fn times_out_at(entry: &DeviceEntry, ctx: &EvalContext) -> Micros {
    let written = attempt_written_at(entry, ctx);
    let progress = matches!(
        entry.report,
        ReportCode::InProgress | ReportCode::InProgressUnknown
    ) && report_belongs_to_attempt(entry, ctx);
    let clock = if progress {
        written.max(entry.set_at).max(entry.report_at)
    } else {
        written.max(entry.set_at)
    };
    // The cap runs from the value's own timestamp: the write, or (first seen acknowledged)
    // the ack, which is never earlier, so a restart never shortens it.
    let cap = entry
        .set_at
        .saturating_add(ctx.timeout_total.max(ctx.timeout));
    clock.saturating_add(ctx.timeout).min(cap)
}

/// Whether an installed device's latest report is about the target again (a re-run, or a
/// late progress report): it stays succeeded, shown as a re-run.
fn reports_again(report: ReportCode) -> bool {
    (report != ReportCode::Succeeded && report_is_about_target(report))
        || report == ReportCode::Malformed
}

/// Until when (µs, exclusive) a device not notified by this rollout counts as busy with
/// another manifest: while `config_otau` holds that manifest and the latest report is a
/// non-final status for its version, up to the device timeout after the later of the two
/// platform timestamps (the manifest's value, the latest progress report), and at most the
/// total cap (`deviceTimeoutTotal`) after the manifest's value, so neither a stalled update
/// nor one that reports progress for ever holds the device for good. `None` when it is not
/// busy at `ctx.now`.
pub fn busy_until(entry: &DeviceEntry, ctx: &EvalContext) -> Option<Micros> {
    if !entry.installs_other_manifest() {
        return None;
    }
    let progress_end = entry
        .set_at
        .max(entry.report_at)
        .saturating_add(ctx.timeout);
    let until = progress_end.min(entry.set_at.saturating_add(ctx.timeout_total));
    (ctx.now < until).then_some(until)
}

/// The state of a device this rollout has not notified: skipped when it already runs the
/// target, then the rules for another manifest in `config_otau` (docs/rollouts.md, "Busy and
/// foreign devices"), else pending.
fn not_notified_state(entry: &DeviceEntry, ctx: &EvalContext) -> DeviceState {
    if entry.report == ReportCode::Succeeded {
        return DeviceState::Skipped;
    }
    if entry.holds_newer_rollouts_manifest() {
        return DeviceState::Superseded;
    }
    let foreign = entry.holds_foreign_manifest();
    if foreign && ctx.skip_foreign {
        return DeviceState::ForeignSkipped;
    }
    if !ctx.take_over_busy && busy_until(entry, ctx).is_some() {
        return DeviceState::Busy;
    }
    if foreign {
        DeviceState::Foreign
    } else {
        DeviceState::Pending
    }
}

/// The state of one device. Pure: the same entry, context and time give the same state.
pub fn evaluate(entry: &DeviceEntry, ctx: &EvalContext) -> DeviceState {
    // A literal ACK from before the rollout is not this rollout's notification: its install
    // makes the device skipped, as below.
    let ours = entry.set_kind != SetKind::Foreign || notification(entry, ctx).is_some();
    if entry.installed_target() && ours {
        // Final for this rollout, whatever replaced the value since: never written again.
        return if reports_again(entry.report) {
            DeviceState::Rerun
        } else {
            DeviceState::Succeeded
        };
    }
    let Some(notified) = notification(entry, ctx) else {
        return not_notified_state(entry, ctx);
    };
    if entry.report == ReportCode::Succeeded {
        return DeviceState::Succeeded;
    }
    let fresh = report_belongs_to_attempt(entry, ctx);
    let next_attempt = match notified {
        Notification::Attempt(k)
            if ctx.retries_allowed && k < ctx.max_attempts && !entry.writes_stopped() =>
        {
            Some(k + 1)
        }
        _ => None,
    };
    let failed = |final_state| match next_attempt {
        Some(next) => DeviceState::RetryDue { next },
        None => final_state,
    };
    let timed_out = ctx.now >= times_out_at(entry, ctx);
    match entry.report {
        r if r.is_failure() && fresh => failed(DeviceState::Failed),
        ReportCode::Aborted if fresh => DeviceState::Aborted,
        ReportCode::Malformed if fresh => DeviceState::Invalid,
        _ if timed_out => failed(DeviceState::TimedOut),
        ReportCode::InProgress | ReportCode::InProgressUnknown => DeviceState::InProgress,
        _ => DeviceState::Notified,
    }
}
