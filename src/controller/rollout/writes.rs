//! Delivering the engine's notifications: `config_otau` writes through the connector's
//! platform client (its token bucket is the connector's rate limit), a bounded number in
//! flight, within a time budget per reconcile. Each successful write is folded into the
//! Rollout's index at once, so the next step sees the device as notified even before the next
//! listing. A device whose previous write ended without a clear answer is read first, and
//! written only if its value still differs (read before write). The engine's success records
//! (an identity tag on a re-running device) go out the same way, after the notifications.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::controller::poller::Subscription;
use crate::engine::{Micros, Notification, PartialUpdate};
use crate::otau::Manifest;
use crate::platform::{Platform, PlatformError, Tag};

/// How writes are made.
#[derive(Clone, Copy, Debug)]
pub struct WriteLimits {
    /// Writes in flight at once.
    pub concurrency: usize,
    /// No new write starts after this long (the rest waits for the next reconcile).
    pub budget: Duration,
}

/// What happened to one notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// Written.
    Written,
    /// A read showed the value was already set (an earlier write did land).
    AlreadySet,
    /// The identity no longer exists on the connector.
    Gone,
    /// The write failed.
    Failed,
}

impl WriteResult {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            WriteResult::Written => "written",
            WriteResult::AlreadySet => "already_set",
            WriteResult::Gone => "gone",
            WriteResult::Failed => "error",
        }
    }
}

/// The outcome of delivering a batch.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Count per result.
    pub written: usize,
    /// Already set (found by a read).
    pub already_set: usize,
    /// Identities gone.
    pub gone: usize,
    /// Writes that failed.
    pub failed: usize,
    /// Notifications not attempted (budget spent, or stopped by an error).
    pub not_attempted: usize,
    /// The first error that stops further writes (credentials, not settable, outage).
    pub error: Option<PlatformError>,
    /// Identities whose write outcome is unknown.
    pub uncertain: Vec<String>,
    /// Identities of `uncertain` whose uncertainty was resolved by a read or a successful
    /// write (only those: a wave of a million devices is not copied here).
    pub resolved: Vec<String>,
}

pub use crate::controller::poller::now_micros;

/// Writes `notifications` (in order, at most `limits.concurrency` at once) and folds the
/// successful ones into `subscription`'s index. `uncertain` names identities to read before
/// writing.
pub async fn deliver(
    platform: &Arc<dyn Platform>,
    subscription: &Subscription,
    manifest: &Manifest,
    notifications: Vec<Notification>,
    uncertain: &HashSet<String>,
    limits: WriteLimits,
    mut on_result: impl FnMut(WriteResult),
) -> Delivery {
    let started = Instant::now();
    let mut delivery = Delivery::default();
    let mut queue = notifications.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let mut stop = false;
    loop {
        while !stop && in_flight.len() < limits.concurrency.max(1) {
            if started.elapsed() >= limits.budget {
                stop = true;
                break;
            }
            let Some(n) = queue.next() else { break };
            let check_first = check_first_of(uncertain, &n);
            let platform = platform.clone();
            let attempt_manifest = manifest.with_attempt(n.attempt);
            in_flight.push(async move {
                let result = write_one(&platform, &n, &attempt_manifest, check_first).await;
                (n, result)
            });
        }
        let Some((n, result)) = in_flight.next().await else {
            break;
        };
        let outcome = match result {
            Ok(Some(set_at)) => {
                let update = PartialUpdate {
                    config_otau: Some((n.manifest.to_string(), set_at)),
                    otau_in: None,
                };
                subscription.lock().fold(&n.identity, &update);
                if check_first_of(uncertain, &n) {
                    delivery.resolved.push(n.identity.clone());
                }
                WriteResult::Written
            }
            Ok(None) => WriteResult::Gone,
            Err(WriteError::AlreadySet(set_at)) => {
                let update = PartialUpdate {
                    config_otau: Some((n.manifest.to_string(), set_at)),
                    otau_in: None,
                };
                subscription.lock().fold(&n.identity, &update);
                if check_first_of(uncertain, &n) {
                    delivery.resolved.push(n.identity.clone());
                }
                WriteResult::AlreadySet
            }
            Err(WriteError::Platform(e)) => {
                if matches!(
                    e,
                    PlatformError::Unavailable { .. } | PlatformError::RateLimited { .. }
                ) {
                    delivery.uncertain.push(n.identity.clone());
                }
                tracing::warn!(identity = %n.identity, attempt = n.attempt, error = %e, "config_otau write failed");
                if delivery.error.is_none() {
                    delivery.error = Some(e);
                }
                stop = true;
                WriteResult::Failed
            }
        };
        match outcome {
            WriteResult::Written => delivery.written += 1,
            WriteResult::AlreadySet => delivery.already_set += 1,
            WriteResult::Gone => delivery.gone += 1,
            WriteResult::Failed => delivery.failed += 1,
        }
        on_result(outcome);
    }
    {
        let mut held = subscription.lock();
        held.index.prepare();
    }
    delivery.not_attempted = queue.count();
    delivery
}

