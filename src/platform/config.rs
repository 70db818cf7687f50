//! Configuration of the Exosite client: endpoints, credentials, timeouts, retries, rate limit.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::error::PlatformError;
use super::secret::SecretToken;
use crate::net::outbound::OutboundPolicy;

/// Per-request timeout (exosite-platform.md §8).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of the object-store POST (step 2 of an upload), which carries whole files.
pub const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// First retry delay.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Largest retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Most tries of one call, the first included.
pub const DEFAULT_MAX_TRIES: u32 = 5;
/// Sustained management API requests per second per connector.
pub const DEFAULT_RATE_PER_SECOND: f64 = 10.0;
/// Requests allowed in a burst per connector.
pub const DEFAULT_BURST: u32 = 20;
/// The most bytes of one identity listing page or content list read
/// (`--platform-page-max-bytes`): 32 KiB per identity on a page of 1000.
pub const DEFAULT_PAGE_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// `expires_in` asked for presigned upload forms, seconds (the CLI's value is 30; a slow
/// source needs more).
pub const DEFAULT_UPLOAD_FORM_EXPIRES_SECS: u64 = 300;

/// How the management token is sent in `Authorization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthScheme {
    /// `Authorization: token <t>` (the management API's documented scheme).
    #[default]
    Token,
    /// `Authorization: Bearer <t>`.
    Bearer,
}

impl AuthScheme {
    /// The scheme word in the header.
    pub fn word(self) -> &'static str {
        match self {
            AuthScheme::Token => "token",
            AuthScheme::Bearer => "Bearer",
        }
    }
}

/// Retries of idempotent calls: exponential backoff with jitter ([`RetryPolicy::backoff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Most tries, the first included (1 = no retry).
    pub max_tries: u32,
    /// Delay before the first retry (before jitter).
    pub initial_backoff: Duration,
    /// Largest delay between tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_tries: DEFAULT_MAX_TRIES,
            initial_backoff: DEFAULT_BACKOFF_INITIAL,
            max_backoff: DEFAULT_BACKOFF_MAX,
        }
    }
}

/// Client-side token bucket per connector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: DEFAULT_RATE_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

/// Supplies the token for each request, and a fresh one after a 401 (the operator re-reads
/// the connector's Secret there).
#[async_trait]
pub trait CredentialsProvider: Send + Sync {
    /// The token to use now.
    async fn current(&self) -> Result<SecretToken, PlatformError>;
    /// Called once after a 401: re-read the source and return the token to retry with.
    async fn reload(&self) -> Result<SecretToken, PlatformError>;
}

/// A token that never changes.
#[derive(Debug, Clone)]
pub struct StaticToken(pub SecretToken);

#[async_trait]
impl CredentialsProvider for StaticToken {
    async fn current(&self) -> Result<SecretToken, PlatformError> {
        Ok(self.0.clone())
    }

    async fn reload(&self) -> Result<SecretToken, PlatformError> {
        Ok(self.0.clone())
    }
}

/// ExoSense GraphQL access (optional).
#[derive(Clone)]
pub struct ExoSenseConfig {
    /// The GraphQL endpoint, e.g. `https://example.apps.exosite.io/api/graphql`.
    pub graphql_url: url::Url,
    /// The Automation token (`Authorization: Automation <t>`).
    pub credentials: Arc<dyn CredentialsProvider>,
}

impl std::fmt::Debug for ExoSenseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExoSenseConfig")
            .field("graphql_url", &self.graphql_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Everything the Exosite client of one connector needs.
#[derive(Clone)]
pub struct ClientConfig {
    /// The connector (product) id, `<cid>`.
    pub connector_id: String,
    /// Management API base, ending in `/`, e.g. `https://bizapi.hosted.exosite.io/api:1/`.
    pub management_url: url::Url,
    /// The management token source.
    pub credentials: Arc<dyn CredentialsProvider>,
    /// `token` (default) or `Bearer`.
    pub auth_scheme: AuthScheme,
    /// ExoSense, when the connector configures it.
    pub exosense: Option<ExoSenseConfig>,
    /// The instance named in `User-Agent` (the pod name).
    pub instance: String,
    /// Timeout of each management or GraphQL request.
    pub request_timeout: Duration,
    /// Timeout of each object-store upload (step 2).
    pub upload_timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Client-side rate limit of management and GraphQL requests.
    pub rate_limit: RateLimit,
    /// `expires_in` asked for upload forms, seconds.
    pub upload_form_expires_secs: u64,
    /// Extra PEM CA certificates to trust.
    pub extra_root_certificates_pem: Vec<Vec<u8>>,
    /// Skip TLS verification (local emulators only).
    pub insecure_skip_verify: bool,
    /// Which destinations the client may reach (src/net/outbound.rs). Default: public
    /// addresses only.
    pub outbound: OutboundPolicy,
    /// The most bytes of one listing page or content list answer.
    pub max_page_bytes: u64,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("connector_id", &self.connector_id)
            .field("management_url", &self.management_url.as_str())
            .field("auth_scheme", &self.auth_scheme)
            .field("exosense", &self.exosense)
            .field("instance", &self.instance)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("rate_limit", &self.rate_limit)
            .field("outbound", &self.outbound)
            .field("max_page_bytes", &self.max_page_bytes)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// A configuration with the documented defaults.
    pub fn new(
        connector_id: impl Into<String>,
        management_url: url::Url,
        credentials: Arc<dyn CredentialsProvider>,
    ) -> Self {
        ClientConfig {
            connector_id: connector_id.into(),
            management_url,
            credentials,
            auth_scheme: AuthScheme::Token,
            exosense: None,
            instance: default_instance(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            upload_timeout: DEFAULT_UPLOAD_TIMEOUT,
            retry: RetryPolicy::default(),
            rate_limit: RateLimit::default(),
            upload_form_expires_secs: DEFAULT_UPLOAD_FORM_EXPIRES_SECS,
            extra_root_certificates_pem: Vec::new(),
            insecure_skip_verify: false,
            outbound: OutboundPolicy::default(),
            max_page_bytes: DEFAULT_PAGE_MAX_BYTES,
        }
    }

    /// `otau-operator/<version> (<instance>)`.
    pub fn user_agent(&self) -> String {
        user_agent(&self.instance)
    }
}

/// The `User-Agent` of every request: `otau-operator/<version> (<instance>)`.
pub fn user_agent(instance: &str) -> String {
    let instance: String = instance
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '(' && *c != ')')
        .collect();
    format!("otau-operator/{} ({})", env!("CARGO_PKG_VERSION"), instance)
}

/// The instance name: `POD_NAME`, else `HOSTNAME`, else `unknown`.
pub fn default_instance() -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_names_version_and_instance() {
        assert_eq!(
            user_agent("otau-operator-5d8f-abc"),
            format!(
                "otau-operator/{} (otau-operator-5d8f-abc)",
                env!("CARGO_PKG_VERSION")
            )
        );
        // Characters that would break the header or the comment are dropped.
        assert_eq!(
            user_agent("a(b)\nc"),
            format!("otau-operator/{} (abc)", env!("CARGO_PKG_VERSION"))
        );
    }
}
