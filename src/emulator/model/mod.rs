//! The emulated platform's state: connectors, identities, resources, content, management tokens
//! and the device2 event stream (exosite-platform.md §1, §3, §5, §6.1).
//!
//! One [`Model`] serves every HTTP server of the emulator and can be driven in-process (the
//! simulated fleet calls the device-side methods of [`Connector`] directly). All time comes
//! from the injected [`Clock`], so a simulation can run the model in virtual time.
//!
//! Sizing: the model holds 1,000,000 identities in one process. Per device it keeps one compact
//! record (identity, times, flags, shared tag set) plus a small slot array with one entry per
//! connector resource, allocated on first write; values are interned so that a million devices
//! holding the same manifest share one string. No task or channel exists per device: long-poll
//! waiters are created only for devices that poll, and in-process devices learn about cloud
//! writes through one channel per subscriber ([`Connector::subscribe_cloud_writes`]).

mod changes;
mod connector;
mod content;
mod devices;
mod error;
mod intern;
mod settings;
mod tokens;
mod uploads;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::clock::Clock;
use super::events::ConnectorEvent;

pub use connector::{
    ChangedIdentities, CloudWriteNotice, CloudWriteRecord, Connector, DeviceCredential, PollSince,
    RecordConflict, SetValue, WriteOrigin,
};
pub use content::{ByteRange, ContentInfo, ContentItem, ContentStore, RangeError};
pub use devices::{
    AuthView, DeviceId, IdentityPage, IdentityPatch, IdentityView, ListQuery, NewIdentity,
    ResourceStateView, Tag,
};
pub use error::ModelError;
pub use settings::{
    ConnectorSettings, IdentityFormat, IdentityFormatOptions, IpWhitelisting, ProtocolSettings,
    ProvisioningSettings, ResourceDef,
};
pub use tokens::{Account, ManagementTokens, TokenInfo};
pub use uploads::{FILE_FIELD, UploadError, UploadForm, UploadPolicy, UploadSigner};

/// The default largest resource value, in bytes (exosite-platform.md §1.2, flag
/// `resource_max_bytes`).
pub const DEFAULT_RESOURCE_MAX_BYTES: usize = 1_048_576;
/// The default largest content file, in bytes (exosite-platform.md §8).
pub const DEFAULT_CONTENT_MAX_BYTES: usize = 536_870_912;
/// The `ttl` of management tokens issued by login, in seconds (exosite-platform.md §5.1).
pub const MANAGEMENT_TOKEN_TTL_SECS: i64 = 172_800;
/// Capacity of the device2 event broadcast channel; slow subscribers lose the oldest events
/// (they see `RecvError::Lagged`), the model never blocks on them.
pub const EVENT_CHANNEL_CAPACITY: usize = 65_536;

/// Settings of a [`Model`] fixed at start.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Largest resource value in bytes; larger writes fail with [`ModelError::ValueTooLarge`].
    pub resource_max_bytes: usize,
    /// Largest content file in bytes.
    pub content_max_bytes: usize,
    /// Management API tokens accepted from the start (they never expire).
    pub management_tokens: Vec<String>,
    /// Accounts that may log in with `POST /api:1/token/`.
    pub accounts: Vec<Account>,
    /// Capacity of the device2 event broadcast channel.
    pub event_capacity: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            resource_max_bytes: DEFAULT_RESOURCE_MAX_BYTES,
            content_max_bytes: DEFAULT_CONTENT_MAX_BYTES,
            management_tokens: Vec::new(),
            accounts: Vec::new(),
            event_capacity: EVENT_CHANNEL_CAPACITY,
        }
    }
}

