//! Deterministic seeds. Every random choice of a device comes from a ChaCha generator seeded by
//! (fleet seed, identity, what is being decided), so the order in which events arrive never
//! changes an outcome, and the same seed repeats a run exactly.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The splitmix64 finaliser: spreads the bits of `x` over the whole word.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a over bytes: a stable hash (std's hasher may change between releases).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// Combines two seeds into one.
pub fn combine(a: u64, b: u64) -> u64 {
    mix(a ^ mix(b))
}

/// The per-device key: everything a device draws derives from it.
pub fn device_key(fleet_seed: u64, identity: &str) -> u64 {
    combine(mix(fleet_seed), hash_bytes(identity.as_bytes()))
}

/// What a draw decides: separate streams, so adding a draw of one kind never shifts another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// The device's ack style and sequence style (fixed traits of its firmware).
    Traits = 1,
    /// Whether it starts offline, and for how long.
    Offline = 2,
    /// The outcome of one update run.
    Outcome = 3,
    /// The duration of one step of one run (combined with the step number).
    Duration = 4,
    /// How long the out-of-band install after the first boot takes.
    OutOfBand = 5,
    /// How long a device that dropped mid-download stays offline.
    MidDownload = 6,
    /// Which device protocol it speaks in a socket fleet (`transport.mqtt`).
    Transport = 7,
}

/// A generator for one decision.
pub fn rng(key: u64, purpose: Purpose, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(combine(combine(key, purpose as u64), salt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn keys_depend_on_seed_and_identity_only() {
        assert_eq!(device_key(1, "a"), device_key(1, "a"));
        assert_ne!(device_key(1, "a"), device_key(2, "a"));
        assert_ne!(device_key(1, "a"), device_key(1, "b"));
        let a: u64 = rng(5, Purpose::Outcome, 9).random();
        let b: u64 = rng(5, Purpose::Outcome, 9).random();
        let c: u64 = rng(5, Purpose::Duration, 9).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn fnv_matches_reference_values() {
        assert_eq!(hash_bytes(b""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(hash_bytes(b"a"), 0xAF63_DC4C_8601_EC8C);
    }
}
