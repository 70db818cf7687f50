//! The state of one device, computed afresh at every step from its index entry, the policy
//! and the time (nothing per device is remembered between steps: the platform is the ledger).

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
    /// The device timeout (µs).
    pub timeout: Micros,
    /// `retries + 1`.
    pub max_attempts: u8,
    /// False once aborted: nothing more is written, so no attempt is followed by another.
    pub retries_allowed: bool,
    /// The start (µs) of the rollout's first wave, once it has started: a non-manifest
    /// `config_otau` value (a literal `ACK`) written since then is this rollout's notification,
    /// acknowledged. (Not the device's own wave: late joiners can move a device into a later
    /// wave after it was notified, and it must not be notified again.)
    pub rollout_started_at: Option<Micros>,
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

/// Whether the device's last report can judge its current attempt: only a report written
/// strictly after the `config_otau` value does. A report older than the value is about an
/// earlier attempt (or from before this rollout). A report with the very same timestamp is
/// taken as older too: the operator writes a retry only after it has read the failure that
/// called for it, so counting that failure again would fail the new attempt at once; a
/// genuine report at the same microsecond is still caught by the device timeout.
pub fn report_is_fresh(entry: &DeviceEntry) -> bool {
    entry.report_at > entry.set_at
}

/// Until when (µs, exclusive) a device not notified by this rollout counts as busy with
/// another manifest: while `config_otau` holds that manifest and the latest report is a
/// non-final status for its version, up to the device timeout after the later of the two
/// platform timestamps (the manifest's write, the latest progress report), so a stalled
/// update does not hold the device forever. `None` when it is not busy at `ctx.now`.
pub fn busy_until(entry: &DeviceEntry, ctx: &EvalContext) -> Option<Micros> {
    if !entry.installs_other_manifest() {
        return None;
    }
    let until = entry
        .set_at
        .max(entry.report_at)
        .saturating_add(ctx.timeout);
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
    let Some(notified) = notification(entry, ctx) else {
        return not_notified_state(entry, ctx);
    };
    let fresh = report_is_fresh(entry);
    let next_attempt = match notified {
        Notification::Attempt(k) if ctx.retries_allowed && k < ctx.max_attempts => Some(k + 1),
        _ => None,
    };
    let failed = |final_state| match next_attempt {
        Some(next) => DeviceState::RetryDue { next },
        None => final_state,
    };
    let timed_out = ctx.now >= entry.set_at.saturating_add(ctx.timeout);
    match entry.report {
        ReportCode::Succeeded => DeviceState::Succeeded,
        r if r.is_failure() && fresh => failed(DeviceState::Failed),
        ReportCode::Aborted if fresh => DeviceState::Aborted,
        ReportCode::Malformed if fresh => DeviceState::Invalid,
        _ if timed_out => failed(DeviceState::TimedOut),
        ReportCode::InProgress | ReportCode::InProgressUnknown => DeviceState::InProgress,
        _ => DeviceState::Notified,
    }
}
