//! Which devices get `config_otau` now: the covered devices not notified yet and the retries
//! due, in wave order, up to the in-flight cap and the caller's write batch.

use std::sync::Arc;

use super::Notification;
use super::device::DeviceState;
use super::index::DeviceIndex;
use super::policy::ParsedPolicy;

/// What the choice needs besides the states.
pub struct NotifyInput<'a> {
    /// The index (identities and manifest values).
    pub index: &'a DeviceIndex,
    /// Index entries in rollout order.
    pub order: &'a [u32],
    /// Devices covered by the started waves (the first `covered` of the order).
    pub covered: u64,
    /// The policy (in-flight cap, attempts).
    pub policy: &'a ParsedPolicy,
    /// Devices holding a notification and not finished now.
    pub in_flight: u64,
    /// The most notifications in one decision (the caller's write batch).
    pub batch: usize,
}

/// The notifications of this step; each chosen device's state becomes `Notified`, so the
/// counts after the step include it.
pub fn choose_notifications(
    input: &NotifyInput<'_>,
    states: &mut [DeviceState],
) -> Vec<Notification> {
    let mut notifications = Vec::new();
    let mut budget = input
        .policy
        .max_in_flight
        .map(|cap| cap.saturating_sub(input.in_flight));
    let mut values: Vec<Option<Arc<str>>> = vec![None; usize::from(input.policy.max_attempts) + 1];
    for (p, &i) in input.order.iter().enumerate() {
        if budget == Some(0) || notifications.len() >= input.batch {
            break;
        }
        let attempt = match states[p] {
            s if s.awaits_first_notification() && (p as u64) < input.covered => 1u8,
            DeviceState::RetryDue { next } => next,
            _ => continue,
        };
        let slot = usize::from(attempt).min(values.len() - 1);
        let manifest = values[slot]
            .get_or_insert_with(|| Arc::from(input.index.manifest_value(attempt)))
            .clone();
        notifications.push(Notification {
            identity: input.index.identity(input.index.entry(i)).to_owned(),
            attempt: u32::from(attempt),
            manifest,
        });
        states[p] = DeviceState::Notified;
        if let Some(b) = budget.as_mut() {
            *b -= 1;
        }
    }
    notifications
}
