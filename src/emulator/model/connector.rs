//! One IoT Connector: its settings, identities, resource values, content, long-poll waiters,
//! cloud-write subscribers and ground truth.
//!
//! Two sides use it:
//! - the cloud side (management API): identities, [`Connector::state`], [`Connector::set_state`];
//! - the device side (device HTTP API and in-process simulated devices):
//!   [`Connector::activate`], [`Connector::authenticate`], [`Connector::device_write`],
//!   [`Connector::device_read`], [`Connector::read_set`], [`Connector::poll_set`],
//!   [`Connector::record`], [`Connector::content`], and [`Connector::subscribe_cloud_writes`]
//!   to learn about cloud writes without polling.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, broadcast, mpsc};

use super::content::ContentStore;
use super::devices::{
    AuthView, DEFAULT_LIST_LIMIT, Device, DeviceAuth, DeviceId, DeviceTable, FLAG_LOCKED,
    FLAG_PROVISIONED, FLAG_REMOVED, FLAG_REPROVISION, IdentityPage, IdentityPatch, IdentityView,
    ListQuery, MAX_LIST_LIMIT, NewIdentity, ResourceStateView, Tag,
};
use super::intern::Interner;
use super::settings::ConnectorSettings;
use super::{Clock, ModelError, random_token};
use crate::emulator::events::{ConnectorEvent, DATA_IN, DeviceEvent, EventPayload, PUBLISH};

/// The current `set` value of a resource and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetValue {
    /// The value.
    pub value: Arc<str>,
    /// Time of the last write that changed `set`, µs (drives long poll and `Last-Modified`).
    pub set_modified: i64,
    /// Time of the last write of either value, µs.
    pub timestamp: i64,
}

/// The `If-Modified-Since` of a long poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollSince {
    /// Unix seconds: answer when the set modified time, in whole seconds, is later.
    Seconds(i64),
    /// µs: answer when the set modified time is later (a poll without `If-Modified-Since`
    /// waits for changes after it started).
    After(i64),
}

impl PollSince {
    fn is_older_than(self, set_modified: i64) -> bool {
        match self {
            PollSince::Seconds(s) => set_modified.div_euclid(1_000_000) > s,
            PollSince::After(t) => set_modified > t,
        }
    }
}

/// Where a device write came from (copied into its `data_in` event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOrigin {
    /// Device address (empty in-process).
    pub ip: String,
    /// Request or connection id.
    pub connection_id: String,
}

/// Credentials a device presents (exosite-platform.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCredential<'a> {
    /// `X-Exosite-CIK`, `Authorization: token`, or Basic with an empty user name.
    Token(&'a str),
    /// Basic `identity:password` (the password may also be the device's token).
    Password {
        /// The identity.
        identity: &'a str,
        /// The password.
        password: &'a str,
    },
}

/// A cloud write of a device resource, sent to [`Connector::subscribe_cloud_writes`]
/// subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWriteNotice {
    /// The device's handle.
    pub device: DeviceId,
    /// The device's identity.
    pub identity: Arc<str>,
    /// The resource written.
    pub alias: Arc<str>,
    /// When, µs.
    pub at: i64,
}

/// Ground truth: one cloud write of `config_otau` to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CloudWriteRecord {
    /// When, µs.
    pub at: i64,
    /// Who wrote: the `X-Otau-Client` header, else the `User-Agent`, else empty.
    pub client: String,
    /// The manifest's `attempt` (1 when absent), `None` if the value is not a JSON object.
    pub attempt: Option<u64>,
    /// Whether the write changed the `set` value.
    pub changed: bool,
}

/// A ground-truth record as stored (the client name shared).
#[derive(Debug, Clone)]
struct StoredWrite {
    at: i64,
    client: Arc<str>,
    attempt: Option<u64>,
    changed: bool,
}

impl StoredWrite {
    fn record(&self) -> CloudWriteRecord {
        CloudWriteRecord {
            at: self.at,
            client: self.client.to_string(),
            attempt: self.attempt,
            changed: self.changed,
        }
    }
}

/// A `/onep:v1/stack/record` request with timestamps of one alias under 1 s apart. `body` is
/// the answer's body in the comma form `<alias>=<ts>,<ts>` (exosite-platform.md §3.11).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record timestamps under 1 s apart: {body}")]
pub struct RecordConflict {
    /// Response body.
    pub body: String,
}

/// The previous tag list of a bulk add and its shared copy.
type LastTags = (Vec<Tag>, Option<Arc<[Tag]>>);

/// Resource definitions resolved to per-device slots.
#[derive(Debug)]
struct ResourceTable {
    settings: ConnectorSettings,
    /// alias → (slot, settable), for defined resources only.
    defined: HashMap<String, (u16, bool)>,
    /// Slot → alias; append-only, so slots of removed resources keep their meaning.
    names: Vec<Arc<str>>,
}

impl ResourceTable {
    fn new(settings: ConnectorSettings) -> Self {
        let mut t = ResourceTable {
            settings,
            defined: HashMap::new(),
            names: Vec::new(),
        };
        t.rebuild();
        t
    }

    fn rebuild(&mut self) {
        self.defined.clear();
        for (alias, def) in &self.settings.resources {
            let slot = match self.names.iter().position(|n| &**n == alias) {
                Some(i) => i,
                None => {
                    self.names.push(Arc::from(alias.as_str()));
                    self.names.len() - 1
                }
            };
            let slot = u16::try_from(slot).unwrap_or(u16::MAX);
            self.defined.insert(alias.clone(), (slot, def.settable));
        }
    }
}

