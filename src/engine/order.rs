//! The stable device order (docs/architecture.md §2): targets sorted by a hash of (seed, identity).
//!
//! The key is the first 8 bytes, read big-endian, of `sha256(seed ‖ 0x00 ‖ identity)`; ties
//! (practically never) are broken by the identity's bytes. Anyone can recompute it, e.g.
//! `printf 'default/fw-2-1\0%s' 00AB01 | sha256sum | cut -c1-16`.
//! The seed is `spec.orderSeed`, or else `<namespace>/<name>` (not the UID, so a GitOps
//! replace or a restore keeps the same waves).
//!
//! The Rollout's marker, the `rollout` key of every `config_otau` value it writes
//! (exosite-platform.md §2.3), is the first 16 hex digits of `sha256(<namespace>/<name>)`:
//! `printf 'default/fw-2' | sha256sum | cut -c1-16`. A hash, so devices do not learn namespace
//! names; `<namespace>/<name>` and not the UID or `orderSeed`, so a GitOps replace or a restore
//! recognises the devices it wrote.

use sha2::{Digest, Sha256};

use crate::api::RolloutSpec;

/// The seed of a Rollout's device order: `spec.orderSeed` or `<namespace>/<name>`.
pub fn order_seed(spec: &RolloutSpec, namespace: &str, name: &str) -> String {
    match &spec.order_seed {
        Some(seed) => seed.clone(),
        None => format!("{namespace}/{name}"),
    }
}

/// The order key of one device: first 8 bytes (big-endian) of `sha256(seed ‖ 0x00 ‖ identity)`.
pub fn order_key(seed: &str, identity: &str) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(seed.as_bytes());
    hasher.update([0u8]);
    hasher.update(identity.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The marker of the Rollout `<namespace>/<name>`: the first 16 hex digits of
/// `sha256(<namespace>/<name>)` (lower case).
pub fn rollout_marker(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_the_big_endian_prefix_of_sha256_of_seed_nul_identity() {
        // python3 -c 'import hashlib;print(hashlib.sha256(b"default/fw\x00dev-1").hexdigest()[:16])'
        let expected = 0x3f0a_58d4_3194_ddc2_u64;
        assert_eq!(order_key("default/fw", "dev-1"), expected);
    }

    #[test]
    fn marker_is_the_hex_prefix_of_sha256_of_namespace_slash_name() {
        // printf 'default/fw-2' | sha256sum | cut -c1-16
        assert_eq!(rollout_marker("default", "fw-2"), "32812a1dcae43901");
        assert_ne!(
            rollout_marker("default", "fw-2"),
            rollout_marker("prod", "fw-2")
        );
    }

    #[test]
    fn key_depends_on_seed_and_identity_and_is_stable() {
        let a = order_key("ns/a", "x");
        assert_eq!(a, order_key("ns/a", "x"));
        assert_ne!(a, order_key("ns/b", "x"));
        assert_ne!(a, order_key("ns/a", "y"));
        // The NUL separator keeps ("a", "b/c") and ("a/b", "c") apart.
        assert_ne!(order_key("a", "b/c"), order_key("a/b", "c"));
    }

    #[test]
    fn seed_defaults_to_namespace_and_name() {
        let spec: RolloutSpec = serde_json::from_value(serde_json::json!({
            "packageRef": {"name": "p"}, "targets": {"tags": [{"name": "a", "value": "b"}]},
            "waves": [{"percent": 100}]
        }))
        .unwrap();
        assert_eq!(order_seed(&spec, "prod", "fw"), "prod/fw");
        let seeded = RolloutSpec {
            order_seed: Some("fixed".into()),
            ..spec
        };
        assert_eq!(order_seed(&seeded, "prod", "fw"), "fixed");
    }
}
