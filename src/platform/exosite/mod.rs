//! The [`Platform`] implementation for Murano IoT Connector (management API, content service)
//! and ExoSense (GraphQL `createContent`), over reqwest with rustls. Every client follows the
//! outbound policy of src/net/outbound.rs (checked addresses, no redirects, capped answers).

mod graphql;
mod listing;
mod transport;
mod upload;
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use reqwest::Method;

use crate::otau::Manifest;
use crate::platform::config::ClientConfig;
use crate::platform::error::PlatformError;
use crate::platform::metrics::PlatformMetrics;
use crate::platform::rate_limit::TokenBucket;
use crate::platform::retry::RetryAfterGate;
use crate::platform::types::{
    ContentInfo, ContentUpload, CredentialCheck, Identity, IdentityState, ListIdentities,
    PackageRegistered, PackageRegistration, RegistrationPath, Tag,
};
use crate::platform::{IdentityPages, Platform};

use transport::{Call, Transport};

/// Operation (route) names used in metrics and errors.
pub mod operation {
    /// `GET /token/<t>`.
    pub const TOKEN_CHECK: &str = "token.check";
    /// `GET /service/<cid>/device2`.
    pub const SETTINGS: &str = "device2.settings";
    /// `GET /service/<cid>/device2/identity/`.
    pub const LIST_IDENTITIES: &str = "device2.identity.list";
    /// `GET …/identity/<id>/state`.
    pub const GET_STATE: &str = "device2.state.get";
    /// `PATCH …/identity/<id>/state`.
    pub const SET_STATE: &str = "device2.state.set";
    /// `GET …/identity/<id>`.
    pub const GET_IDENTITY: &str = "device2.identity.get";
    /// `PATCH …/identity/<id>` with `{"tags": […]}`.
    pub const SET_TAGS: &str = "device2.identity.tags";
    /// `GET …/content/item/<id>/upload`.
    pub const UPLOAD_FORM: &str = "content.upload.form";
    /// `POST <presigned url>` (object store).
    pub const UPLOAD_POST: &str = "content.upload.post";
    /// `GET …/content/item/<id>`.
    pub const CONTENT_INFO: &str = "content.info";
    /// `GET …/content/item?full=true`.
    pub const CONTENT_LIST: &str = "content.list";
    /// `DELETE …/content/item/<id>`.
    pub const CONTENT_DELETE: &str = "content.delete";
    /// ExoSense `createContent`.
    pub const CREATE_CONTENT: &str = "exosense.create_content";
    /// ExoSense `query { __typename }`: the token check.
    pub const EXOSENSE_CHECK: &str = "exosense.credentials.check";
}

/// SHA-256 of the empty body (a package item).
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The Exosite client of one connector. Cheap to clone (shared state behind an `Arc`): the
/// rate limit and the `Retry-After` gate are per instance, so use one instance per connector.
#[derive(Clone)]
pub struct ExositePlatform {
    inner: Arc<Transport>,
}