/// The answer of [`Connector::changed_since`].
#[derive(Debug, Clone, Default)]
pub struct ChangedIdentities {
    /// The handles of the identities changed (removed ones included), newest first.
    pub ids: Vec<DeviceId>,
    /// The cursor of this answer: the next call passes it to get the changes after this one.
    pub cursor: u64,
}

/// One IoT Connector.
pub struct Connector {
    id: String,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<ConnectorEvent>,
    resources: RwLock<ResourceTable>,
    devices: RwLock<DeviceTable>,
    values: Interner<str>,
    tag_sets: Interner<[Tag]>,
    content: ContentStore,
    waiters: Mutex<HashMap<(u32, u16), Arc<Notify>>>,
    waiter_count: AtomicUsize,
    cloud_subscribers: Mutex<Vec<mpsc::UnboundedSender<CloudWriteNotice>>>,
    cloud_subscriber_count: AtomicUsize,
    /// By device slot; clients interned (one `Arc` per distinct writer).
    ground_truth: Mutex<HashMap<u32, Vec<StoredWrite>>>,
    clients: Interner<str>,
    resource_max_bytes: usize,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("id", &self.id)
            .field("identities", &self.identity_count())
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(e: std::sync::PoisonError<T>) -> T {
    e.into_inner()
}

impl Connector {
    pub(crate) fn new(
        id: String,
        clock: Arc<dyn Clock>,
        events: broadcast::Sender<ConnectorEvent>,
        resource_max_bytes: usize,
        content_max_bytes: usize,
    ) -> Self {
        Connector {
            resources: RwLock::new(ResourceTable::new(ConnectorSettings::defaults(&id))),
            id,
            clock,
            events,
            devices: RwLock::new(DeviceTable::default()),
            values: Interner::default(),
            tag_sets: Interner::default(),
            content: ContentStore::new(content_max_bytes),
            waiters: Mutex::new(HashMap::new()),
            waiter_count: AtomicUsize::new(0),
            cloud_subscribers: Mutex::new(Vec::new()),
            cloud_subscriber_count: AtomicUsize::new(0),
            ground_truth: Mutex::new(HashMap::new()),
            clients: Interner::default(),
            resource_max_bytes,
        }
    }

    /// The connector (product) id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The connector's content store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// Now, from the model's clock, µs.
    pub fn now_micros(&self) -> i64 {
        self.clock.now_micros()
    }

    // ----- settings -----

    /// The settings object (`GET /device2`).
    pub fn settings(&self) -> ConnectorSettings {
        self.resources
            .read()
            .unwrap_or_else(poisoned)
            .settings
            .clone()
    }

    /// Applies a `PATCH /device2` body (see [`ConnectorSettings::patched`]).
    pub fn patch_settings(&self, patch: &serde_json::Value) -> Result<(), ModelError> {
        let mut table = self.resources.write().unwrap_or_else(poisoned);
        table.settings = table.settings.patched(patch)?;
        table.rebuild();
        Ok(())
    }

    /// Slot and settable flag of a defined resource.
    fn resolve(&self, alias: &str) -> Option<(u16, bool)> {
        self.resources
            .read()
            .unwrap_or_else(poisoned)
            .defined
            .get(alias)
            .copied()
    }

    fn slot_count(&self) -> usize {
        self.resources.read().unwrap_or_else(poisoned).names.len()
    }

    fn slot_names(&self) -> Vec<Arc<str>> {
        self.resources.read().unwrap_or_else(poisoned).names.clone()
    }

    fn check_size(&self, alias: &str, value: &str) -> Result<(), ModelError> {
        if value.len() > self.resource_max_bytes {
            return Err(ModelError::ValueTooLarge {
                alias: alias.to_string(),
                size: value.len(),
                limit: self.resource_max_bytes,
            });
        }
        Ok(())
    }

    // ----- identities (cloud side) -----

    fn tag_set(&self, tags: Vec<Tag>) -> Option<Arc<[Tag]>> {
        if tags.is_empty() {
            return None;
        }
        Some(
            self.tag_sets
                .get_or_insert(tags.as_slice(), |t| Arc::from(t.to_vec())),
        )
    }

    fn default_auth_type(&self) -> String {
        self.resources
            .read()
            .unwrap_or_else(poisoned)
            .settings
            .provisioning
            .auth_type
            .clone()
    }

    /// Adds (whitelists) an identity, or updates auth, lock and tags of an existing one
    /// (`PUT /device2/identity/<identity>`). Returns the identity object.
    pub fn add_identity(
        &self,
        identity: &str,
        new: NewIdentity,
    ) -> Result<IdentityView, ModelError> {
        validate_identity(identity)?;
        let kind: Arc<str> = Arc::from(new.auth_type.unwrap_or_else(|| self.default_auth_type()));
        let auth = Box::new(DeviceAuth {
            kind,
            token: None,
            password_sha256: new.auth_key.as_deref().map(sha256),
            expire: new.auth_expire,
        });
        let tags = self.tag_set(new.tags);
        let now = self.clock.now_micros();
        {
            let mut table = self.devices.write().unwrap_or_else(poisoned);
            if let Some((index, device)) = table.get_mut(identity) {
                let token = device.auth.as_ref().and_then(|a| a.token.clone());
                device.auth = Some(Box::new(DeviceAuth { token, ..*auth }));
                device.tags = tags;
                device.set_flag(FLAG_LOCKED, new.locked);
                table.changed(index);
            } else {
                table.push(Arc::from(identity), now, Some(auth), tags, new.locked)?;
            }
        }
        self.identity(identity)
    }

