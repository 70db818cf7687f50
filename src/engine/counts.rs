//! Counting devices: per wave (with devices moved back by late joiners counted in the wave in
//! progress), in total, and the devices each wave found already holding the package's manifest.

use crate::api::rollout::{DeviceCounts, HeldDevices, WavePlan};

use super::device::DeviceState;
use super::status::count;
use super::waves::positional_wave;

/// Counts per wave (index = wave from 1; the last bucket holds devices no wave covers). A
/// device counts in its positional wave, except a notified device beyond the current wave
/// (moved back by late joiners), which counts in the current wave.
pub fn attributed_counts(
    states: &[DeviceState],
    sizes: &[u64],
    current: usize,
) -> Vec<DeviceCounts> {
    let mut counts = vec![DeviceCounts::default(); sizes.len() + 2];
    for (p, &state) in states.iter().enumerate() {
        let pw = positional_wave(sizes, p as u64);
        let wave = if state.is_notified() && pw > current && current >= 1 {
            current
        } else {
            pw
        };
        count(&mut counts[wave], state);
    }
    counts
}

/// Devices of each wave (index = wave from 1) that carry this package's manifest before the
/// wave covers them: notified by an earlier Rollout of the package (or by this one before late
/// joiners moved them back). Only waves after `started` are counted; earlier ones are 0.
pub fn held_by_wave(states: &[DeviceState], sizes: &[u64], started: usize) -> Vec<HeldDevices> {
    let mut held = vec![HeldDevices::default(); sizes.len() + 1];
    for (p, &state) in states.iter().enumerate() {
        let wave = positional_wave(sizes, p as u64);
        if wave <= started || wave > sizes.len() {
            continue;
        }
        let h = &mut held[wave];
        match state {
            DeviceState::Pending
            | DeviceState::Skipped
            | DeviceState::Busy
            | DeviceState::Foreign
            | DeviceState::ForeignSkipped
            | DeviceState::Superseded => {}
            DeviceState::Notified | DeviceState::InProgress => h.in_flight += 1,
            DeviceState::Succeeded | DeviceState::Rerun => h.succeeded += 1,
            DeviceState::Failed
            | DeviceState::Aborted
            | DeviceState::TimedOut
            | DeviceState::Invalid
            | DeviceState::RetryDue { .. } => h.failed += 1,
        }
    }
    held
}

/// The plan's held devices: frozen for the waves started before this step (as the previous
/// status counted them when they started), counted now for the others; empty when none.
pub fn held_in_plan(
    previous: Option<&WavePlan>,
    counted_now: &[HeldDevices],
    started_before: usize,
    n_waves: usize,
) -> Vec<HeldDevices> {
    let held: Vec<HeldDevices> = (1..=n_waves)
        .map(|wave| {
            if wave <= started_before {
                previous
                    .and_then(|p| p.held.get(wave - 1))
                    .cloned()
                    .unwrap_or_default()
            } else {
                counted_now.get(wave).cloned().unwrap_or_default()
            }
        })
        .collect();
    if held.iter().all(|h| h.total() == 0) {
        Vec::new()
    } else {
        held
    }
}

pub fn sum_counts(buckets: &[DeviceCounts]) -> DeviceCounts {
    let mut t = DeviceCounts::default();
    for c in buckets {
        t.targeted += c.targeted;
        t.pending += c.pending;
        t.notified += c.notified;
        t.in_progress += c.in_progress;
        t.succeeded += c.succeeded;
        t.failed += c.failed;
        t.reruns += c.reruns;
        t.aborted += c.aborted;
        t.timed_out += c.timed_out;
        t.skipped += c.skipped;
        t.invalid += c.invalid;
        t.busy += c.busy;
        t.foreign += c.foreign;
    }
    t
}