impl std::fmt::Debug for ExositePlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExositePlatform")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ExositePlatform {
    /// A client for `config`, recording into `metrics` when given.
    pub fn new(
        config: ClientConfig,
        metrics: Option<Arc<PlatformMetrics>>,
    ) -> Result<Self, PlatformError> {
        let invalid = |message: String| PlatformError::InvalidRequest {
            operation: "client.build",
            message,
        };
        if config.connector_id.trim().is_empty() {
            return Err(invalid("the connector id is empty".to_string()));
        }
        if !matches!(config.management_url.scheme(), "http" | "https")
            || config.management_url.cannot_be_a_base()
        {
            return Err(invalid(format!(
                "the management URL must be an absolute http(s) URL, e.g. https://bizapi.hosted.exosite.io/api:1/ (got scheme {:?})",
                config.management_url.scheme()
            )));
        }
        let refused =
            |field: &str, e: crate::net::outbound::OutboundError| invalid(format!("{field}: {e}"));
        config
            .outbound
            .check_url(&config.management_url)
            .map_err(|e| refused("the management URL", e))?;
        if let Some(exosense) = &config.exosense {
            config
                .outbound
                .check_url(&exosense.graphql_url)
                .map_err(|e| refused("the ExoSense GraphQL URL", e))?;
        }
        let mut roots = Vec::new();
        for pem in &config.extra_root_certificates_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| invalid(format!("the extra CA bundle is not valid PEM: {e}")))?;
            roots.extend(certs);
        }
        let client = |max_idle: Option<usize>| {
            // The outbound policy: checked addresses at every resolution, no redirects, no
            // proxy (src/net/outbound.rs).
            let mut builder = config
                .outbound
                .client_builder()
                .user_agent(config.user_agent())
                .connect_timeout(
                    config
                        .request_timeout
                        .min(std::time::Duration::from_secs(10)),
                )
                .danger_accept_invalid_certs(config.insecure_skip_verify);
            for cert in &roots {
                builder = builder.add_root_certificate(cert.clone());
            }
            if let Some(n) = max_idle {
                builder = builder.pool_max_idle_per_host(n);
            }
            builder
                .build()
                .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))
        };
        let http = client(None)?;
        let listing_http = client(Some(1))?;
        Ok(ExositePlatform {
            inner: Arc::new(Transport {
                http,
                listing_http,
                bucket: TokenBucket::new(config.rate_limit),
                gate: RetryAfterGate::default(),
                config,
                metrics,
            }),
        })
    }

    /// The connector's device2 path: `service/<cid>/device2/…`.
    fn device2(&self, rest: &[&str]) -> Vec<String> {
        let mut segments = vec![
            "service".to_string(),
            self.inner.config.connector_id.clone(),
            "device2".to_string(),
        ];
        segments.extend(rest.iter().map(|s| s.to_string()));
        segments
    }

    /// The connector's content path: `service/<cid>/content/item/…`.
    fn content(&self, rest: &[&str]) -> Vec<String> {
        let mut segments = vec![
            "service".to_string(),
            self.inner.config.connector_id.clone(),
            "content".to_string(),
            "item".to_string(),
        ];
        segments.extend(rest.iter().map(|s| s.to_string()));
        segments
    }

    fn call(&self, op: &'static str, method: Method, segments: Vec<String>) -> Call {
        let refs: Vec<&str> = segments.iter().map(String::as_str).collect();
        Call::management(op, method, &refs)
    }
}

/// The tag list with `tag` added, as `{name, value}` objects; `None` when it is there already.
fn tags_with(mut tags: Vec<Tag>, tag: &Tag) -> Option<Vec<serde_json::Value>> {
    if tags.contains(tag) {
        return None;
    }
    tags.push(tag.clone());
    Some(
        tags.into_iter()
            .map(|t| serde_json::json!({ "name": t.name, "value": t.value }))
            .collect(),
    )
}

/// Refuses empty ids and ids that would change the path.
fn check_id(operation: &'static str, kind: &str, id: &str) -> Result<(), PlatformError> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(PlatformError::InvalidRequest {
            operation,
            message: format!("the {kind} id {id:?} is not usable"),
        });
    }
    Ok(())
}

#[async_trait]
impl Platform for ExositePlatform {
    fn connector_id(&self) -> &str {
        &self.inner.config.connector_id
    }

    async fn check_credentials(&self) -> Result<CredentialCheck, PlatformError> {
        let call =
            Call::management(operation::TOKEN_CHECK, Method::GET, &["token"]).token_segment();
        let answer = self.inner.execute(&call).await?;
        let (email, ttl) = wire::parse::<wire::TokenWire>(operation::TOKEN_CHECK, &answer.body)?
            .into_parts(operation::TOKEN_CHECK)?;
        let call = self.call(operation::SETTINGS, Method::GET, self.device2(&[]));
        let answer = self.inner.execute(&call).await?;
        let settings: wire::SettingsWire = wire::parse(operation::SETTINGS, &answer.body)?;
        Ok(CredentialCheck {
            email,
            ttl,
            settings: settings.into(),
        })
    }

    async fn check_exosense_credentials(&self) -> Result<bool, PlatformError> {
        if self.inner.config.exosense.is_none() {
            return Ok(false);
        }
        graphql::check_token(self).await?;
        Ok(true)
    }

    fn list_identities(&self, query: ListIdentities) -> IdentityPages {
        listing::pages(self.clone(), query)
    }

    async fn identity_state(&self, identity: &str) -> Result<IdentityState, PlatformError> {
        check_id(operation::GET_STATE, "identity", identity)?;
        let call = self.call(
            operation::GET_STATE,
            Method::GET,
            self.device2(&["identity", identity, "state"]),
        );
        let answer = self.inner.execute(&call).await?;
        let map: BTreeMap<String, wire::ResourceWire> =
            wire::parse(operation::GET_STATE, &answer.body)?;
        Ok(wire::identity_state(map))
    }

