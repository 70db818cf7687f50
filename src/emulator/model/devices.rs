//! The identities of one connector, stored compactly (one small record per device, resources in
//! a fixed slot array), and the JSON views the management API returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A device's stable handle inside its connector (its creation slot). Handles are never reused:
/// removing an identity and adding it again gives a new handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// One identity tag: a (name, value) pair; several values per name are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Tag {
    /// Tag name.
    pub name: String,
    /// Tag value.
    pub value: String,
}

impl Tag {
    /// A tag.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Tag {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// What `PUT /device2/identity/<identity>` (add, whitelist) sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewIdentity {
    /// Auth type (`token`, `password`, ...); the connector's `provisioning.auth_type` if unset.
    pub auth_type: Option<String>,
    /// Password or other key for `password` auth (kept only as a SHA-256 hash).
    pub auth_key: Option<String>,
    /// Credential expiry, µs since the epoch.
    pub auth_expire: Option<i64>,
    /// Locked from the start.
    pub locked: bool,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// What `PATCH /device2/identity/<identity>` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityPatch {
    /// Lock or unlock.
    pub locked: Option<bool>,
    /// Replace the tag list.
    pub tags: Option<Vec<Tag>>,
    /// `auth.expire` in µs; `0` revokes the credentials and forces reprovisioning.
    pub auth_expire: Option<i64>,
}

/// Query of `GET /device2/identity/` (exosite-platform.md §5.3).
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Page size; default 100, at most 1000.
    pub limit: Option<usize>,
    /// Only identities created strictly before this µs time.
    pub before: Option<i64>,
    /// Skip this many matching identities.
    pub offset: usize,
    /// Only identities whose name matches this regex.
    pub identity: Option<regex::Regex>,
    /// Only identities with this status (`whitelisted`, `provisioned`, `locked`, `reprovision`).
    pub status: Option<String>,
}

/// Default page size of identity lists.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest page size of identity lists.
pub const MAX_LIST_LIMIT: usize = 1000;

/// One page of identities, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityPage {
    /// More identities match after this page.
    #[serde(rename = "mayLoadMore")]
    pub may_load_more: bool,
    /// The identities.
    pub devices: Vec<IdentityView>,
}

/// The identity object of the management API (exosite-platform.md §5.2).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityView {
    /// The identity.
    pub identity: String,
    /// Auth type and expiry (never the key).
    pub auth: AuthView,
    /// Resource states by alias.
    pub state: BTreeMap<String, ResourceStateView>,
    /// Locked.
    pub locked: bool,
    /// Credentials revoked, waiting for a new activation.
    pub reprovision: bool,
    /// Always false.
    pub devmode: bool,
    /// Last device address (empty).
    pub lastip: String,
    /// Last device request, µs (0 if never).
    pub lastseen: i64,
    /// `whitelisted`, `provisioned`, `locked` or `reprovision`.
    pub status: String,
    /// Always false (no MQTT).
    pub online: bool,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Creation time, µs, unique per identity: the `before` paging cursor.
    pub created: i64,
}

/// The `auth` object of an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthView {
    /// Auth type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Credential expiry, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire: Option<i64>,
}

/// One resource's state: `{reported, set, timestamp}` (exosite-platform.md §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceStateView {
    /// Last device write (absent if the device never wrote it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported: Option<String>,
    /// Last write of either side (absent if never written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Time of the last write of either value, µs.
    pub timestamp: i64,
}

/// One resource of one device: both values and their times.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResourceValue {
    pub(crate) set: Option<Arc<str>>,
    pub(crate) reported: Option<Arc<str>>,
    /// Last write of either value, µs (0: never written).
    pub(crate) timestamp: i64,
    /// Last write that changed `set`, µs (0: never).
    pub(crate) set_modified: i64,
}

pub(crate) const FLAG_REMOVED: u8 = 1;
pub(crate) const FLAG_PROVISIONED: u8 = 2;
pub(crate) const FLAG_LOCKED: u8 = 4;
pub(crate) const FLAG_REPROVISION: u8 = 8;

/// Credentials of a device; boxed so that devices without any stay small.
#[derive(Debug, Clone)]
pub(crate) struct DeviceAuth {
    pub(crate) kind: Arc<str>,
    pub(crate) token: Option<Box<str>>,
    pub(crate) password_sha256: Option<[u8; 32]>,
    pub(crate) expire: Option<i64>,
}

