//! The fleet's timer queue: one binary heap of (due µs, device index, sequence) for all
//! devices, so a million devices need no task or thread each.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// One pending timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When it is due, µs since the epoch.
    pub due: i64,
    /// The device.
    pub device: u32,
    /// The sequence number the device scheduled it with (stale ones are ignored by the device).
    pub seq: u32,
}

/// Timers ordered by due time, then device index, then sequence (a deterministic order).
#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl TimerQueue {
    /// An empty queue.
    pub fn new() -> Self {
        TimerQueue::default()
    }

    /// Adds a timer.
    pub fn push(&mut self, timer: Timer) {
        self.heap.push(Reverse(timer));
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse(t)| t.due)
    }

    /// Removes and returns the next timer if it is due at or before `now`.
    pub fn pop_due(&mut self, now: i64) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(t)) if t.due <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    /// Number of pending timers (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_due_then_device_order() {
        let mut q = TimerQueue::new();
        q.push(Timer {
            due: 20,
            device: 1,
            seq: 1,
        });
        q.push(Timer {
            due: 10,
            device: 5,
            seq: 1,
        });
        q.push(Timer {
            due: 10,
            device: 2,
            seq: 3,
        });
        assert_eq!(q.next_due(), Some(10));
        assert_eq!(q.pop_due(9), None);
        assert_eq!(q.pop_due(15).map(|t| t.device), Some(2));
        assert_eq!(q.pop_due(15).map(|t| t.device), Some(5));
        assert_eq!(q.pop_due(15), None);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop_due(i64::MAX).map(|t| t.due), Some(20));
        assert!(q.is_empty());
    }
}
