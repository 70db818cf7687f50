//! Two active Rollouts never fight over a device: before a Rollout notifies
//! its first device, it looks at the other Rollouts on the same connector. When an older one
//! (by creation time, then name) is still active (not complete, not aborted) and their targets
//! share a device, the newer one waits with reason `TargetConflict`, naming the other, until
//! the older completes, is aborted or is deleted. A Rollout that already started never waits.
//!
//! Targets are compared on the devices themselves (both indexes), so tags that select the
//! same device count, and tags that happen to differ but select the same devices too.

use std::sync::Arc;

use kube::ResourceExt;

use crate::api::Rollout;
use crate::api::conditions::rollout_phase;
use crate::controller::poller::Subscription;

/// Whether a Rollout still holds its devices: not complete and not aborted.
pub fn is_active(rollout: &Rollout) -> bool {
    if rollout.spec.abort {
        return false;
    }
    let conds = rollout
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    !matches!(
        rollout_phase(conds),
        crate::api::RolloutPhase::Complete | crate::api::RolloutPhase::Aborted
    )
}

/// Whether `a` was created before `b` (ties: by name).
pub fn is_older(a: &Rollout, b: &Rollout) -> bool {
    crate::engine::created_before(a, b)
}

/// The first older, active Rollout whose devices overlap `mine`'s, with a sentence for the
/// condition; `None` when there is none. `others` are the Rollouts subscribed on the same
/// connector, with their subscriptions.
pub fn find(
    me: &Rollout,
    mine: &Subscription,
    others: &[(Rollout, Arc<Subscription>)],
) -> Option<String> {
    for (other, sub) in others {
        if other.uid() == me.uid() || !is_older(other, me) || !is_active(other) {
            continue;
        }
        let name = other.name_any();
        // Always lock the newer Rollout's index first (a total order: no deadlock).
        let my_held = mine.lock();
        let their_held = sub.lock();
        if !their_held.ready {
            return Some(format!(
                "waiting for the device listing of the older Rollout {name} on the same connector, to compare targets"
            ));
        }
        let shared = my_held
            .index
            .ordered()
            .iter()
            .map(|&i| my_held.index.identity(my_held.index.entry(i)))
            .filter(|id| their_held.index.get(id).is_some())
            .count();
        if shared > 0 {
            return Some(format!(
                "{shared} targeted devices are also targets of the older Rollout {name}, which is still active: waiting until it completes, is aborted or is deleted"
            ));
        }
    }
    None
}
