//! The status' `recentFailures`: the newest failed, retrying, timed-out and invalid devices,
//! with what each reported. Identities and messages are device text: each is made safe to
//! show and bounded ([`safe_text`]) before it lands in the status.

use crate::api::rollout::DeviceFailure;
use crate::otau::safe_text;

use super::device::{DeviceState, EvalContext, report_belongs_to_attempt, times_out_at};
use super::index::{DeviceIndex, ReportCode, SetKind};
use super::observation::Micros;
use super::policy::ParsedPolicy;
use super::status::{
    FailureCandidate, MAX_FAILURE_IDENTITY_BYTES, MAX_FAILURE_MESSAGE_BYTES, RecentFailures,
    time_from_micros,
};

/// The newest failures (failed, retrying, timed out, invalid), newest first.
pub fn recent_failures(
    index: &DeviceIndex,
    order: &[u32],
    states: &[DeviceState],
    policy: &ParsedPolicy,
    ctx: &EvalContext,
) -> Vec<DeviceFailure> {
    let mut recent = RecentFailures::default();
    let failure_time = |p: usize| -> Option<Micros> {
        let e = index.entry(order[p]);
        let by_report = (e.report.is_failure() || e.report == ReportCode::Malformed)
            && report_belongs_to_attempt(e, ctx);
        match states[p] {
            DeviceState::Failed | DeviceState::Invalid => Some(e.report_at),
            DeviceState::TimedOut => Some(times_out_at(e, ctx)),
            DeviceState::RetryDue { .. } if by_report => Some(e.report_at),
            DeviceState::RetryDue { .. } => Some(times_out_at(e, ctx)),
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
                    && !(e.report.is_failure() && report_belongs_to_attempt(e, ctx)));
            let attempt = match e.set_kind {
                SetKind::Ours => {
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
                identity: safe_text(identity, MAX_FAILURE_IDENTITY_BYTES),
                status,
                message: Some(safe_text(&message, MAX_FAILURE_MESSAGE_BYTES)),
                at: time_from_micros(c.at),
            }
        })
        .collect()
}