/// Whether `n` was in the uncertain set (read before written).
fn check_first_of(uncertain: &HashSet<String>, n: &Notification) -> bool {
    !uncertain.is_empty() && uncertain.contains(&n.identity)
}

enum WriteError {
    /// The value was already set (time of that value, µs).
    AlreadySet(Micros),
    Platform(PlatformError),
}

/// One write; `Ok(Some(time))` when written, `Ok(None)` when the identity is gone.
async fn write_one(
    platform: &Arc<dyn Platform>,
    notification: &Notification,
    manifest: &Manifest,
    check_first: bool,
) -> Result<Option<Micros>, WriteError> {
    if check_first {
        match platform.identity_state(&notification.identity).await {
            Ok(state) if state.is_set_to(manifest) => {
                let at = state.config_otau.timestamp.unwrap_or_else(now_micros);
                return Err(WriteError::AlreadySet(at));
            }
            Ok(_) => {}
            Err(PlatformError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(WriteError::Platform(e)),
        }
    }
    // The platform stamps the value between sending and answering; the time of sending is
    // a lower bound, so a report the device sends after it counts for this attempt.
    let sent = now_micros();
    match platform
        .set_config_otau(&notification.identity, manifest)
        .await
    {
        Ok(()) => Ok(Some(crate::controller::failpoint::after_write(sent).await)),
        Err(PlatformError::NotFound { .. }) => Ok(None),
        Err(e) => Err(WriteError::Platform(e)),
    }
}

/// What happened to one success record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordResult {
    /// The tag was added.
    Written,
    /// The device carried it already (nothing written).
    Present,
    /// The identity no longer exists on the connector.
    Gone,
    /// The read or the write failed.
    Failed,
}

impl RecordResult {
    /// The metric label (`otau_rollout_success_records_total`).
    pub fn label(self) -> &'static str {
        match self {
            RecordResult::Written => "written",
            RecordResult::Present => "present",
            RecordResult::Gone => "gone",
            RecordResult::Failed => "error",
        }
    }
}

/// Writes the success record tag on `identities` (at most `limits.concurrency` at once, no new
/// one after `limits.budget`) and folds each one the platform holds into `subscription`'s
/// index, so it is not chosen again. The first error stops the rest: they are chosen again at
/// the next pass. Returns how many were not recorded (failed or not attempted).
pub async fn record_successes(
    platform: &Arc<dyn Platform>,
    subscription: &Subscription,
    tag: &Tag,
    identities: Vec<String>,
    limits: WriteLimits,
    mut on_result: impl FnMut(RecordResult),
) -> usize {
    let started = Instant::now();
    let mut queue = identities.into_iter();
    let mut in_flight = FuturesUnordered::new();
    let (mut stop, mut missed) = (false, 0);
    loop {
        while !stop && in_flight.len() < limits.concurrency.max(1) {
            if started.elapsed() >= limits.budget {
                stop = true;
                break;
            }
            let Some(identity) = queue.next() else { break };
            let platform = platform.clone();
            in_flight.push(async move {
                let result = platform.add_identity_tag(&identity, tag).await;
                (identity, result)
            });
        }
        let Some((identity, result)) = in_flight.next().await else {
            break;
        };
        let outcome = match result {
            Ok(added) => {
                subscription.lock().index.mark_success_recorded(&identity);
                if added {
                    RecordResult::Written
                } else {
                    RecordResult::Present
                }
            }
            Err(PlatformError::NotFound { .. }) => RecordResult::Gone,
            Err(e) => {
                tracing::warn!(%identity, error = %e, "success record write failed");
                stop = true;
                missed += 1;
                RecordResult::Failed
            }
        };
        on_result(outcome);
    }
    missed + queue.count()
}
