//! The per-device index: one compact [`DeviceEntry`] per device in scope, folded from
//! [`DeviceObservation`]s.
//!
//! Memory: identities live in one arena (`String`) addressed by `u32` offsets; an entry is 40
//! bytes with no heap data of its own; a map from order key to entry costs about 16-32 bytes;
//! the sorted order 4 bytes. About 80-110 bytes per device at a million devices, well under
//! the 200 bytes of docs/architecture.md §6 (measured by `engine-bench`, asserted by a test).
//!
//! A device is in scope when the targets' identities or tags select it now, and either no
//! exclusion removes it or it holds this package's manifest (an exclusion stops future writes
//! only: a notified device it removes keeps counting, flagged so that it is never written
//! again). Everything else is dropped at once, so a rollout of 1,000 devices on a connector of
//! a million keeps 1,000 entries. Holding this package's manifest does not bring an unselected
//! device in: two Rollouts of one package to disjoint targets (say one per region) each count
//! only their own devices. A device the identities or tags no longer select keeps counting
//! only when its `config_otau` set value is this package's manifest carrying this Rollout's
//! marker (the `rollout` key, [`super::order::rollout_marker`]): a *former target*, which this
//! Rollout notified; it is flagged like an excluded one and never written again. The platform
//! holds the fact; the entry spends one flag bit on it.

use std::borrow::{Borrow, Cow};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::api::DeviceTag;
use crate::api::rollout::Targets;
use crate::otau::{Classification, Manifest, Report, ReportError, StatusClass, classify};

use super::observation::{DeviceObservation, Micros, PartialUpdate, normalize_timestamp};
use super::order::order_key;
use super::record::success_record;

/// The highest attempt number the index recognises (1 + at most 10 retries, with room to
/// spare); larger `attempt` values a third party might write are clamped to it.
pub const MAX_ATTEMPT: u8 = 32;
/// How many failure messages the index keeps (the newest), for `status.recentFailures`.
pub const MAX_NOTES: usize = 64;
/// The longest failure message kept, in bytes.
pub const MAX_NOTE_BYTES: usize = 200;

/// What the device's `config_otau` set value is, relative to this rollout's manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SetKind {
    /// No value, or an empty one.
    Absent,
    /// This package's manifest, attempt [`DeviceEntry::attempt`] (compared as JSON).
    Ours,
    /// Another manifest (another package, or a manifest this rollout did not write).
    OtherManifest,
    /// Not a manifest at all, e.g. the literal `ACK` some clients write back
    /// (exosite-platform.md §1.4).
    Foreign,
}

/// The device's latest `otau_in` report, classified against the target version
/// (exosite-platform.md §2.5) and kept as one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ReportCode {
    /// No report.
    None,
    /// A report about another version, not `INSTALLED_VERSION`: ignored.
    OtherVersion,
    /// `INSTALLED_VERSION` of another version: the device's current version.
    CurrentVersion,
    /// `INSTALLED_VERSION` of the target.
    Succeeded,
    /// A documented in-progress status for the target.
    InProgress,
    /// An undocumented status for the target not ending in `_ERROR`: counted as in progress.
    InProgressUnknown,
    /// `TEST_ERROR` for the target.
    TestError,
    /// `DOWNLOAD_ERROR` for the target.
    DownloadError,
    /// `INSTALL_ERROR` for the target.
    InstallError,
    /// An undocumented status ending in `_ERROR` for the target (a failure all the same).
    OtherError,
    /// `INSTALL_ABORTED` for the target.
    Aborted,
    /// Not a report (not JSON, or no `version`/`status`).
    Malformed,
}

impl ReportCode {
    /// Whether the report says the target failed (`*_ERROR`).
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            ReportCode::TestError
                | ReportCode::DownloadError
                | ReportCode::InstallError
                | ReportCode::OtherError
        )
    }

    /// The status text shown in `recentFailures`.
    pub fn status_text(self) -> &'static str {
        match self {
            ReportCode::TestError => "TEST_ERROR",
            ReportCode::DownloadError => "DOWNLOAD_ERROR",
            ReportCode::InstallError => "INSTALL_ERROR",
            ReportCode::OtherError => "OtherError",
            ReportCode::Aborted => "INSTALL_ABORTED",
            ReportCode::Malformed => "InvalidReport",
            ReportCode::Succeeded => "INSTALLED_VERSION",
            ReportCode::InProgress | ReportCode::InProgressUnknown => "InProgress",
            ReportCode::None | ReportCode::OtherVersion | ReportCode::CurrentVersion => "NoReport",
        }
    }
}

/// The devices a rollout notified, as [`DeviceIndex::notified`] finds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notified {
    /// How many.
    pub count: u64,
    /// The wrapping sum of their order keys: equal for the same set of devices, whatever the
    /// order; a different set almost always gives another sum.
    pub fingerprint: u64,
    /// Their identities, sorted, when there are no more than asked for; else empty.
    pub identities: Vec<String>,
}