    async fn set_config_otau(
        &self,
        identity: &str,
        manifest: &Manifest,
    ) -> Result<(), PlatformError> {
        check_id(operation::SET_STATE, "identity", identity)?;
        let value = manifest
            .to_json_checked()
            .map_err(|e| PlatformError::InvalidRequest {
                operation: operation::SET_STATE,
                message: e.to_string(),
            })?;
        // Always a JSON string value, never a nested object (exosite-platform.md §2.1).
        let body = serde_json::json!({ crate::otau::CONFIG_OTAU: value });
        // Setting the same value again is harmless, so the write is retried like a PUT.
        let call = self
            .call(
                operation::SET_STATE,
                Method::PATCH,
                self.device2(&["identity", identity, "state"]),
            )
            .json(&body);
        let answer = self.inner.execute(&call).await?;
        let body = String::from_utf8_lossy(&answer.body);
        let body = body.trim();
        if body.is_empty() || serde_json::from_str::<serde_json::Value>(body).is_ok() {
            Ok(())
        } else {
            Err(PlatformError::InvalidResponse {
                operation: operation::SET_STATE,
                message: format!("HTTP {} with a body that is not JSON", answer.status),
            })
        }
    }

    async fn add_identity_tag(&self, identity: &str, tag: &Tag) -> Result<bool, PlatformError> {
        check_id(operation::GET_IDENTITY, "identity", identity)?;
        let path = self.device2(&["identity", identity]);
        let call = self.call(operation::GET_IDENTITY, Method::GET, path.clone());
        let answer = self.inner.execute(&call).await?;
        let current: Identity =
            wire::parse::<wire::IdentityWire>(operation::GET_IDENTITY, &answer.body)?.into();
        let Some(tags) = tags_with(current.tags, tag) else {
            return Ok(false);
        };
        // The whole list, read just before: a PATCH replaces it. Idempotent (the same list).
        let body = serde_json::json!({ "tags": tags });
        let call = self
            .call(operation::SET_TAGS, Method::PATCH, path)
            .json(&body);
        self.inner.execute(&call).await?;
        Ok(true)
    }

    async fn upload_content(&self, upload: ContentUpload) -> Result<(), PlatformError> {
        upload::upload(self, upload).await
    }

    async fn content_info(&self, id: &str) -> Result<ContentInfo, PlatformError> {
        check_id(operation::CONTENT_INFO, "content", id)?;
        let call = self.call(operation::CONTENT_INFO, Method::GET, self.content(&[id]));
        let answer = self.inner.execute(&call).await?;
        let info: wire::ContentWire = wire::parse(operation::CONTENT_INFO, &answer.body)?;
        Ok(info.into())
    }

    async fn list_content(&self) -> Result<Vec<ContentInfo>, PlatformError> {
        let call = self
            .call(operation::CONTENT_LIST, Method::GET, self.content(&[]))
            .query("full", "true");
        let answer = self.inner.execute(&call).await?;
        let items: Vec<wire::ContentWire> = wire::parse(operation::CONTENT_LIST, &answer.body)?;
        Ok(items.into_iter().map(Into::into).collect())
    }

    async fn delete_content(&self, id: &str) -> Result<(), PlatformError> {
        check_id(operation::CONTENT_DELETE, "content", id)?;
        let call = self.call(
            operation::CONTENT_DELETE,
            Method::DELETE,
            self.content(&[id]),
        );
        self.inner.execute(&call).await?;
        Ok(())
    }

    async fn register_package(
        &self,
        package: &PackageRegistration,
    ) -> Result<PackageRegistered, PlatformError> {
        let content_id = package.content_id();
        let path = if self.inner.config.exosense.is_some() {
            graphql::register(self, package).await?;
            RegistrationPath::ExoSense
        } else {
            let tags = upload::package_tags(&self.inner.config.connector_id, package)?;
            let upload = ContentUpload {
                id: content_id.clone(),
                content_type: "application/json".to_string(),
                length: 0,
                sha256: EMPTY_SHA256.to_string(),
                tags,
                body: Box::pin(tokio::io::empty()),
            };
            upload::upload(self, upload).await?;
            RegistrationPath::ContentRest
        };
        Ok(PackageRegistered { content_id, path })
    }
}
