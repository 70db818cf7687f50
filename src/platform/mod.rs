//! The Exosite platform client: the [`Platform`] trait the controllers and `simulate` use, in
//! domain types, and its implementation for Murano IoT Connector + ExoSense
//! ([`ExositePlatform`], reqwest with rustls and graphql_client).
//!
//! Uses [`crate::otau`] only (docs/architecture.md §4). What the client does on the wire is
//! exosite-platform.md §5 (management API), §5.5 (content), §7.2 (ExoSense `createContent`) and
//! §8 (limits, retries, rate limit).
//!
//! The trait is object-safe (`Arc<dyn Platform>`): one client per IoTConnector lives in the
//! controllers' shared context next to in-memory implementations for unit tests and the
//! emulator's in-process adapter, and a generic parameter would spread through every
//! controller type for no gain (one virtual call per HTTP request is free).

pub mod backoff;
pub mod config;
pub mod error;
pub mod exosite;
pub mod metrics;
pub mod rate_limit;
pub mod retry;
pub mod secret;
pub mod types;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::otau::Manifest;

pub use config::{
    AuthScheme, ClientConfig, CredentialsProvider, ExoSenseConfig, RateLimit, RetryPolicy,
    StaticToken,
};
pub use error::PlatformError;
pub use exosite::ExositePlatform;
pub use metrics::PlatformMetrics;
pub use secret::SecretToken;
pub use types::{
    ConnectorSettings, ContentInfo, ContentUpload, CredentialCheck, Identity, IdentityPage,
    IdentityState, ListIdentities, PackageRegistered, PackageRegistration, RegistrationPath,
    ResourceSettings, ResourceState, Tag, UploadBody, package_content_id,
};

/// A stream of identity pages (see [`Platform::list_identities`]).
pub type IdentityPages = BoxStream<'static, Result<IdentityPage, PlatformError>>;

/// What the operator needs from one IoT connector (docs/architecture.md §9.4).
#[async_trait]
pub trait Platform: Send + Sync {
    /// The connector (product) id.
    fn connector_id(&self) -> &str;

    /// Checks the credentials: the token's account and remaining TTL, and that the connector's
    /// settings can be read with it.
    async fn check_credentials(&self) -> Result<CredentialCheck, PlatformError>;

    /// Checks the ExoSense token with one cheap authenticated GraphQL query, when this client
    /// has ExoSense configured (exosite-platform.md §7.1). `Ok(true)`: ExoSense accepted the
    /// token; `Ok(false)`: no ExoSense is configured, so nothing was checked (the default, for
    /// implementations that never talk to ExoSense). A rejected token is
    /// [`PlatformError::Authentication`].
    async fn check_exosense_credentials(&self) -> Result<bool, PlatformError> {
        Ok(false)
    }

    /// Lists every identity with its OTAU state and tags, page by page. The stream ends after
    /// the last page, or after the first error (the next poll starts over). Pages may repeat an
    /// identity; an identity added during the listing may be missed until the next one.
    fn list_identities(&self, query: ListIdentities) -> IdentityPages;

    /// Reads one identity's OTAU state.
    async fn identity_state(&self, identity: &str) -> Result<IdentityState, PlatformError>;

    /// Writes `config_otau` (as a JSON string value) to one identity.
    async fn set_config_otau(
        &self,
        identity: &str,
        manifest: &Manifest,
    ) -> Result<(), PlatformError>;

    /// Adds one tag to an identity unless it already carries it: reads the identity, then
    /// writes its whole tag list back with the tag added (exosite-platform.md §5.2, tags over
    /// REST). `Ok(true)`: added; `Ok(false)`: it was there already, nothing written. A missing
    /// identity is [`PlatformError::NotFound`].
    async fn add_identity_tag(&self, identity: &str, tag: &Tag) -> Result<bool, PlatformError>;

    /// Uploads one content item (two-step presigned POST), streaming its body.
    async fn upload_content(&self, upload: ContentUpload) -> Result<(), PlatformError>;

    /// Reads one content item's information, tags included.
    async fn content_info(&self, id: &str) -> Result<ContentInfo, PlatformError>;

    /// Lists the connector's content items.
    async fn list_content(&self) -> Result<Vec<ContentInfo>, PlatformError>;

    /// Deletes one content item.
    async fn delete_content(&self, id: &str) -> Result<(), PlatformError>;

    /// Registers a package the way ExoSense lists packages: the empty `package_<slug>.json`
    /// item with its `otau_info`, `pid`, `total-devices` and per-device tags, through ExoSense
    /// `createContent` when configured, else through the content API.
    async fn register_package(
        &self,
        package: &PackageRegistration,
    ) -> Result<PackageRegistered, PlatformError>;
}