/// Flag: the device was seen since [`DeviceIndex::begin_full_listing`].
const SEEN: u16 = 1;
/// Flag: the device acknowledged the `config_otau` value it holds (its `reported` value is the
/// `set` one, exosite-platform.md §1.4): the timestamp then is the ack's, not the write's.
const ACKED: u16 = 2;
/// Flag: [`DeviceEntry::set_at`] is the time the value was *written*: the index saw it before
/// any ack (our own write, or a listing of it unacknowledged) and kept that time through the
/// ack. Without it, an acknowledged value's time is only an upper bound of the write.
const WRITE_KNOWN: u16 = 4;
/// Flag: the device reported `INSTALLED_VERSION` of the target while holding this rollout's
/// notification: it stays succeeded for this rollout whatever it reports later.
const INSTALLED: u16 = 8;
/// Flag: `targets.exclude` removes the device, which holds this rollout's manifest: it keeps
/// counting (an exclusion stops future writes only) and gets no retry.
const EXCLUDED: u16 = 16;
/// Flag: the [`SetKind::OtherManifest`] value is the manifest of a SoftwarePackage of the
/// connector ([`IndexConfig::connector_manifests`]).
const CONNECTOR_MANIFEST: u16 = 32;
/// Flag: the [`SetKind::OtherManifest`] value is the manifest of a package that a newer
/// Rollout on the connector rolls out ([`IndexConfig::newer_rollout_manifests`]).
const NEWER_ROLLOUT_MANIFEST: u16 = 64;
/// Flag: the identities and tags no longer select the device, whose `config_otau` holds this
/// package's manifest with this Rollout's marker: a former target, notified by this Rollout.
/// It keeps counting (an edit stops future writes only) and gets no retry.
const FORMER_TARGET: u16 = 128;
/// Flag: the device carries this rollout's success record ([`DeviceIndex::success_record`],
/// an identity tag on the platform): it installed the target, which the index knows even when
/// the device's latest report no longer says so (a re-run seen after a restart).
const RECORDED: u16 = 256;

/// A 16-bit hash of a version string, never 0 (0 means "none" in [`DeviceEntry`]). Two
/// versions share a hash about once in 65,535 pairs; the only effect is that a device whose
/// report names another version than the manifest it holds looks busy with that manifest,
/// and waits at most the device timeout.
fn version_hash(version: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in version.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let folded = (h ^ (h >> 16)) as u16;
    folded.max(1)
}

/// The hash of the version a raw `otau_in` value says is being installed right now: its
/// version when its status is not final (exosite-platform.md §2.5); 0 when it is final, or
/// no report.
fn running_version(raw: Option<&str>) -> u16 {
    match raw.map(Report::parse) {
        Some(Ok(r)) if r.status.class() == StatusClass::InProgress => version_hash(&r.version),
        _ => 0,
    }
}

/// One device in scope: 40 bytes, no heap data (the identity is in the index's arena).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// The order key (see [`super::order::order_key`]).
    pub order_key: u64,
    /// Timestamp (µs) of the `config_otau` value: its write when [`Self::write_time_known`]
    /// (an ack of the same value does not move it), else the last write of either value.
    pub set_at: Micros,
    /// Timestamp (µs) of the `otau_in` value.
    pub report_at: Micros,
    identity_start: u32,
    identity_len: u16,
    /// The attempt of this rollout's manifest in `config_otau` (meaningful for [`SetKind::Ours`]).
    pub attempt: u8,
    /// What the `config_otau` set value is.
    pub set_kind: SetKind,
    /// The latest report, classified.
    pub report: ReportCode,
    flags: u16,
    /// For [`SetKind::OtherManifest`]: the hash of that manifest's version; else 0.
    other_version: u16,
    /// The hash of the version the latest report says is installing now (a non-final
    /// status); 0 when that report is final or absent.
    running_version: u16,
}

impl DeviceEntry {
    /// Whether `config_otau` holds another manifest and the latest report is a non-final
    /// status for that manifest's version: the device is installing it right now.
    pub fn installs_other_manifest(&self) -> bool {
        self.set_kind == SetKind::OtherManifest
            && self.other_version != 0
            && self.other_version == self.running_version
    }

    /// Whether `config_otau` holds a manifest no SoftwarePackage of the connector produced.
    pub fn holds_foreign_manifest(&self) -> bool {
        self.set_kind == SetKind::OtherManifest && self.flags & CONNECTOR_MANIFEST == 0
    }

    /// Whether `config_otau` holds the manifest of a package that a newer Rollout on the
    /// connector rolls out: the device is that Rollout's now.
    pub fn holds_newer_rollouts_manifest(&self) -> bool {
        self.set_kind == SetKind::OtherManifest && self.flags & NEWER_ROLLOUT_MANIFEST != 0
    }
}

impl DeviceEntry {
    /// Whether the device acknowledged the `config_otau` value it holds.
    pub fn acked(&self) -> bool {
        self.flags & ACKED != 0
    }

    /// Whether [`Self::set_at`] is the time the value was written (seen before any ack).
    pub fn write_time_known(&self) -> bool {
        self.flags & WRITE_KNOWN != 0 || self.flags & ACKED == 0
    }

    /// Whether the device installed the target while holding this rollout's notification.
    pub fn installed_target(&self) -> bool {
        self.flags & INSTALLED != 0
    }

    /// Whether the device carries this rollout's success record on the platform.
    pub fn success_recorded(&self) -> bool {
        self.flags & RECORDED != 0
    }

    /// Whether `targets.exclude` removes the device after it was notified: it keeps counting
    /// and is never written again.
    pub fn excluded_after_notification(&self) -> bool {
        self.flags & EXCLUDED != 0
    }

    /// Whether the identities or tags no longer select the device, which holds this Rollout's
    /// marked manifest: it keeps counting and is never written again.
    pub fn former_target(&self) -> bool {
        self.flags & FORMER_TARGET != 0
    }

    /// Whether the targets stopped writes to this notified device (excluded after its
    /// notification, or a former target): it keeps counting and gets no retry.
    pub fn writes_stopped(&self) -> bool {
        self.flags & (EXCLUDED | FORMER_TARGET) != 0
    }

    /// The same entry as a former target (tests).
    #[cfg(test)]
    pub(crate) fn with_former_target(mut self) -> Self {
        self.flags |= FORMER_TARGET;
        self
    }

    /// The same entry, excluded after its notification (tests).
    #[cfg(test)]
    pub(crate) fn with_excluded(mut self) -> Self {
        self.flags |= EXCLUDED;
        self
    }

