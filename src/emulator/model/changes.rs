//! Which devices of a connector changed, in order: the log behind
//! [`Connector::changed_since`](super::Connector::changed_since), so a reader that saw the
//! connector at one moment can fetch only the devices changed after it instead of listing them
//! all again.
//!
//! Every change (a resource value written by the cloud or the device, an identity added,
//! updated, activated or removed) gets the next sequence number and appends the device's slot.
//! The log is compacted once it holds more than twice as many entries as the connector has
//! devices: only the newest entry of each device stays, so it never holds more than about
//! 2 × devices + [`MIN_COMPACT_LEN`] entries (12 bytes each).

/// Below this many entries the log is never compacted.
pub const MIN_COMPACT_LEN: usize = 4096;

/// One change: its sequence number and the device slot it touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Change {
    seq: u64,
    slot: u32,
}

/// The change log of one connector's devices.
#[derive(Debug, Default)]
pub(crate) struct ChangeLog {
    /// Ascending by `seq`.
    entries: Vec<Change>,
    /// The sequence number of the newest change (0: none yet).
    last: u64,
}

impl ChangeLog {
    /// Records a change of the device in `slot`; `slots` is the number of device slots (for
    /// the compaction bound).
    pub(crate) fn record(&mut self, slot: u32, slots: usize) {
        self.last += 1;
        self.entries.push(Change {
            seq: self.last,
            slot,
        });
        if self.entries.len() > MIN_COMPACT_LEN.max(slots.saturating_mul(2)) {
            self.compact(slots);
        }
    }

    /// The sequence number of the newest change: a cursor for [`ChangeLog::slots_since`].
    pub(crate) fn cursor(&self) -> u64 {
        self.last
    }

    /// The slots changed after `cursor`, each once, in descending slot order (the listing's
    /// newest-first order).
    pub(crate) fn slots_since(&self, cursor: u64) -> Vec<u32> {
        let from = self.entries.partition_point(|c| c.seq <= cursor);
        let mut slots: Vec<u32> = self.entries[from..].iter().map(|c| c.slot).collect();
        slots.sort_unstable_by(|a, b| b.cmp(a));
        slots.dedup();
        slots
    }

    /// Keeps only the newest entry of each slot (order by `seq` kept).
    fn compact(&mut self, slots: usize) {
        let top = self
            .entries
            .iter()
            .map(|c| c.slot as usize + 1)
            .max()
            .unwrap_or(0);
        let mut seen = vec![false; top.max(slots)];
        let mut kept = Vec::with_capacity(self.entries.len() / 2 + 1);
        for c in self.entries.iter().rev() {
            let s = &mut seen[c.slot as usize];
            if !*s {
                *s = true;
                kept.push(*c);
            }
        }
        kept.reverse();
        self.entries = kept;
    }

    /// Entries held (for tests of the bound).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_after_a_cursor_are_listed_once_newest_slot_first() {
        let mut log = ChangeLog::default();
        assert_eq!(log.cursor(), 0);
        log.record(3, 10);
        let cursor = log.cursor();
        log.record(1, 10);
        log.record(7, 10);
        log.record(1, 10);
        assert_eq!(log.slots_since(0), vec![7, 3, 1]);
        assert_eq!(log.slots_since(cursor), vec![7, 1]);
        assert!(log.slots_since(log.cursor()).is_empty());
    }

    #[test]
    fn compaction_keeps_the_newest_change_of_every_slot_and_bounds_the_log() {
        let mut log = ChangeLog::default();
        let slots = 3000;
        let mut cursor_mid = 0;
        for round in 0..10u32 {
            for slot in 0..slots as u32 {
                if (slot + round) % 3 == 0 {
                    log.record(slot, slots);
                }
            }
            if round == 8 {
                cursor_mid = log.cursor();
            }
        }
        assert!(
            log.len() <= MIN_COMPACT_LEN.max(2 * slots) + 1,
            "{}",
            log.len()
        );
        // Round 9 touched the slots with (slot + 9) % 3 == 0.
        let expected: Vec<u32> = (0..slots as u32)
            .rev()
            .filter(|s| (s + 9) % 3 == 0)
            .collect();
        assert_eq!(log.slots_since(cursor_mid), expected);
        // Every slot touched at all is still listed from the start.
        assert_eq!(log.slots_since(0).len(), slots);
    }
}
