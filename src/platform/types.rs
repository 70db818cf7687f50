//! Domain types of the [`Platform`](super::Platform) trait: what controllers and `simulate`
//! see. No wire (reqwest, GraphQL) types appear here.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use crate::otau::{Manifest, Report, ReportError};

/// The result of a credentials check (`GET /api:1/token/<t>` + `GET …/device2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialCheck {
    /// The account the token belongs to.
    pub email: String,
    /// How long the token has left.
    pub ttl: Duration,
    /// The connector's settings, proving the product id exists and the token may read it.
    pub settings: ConnectorSettings,
}

/// The parts of the connector settings (`GET …/device2`) the operator looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectorSettings {
    /// The device API host, e.g. `<cid>.m2.exosite.io` (empty when not given).
    pub fqdn: String,
    /// Resources by alias: whether each is settable from the cloud.
    pub resources: BTreeMap<String, ResourceSettings>,
}

/// One resource's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceSettings {
    /// `string`, `number`, … (empty when not given).
    pub format: String,
    /// Whether the cloud may write it.
    pub settable: bool,
}

/// One resource's value pair (exosite-platform.md §1.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceState {
    /// The `set` value (last write by either side).
    pub set: Option<String>,
    /// The `reported` value (last device write).
    pub reported: Option<String>,
    /// Time of the last write of either value, µs since the epoch (normalised from s or ms).
    pub timestamp: Option<i64>,
}

impl ResourceState {
    /// A resource whose `set` value is `value` (written by the cloud) at `timestamp` µs.
    pub fn set(value: impl Into<String>, timestamp: i64) -> Self {
        Self {
            set: Some(value.into()),
            reported: None,
            timestamp: Some(timestamp),
        }
    }

    /// A resource the device wrote (`set` and `reported` both `value`) at `timestamp` µs.
    pub fn written_by_device(value: impl Into<String>, timestamp: i64) -> Self {
        let value = value.into();
        Self {
            set: Some(value.clone()),
            reported: Some(value),
            timestamp: Some(timestamp),
        }
    }
}

/// The OTAU resources of one identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityState {
    /// `config_otau`: the manifest the cloud set, and the device's ack.
    pub config_otau: ResourceState,
    /// `otau_in`: the device's status report.
    pub otau_in: ResourceState,
}

impl IdentityState {
    /// The device's last `otau_in` report, parsed; `None` when it never reported.
    pub fn report(&self) -> Option<Result<Report, ReportError>> {
        self.otau_in.reported.as_deref().map(Report::parse)
    }

    /// Whether the `config_otau` set value is `manifest` (compared as JSON).
    pub fn is_set_to(&self, manifest: &Manifest) -> bool {
        self.config_otau
            .set
            .as_deref()
            .is_some_and(|s| manifest.matches(s))
    }
}

/// A tag (name, value); device2 identity tags and content tags.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag {
    /// Tag name.
    pub name: String,
    /// Tag value (always a string here; numbers from the platform are turned into text).
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

/// One device identity as a listing returns it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    /// The identity (unique within the connector).
    pub identity: String,
    /// `whitelisted`, `provisioned`, `locked`, … (empty when not given).
    pub status: String,
    /// Identity tags.
    pub tags: Vec<Tag>,
    /// The OTAU resources.
    pub state: IdentityState,
    /// Creation time, µs, when the platform gives it (the paging cursor).
    pub created: Option<i64>,
}

/// One page of a listing. Pages may repeat an identity seen in an earlier page (when the
/// platform's order shifts between pages); consumers fold by identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityPage {
    /// The identities on this page.
    pub identities: Vec<Identity>,
}

/// How to list identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListIdentities {
    /// Identities per request (the platform caps it; the emulator at 1000).
    pub page_size: u32,
}

impl Default for ListIdentities {
    fn default() -> Self {
        ListIdentities { page_size: 500 }
    }
}

/// Information about one content item.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentInfo {
    /// Content id.
    pub id: String,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub length: u64,
    /// Last modification as the platform wrote it (ISO 8601).
    pub last_modified: String,
    /// Tags (empty when the platform sent none, e.g. in some list answers).
    pub tags: BTreeMap<String, String>,
}

/// The body of an upload: an async reader, streamed in chunks (never read whole into memory).
pub type UploadBody = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A content upload (two-step presigned POST, exosite-platform.md §5.5).
pub struct ContentUpload {
    /// Content id (unique in the connector's content area).
    pub id: String,
    /// MIME type, e.g. `application/octet-stream`.
    pub content_type: String,
    /// Exact body length in bytes.
    pub length: u64,
    /// Lowercase hex SHA-256 of the body. The client checks it while streaming and the object
    /// store checks it again.
    pub sha256: String,
    /// Tags stored with the item (values are strings).
    pub tags: BTreeMap<String, String>,
    /// The body.
    pub body: UploadBody,
}

impl std::fmt::Debug for ContentUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentUpload")
            .field("id", &self.id)
            .field("content_type", &self.content_type)
            .field("length", &self.length)
            .field("sha256", &self.sha256)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

/// A package to register the way ExoSense lists packages (exosite-platform.md §2.6, §7.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRegistration {
    /// Stable slug of the SoftwarePackage; the item id is `package_<slug>.json`.
    pub slug: String,
    /// `otau_info.author`.
    pub author: String,
    /// `otau_info.product`: the connector's name.
    pub product: String,
    /// The exact manifest (`otau_info.config_otau`).
    pub manifest: Manifest,
    /// `total-devices`: the number of targeted devices.
    pub total_devices: u64,
    /// Identities that get a `<pid>.<identity>` = `"1"` tag (the caller bounds the list).
    pub device_tags: Vec<String>,
}

impl PackageRegistration {
    /// The package item's content id: `package_<slug>.json`.
    pub fn content_id(&self) -> String {
        package_content_id(&self.slug)
    }
}

/// The content id of a package item: `package_<slug>.json`.
pub fn package_content_id(slug: &str) -> String {
    format!("package_{slug}.json")
}

/// How a package was registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationPath {
    /// Content REST upload with the tags (no ExoSense configured).
    ContentRest,
    /// ExoSense `createContent`, then the empty body through its upload form.
    ExoSense,
}

/// The outcome of a package registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRegistered {
    /// The package item's content id.
    pub content_id: String,
    /// Which path registered it.
    pub path: RegistrationPath,
}