    /// The same entry, acknowledged or not, with its write time known or not (tests).
    #[cfg(test)]
    pub(crate) fn with_ack(mut self, acked: bool, write_known: bool) -> Self {
        self.flags &= !(ACKED | WRITE_KNOWN);
        if acked {
            self.flags |= ACKED;
        }
        if write_known {
            self.flags |= WRITE_KNOWN;
        }
        self
    }

    /// The same entry, marked as having installed the target (tests).
    #[cfg(test)]
    pub(crate) fn with_installed(mut self) -> Self {
        self.flags |= INSTALLED;
        self
    }

    /// Folds a new `config_otau` state (value kind, attempt, timestamp, acknowledged): an ack
    /// of the value the entry holds keeps the write time the entry knows; any other value
    /// starts again from its timestamp, which is the write's unless it is acknowledged.
    fn fold_set(&mut self, kind: SetKind, attempt: u8, at: Micros, acked: bool) {
        let same_value = kind == self.set_kind && attempt == self.attempt;
        let keep_write = same_value && acked && self.write_time_known() && at >= self.set_at;
        if !keep_write {
            self.set_at = at;
            self.flags &= !WRITE_KNOWN;
            if !acked {
                self.flags |= WRITE_KNOWN;
            }
        }
        if acked {
            self.flags |= ACKED;
        } else {
            self.flags &= !ACKED;
        }
        self.set_kind = kind;
        self.attempt = attempt;
    }

    /// Folds whether the device carries the success record: a record is an install of the
    /// target, kept for good; a record gone from the platform is written again when due.
    fn fold_record(&mut self, recorded: bool) {
        self.flags &= !RECORDED;
        if recorded {
            self.flags |= INSTALLED | RECORDED;
        }
    }

    /// Folds a new report: `INSTALLED_VERSION` of the target while the device holds a
    /// notification (this manifest, or a value that replaced it) is remembered for good.
    fn fold_report(&mut self, report: ReportCode, at: Micros) {
        self.report = report;
        self.report_at = at;
        let holds_notification = matches!(self.set_kind, SetKind::Ours | SetKind::Foreign);
        if report == ReportCode::Succeeded && holds_notification {
            self.flags |= INSTALLED;
        }
    }

    /// An entry with no identity, for tests of the per-device rules.
    #[cfg(test)]
    pub(crate) fn bare(
        set_kind: SetKind,
        attempt: u8,
        set_at: Micros,
        report: ReportCode,
        report_at: Micros,
    ) -> Self {
        Self {
            order_key: 0,
            set_at,
            report_at,
            identity_start: 0,
            identity_len: 0,
            attempt,
            set_kind,
            report,
            // Another manifest is one of the connector's unless a test says otherwise
            // ([`Self::holding_other`]).
            flags: if set_kind == SetKind::OtherManifest {
                CONNECTOR_MANIFEST
            } else {
                0
            },
            other_version: 0,
            running_version: 0,
        }
    }

    /// This entry with another manifest of version `version` in `config_otau` (produced by a
    /// package of the connector when `produced`) and a latest report naming `running` in a
    /// non-final status (`None`: a final report), for tests of the per-device rules.
    #[cfg(test)]
    pub(crate) fn holding_other(
        mut self,
        version: &str,
        produced: bool,
        running: Option<&str>,
    ) -> Self {
        self.set_kind = SetKind::OtherManifest;
        OtherManifest {
            version: version_hash(version),
            produced,
            newer_rollout: false,
        }
        .apply(&mut self);
        self.running_version = running.map_or(0, version_hash);
        self
    }
}

/// What one observation folds into.
struct Folded {
    in_scope: bool,
    excluded: bool,
    former: bool,
    /// The device carries the rollout's success record.
    recorded: bool,
    set_kind: SetKind,
    attempt: u8,
    set_at: Micros,
    other: OtherManifest,
    acked: bool,
    report: ReportCode,
    report_at: Micros,
    running_version: u16,
    note: Option<String>,
}

impl Folded {
    /// Sets the entry's flags for why the targets keep it without writes (or clears them).
    fn apply_scope_flags(&self, entry: &mut DeviceEntry) {
        entry.flags &= !(EXCLUDED | FORMER_TARGET);
        if self.excluded {
            entry.flags |= EXCLUDED;
        }
        if self.former {
            entry.flags |= FORMER_TARGET;
        }
    }
}

/// What the index keeps of another manifest in `config_otau`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct OtherManifest {
    /// The hash of its version (0: not another manifest).
    version: u16,
    /// Whether a SoftwarePackage of the connector produced it.
    produced: bool,
    /// Whether a newer Rollout on the connector rolls it out.
    newer_rollout: bool,
}

impl OtherManifest {
    fn apply(self, entry: &mut DeviceEntry) {
        entry.other_version = self.version;
        entry.flags &= !(CONNECTOR_MANIFEST | NEWER_ROLLOUT_MANIFEST);
        if self.produced {
            entry.flags |= CONNECTOR_MANIFEST;
        }
        if self.newer_rollout {
            entry.flags |= NEWER_ROLLOUT_MANIFEST;
        }
    }
}

/// A hasher for keys that already are uniform hashes (the order key): passes them through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type KeyMap = HashMap<u64, u32, BuildHasherDefault<PassThrough>>;
type KeySet = HashSet<u64, BuildHasherDefault<PassThrough>>;

/// Which devices the targets select, prepared for fast matching.
#[derive(Clone, Debug, Default)]
struct TargetMatcher {
    identities: HashSet<String>,
    tags: HashSet<(String, String)>,
    excluded_identities: HashSet<String>,
    excluded_tags: HashSet<(String, String)>,
}

impl TargetMatcher {
    fn new(targets: &Targets) -> Self {
        let tag = |t: &crate::api::DeviceTag| (t.name.clone(), t.value.clone());
        let exclude = targets.exclude.clone().unwrap_or_default();
        Self {
            identities: targets.identities.iter().cloned().collect(),
            tags: targets.tags.iter().map(tag).collect(),
            excluded_identities: exclude.identities.iter().cloned().collect(),
            excluded_tags: exclude.tags.iter().map(tag).collect(),
        }
    }