/// One device: the compact per-device record.
#[derive(Debug)]
pub(crate) struct Device {
    pub(crate) identity: Arc<str>,
    pub(crate) created: i64,
    pub(crate) lastseen: i64,
    pub(crate) flags: u8,
    pub(crate) auth: Option<Box<DeviceAuth>>,
    pub(crate) tags: Option<Arc<[Tag]>>,
    /// Indexed by the connector's resource slot; grown on first write.
    pub(crate) resources: Box<[ResourceValue]>,
}

impl Device {
    pub(crate) fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    pub(crate) fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    pub(crate) fn status(&self) -> &'static str {
        if self.has(FLAG_LOCKED) {
            "locked"
        } else if self.has(FLAG_REPROVISION) {
            "reprovision"
        } else if self.has(FLAG_PROVISIONED) {
            "provisioned"
        } else {
            "whitelisted"
        }
    }

    /// The resource slot `slot`, growing the array if needed to at least `slot + 1` and
    /// `slots` entries (allocated exactly, once for all known resources).
    pub(crate) fn resource_mut(&mut self, slot: usize, slots: usize) -> &mut ResourceValue {
        if slot >= self.resources.len() {
            let len = (slot + 1).max(slots);
            let mut v = Vec::with_capacity(len);
            v.extend(std::mem::take(&mut self.resources).into_vec());
            v.resize_with(len, ResourceValue::default);
            self.resources = v.into_boxed_slice();
        }
        &mut self.resources[slot]
    }

    pub(crate) fn resource(&self, slot: usize) -> Option<&ResourceValue> {
        self.resources.get(slot)
    }
}

/// All devices of one connector, in creation order (so `created` grows with the slot index).
#[derive(Debug, Default)]
pub(crate) struct DeviceTable {
    pub(crate) slots: Vec<Device>,
    pub(crate) by_identity: HashMap<Arc<str>, u32>,
    pub(crate) by_token: HashMap<Box<str>, u32>,
    pub(crate) last_created: i64,
    /// Which devices changed, in order ([`super::Connector::changed_since`]).
    pub(crate) changes: super::changes::ChangeLog,
}

impl DeviceTable {
    pub(crate) fn get(&self, identity: &str) -> Option<(u32, &Device)> {
        let &i = self.by_identity.get(identity)?;
        Some((i, &self.slots[i as usize]))
    }

    pub(crate) fn get_mut(&mut self, identity: &str) -> Option<(u32, &mut Device)> {
        let &i = self.by_identity.get(identity)?;
        Some((i, &mut self.slots[i as usize]))
    }

    /// Appends a device; `created` is `now`, or one µs after the previous identity if that is
    /// not later, so creation times are unique and increasing.
    pub(crate) fn push(
        &mut self,
        identity: Arc<str>,
        now: i64,
        auth: Option<Box<DeviceAuth>>,
        tags: Option<Arc<[Tag]>>,
        locked: bool,
    ) -> Result<u32, super::ModelError> {
        let index = u32::try_from(self.slots.len()).map_err(|_| {
            super::ModelError::Invalid("too many identities on this connector".into())
        })?;
        let created = now.max(self.last_created + 1);
        self.last_created = created;
        let mut device = Device {
            identity: identity.clone(),
            created,
            lastseen: 0,
            flags: 0,
            auth,
            tags,
            resources: Box::new([]),
        };
        device.set_flag(FLAG_LOCKED, locked);
        self.slots.push(device);
        self.by_identity.insert(identity, index);
        self.changed(index);
        Ok(index)
    }

    /// Marks a device removed and forgets its name and token (the slot stays, so handles and
    /// the creation order stay valid).
    pub(crate) fn remove(&mut self, identity: &str) -> Option<u32> {
        let index = self.by_identity.remove(identity)?;
        let device = &mut self.slots[index as usize];
        if let Some(token) = device.auth.as_ref().and_then(|a| a.token.as_ref()) {
            self.by_token.remove(token);
        }
        device.flags = FLAG_REMOVED;
        device.auth = None;
        device.tags = None;
        device.resources = Box::new([]);
        self.changed(index);
        Some(index)
    }

    /// Records that the device in slot `index` changed (for [`super::Connector::changed_since`]).
    pub(crate) fn changed(&mut self, index: u32) {
        let slots = self.slots.len();
        self.changes.record(index, slots);
    }

    pub(crate) fn live_count(&self) -> usize {
        self.by_identity.len()
    }

    /// The index of the first slot whose `created` is at or after `before`.
    pub(crate) fn first_at_or_after(&self, before: i64) -> usize {
        self.slots.partition_point(|d| d.created < before)
    }
}