    /// Adds many identities at once, each with its tags (identical tag lists are shared).
    /// Existing identities are left as they are. Returns how many were added.
    pub fn add_identities_bulk<I>(&self, identities: I) -> Result<usize, ModelError>
    where
        I: IntoIterator<Item = (String, Vec<Tag>)>,
    {
        let iter = identities.into_iter();
        let now = self.clock.now_micros();
        let mut table = self.devices.write().unwrap_or_else(poisoned);
        let (lower, _) = iter.size_hint();
        table.slots.reserve(lower);
        table.by_identity.reserve(lower);
        let mut added = 0;
        let mut last_tags: Option<LastTags> = None;
        for (identity, tags) in iter {
            validate_identity(&identity)?;
            if table.by_identity.contains_key(identity.as_str()) {
                continue;
            }
            let shared = match &last_tags {
                Some((prev, shared)) if *prev == tags => shared.clone(),
                _ => {
                    let shared = self.tag_set(tags.clone());
                    last_tags = Some((tags, shared.clone()));
                    shared
                }
            };
            table.push(Arc::from(identity), now, None, shared, false)?;
            added += 1;
        }
        Ok(added)
    }

    /// Removes an identity (`DELETE /device2/identity/<identity>`).
    pub fn remove_identity(&self, identity: &str) -> Result<(), ModelError> {
        let removed = self
            .devices
            .write()
            .unwrap_or_else(poisoned)
            .remove(identity);
        let Some(index) = removed else {
            return Err(ModelError::UnknownIdentity(identity.to_string()));
        };
        self.ground_truth
            .lock()
            .unwrap_or_else(poisoned)
            .remove(&index);
        self.emit(identity, "deleted", &WriteOrigin::default(), Vec::new());
        Ok(())
    }

    /// Locks, unlocks, replaces tags or changes the credential expiry of an identity
    /// (`PATCH /device2/identity/<identity>`). `auth_expire: Some(0)` revokes the credentials:
    /// the device must activate again.
    pub fn update_identity(
        &self,
        identity: &str,
        patch: IdentityPatch,
    ) -> Result<IdentityView, ModelError> {
        let tags = patch.tags.map(|t| self.tag_set(t));
        {
            let mut table = self.devices.write().unwrap_or_else(poisoned);
            let (index, device) = table
                .get_mut(identity)
                .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
            if let Some(locked) = patch.locked {
                device.set_flag(FLAG_LOCKED, locked);
            }
            if let Some(tags) = tags {
                device.tags = tags;
            }
            let mut revoked_token = None;
            if let Some(expire) = patch.auth_expire {
                let default_kind = Arc::from(self.default_auth_type());
                let auth = device.auth.get_or_insert_with(|| {
                    Box::new(DeviceAuth {
                        kind: default_kind,
                        token: None,
                        password_sha256: None,
                        expire: None,
                    })
                });
                if expire == 0 {
                    revoked_token = auth.token.take();
                    auth.expire = None;
                    let provisioned = device.has(FLAG_PROVISIONED);
                    device.set_flag(FLAG_REPROVISION, provisioned);
                } else {
                    auth.expire = Some(expire);
                }
            }
            if let Some(token) = revoked_token {
                table.by_token.remove(&token);
            }
            table.changed(index);
        }
        self.identity(identity)
    }

    /// The identity object, with state and tags.
    pub fn identity(&self, identity: &str) -> Result<IdentityView, ModelError> {
        let names = self.slot_names();
        let table = self.devices.read().unwrap_or_else(poisoned);
        let (_, device) = table
            .get(identity)
            .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
        Ok(view(device, &names))
    }

    /// The handle of an identity.
    pub fn device_id(&self, identity: &str) -> Option<DeviceId> {
        let table = self.devices.read().unwrap_or_else(poisoned);
        table.get(identity).map(|(i, _)| DeviceId(i))
    }

    /// Number of identities.
    pub fn identity_count(&self) -> usize {
        self.devices.read().unwrap_or_else(poisoned).live_count()
    }

    /// One page of identities, newest first (exosite-platform.md §5.3).
    pub fn list_identities(&self, query: &ListQuery) -> IdentityPage {
        let limit = query
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT);
        let names = self.slot_names();
        let table = self.devices.read().unwrap_or_else(poisoned);
        let end = match query.before {
            Some(before) => table.first_at_or_after(before),
            None => table.slots.len(),
        };
        let mut skipped = 0;
        let mut page = IdentityPage {
            may_load_more: false,
            devices: Vec::new(),
        };
        for device in table.slots[..end].iter().rev() {
            if device.has(FLAG_REMOVED) {
                continue;
            }
            if let Some(status) = &query.status
                && device.status() != status
            {
                continue;
            }
            if let Some(re) = &query.identity
                && !re.is_match(&device.identity)
            {
                continue;
            }
            if skipped < query.offset {
                skipped += 1;
                continue;
            }
            if page.devices.len() == limit {
                page.may_load_more = true;
                break;
            }
            page.devices.push(view(device, &names));
        }
        page
    }

