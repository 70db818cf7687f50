//! Sharing of identical values: a million devices that hold the same manifest or report the
//! same status keep one copy of the string.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Values longer than this are stored unshared (they are rarely identical across devices).
const MAX_INTERNED_BYTES: usize = 4096;

/// A set of shared values. Entries nobody else holds are dropped when the set has doubled since
/// the last sweep, so the set stays proportional to the distinct values in use.
#[derive(Debug)]
pub(crate) struct Interner<T: ?Sized + Hash + Eq> {
    inner: Mutex<InternSet<T>>,
}

#[derive(Debug)]
struct InternSet<T: ?Sized + Hash + Eq> {
    set: HashSet<Arc<T>>,
    sweep_at: usize,
}

impl<T: ?Sized + Hash + Eq> Default for Interner<T> {
    fn default() -> Self {
        Interner {
            inner: Mutex::new(InternSet {
                set: HashSet::new(),
                sweep_at: 1024,
            }),
        }
    }
}

impl<T: ?Sized + Hash + Eq> Interner<T> {
    /// The shared copy of `value`, made with `make` if it is new.
    pub(crate) fn get_or_insert(&self, value: &T, make: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = inner.set.get(value) {
            return found.clone();
        }
        if inner.set.len() >= inner.sweep_at {
            inner.set.retain(|v| Arc::strong_count(v) > 1);
            inner.sweep_at = (inner.set.len() * 2).max(1024);
        }
        let made = make(value);
        inner.set.insert(made.clone());
        made
    }
}

impl Interner<str> {
    /// The shared copy of a string value.
    pub(crate) fn string(&self, value: &str) -> Arc<str> {
        if value.len() > MAX_INTERNED_BYTES {
            return Arc::from(value);
        }
        self.get_or_insert(value, |v| Arc::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_values_share_one_allocation() {
        let i = Interner::<str>::default();
        let a = i.string("hello");
        let b = i.string(&String::from("hello"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = i.string("other");
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn unused_values_are_swept() {
        let i = Interner::<str>::default();
        for n in 0..5000 {
            let _ = i.string(&n.to_string());
        }
        let len = i.inner.lock().unwrap().set.len();
        assert!(len < 2100, "set kept {len} unused values");
    }
}