    fn has_tag(set: &HashSet<(String, String)>, obs: &DeviceObservation) -> bool {
        !set.is_empty()
            && obs
                .tags
                .iter()
                .any(|t| set.contains(&(t.name.clone(), t.value.clone())))
    }

    /// Whether the device is in scope, and whether the selectors pick it but an exclusion
    /// removes it.
    fn scope(&self, obs: &DeviceObservation) -> Scope {
        let selected = self.identities.contains(&obs.identity) || Self::has_tag(&self.tags, obs);
        if !selected {
            Scope::Out
        } else if self.excluded_identities.contains(&obs.identity)
            || Self::has_tag(&self.excluded_tags, obs)
        {
            Scope::Excluded
        } else {
            Scope::In
        }
    }
}

/// Where the targets put one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// Selected and not excluded: the rollout's.
    In,
    /// Selected by identity or tag, then removed by `targets.exclude`.
    Excluded,
    /// Not selected.
    Out,
}

/// A failure message kept for `recentFailures`.
#[derive(Clone, Debug)]
struct Note {
    identity: String,
    at: Micros,
    text: String,
}

/// What the index is built for: the order seed, the targets and the package manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexConfig {
    /// The order seed ([`super::order::order_seed`]).
    pub seed: String,
    /// The Rollout's targets.
    pub targets: Targets,
    /// The package manifest (its `attempt` is ignored: attempt 1 is the base), carrying the
    /// Rollout's marker ([`Manifest::rollout`], [`super::order::rollout_marker`]): every value
    /// the index hands out to write carries it, and a device the targets no longer select
    /// keeps counting only when its value carries it.
    pub manifest: Manifest,
    /// The manifests of the SoftwarePackages of the connector (any attempt; this package's
    /// may be among them): another manifest in `config_otau` that is none of these is
    /// foreign (docs/rollouts.md, "Busy and foreign devices").
    pub connector_manifests: Vec<Manifest>,
    /// The manifests of the packages that Rollouts newer than this one (on the same
    /// connector) roll out: a device holding one is theirs now, never written by this one
    /// (the newest Rollout wins, as with `TargetConflict`).
    pub newer_rollout_manifests: Vec<Manifest>,
}

/// The devices of one rollout, folded from platform observations. Build it with
/// [`DeviceIndex::new`] + [`DeviceIndex::upsert`] (page by page), optionally framing a full
/// listing with [`DeviceIndex::begin_full_listing`] / [`DeviceIndex::finish_full_listing`] so
/// devices gone from the connector leave, then call [`DeviceIndex::prepare`] (or let
/// [`super::reconcile`] sort a copy).
#[derive(Clone, Debug)]
pub struct DeviceIndex {
    config: IndexConfig,
    manifest: Manifest,
    /// [`IndexConfig::connector_manifests`] at attempt 1.
    connector_manifests: Vec<Manifest>,
    /// [`IndexConfig::newer_rollout_manifests`] at attempt 1.
    newer_rollout_manifests: Vec<Manifest>,
    /// The exact `config_otau` string for attempt k at `attempt_values[k - 1]`.
    attempt_values: Vec<String>,
    matcher: TargetMatcher,
    arena: String,
    garbage_bytes: usize,
    entries: Vec<DeviceEntry>,
    by_key: KeyMap,
    /// Entries whose order key collides with another identity's (practically never).
    collisions: Vec<u32>,
    order: Vec<u32>,
    sorted: bool,
    notes: Vec<Note>,
    rejected: u64,
    /// Order keys of the devices the selectors pick and an exclusion removes (so that a
    /// rollout whose exclusions remove every device can say so).
    excluded: KeySet,
    /// The excluded devices seen since [`Self::begin_full_listing`], while a listing runs.
    excluded_in_listing: Option<KeySet>,
    /// The success record tag of this rollout ([`super::record::success_record`]).
    record: DeviceTag,
}

/// Why an observation was refused.
fn identity_problem(identity: &str) -> bool {
    identity.is_empty() || identity.len() > usize::from(u16::MAX)
}

impl DeviceIndex {
    /// An empty index for the given rollout.
    pub fn new(config: IndexConfig) -> Self {
        let manifest = config.manifest.with_attempt(1);
        let record = success_record(&config.seed, &config.manifest.version);
        let attempt_values = (1..=u32::from(MAX_ATTEMPT))
            .map(|k| manifest.with_attempt(k).to_json())
            .collect();
        let connector_manifests = config
            .connector_manifests
            .iter()
            .map(|m| m.with_attempt(1))
            .collect();
        let newer_rollout_manifests = config
            .newer_rollout_manifests
            .iter()
            .map(|m| m.with_attempt(1))
            .collect();
        Self {
            matcher: TargetMatcher::new(&config.targets),
            manifest,
            connector_manifests,
            newer_rollout_manifests,
            attempt_values,
            config,
            arena: String::new(),
            garbage_bytes: 0,
            entries: Vec::new(),
            by_key: KeyMap::default(),
            collisions: Vec::new(),
            order: Vec::new(),
            sorted: true,
            notes: Vec::new(),
            rejected: 0,
            excluded: KeySet::default(),
            excluded_in_listing: None,
            record,
        }
    }

    /// An index built from one complete listing.
    pub fn build<I>(config: IndexConfig, observations: I) -> Self
    where
        I: IntoIterator,
        I::Item: Borrow<DeviceObservation>,
    {
        let mut index = Self::new(config);
        index.upsert(observations);
        index.prepare();
        index
    }

