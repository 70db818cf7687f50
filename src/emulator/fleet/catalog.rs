//! Fleet-wide tables of the versions and manifests devices have seen. Devices refer to them by
//! a `u32` index, so a device's state holds no strings.

use std::collections::HashMap;
use std::sync::Arc;

use crate::otau::{Manifest, PayloadItem};

use super::seed;

/// "No entry" in a `u32` index.
pub const NONE: u32 = u32::MAX;

/// One distinct `config_otau` value that parsed as a manifest.
#[derive(Debug, Clone)]
pub struct ManifestEntry {
    /// The exact value as read (acks echo it byte for byte).
    pub raw: Arc<str>,
    /// Index of its version in [`Catalog::version`].
    pub version: u32,
    /// Its notification attempt.
    pub attempt: u32,
    /// A stable hash of (version, attempt): the salt of a run's random draws.
    pub salt: u64,
    /// Payload items to fetch, in order.
    pub items: Vec<Item>,
}

/// One payload item of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A content id, downloaded from the connector's content store.
    Content(Arc<str>),
    /// An external link: recorded, not fetched.
    Link(Arc<str>),
}

/// Interned versions and manifests.
#[derive(Debug, Default)]
pub struct Catalog {
    versions: Vec<Arc<str>>,
    version_ids: HashMap<Arc<str>, u32>,
    manifests: Vec<ManifestEntry>,
    manifest_ids: HashMap<Arc<str>, u32>,
    /// Values that were not manifests, by text (bounded: only the first few are kept).
    unparsed: HashMap<Arc<str>, String>,
}

/// How many distinct non-manifest values [`Catalog`] remembers.
const UNPARSED_KEPT: usize = 64;

impl Catalog {
    /// The index of `version`, adding it if new.
    pub fn intern_version(&mut self, version: &str) -> u32 {
        if let Some(id) = self.version_ids.get(version) {
            return *id;
        }
        let id = self.versions.len() as u32;
        let v: Arc<str> = Arc::from(version);
        self.versions.push(v.clone());
        self.version_ids.insert(v, id);
        id
    }

    /// The version string of index `id`.
    pub fn version(&self, id: u32) -> &str {
        self.versions.get(id as usize).map(|v| &**v).unwrap_or("")
    }

    /// The manifest of index `id`.
    pub fn manifest(&self, id: u32) -> Option<&ManifestEntry> {
        self.manifests.get(id as usize)
    }

    /// The index of the manifest in `raw`, parsing and adding it if new; `Err` with the reason
    /// when `raw` is not a manifest (an `ACK`, junk).
    pub fn intern_manifest(&mut self, raw: &str) -> Result<u32, String> {
        if let Some(id) = self.manifest_ids.get(raw) {
            return Ok(*id);
        }
        if let Some(reason) = self.unparsed.get(raw) {
            return Err(reason.clone());
        }
        let manifest = match Manifest::parse(raw) {
            Ok(m) => m,
            Err(e) => {
                let reason = e.to_string();
                if self.unparsed.len() < UNPARSED_KEPT {
                    self.unparsed.insert(Arc::from(raw), reason.clone());
                }
                return Err(reason);
            }
        };
        let version = self.intern_version(&manifest.version);
        let items = manifest
            .payload
            .items()
            .into_iter()
            .map(|i| match i {
                PayloadItem::ContentId(id) => Item::Content(Arc::from(id)),
                PayloadItem::Link(url) => Item::Link(Arc::from(url)),
            })
            .collect();
        let salt = seed::combine(
            seed::hash_bytes(manifest.version.as_bytes()),
            u64::from(manifest.attempt),
        );
        let raw: Arc<str> = Arc::from(raw);
        let id = self.manifests.len() as u32;
        self.manifests.push(ManifestEntry {
            raw: raw.clone(),
            version,
            attempt: manifest.attempt,
            salt,
            items,
        });
        self.manifest_ids.insert(raw, id);
        Ok(id)
    }

    /// Whether two manifests are the same update: same version and same attempt.
    pub fn same_update(&self, a: u32, b: u32) -> bool {
        match (self.manifest(a), self.manifest(b)) {
            (Some(x), Some(y)) => x.version == y.version && x.attempt == y.attempt,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_compares_version_and_attempt() {
        let mut c = Catalog::default();
        let m1 = Manifest::url_list("2.0", "fw", "", vec!["a.bin".into(), "https://h/x".into()]);
        let a = c.intern_manifest(&m1.to_json()).unwrap();
        assert_eq!(c.intern_manifest(&m1.to_json()).unwrap(), a);
        let reordered = r#"{"payload":["a.bin"],"type":"URL_LIST","name":"other","version":"2.0"}"#;
        let b = c.intern_manifest(reordered).unwrap();
        assert_ne!(a, b);
        assert!(c.same_update(a, b));
        let retry = c.intern_manifest(&m1.with_attempt(2).to_json()).unwrap();
        assert!(!c.same_update(a, retry));
        let e = c.manifest(a).unwrap();
        assert_eq!(c.version(e.version), "2.0");
        assert_eq!(
            e.items,
            vec![
                Item::Content("a.bin".into()),
                Item::Link("https://h/x".into())
            ]
        );
        assert!(
            c.intern_manifest("ACK")
                .unwrap_err()
                .contains("not valid JSON")
        );
        assert!(c.intern_manifest("ACK").is_err());
    }
}