    /// The newest change's sequence number: pass it to [`Connector::changed_since`] later to get
    /// the devices changed after this moment.
    pub fn change_cursor(&self) -> u64 {
        self.devices
            .read()
            .unwrap_or_else(poisoned)
            .changes
            .cursor()
    }

    /// The identities changed after `cursor` (a resource value written by the cloud or the
    /// device, or the identity added, updated, activated or removed; a device's `lastseen`
    /// alone does not count), each once, newest first like [`Connector::list_identities`],
    /// with the cursor of this answer. Costs O(changes since `cursor`), not O(identities).
    /// Read them with [`Connector::views_of`], a page at a time.
    pub fn changed_since(&self, cursor: u64) -> ChangedIdentities {
        let table = self.devices.read().unwrap_or_else(poisoned);
        ChangedIdentities {
            ids: table
                .changes
                .slots_since(cursor)
                .into_iter()
                .map(DeviceId)
                .collect(),
            cursor: table.changes.cursor(),
        }
    }

    /// The identity objects of `ids`, in the order given, and the identities among them that
    /// were removed (handles that never existed are left out).
    pub fn views_of(&self, ids: &[DeviceId]) -> (Vec<IdentityView>, Vec<String>) {
        let names = self.slot_names();
        let table = self.devices.read().unwrap_or_else(poisoned);
        let (mut views, mut removed) = (Vec::with_capacity(ids.len()), Vec::new());
        for id in ids {
            match table.slots.get(id.0 as usize) {
                Some(device) if device.has(FLAG_REMOVED) => {
                    removed.push(device.identity.to_string())
                }
                Some(device) => views.push(view(device, &names)),
                None => {}
            }
        }
        (views, removed)
    }

    /// The state of every resource of a device that has a value:
    /// `{alias: {reported, set, timestamp}}`.
    pub fn state(&self, identity: &str) -> Result<BTreeMap<String, ResourceStateView>, ModelError> {
        let names = self.slot_names();
        let table = self.devices.read().unwrap_or_else(poisoned);
        let (_, device) = table
            .get(identity)
            .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
        Ok(state_of(device, &names))
    }

    /// A cloud write (`PATCH …/state`, `setIdentityState`): `set := value`, `reported`
    /// unchanged (exosite-platform.md §1.3). Every alias must be a settable resource, else
    /// [`ModelError::NotSettable`] and nothing is written. `client` names the writer for the
    /// ground truth (`X-Otau-Client` or `User-Agent`).
    pub fn set_state(
        &self,
        identity: &str,
        values: &[(String, String)],
        client: &str,
    ) -> Result<(), ModelError> {
        let mut resolved = Vec::with_capacity(values.len());
        for (alias, value) in values {
            match self.resolve(alias) {
                Some((slot, true)) => {
                    self.check_size(alias, value)?;
                    resolved.push((slot, alias.as_str(), self.values.string(value)));
                }
                _ => return Err(ModelError::NotSettable(alias.clone())),
            }
        }
        let now = self.clock.now_micros();
        let slots = self.slot_count();
        let mut changed = Vec::with_capacity(resolved.len());
        let (index, identity_arc) = {
            let mut table = self.devices.write().unwrap_or_else(poisoned);
            let (index, device) = table
                .get_mut(identity)
                .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
            for (slot, _, value) in &resolved {
                let rv = device.resource_mut(usize::from(*slot), slots);
                let is_change = rv.set.as_deref() != Some(&**value);
                if is_change {
                    rv.set_modified = now;
                }
                rv.set = Some(value.clone());
                rv.timestamp = now;
                changed.push(is_change);
            }
            let identity = device.identity.clone();
            table.changed(index);
            (index, identity)
        };
        for ((slot, alias, value), is_change) in resolved.iter().zip(&changed) {
            if *alias == crate::otau::CONFIG_OTAU {
                self.record_ground_truth(index, now, client, value, *is_change);
            }
            if *is_change {
                self.wake(index, *slot);
            }
            self.notify_cloud_write(index, &identity_arc, alias, now);
        }
        Ok(())
    }

    fn record_ground_truth(&self, index: u32, at: i64, client: &str, value: &str, changed: bool) {
        let attempt = match serde_json::from_str::<serde_json::Value>(value) {
            Ok(serde_json::Value::Object(m)) => Some(
                m.get("attempt")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(u64::from(crate::otau::FIRST_ATTEMPT)),
            ),
            _ => None,
        };
        let client = self.clients.string(client);
        self.ground_truth
            .lock()
            .unwrap_or_else(poisoned)
            .entry(index)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(StoredWrite {
                at,
                client,
                attempt,
                changed,
            });
    }

    /// Ground truth: every cloud write of `config_otau` to this device, oldest first.
    pub fn ground_truth(&self, identity: &str) -> Vec<CloudWriteRecord> {
        let Some(DeviceId(index)) = self.device_id(identity) else {
            return Vec::new();
        };
        self.ground_truth
            .lock()
            .unwrap_or_else(poisoned)
            .get(&index)
            .map(|w| w.iter().map(StoredWrite::record).collect())
            .unwrap_or_default()
    }

    /// Ground truth of every device that received a `config_otau` cloud write.
    pub fn ground_truth_all(&self) -> BTreeMap<String, Vec<CloudWriteRecord>> {
        let truth = self.ground_truth.lock().unwrap_or_else(poisoned);
        let table = self.devices.read().unwrap_or_else(poisoned);
        truth
            .iter()
            .filter_map(|(index, writes)| {
                let device = table.slots.get(*index as usize)?;
                Some((
                    device.identity.to_string(),
                    writes.iter().map(StoredWrite::record).collect(),
                ))
            })
            .collect()
    }