    /// What the index was built for.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Whether `config` selects and orders the same devices against the same manifest as
    /// this index (it may differ in the other manifests it tells apart).
    pub fn same_devices(&self, config: &IndexConfig) -> bool {
        self.config.seed == config.seed
            && self.config.targets == config.targets
            && self.config.manifest == config.manifest
            && self.config.manifest.rollout == config.manifest.rollout
    }

    /// Takes new [`IndexConfig::connector_manifests`] and
    /// [`IndexConfig::newer_rollout_manifests`] without dropping the devices: each entry's
    /// facts about another manifest follow at its next observation (the caller asks for a
    /// listing), so a new package or Rollout on the connector costs no rebuild.
    pub fn set_other_manifests(&mut self, connector: Vec<Manifest>, newer_rollouts: Vec<Manifest>) {
        self.connector_manifests = connector.iter().map(|m| m.with_attempt(1)).collect();
        self.newer_rollout_manifests = newer_rollouts.iter().map(|m| m.with_attempt(1)).collect();
        self.config.connector_manifests = connector;
        self.config.newer_rollout_manifests = newer_rollouts;
    }

    /// The identity tag that records a device's install of the target on the platform.
    pub fn success_record(&self) -> &DeviceTag {
        &self.record
    }

    /// Folds a success record just written to a device the index holds (the next listing
    /// shows it). Returns false when the device is not in the index.
    pub fn mark_success_recorded(&mut self, identity: &str) -> bool {
        let Some(i) = self.find(order_key(&self.config.seed, identity), identity) else {
            return false;
        };
        self.entries[i as usize].fold_record(true);
        true
    }

    /// The target version (the manifest's `version`).
    pub fn version(&self) -> &str {
        &self.manifest.version
    }

    /// The exact `config_otau` value for attempt `attempt` (1 = first notification).
    pub fn manifest_value(&self, attempt: u8) -> &str {
        let k = attempt.clamp(1, MAX_ATTEMPT);
        &self.attempt_values[usize::from(k) - 1]
    }

    /// Number of devices in scope.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no device is in scope.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Devices the targets' identities or tags select that `targets.exclude` removes (as of
    /// the last full listing and the observations since).
    pub fn excluded(&self) -> usize {
        self.excluded.len()
    }

    /// Observations refused (empty identity, or longer than 65,535 bytes).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The identity of an entry.
    pub fn identity(&self, entry: &DeviceEntry) -> &str {
        let start = entry.identity_start as usize;
        &self.arena[start..start + usize::from(entry.identity_len)]
    }

    /// The devices whose `config_otau` set value is this rollout's manifest (any attempt): how
    /// many, a fingerprint of which, and their identities (sorted) when there are no more than
    /// `keep` of them (else none: above that the caller needs only the count). One pass over
    /// the entries; no identity is copied beyond `keep`.
    pub fn notified(&self, keep: usize) -> Notified {
        let mut count = 0u64;
        let mut fingerprint = 0u64;
        let mut kept = Vec::new();
        for entry in self.entries.iter().filter(|e| e.set_kind == SetKind::Ours) {
            count += 1;
            fingerprint = fingerprint.wrapping_add(entry.order_key);
            if kept.len() <= keep {
                kept.push(self.identity(entry));
            }
        }
        let mut identities: Vec<String> = if kept.len() > keep {
            Vec::new()
        } else {
            kept.into_iter().map(str::to_owned).collect()
        };
        identities.sort_unstable();
        Notified {
            count,
            fingerprint,
            identities,
        }
    }

    /// The entry of an identity, if in scope.
    pub fn get(&self, identity: &str) -> Option<&DeviceEntry> {
        let key = order_key(&self.config.seed, identity);
        self.find(key, identity).map(|i| &self.entries[i as usize])
    }

    /// Bytes held by the index (entries, map, order, arena, notes), for the benchmark and the
    /// memory test. Counts capacities, so it is what the allocator gave out, give or take its
    /// own overhead.
    pub fn heap_bytes(&self) -> usize {
        let entries = self.entries.capacity() * std::mem::size_of::<DeviceEntry>();
        // hashbrown: one (key, value) slot plus one control byte per bucket; buckets are about
        // capacity * 8 / 7.
        let slot = std::mem::size_of::<(u64, u32)>() + 1;
        let map = self.by_key.capacity() * 8 / 7 * slot;
        let order = self.order.capacity() * 4 + self.collisions.capacity() * 4;
        let notes: usize = self
            .notes
            .iter()
            .map(|n| n.identity.capacity() + n.text.capacity() + std::mem::size_of::<Note>())
            .sum();
        let excluded = self.excluded.capacity() * 8 / 7 * (std::mem::size_of::<u64>() + 1);
        entries + map + order + self.arena.capacity() + notes + excluded
    }

    /// Starts a full listing: devices not upserted before [`Self::finish_full_listing`] are
    /// dropped (they left the connector).
    pub fn begin_full_listing(&mut self) {
        for e in &mut self.entries {
            e.flags &= !SEEN;
        }
        self.excluded_in_listing = Some(KeySet::default());
    }

