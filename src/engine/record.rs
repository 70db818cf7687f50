//! The success record: an identity tag that keeps, on the platform, the one per-device fact the
//! platform's latest values can lose: that a device installed the target before it started the
//! same update again (a re-run). docs/rollouts.md, "Where each fact lives".
//!
//! The tag is `otau-installed` = the first 16 hex digits of `sha256(seed ‖ 0x00 ‖ version)`
//! (the order key's hash with the target version in place of the identity), so it is scoped to
//! one Rollout's order seed and target version, and anyone can recompute it:
//! `printf 'default/fw-2-1\0%s' 2.1.0 | sha256sum | cut -c1-16`.

use crate::api::DeviceTag;

use super::device::DeviceState;
use super::index::{DeviceEntry, DeviceIndex};
use super::order::order_key;

/// The name of the success record tag.
pub const SUCCESS_RECORD_TAG: &str = "otau-installed";

/// The success record tag of a Rollout (its order seed) and target version.
pub fn success_record(seed: &str, version: &str) -> DeviceTag {
    DeviceTag::new(
        SUCCESS_RECORD_TAG,
        format!("{:016x}", order_key(seed, version)),
    )
}

/// The devices whose success to record now: re-runs (they installed the target and report
/// about it again) that do not carry the record yet, in wave order, at most `batch`. A device
/// the targets stopped writing to (excluded, or a former target) gets no record either: an
/// edit stops every future write.
pub fn choose_success_records(
    index: &DeviceIndex,
    order: &[u32],
    states: &[DeviceState],
    batch: usize,
) -> Vec<String> {
    order
        .iter()
        .zip(states)
        .filter(|&(&i, &state)| state == DeviceState::Rerun && record_due(index.entry(i)))
        .take(batch)
        .map(|(&i, _)| index.identity(index.entry(i)).to_owned())
        .collect()
}

/// Whether a re-running device still needs its record and may be written.
fn record_due(entry: &DeviceEntry) -> bool {
    !entry.success_recorded() && !entry.writes_stopped()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_the_order_hash_of_the_version() {
        // printf 'default/fw\0%s' 2.1.0 | sha256sum | cut -c1-16
        let tag = success_record("default/fw", "2.1.0");
        assert_eq!(tag.name, "otau-installed");
        assert_eq!(tag.value, "fecb8cef42ad570b");
        assert_ne!(tag, success_record("default/fw", "2.1.1"), "per version");
        assert_ne!(tag, success_record("default/fw2", "2.1.0"), "per Rollout");
    }
}