    /// Subscribes to cloud writes of this connector's device resources. Each successful
    /// [`Connector::set_state`] sends one notice per alias written, also when the value did not
    /// change. The channel is unbounded so the model never blocks; a dropped receiver is
    /// forgotten at the next write.
    pub fn subscribe_cloud_writes(&self) -> mpsc::UnboundedReceiver<CloudWriteNotice> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subs = self.cloud_subscribers.lock().unwrap_or_else(poisoned);
        subs.push(tx);
        self.cloud_subscriber_count
            .store(subs.len(), Ordering::SeqCst);
        rx
    }

    fn notify_cloud_write(&self, index: u32, identity: &Arc<str>, alias: &str, at: i64) {
        if self.cloud_subscriber_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let notice = CloudWriteNotice {
            device: DeviceId(index),
            identity: identity.clone(),
            alias: Arc::from(alias),
            at,
        };
        let mut subs = self.cloud_subscribers.lock().unwrap_or_else(poisoned);
        subs.retain(|tx| tx.send(notice.clone()).is_ok());
        self.cloud_subscriber_count
            .store(subs.len(), Ordering::SeqCst);
    }

    // ----- device side -----

    /// Activates (provisions) a whitelisted identity and returns its new 40-character token
    /// (exosite-platform.md §3.5). Errors: not whitelisted (404), already provisioned (409),
    /// locked (403).
    pub fn activate(&self, identity: &str) -> Result<String, ModelError> {
        let enabled = self
            .resources
            .read()
            .unwrap_or_else(poisoned)
            .settings
            .provisioning
            .enabled;
        let token = random_token();
        let now = self.clock.now_micros();
        {
            let mut table = self.devices.write().unwrap_or_else(poisoned);
            let default_kind: Arc<str> = Arc::from(self.default_auth_type());
            let (index, device) = table
                .get_mut(identity)
                .ok_or_else(|| ModelError::NotWhitelisted(identity.to_string()))?;
            if !enabled {
                return Err(ModelError::NotWhitelisted(identity.to_string()));
            }
            if device.has(FLAG_LOCKED) {
                return Err(ModelError::Locked(identity.to_string()));
            }
            if device.has(FLAG_PROVISIONED) && !device.has(FLAG_REPROVISION) {
                return Err(ModelError::AlreadyProvisioned(identity.to_string()));
            }
            device.set_flag(FLAG_PROVISIONED, true);
            device.set_flag(FLAG_REPROVISION, false);
            device.lastseen = now;
            let auth = device.auth.get_or_insert_with(|| {
                Box::new(DeviceAuth {
                    kind: default_kind,
                    token: None,
                    password_sha256: None,
                    expire: None,
                })
            });
            let old = auth.token.replace(token.clone().into_boxed_str());
            if let Some(old) = old {
                table.by_token.remove(&old);
            }
            table.by_token.insert(token.clone().into_boxed_str(), index);
            table.changed(index);
        }
        self.emit(identity, "provisioned", &WriteOrigin::default(), Vec::new());
        Ok(token)
    }

    /// The identity these credentials belong to, if they are valid now (not locked, not
    /// expired). Marks the device as seen.
    pub fn authenticate(&self, credential: DeviceCredential<'_>) -> Option<Arc<str>> {
        let now = self.clock.now_micros();
        let mut table = self.devices.write().unwrap_or_else(poisoned);
        let index = match credential {
            DeviceCredential::Token(token) => *table.by_token.get(token)?,
            DeviceCredential::Password { identity, password } => {
                let (index, device) = table.get(identity)?;
                let auth = device.auth.as_ref()?;
                let by_password = auth.password_sha256.is_some_and(|h| h == sha256(password));
                let by_token = auth.token.as_deref() == Some(password);
                if !(by_password || by_token) {
                    return None;
                }
                index
            }
        };
        let device = &mut table.slots[index as usize];
        if device.has(FLAG_LOCKED) || device.has(FLAG_REMOVED) {
            return None;
        }
        if let Some(expire) = device.auth.as_ref().and_then(|a| a.expire)
            && expire > 0
            && now > expire
        {
            return None;
        }
        device.lastseen = now;
        Some(device.identity.clone())
    }

    /// A device write (`POST /onep:v1/stack/alias`): for each defined alias
    /// `set := reported := value`; undefined aliases are not stored. Raises one `data_in`
    /// event with every alias written (exosite-platform.md §3.6, §6.1).
    pub fn device_write(
        &self,
        identity: &str,
        values: &[(&str, &str)],
        origin: &WriteOrigin,
    ) -> Result<(), ModelError> {
        for (alias, value) in values {
            self.check_size(alias, value)?;
        }
        let now = self.clock.now_micros();
        self.store_device_values(identity, values, now)?;
        let payload = vec![EventPayload {
            values: values
                .iter()
                .map(|(a, v)| (a.to_string(), v.to_string()))
                .collect(),
            timestamp: now,
        }];
        self.emit(identity, DATA_IN, origin, payload);
        Ok(())
    }

    fn store_device_values(
        &self,
        identity: &str,
        values: &[(&str, &str)],
        now: i64,
    ) -> Result<(), ModelError> {
        let resolved: Vec<(u16, Arc<str>)> = values
            .iter()
            .filter_map(|(alias, value)| {
                self.resolve(alias)
                    .map(|(slot, _)| (slot, self.values.string(value)))
            })
            .collect();
        let slots = self.slot_count();
        let mut woken = Vec::new();
        let index = {
            let mut table = self.devices.write().unwrap_or_else(poisoned);
            let (index, device) = table
                .get_mut(identity)
                .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
            device.lastseen = now;
            for (slot, value) in resolved {
                let rv = device.resource_mut(usize::from(slot), slots);
                if rv.set.as_deref() != Some(&*value) {
                    rv.set_modified = now;
                    woken.push(slot);
                }
                rv.set = Some(value.clone());
                rv.reported = Some(value);
                rv.timestamp = now;
            }
            table.changed(index);
            index
        };
        for slot in woken {
            self.wake(index, slot);
        }
        Ok(())
    }

    /// Several timestamped device writes at once (MQTT `$resource.batch`, exosite-platform.md
    /// §4.3): `entries` are (time µs, [(alias, value)]). The newest value of each alias (the
    /// later entry on equal times) is stored as a device write; one `data_in` event carries one
    /// payload entry per batch entry, with its own time. Every value is size-checked first:
    /// one too large fails the whole batch and nothing is written.
    pub fn device_write_batch(
        &self,
        identity: &str,
        entries: &[(i64, Vec<(String, String)>)],
        origin: &WriteOrigin,
    ) -> Result<(), ModelError> {
        let mut newest: Vec<(&str, &str, i64)> = Vec::new();
        for (at, values) in entries {
            for (alias, value) in values {
                self.check_size(alias, value)?;
                match newest.iter_mut().find(|(a, _, _)| a == alias) {
                    Some(slot) if slot.2 <= *at => *slot = (alias, value, *at),
                    Some(_) => {}
                    None => newest.push((alias, value, *at)),
                }
            }
        }
        let newest: Vec<(&str, &str)> = newest.iter().map(|(a, v, _)| (*a, *v)).collect();
        let now = self.clock.now_micros();
        self.store_device_values(identity, &newest, now)?;
        let payload = entries
            .iter()
            .map(|(at, values)| EventPayload {
                values: values.iter().cloned().collect(),
                timestamp: *at,
            })
            .collect();
        self.emit(identity, DATA_IN, origin, payload);
        Ok(())
    }

    /// A device message on a topic that is not a resource (MQTT custom topic, exosite-platform.md
    /// §4.3): nothing is stored; one `publish` event carries `{topic: payload}`.
    pub fn device_publish(
        &self,
        identity: &str,
        topic: &str,
        payload: &str,
        origin: &WriteOrigin,
    ) -> Result<(), ModelError> {
        let now = self.clock.now_micros();
        {
            let mut table = self.devices.write().unwrap_or_else(poisoned);
            let (_, device) = table
                .get_mut(identity)
                .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
            device.lastseen = now;
        }
        let payload = vec![EventPayload {
            values: BTreeMap::from([(topic.to_string(), payload.to_string())]),
            timestamp: now,
        }];
        self.emit(identity, PUBLISH, origin, payload);
        Ok(())
    }

    /// The set values a device has not reported back (its `set` differs from its `reported`),
    /// by alias in slot order: what an MQTT device receives when it (re)connects
    /// (exosite-platform.md §4.4).
    pub fn unsynced_set_values(
        &self,
        identity: &str,
    ) -> Result<Vec<(Arc<str>, SetValue)>, ModelError> {
        let names = self.slot_names();
        let table = self.devices.read().unwrap_or_else(poisoned);
        let (_, device) = table
            .get(identity)
            .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
        Ok(device
            .resources
            .iter()
            .enumerate()
            .filter(|(_, rv)| rv.set.is_some() && rv.set != rv.reported)
            .filter_map(|(slot, rv)| {
                Some((
                    names.get(slot)?.clone(),
                    SetValue {
                        value: rv.set.clone()?,
                        set_modified: rv.set_modified,
                        timestamp: rv.timestamp,
                    },
                ))
            })
            .collect())
    }

    /// A device read (`GET /onep:v1/stack/alias?a&b`): the `set` value of each named alias that
    /// has one, in request order. Undefined or empty aliases are left out.
    pub fn device_read(
        &self,
        identity: &str,
        aliases: &[&str],
    ) -> Result<Vec<(String, Arc<str>)>, ModelError> {
        let slots: Vec<Option<u16>> = aliases
            .iter()
            .map(|a| self.resolve(a).map(|(s, _)| s))
            .collect();
        let table = self.devices.read().unwrap_or_else(poisoned);
        let (_, device) = table
            .get(identity)
            .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
        Ok(aliases
            .iter()
            .zip(slots)
            .filter_map(|(alias, slot)| {
                let set = device.resource(usize::from(slot?))?.set.clone()?;
                Some((alias.to_string(), set))
            })
            .collect())
    }

    /// The `set` value of one alias with its set modified time; `None` if it has none.
    pub fn read_set(&self, identity: &str, alias: &str) -> Result<Option<SetValue>, ModelError> {
        let Some((slot, _)) = self.resolve(alias) else {
            if self.device_id(identity).is_none() {
                return Err(ModelError::UnknownIdentity(identity.to_string()));
            }
            return Ok(None);
        };
        let table = self.devices.read().unwrap_or_else(poisoned);
        let (_, device) = table
            .get(identity)
            .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?;
        Ok(set_value(device, slot))
    }

    fn read_set_at(
        &self,
        index: u32,
        slot: u16,
        identity: &str,
    ) -> Result<Option<SetValue>, ModelError> {
        let table = self.devices.read().unwrap_or_else(poisoned);
        match table.slots.get(index as usize) {
            Some(device) if !device.has(FLAG_REMOVED) => Ok(set_value(device, slot)),
            _ => Err(ModelError::UnknownIdentity(identity.to_string())),
        }
    }

    /// Long poll (exosite-platform.md §3.9): the `set` value as soon as its set modified time
    /// is later than `since`, waiting up to `timeout` (real time); `None` on timeout. Nothing
    /// is lost between polls: a change made before the poll starts answers at once.
    pub async fn poll_set(
        &self,
        identity: &str,
        alias: &str,
        since: PollSince,
        timeout: Duration,
    ) -> Result<Option<SetValue>, ModelError> {
        let index = self
            .device_id(identity)
            .ok_or_else(|| ModelError::UnknownIdentity(identity.to_string()))?
            .0;
        let Some((slot, _)) = self.resolve(alias) else {
            tokio::time::sleep(timeout).await;
            return Ok(None);
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let waiter = WaiterGuard::new(self, (index, slot));
        loop {
            let notified = waiter.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = self.read_set_at(index, slot, identity)?
                && since.is_older_than(v.set_modified)
            {
                return Ok(Some(v));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// Number of devices with a long poll waiting now.
    pub fn waiting_polls(&self) -> usize {
        self.waiter_count.load(Ordering::SeqCst)
    }

    fn wake(&self, index: u32, slot: u16) {
        if self.waiter_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let waiters = self.waiters.lock().unwrap_or_else(poisoned);
        if let Some(n) = waiters.get(&(index, slot)) {
            n.notify_waiters();
        }
    }

    /// Timestamped writes (`POST /onep:v1/stack/record`): `entries` are (alias, [(unix s,
    /// value)]). Timestamps of one alias under 1 s apart fail with a [`RecordConflict`] and
    /// nothing is written. Otherwise the newest value of each alias is stored as a device
    /// write and one `data_in` event carries one payload entry per timestamp.
    pub fn record(
        &self,
        identity: &str,
        entries: &[(String, Vec<(i64, String)>)],
        origin: &WriteOrigin,
    ) -> Result<Result<(), RecordConflict>, ModelError> {
        if let Err(conflict) = check_record(entries) {
            return Ok(Err(conflict));
        }
        let mut newest: Vec<(&str, &str)> = Vec::new();
        let mut by_time: BTreeMap<i64, BTreeMap<String, String>> = BTreeMap::new();
        for (alias, points) in entries {
            if let Some((_, v)) = points.iter().max_by_key(|(t, _)| *t) {
                self.check_size(alias, v)?;
                newest.retain(|(a, _)| a != alias);
                newest.push((alias, v));
            }
            for (t, v) in points {
                by_time
                    .entry(*t)
                    .or_default()
                    .insert(alias.clone(), v.clone());
            }
        }
        let now = self.clock.now_micros();
        self.store_device_values(identity, &newest, now)?;
        let payload = by_time
            .into_iter()
            .map(|(t, values)| EventPayload {
                values,
                timestamp: t.saturating_mul(1_000_000),
            })
            .collect();
        self.emit(identity, DATA_IN, origin, payload);
        Ok(Ok(()))
    }

    fn emit(&self, identity: &str, kind: &str, origin: &WriteOrigin, payload: Vec<EventPayload>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let event = DeviceEvent {
            kind: kind.to_string(),
            identity: identity.to_string(),
            timestamp: self.clock.now_micros(),
            ip: origin.ip.clone(),
            connection_id: origin.connection_id.clone(),
            payload,
        };
        // A send error only means every receiver went away meanwhile.
        let _ = self.events.send(ConnectorEvent {
            connector: self.id.clone(),
            event,
        });
    }
}

/// Checks the 1 s rule of `/onep:v1/stack/record`.
pub(crate) fn check_record(entries: &[(String, Vec<(i64, String)>)]) -> Result<(), RecordConflict> {
    let mut parts = Vec::new();
    for (alias, points) in entries {
        let mut times: Vec<i64> = points.iter().map(|(t, _)| *t).collect();
        times.sort_unstable();
        let mut marked = vec![false; times.len()];
        for i in 1..times.len() {
            if times[i] - times[i - 1] < 1 {
                marked[i - 1] = true;
                marked[i] = true;
            }
        }
        let bad: Vec<i64> = times
            .iter()
            .zip(&marked)
            .filter(|(_, m)| **m)
            .map(|(t, _)| *t)
            .collect();
        if !bad.is_empty() {
            let list: Vec<String> = bad.iter().map(i64::to_string).collect();
            parts.push(format!("{alias}={}", list.join(",")));
        }
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(RecordConflict {
            body: parts.join("&"),
        })
    }
}

/// Keeps a long-poll waiter registered while a poll runs and removes it when the last poll of
/// that device and alias ends (also when the request is dropped).
struct WaiterGuard<'a> {
    connector: &'a Connector,
    key: (u32, u16),
    notify: Option<Arc<Notify>>,
}

impl<'a> WaiterGuard<'a> {
    fn new(connector: &'a Connector, key: (u32, u16)) -> Self {
        let mut waiters = connector.waiters.lock().unwrap_or_else(poisoned);
        let notify = waiters
            .entry(key)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        connector
            .waiter_count
            .store(waiters.len(), Ordering::SeqCst);
        WaiterGuard {
            connector,
            key,
            notify: Some(notify),
        }
    }

    fn notify(&self) -> &Notify {
        self.notify.as_deref().unwrap_or_else(|| unreachable!())
    }
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut waiters = self.connector.waiters.lock().unwrap_or_else(poisoned);
        drop(self.notify.take());
        if waiters
            .get(&self.key)
            .is_some_and(|n| Arc::strong_count(n) == 1)
        {
            waiters.remove(&self.key);
        }
        self.connector
            .waiter_count
            .store(waiters.len(), Ordering::SeqCst);
    }
}

fn set_value(device: &Device, slot: u16) -> Option<SetValue> {
    let rv = device.resource(usize::from(slot))?;
    Some(SetValue {
        value: rv.set.clone()?,
        set_modified: rv.set_modified,
        timestamp: rv.timestamp,
    })
}

fn state_of(device: &Device, names: &[Arc<str>]) -> BTreeMap<String, ResourceStateView> {
    device
        .resources
        .iter()
        .enumerate()
        .filter(|(_, rv)| rv.timestamp != 0)
        .filter_map(|(slot, rv)| {
            let name = names.get(slot)?;
            Some((
                name.to_string(),
                ResourceStateView {
                    reported: rv.reported.as_deref().map(str::to_string),
                    set: rv.set.as_deref().map(str::to_string),
                    timestamp: rv.timestamp,
                },
            ))
        })
        .collect()
}

fn view(device: &Device, names: &[Arc<str>]) -> IdentityView {
    IdentityView {
        identity: device.identity.to_string(),
        auth: AuthView {
            kind: device
                .auth
                .as_ref()
                .map(|a| a.kind.to_string())
                .unwrap_or_else(|| "token".to_string()),
            expire: device.auth.as_ref().and_then(|a| a.expire),
        },
        state: state_of(device, names),
        locked: device.has(FLAG_LOCKED),
        reprovision: device.has(FLAG_REPROVISION),
        devmode: false,
        lastip: String::new(),
        lastseen: device.lastseen,
        status: device.status().to_string(),
        online: false,
        tags: device
            .tags
            .as_deref()
            .map(<[Tag]>::to_vec)
            .unwrap_or_default(),
        created: device.created,
    }
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn validate_identity(identity: &str) -> Result<(), ModelError> {
    if identity.is_empty() || identity.len() > 256 {
        return Err(ModelError::Invalid(format!(
            "identity {identity:?} must be 1 to 256 characters"
        )));
    }
    if identity.chars().any(|c| c.is_control() || c == '/') {
        return Err(ModelError::Invalid(format!(
            "identity {identity:?} must not contain '/' or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::emulator::clock::ManualClock;
    use crate::emulator::model::{Model, ModelConfig, NewIdentity, WriteOrigin};

    fn connector() -> Arc<super::Connector> {
        let model = Model::new(
            ModelConfig::default(),
            Arc::new(ManualClock::new(1_700_000_000_000_000)),
        );
        let conn = model.add_connector("c1").unwrap();
        conn.add_identity("d1", NewIdentity::default()).unwrap();
        conn
    }

    #[test]
    fn unsynced_set_values_are_the_cloud_writes_not_reported_back() {
        let conn = connector();
        let origin = WriteOrigin::default();
        assert!(conn.unsynced_set_values("d1").unwrap().is_empty());
        conn.set_state("d1", &[("config_otau".into(), "m1".into())], "t")
            .unwrap();
        conn.device_write("d1", &[("otau_in", "r")], &origin)
            .unwrap();
        let pending = conn.unsynced_set_values("d1").unwrap();
        assert_eq!(pending.len(), 1, "a device write is synced by definition");
        assert_eq!(&*pending[0].0, "config_otau");
        assert_eq!(&*pending[0].1.value, "m1");
        conn.device_write("d1", &[("config_otau", "m1")], &origin)
            .unwrap();
        assert!(conn.unsynced_set_values("d1").unwrap().is_empty(), "acked");
        assert!(conn.unsynced_set_values("nobody").is_err());
    }

    #[test]
    fn a_batch_stores_the_newest_value_of_each_alias() {
        let conn = connector();
        let entries = vec![
            (20, vec![("otau_in".to_string(), "late".to_string())]),
            (10, vec![("otau_in".to_string(), "early".to_string())]),
            (
                20,
                vec![("otau_in".to_string(), "late-same-time".to_string())],
            ),
        ];
        conn.device_write_batch("d1", &entries, &WriteOrigin::default())
            .unwrap();
        let state = conn.state("d1").unwrap();
        assert_eq!(state["otau_in"].reported.as_deref(), Some("late-same-time"));
        let too_big = vec![(1, vec![("otau_in".to_string(), "x".repeat(2 << 20))])];
        assert!(
            conn.device_write_batch("d1", &too_big, &WriteOrigin::default())
                .is_err()
        );
        assert_eq!(
            conn.state("d1").unwrap()["otau_in"].reported.as_deref(),
            Some("late-same-time"),
            "nothing of a refused batch is written"
        );
    }
}