    /// Ends a full listing: drops every device not seen since [`Self::begin_full_listing`].
    pub fn finish_full_listing(&mut self) {
        if let Some(seen) = self.excluded_in_listing.take() {
            self.excluded = seen;
        }
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].flags & SEEN == 0 {
                self.remove_at(i as u32);
            } else {
                i += 1;
            }
        }
        self.compact_if_needed();
        self.shrink_if_oversized();
        self.prepare();
    }

    /// Gives back what growing during a listing over-allocated: a vector that doubled to hold
    /// the last few devices keeps up to twice the room it needs for as long as the rollout
    /// lives. Only when more than a quarter is spare, to a eighth of headroom, so a steady
    /// fleet never reallocates.
    fn shrink_if_oversized(&mut self) {
        fn oversized(capacity: usize, len: usize) -> Option<usize> {
            (capacity > len + len / 4 + 64).then_some(len + len / 8)
        }
        if let Some(n) = oversized(self.entries.capacity(), self.entries.len()) {
            self.entries.shrink_to(n);
        }
        if let Some(n) = oversized(self.order.capacity(), self.order.len()) {
            self.order.shrink_to(n);
        }
        if let Some(n) = oversized(self.arena.capacity(), self.arena.len()) {
            self.arena.shrink_to(n);
        }
        if let Some(n) = oversized(self.by_key.capacity(), self.by_key.len()) {
            self.by_key.shrink_to(n);
        }
    }

    /// Folds observations into the index: a device seen again is updated (the later
    /// observation wins, also within one call), a new device in scope is added, a device no
    /// longer in scope is dropped. Call [`Self::prepare`] afterwards to sort.
    pub fn upsert<I>(&mut self, observations: I)
    where
        I: IntoIterator,
        I::Item: Borrow<DeviceObservation>,
    {
        for obs in observations {
            let obs = obs.borrow();
            if identity_problem(&obs.identity) {
                self.rejected += 1;
                continue;
            }
            let key = order_key(&self.config.seed, &obs.identity);
            let folded = self.fold(obs);
            self.note_exclusion(key, folded.excluded);
            let found = self.find(key, &obs.identity);
            if let (true, Some(note)) = (folded.in_scope, &folded.note) {
                self.remember_note(&obs.identity, folded.report_at, note);
            }
            match (found, folded.in_scope) {
                (Some(i), true) => {
                    let e = &mut self.entries[i as usize];
                    e.fold_set(folded.set_kind, folded.attempt, folded.set_at, folded.acked);
                    folded.other.apply(e);
                    e.fold_report(folded.report, folded.report_at);
                    e.running_version = folded.running_version;
                    e.fold_record(folded.recorded);
                    e.flags |= SEEN;
                    folded.apply_scope_flags(e);
                }
                (Some(i), false) => self.remove_at(i),
                (None, true) => self.insert(key, &obs.identity, &folded),
                (None, false) => {}
            }
        }
        self.compact_if_needed();
    }

    fn note_exclusion(&mut self, key: u64, excluded: bool) {
        if excluded {
            self.excluded.insert(key);
            if let Some(seen) = &mut self.excluded_in_listing {
                seen.insert(key);
            }
        } else {
            self.excluded.remove(&key);
            if let Some(seen) = &mut self.excluded_in_listing {
                seen.remove(&key);
            }
        }
    }

    /// Folds what changed about one device the index holds (our own write, a pushed report):
    /// each part newer than (or as new as) what the entry holds is classified and replaces
    /// that part only. A `config_otau` value equal to the one held is the device's ack (our
    /// own writes change the value: a retry carries its attempt), so it keeps the write time. Returns false, changing nothing, when the device is not in the index
    /// or every part is older (pushed events may arrive late or twice). Marks the device seen
    /// for a full listing in progress.
    pub fn apply_partial(&mut self, identity: &str, update: &PartialUpdate) -> bool {
        let Some(i) = self.find(order_key(&self.config.seed, identity), identity) else {
            return false;
        };
        let entry = self.entries[i as usize];
        let set = update
            .config_otau
            .as_ref()
            .map(|(value, at)| (value, normalize_timestamp(*at)))
            .filter(|(_, at)| *at >= entry.set_at)
            .map(|(value, at)| {
                let kind = self.set_kind(Some(value));
                (kind, self.other_manifest(kind.0, Some(value)), at)
            });
        let pushed = update
            .otau_in
            .as_ref()
            .map(|(value, at)| (value, normalize_timestamp(*at)));
        let report = pushed
            .filter(|(_, at)| *at >= entry.report_at)
            .map(|(value, at)| {
                let running = running_version(Some(value));
                (self.report_code(Some(value)), running, at)
            });
        if report.is_none()
            && let Some((value, at)) = pushed
            && self.late_install(&entry, value, at)
        {
            // Pushed events may arrive out of order: an install overtaken by a later report
            // still happened.
            let e = &mut self.entries[i as usize];
            e.flags |= INSTALLED | SEEN;
            return true;
        }
        if set.is_none() && report.is_none() {
            return false;
        }
        if let Some(((kind, _), _, _)) = set
            && entry.writes_stopped()
            && kind != SetKind::Ours
        {
            // Kept only because it held this package's manifest: without it, the targets no
            // longer take it (a listing would drop it too).
            self.remove_at(i);
            return true;
        }
        let e = &mut self.entries[i as usize];
        e.flags |= SEEN;
        if let Some(((kind, attempt), other, at)) = set {
            let ack = kind == e.set_kind && attempt == e.attempt && kind != SetKind::Absent;
            e.fold_set(kind, attempt, at, ack);
            other.apply(e);
        }
        if let Some(((code, note), running, at)) = report {
            e.fold_report(code, at);
            e.running_version = running;
            if let Some(note) = note {
                self.remember_note(identity, at, &note);
            }
        }
        true
    }

    /// Whether a report older than the one an entry holds is the target's install during the
    /// entry's notification (written after it, as far as the index knows the write).
    fn late_install(&self, entry: &DeviceEntry, value: &str, at: Micros) -> bool {
        matches!(entry.set_kind, SetKind::Ours | SetKind::Foreign)
            && !entry.installed_target()
            && (at > entry.set_at || !entry.write_time_known())
            && self.report_code(Some(value)).0 == ReportCode::Succeeded
    }

    /// Keeps a device the index holds through a full listing in progress as it is (what the
    /// index holds is newer than the listing's page). Returns whether the device is held.
    pub fn keep_as_held(&mut self, identity: &str) -> bool {
        match self.find(order_key(&self.config.seed, identity), identity) {
            Some(i) => {
                self.entries[i as usize].flags |= SEEN;
                true
            }
            None => false,
        }
    }

    /// Sorts the order (by key, then identity) if devices were added or removed.
    pub fn prepare(&mut self) {
        if !self.sorted {
            self.order = self.sorted_order();
            self.sorted = true;
        }
    }

    /// The entries in wave order, as indexes into the entry list.
    pub(crate) fn ordered(&self) -> Cow<'_, [u32]> {
        if self.sorted {
            Cow::Borrowed(&self.order)
        } else {
            Cow::Owned(self.sorted_order())
        }
    }

    /// The entry at an index from [`Self::ordered`].
    pub(crate) fn entry(&self, i: u32) -> &DeviceEntry {
        &self.entries[i as usize]
    }

    /// The kept failure message of a device, if it is about the report at `at`.
    pub(crate) fn note(&self, identity: &str, at: Micros) -> Option<&str> {
        self.notes
            .iter()
            .find(|n| n.at == at && n.identity == identity)
            .map(|n| n.text.as_str())
    }

    fn sorted_order(&self) -> Vec<u32> {
        let mut order: Vec<u32> = (0..self.entries.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            let (ea, eb) = (&self.entries[a as usize], &self.entries[b as usize]);
            ea.order_key
                .cmp(&eb.order_key)
                .then_with(|| self.identity(ea).cmp(self.identity(eb)))
        });
        order
    }

    fn find(&self, key: u64, identity: &str) -> Option<u32> {
        let first = *self.by_key.get(&key)?;
        if self.identity(&self.entries[first as usize]) == identity {
            return Some(first);
        }
        self.collisions.iter().copied().find(|&i| {
            let e = &self.entries[i as usize];
            e.order_key == key && self.identity(e) == identity
        })
    }

    fn insert(&mut self, key: u64, identity: &str, folded: &Folded) {
        let Ok(start) = u32::try_from(self.arena.len()) else {
            self.rejected += 1;
            return;
        };
        if start.checked_add(identity.len() as u32).is_none() {
            self.rejected += 1;
            return;
        }
        self.arena.push_str(identity);
        let index = self.entries.len() as u32;
        let mut entry = DeviceEntry {
            order_key: key,
            set_at: folded.set_at,
            report_at: folded.report_at,
            identity_start: start,
            identity_len: identity.len() as u16,
            attempt: folded.attempt,
            set_kind: folded.set_kind,
            report: ReportCode::None,
            flags: SEEN,
            other_version: 0,
            running_version: 0,
        };
        entry.fold_set(folded.set_kind, folded.attempt, folded.set_at, folded.acked);
        folded.other.apply(&mut entry);
        entry.fold_report(folded.report, folded.report_at);
        entry.running_version = folded.running_version;
        entry.fold_record(folded.recorded);
        folded.apply_scope_flags(&mut entry);
        self.entries.push(entry);
        match self.by_key.entry(key) {
            std::collections::hash_map::Entry::Occupied(_) => self.collisions.push(index),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        self.sorted = false;
    }

    /// Removes entry `i` by swapping the last entry into its place.
    fn remove_at(&mut self, i: u32) {
        let removed = self.entries[i as usize];
        self.garbage_bytes += usize::from(removed.identity_len);
        if self.by_key.get(&removed.order_key) == Some(&i) {
            self.by_key.remove(&removed.order_key);
            // Promote a colliding entry with the same key, if any.
            if let Some(pos) = self
                .collisions
                .iter()
                .position(|&c| self.entries[c as usize].order_key == removed.order_key)
            {
                let promoted = self.collisions.swap_remove(pos);
                self.by_key.insert(removed.order_key, promoted);
            }
        } else {
            self.collisions.retain(|&c| c != i);
        }
        let last = self.entries.len() as u32 - 1;
        self.entries.swap_remove(i as usize);
        if i != last {
            let moved_key = self.entries[i as usize].order_key;
            if self.by_key.get(&moved_key) == Some(&last) {
                self.by_key.insert(moved_key, i);
            }
            for c in &mut self.collisions {
                if *c == last {
                    *c = i;
                }
            }
        }
        self.sorted = false;
    }

    /// Rebuilds the arena when more than half of it belongs to removed devices.
    fn compact_if_needed(&mut self) {
        if self.garbage_bytes == 0 || self.garbage_bytes * 2 < self.arena.len() {
            return;
        }
        let mut arena = String::with_capacity(self.arena.len() - self.garbage_bytes);
        for e in &mut self.entries {
            let start = e.identity_start as usize;
            let identity = &self.arena[start..start + usize::from(e.identity_len)];
            e.identity_start = arena.len() as u32;
            arena.push_str(identity);
        }
        self.arena = arena;
        self.garbage_bytes = 0;
    }

    fn remember_note(&mut self, identity: &str, at: Micros, text: &str) {
        let mut text = text.to_owned();
        if text.len() > MAX_NOTE_BYTES {
            let mut cut = MAX_NOTE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        if let Some(n) = self.notes.iter_mut().find(|n| n.identity == identity) {
            n.at = at;
            n.text = text;
            return;
        }
        let note = Note {
            identity: identity.to_owned(),
            at,
            text,
        };
        if self.notes.len() < MAX_NOTES {
            self.notes.push(note);
        } else if let Some(oldest) = self
            .notes
            .iter_mut()
            .min_by_key(|n| n.at)
            .filter(|n| n.at < at)
        {
            *oldest = note;
        }
    }

    fn fold(&self, obs: &DeviceObservation) -> Folded {
        let (set_kind, attempt, marked, set_at, acked, other) = match &obs.config_otau {
            None => (
                SetKind::Absent,
                0,
                false,
                0,
                false,
                OtherManifest::default(),
            ),
            Some(state) => {
                let (kind, attempt, marked) = self.set_value(state.set.as_deref());
                (
                    kind,
                    attempt,
                    marked,
                    normalize_timestamp(state.timestamp.unwrap_or(0)),
                    self.acknowledged(state, kind, attempt),
                    self.other_manifest(kind, state.set.as_deref()),
                )
            }
        };
        let (report, report_at, note, running) = match &obs.otau_in {
            None => (ReportCode::None, 0, None, 0),
            Some(state) => {
                let raw = state.reported.as_deref().or(state.set.as_deref());
                let (code, note) = self.report_code(raw);
                (
                    code,
                    normalize_timestamp(state.timestamp.unwrap_or(0)),
                    note,
                    running_version(raw),
                )
            }
        };
        let scope = self.matcher.scope(obs);
        // An exclusion stops future writes only: a device it removes that holds this rollout's
        // manifest was notified, and keeps counting.
        let kept = scope == Scope::Excluded && set_kind == SetKind::Ours;
        // An edit of the identities or tags stops future writes only too, for the devices this
        // Rollout notified: those holding its marker (another Rollout's devices, or a previous
        // release's, carry another marker or none, and do not count here).
        let former = scope == Scope::Out && set_kind == SetKind::Ours && marked;
        Folded {
            in_scope: scope == Scope::In || kept || former,
            excluded: scope == Scope::Excluded,
            former,
            recorded: obs.tags.contains(&self.record),
            set_kind,
            attempt,
            set_at,
            acked,
            other,
            report,
            report_at,
            running_version: running,
            note,
        }
    }

    /// What to keep of a [`SetKind::OtherManifest`] value: its version's hash and whether a
    /// package of the connector produced it (compared as JSON, any attempt). Parses only
    /// other manifests.
    fn other_manifest(&self, kind: SetKind, value: Option<&str>) -> OtherManifest {
        if kind != SetKind::OtherManifest {
            return OtherManifest::default();
        }
        match value.map(Manifest::parse) {
            Some(Ok(m)) => {
                let m = m.with_attempt(1);
                OtherManifest {
                    version: version_hash(&m.version),
                    produced: self.connector_manifests.contains(&m),
                    newer_rollout: self.newer_rollout_manifests.contains(&m),
                }
            }
            _ => OtherManifest::default(),
        }
    }

    /// Whether a listed `config_otau` is acknowledged: its `reported` value is its `set` value,
    /// byte for byte or, for a manifest, as the same manifest and attempt (a device may
    /// re-serialise it, exosite-platform.md §1.4).
    fn acknowledged(
        &self,
        state: &super::observation::ResourceState,
        kind: SetKind,
        attempt: u8,
    ) -> bool {
        match (state.set.as_deref(), state.reported.as_deref()) {
            (Some(set), Some(reported)) if set == reported => kind != SetKind::Absent,
            (Some(_), Some(reported)) => {
                kind == SetKind::Ours && self.set_kind(Some(reported)) == (kind, attempt)
            }
            _ => false,
        }
    }

    fn set_kind(&self, value: Option<&str>) -> (SetKind, u8) {
        let (kind, attempt, _) = self.set_value(value);
        (kind, attempt)
    }

    /// What a `config_otau` value is: its kind, its attempt (for [`SetKind::Ours`]) and
    /// whether it carries this Rollout's marker (never when the index has none). The marker is
    /// not part of the comparison: this package's manifest with another marker, or none, is
    /// [`SetKind::Ours`] all the same.
    fn set_value(&self, value: Option<&str>) -> (SetKind, u8, bool) {
        let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
            return (SetKind::Absent, 0, false);
        };
        // Fast path: our own exact serialisation, marker included.
        if let Some(k) = self.attempt_values.iter().position(|v| v == value) {
            return (SetKind::Ours, k as u8 + 1, self.manifest.rollout.is_some());
        }
        match Manifest::parse(value) {
            Ok(m) if m.with_attempt(1) == self.manifest => {
                let attempt = u8::try_from(m.attempt).unwrap_or(MAX_ATTEMPT);
                let marked = self
                    .manifest
                    .rollout
                    .as_deref()
                    .is_some_and(|own| m.marked_by(own));
                (SetKind::Ours, attempt.clamp(1, MAX_ATTEMPT), marked)
            }
            Ok(_) => (SetKind::OtherManifest, 0, false),
            Err(_) => (SetKind::Foreign, 0, false),
        }
    }

    fn report_code(&self, raw: Option<&str>) -> (ReportCode, Option<String>) {
        let raw = raw.filter(|r| !r.is_empty());
        match classify(raw, &self.manifest.version) {
            Classification::NoReport => (ReportCode::None, None),
            Classification::Malformed(e) => (ReportCode::Malformed, Some(malformed_text(&e))),
            Classification::Succeeded => (ReportCode::Succeeded, None),
            Classification::Aborted => (ReportCode::Aborted, report_message(raw)),
            Classification::InProgress { known: true } => (ReportCode::InProgress, None),
            Classification::InProgress { known: false } => (ReportCode::InProgressUnknown, None),
            Classification::CurrentVersion(_) => (ReportCode::CurrentVersion, None),
            Classification::OtherVersion => (ReportCode::OtherVersion, None),
            Classification::Failed => {
                let status = raw
                    .and_then(|r| crate::otau::Report::parse(r).ok())
                    .map(|r| r.status);
                let code = match status.as_ref().map(|s| s.as_str()) {
                    Some("TEST_ERROR") => ReportCode::TestError,
                    Some("DOWNLOAD_ERROR") => ReportCode::DownloadError,
                    Some("INSTALL_ERROR") => ReportCode::InstallError,
                    _ => ReportCode::OtherError,
                };
                (code, report_message(raw))
            }
        }
    }
}

fn malformed_text(e: &ReportError) -> String {
    e.to_string()
}

fn report_message(raw: Option<&str>) -> Option<String> {
    raw.and_then(|r| crate::otau::Report::parse(r).ok())
        .map(|r| r.message)
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests;