/// The whole emulated platform: every connector, the management tokens, the upload signer and
/// the device2 event stream.
pub struct Model {
    config: ModelConfig,
    clock: Arc<dyn Clock>,
    connectors: RwLock<BTreeMap<String, Arc<Connector>>>,
    events: broadcast::Sender<ConnectorEvent>,
    tokens: ManagementTokens,
    uploads: UploadSigner,
    public_url: RwLock<String>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("connectors", &self.connector_ids())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// A model with no connectors, taking time from `clock`.
    pub fn new(config: ModelConfig, clock: Arc<dyn Clock>) -> Arc<Model> {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let tokens = ManagementTokens::new(
            config.management_tokens.clone(),
            config.accounts.clone(),
            clock.clone(),
        );
        Arc::new(Model {
            uploads: UploadSigner::random(),
            tokens,
            events,
            connectors: RwLock::new(BTreeMap::new()),
            clock,
            config,
            public_url: RwLock::new("http://127.0.0.1".to_string()),
        })
    }

    /// The model's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The settings the model was built with.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Adds a connector with default settings (resources `config_otau`, settable, and `otau_in`,
    /// not settable), or returns the existing one with that id.
    ///
    /// Connector ids are lowercase letters and digits (they form a host name label).
    pub fn add_connector(&self, id: &str) -> Result<Arc<Connector>, ModelError> {
        if id.is_empty()
            || id.len() > 63
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(ModelError::Invalid(format!(
                "connector id {id:?} must be 1 to 63 lowercase letters or digits"
            )));
        }
        let mut map = self.connectors.write().unwrap_or_else(|e| e.into_inner());
        let conn = map.entry(id.to_string()).or_insert_with(|| {
            Arc::new(Connector::new(
                id.to_string(),
                self.clock.clone(),
                self.events.clone(),
                self.config.resource_max_bytes,
                self.config.content_max_bytes,
            ))
        });
        Ok(conn.clone())
    }

    /// The connector with this id.
    pub fn connector(&self, id: &str) -> Option<Arc<Connector>> {
        self.connectors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// The connector with this id, or [`ModelError::UnknownConnector`].
    pub fn require_connector(&self, id: &str) -> Result<Arc<Connector>, ModelError> {
        self.connector(id)
            .ok_or_else(|| ModelError::UnknownConnector(id.to_string()))
    }

    /// Ids of all connectors, sorted.
    pub fn connector_ids(&self) -> Vec<String> {
        self.connectors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Every connector, sorted by id.
    pub fn connectors(&self) -> Vec<Arc<Connector>> {
        self.connectors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Subscribes to the device2 events of every connector (`data_in` on each device write,
    /// `provisioned` on activation, `deleted` on removal). Events are built only while at least
    /// one receiver exists.
    pub fn subscribe_events(&self) -> broadcast::Receiver<ConnectorEvent> {
        self.events.subscribe()
    }

    /// The management API tokens.
    pub fn tokens(&self) -> &ManagementTokens {
        &self.tokens
    }

    /// The signer of presigned upload forms and download URLs (object store).
    pub fn uploads(&self) -> &UploadSigner {
        &self.uploads
    }

    /// The base URL the server is reachable at (for example `http://127.0.0.1:8080`), used to
    /// build presigned upload and download URLs. Set by the server once it listens.
    pub fn public_url(&self) -> String {
        self.public_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets [`Model::public_url`] (no trailing slash).
    pub fn set_public_url(&self, url: &str) {
        *self.public_url.write().unwrap_or_else(|e| e.into_inner()) =
            url.trim_end_matches('/').to_string();
    }

    /// The URL of the object store endpoint that accepts step 2 of presigned uploads.
    pub fn object_store_url(&self) -> String {
        format!("{}{}", self.public_url(), OBJECT_STORE_PATH)
    }
}

/// Path of the object store's upload endpoint (the "bucket" of presigned forms).
pub const OBJECT_STORE_PATH: &str = "/objectstore/content";
/// Path prefix of expiring download URLs.
pub const OBJECT_DOWNLOAD_PATH: &str = "/objectstore/download";

/// A fresh random 40-character alphanumeric token (device tokens, management tokens).
pub fn random_token() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}
