//! [`EmulatorPlatform`]: the [`Platform`] trait implemented in-process over one connector of
//! the emulator's [`Model`], with no HTTP in between. `otau-operator simulate` drives the rollout
//! engine through it in virtual time (the model's clock), so the engine sees exactly what the
//! Exosite client would read from a connector: paged identity listings newest first, resource
//! states `{set, reported, timestamp}` in µs, `config_otau` cloud writes recorded in the
//! model's ground truth, content items and package registrations.
//!
//! The emulator uses the platform *trait* only (docs/architecture.md §4): nothing here calls the
//! Exosite client, the engine or the controller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::model::{
    ChangedIdentities, Connector, ContentItem, DeviceId, IdentityView, ListQuery, Model,
    ModelError, ResourceStateView,
};
use crate::otau::{CONFIG_OTAU, Manifest, OTAU_IN};
use crate::platform::{
    ConnectorSettings, ContentInfo, ContentUpload, CredentialCheck, Identity, IdentityPage,
    IdentityPages, IdentityState, ListIdentities, PackageRegistered, PackageRegistration, Platform,
    PlatformError, RegistrationPath, ResourceSettings, ResourceState, Tag,
};

/// Operation names in errors: the same route names the Exosite client uses, so messages read
/// alike whichever platform answered.
pub mod operation {
    /// Identity listing.
    pub const LIST_IDENTITIES: &str = "device2.identity.list";
    /// One identity's state.
    pub const GET_STATE: &str = "device2.state.get";
    /// A cloud write of a resource.
    pub const SET_STATE: &str = "device2.state.set";
    /// A write of an identity's tag list.
    pub const SET_TAGS: &str = "device2.identity.tags";
    /// A content upload.
    pub const UPLOAD_POST: &str = "content.upload.post";
    /// Content item information.
    pub const CONTENT_INFO: &str = "content.info";
    /// Content item deletion.
    pub const CONTENT_DELETE: &str = "content.delete";
    /// Package registration (content REST path).
    pub const REGISTER_PACKAGE: &str = "content.upload.form";
}

/// The writer name recorded in the model's ground truth for `config_otau` writes made through
/// this adapter, unless [`EmulatorPlatform::with_client`] names another.
pub const DEFAULT_CLIENT: &str = "otau-operator";

/// The account [`Platform::check_credentials`] reports.
pub const ACCOUNT: &str = "simulate@emulator.local";

/// The most identities one listing page holds (the emulator's management API caps it too).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The platform of one emulator connector, in process.
#[derive(Clone)]
pub struct EmulatorPlatform {
    model: Arc<Model>,
    connector: Arc<Connector>,
    client: String,
}

impl std::fmt::Debug for EmulatorPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorPlatform")
            .field("connector", &self.connector.id())
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl EmulatorPlatform {
    /// The platform of connector `connector_id` of `model` (which must exist).
    pub fn new(model: Arc<Model>, connector_id: &str) -> Result<Self, ModelError> {
        let connector = model.require_connector(connector_id)?;
        Ok(EmulatorPlatform {
            model,
            connector,
            client: DEFAULT_CLIENT.to_string(),
        })
    }

    /// The same platform recording its `config_otau` writes under another writer name.
    pub fn with_client(mut self, client: impl Into<String>) -> Self {
        self.client = client.into();
        self
    }

    /// The model connector behind this platform.
    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    /// The model behind this platform.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The connector's newest change: a cursor for [`EmulatorPlatform::changed_since`].
    pub fn change_cursor(&self) -> u64 {
        self.connector.change_cursor()
    }

    /// The identities changed after `cursor` (newest first, as handles) and the cursor to
    /// pass next time; read them with [`EmulatorPlatform::identities_of`], a page at a time.
    /// Not part of the [`Platform`] trait: the Exosite API has no such query; `simulate` uses
    /// it so that a poll costs what changed since the last one, not a listing of every device.
    pub fn changed_since(&self, cursor: u64) -> ChangedIdentities {
        self.connector.changed_since(cursor)
    }

    /// The identities of `ids` as a listing shows them, in the order given, and the ones
    /// among them that were removed.
    pub fn identities_of(&self, ids: &[DeviceId]) -> (Vec<Identity>, Vec<String>) {
        let (views, removed) = self.connector.views_of(ids);
        (views.into_iter().map(identity).collect(), removed)
    }
}

/// Maps a model error to the error the Exosite client would return for the same HTTP answer.
fn platform_error(op: &'static str, e: ModelError) -> PlatformError {
    let message = e.to_string();
    match e {
        ModelError::UnknownIdentity(_)
        | ModelError::UnknownConnector(_)
        | ModelError::UnknownContent(_)
        | ModelError::NotWhitelisted(_) => PlatformError::NotFound {
            operation: op,
            message,
        },
        ModelError::NotSettable(_) => PlatformError::NotSettable {
            operation: op,
            message,
        },
        other => PlatformError::Rejected {
            operation: op,
            status: other.http_status(),
            message,
        },
    }
}

fn resource_state(view: Option<&ResourceStateView>) -> ResourceState {
    match view {
        None => ResourceState::default(),
        Some(v) => ResourceState {
            set: v.set.clone(),
            reported: v.reported.clone(),
            timestamp: Some(v.timestamp),
        },
    }
}

fn identity_state(state: &BTreeMap<String, ResourceStateView>) -> IdentityState {
    IdentityState {
        config_otau: resource_state(state.get(CONFIG_OTAU)),
        otau_in: resource_state(state.get(OTAU_IN)),
    }
}

/// The platform's view of one model identity.
fn identity(view: IdentityView) -> Identity {
    Identity {
        state: identity_state(&view.state),
        identity: view.identity,
        status: view.status,
        tags: view
            .tags
            .into_iter()
            .map(|t| Tag {
                name: t.name,
                value: t.value,
            })
            .collect(),
        created: Some(view.created),
    }
}

fn content_info(item: &ContentItem) -> ContentInfo {
    let info = item.info();
    ContentInfo {
        id: info.id,
        content_type: info.content_type,
        length: info.length,
        last_modified: info.last_modified,
        tags: info.tags,
    }
}

/// Where the next listing page starts: identities created strictly before this time (µs).
struct ListingCursor {
    connector: Arc<Connector>,
    limit: usize,
    before: Option<i64>,
    done: bool,
}

fn next_page(cursor: &mut ListingCursor) -> Option<IdentityPage> {
    if cursor.done {
        return None;
    }
    let page = cursor.connector.list_identities(&ListQuery {
        limit: Some(cursor.limit),
        before: cursor.before,
        ..ListQuery::default()
    });
    let oldest = page.devices.iter().map(|d| d.created).min();
    match oldest {
        None => {
            cursor.done = true;
            return None;
        }
        Some(oldest) => cursor.before = Some(oldest),
    }
    cursor.done = !page.may_load_more;
    Some(IdentityPage {
        identities: page.devices.into_iter().map(identity).collect(),
    })
}

/// The `otau_info`, `pid`, `total-devices` and `<pid>.<identity>` tags of a package item, as
/// the content REST registration writes them (exosite-platform.md §2.6).
fn package_tags(
    connector_id: &str,
    package: &PackageRegistration,
) -> Result<BTreeMap<String, String>, PlatformError> {
    let manifest =
        package
            .manifest
            .to_json_checked()
            .map_err(|e| PlatformError::InvalidRequest {
                operation: operation::REGISTER_PACKAGE,
                message: format!("package {}: {e}", package.slug),
            })?;
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest).map_err(|e| PlatformError::InvalidRequest {
            operation: operation::REGISTER_PACKAGE,
            message: format!("package {}: manifest is not JSON: {e}", package.slug),
        })?;
    let info = serde_json::json!({
        "author": package.author,
        "product": package.product,
        "config_otau": manifest,
    });
    let mut tags = BTreeMap::new();
    tags.insert("otau_info".to_string(), info.to_string());
    tags.insert("pid".to_string(), connector_id.to_string());
    tags.insert(
        "total-devices".to_string(),
        package.total_devices.to_string(),
    );
    for identity in &package.device_tags {
        tags.insert(format!("{connector_id}.{identity}"), "1".to_string());
    }
    Ok(tags)
}

#[async_trait]
impl Platform for EmulatorPlatform {
    fn connector_id(&self) -> &str {
        self.connector.id()
    }

    async fn check_credentials(&self) -> Result<CredentialCheck, PlatformError> {
        let model_settings = self.connector.settings();
        let resources = model_settings
            .resources
            .iter()
            .map(|(alias, def)| {
                (
                    alias.clone(),
                    ResourceSettings {
                        format: def.format.clone(),
                        settable: def.settable,
                    },
                )
            })
            .collect();
        Ok(CredentialCheck {
            email: ACCOUNT.to_string(),
            ttl: Duration::from_secs(super::model::MANAGEMENT_TOKEN_TTL_SECS.unsigned_abs()),
            settings: ConnectorSettings {
                fqdn: model_settings.fqdn,
                resources,
            },
        })
    }

    fn list_identities(&self, query: ListIdentities) -> IdentityPages {
        let cursor = ListingCursor {
            connector: self.connector.clone(),
            limit: query.page_size.clamp(1, MAX_PAGE_SIZE) as usize,
            before: None,
            done: false,
        };
        Box::pin(futures::stream::unfold(cursor, |mut cursor| async move {
            next_page(&mut cursor).map(|page| (Ok(page), cursor))
        }))
    }

    async fn identity_state(&self, identity: &str) -> Result<IdentityState, PlatformError> {
        let state = self
            .connector
            .state(identity)
            .map_err(|e| platform_error(operation::GET_STATE, e))?;
        Ok(identity_state(&state))
    }

    async fn set_config_otau(
        &self,
        identity: &str,
        manifest: &Manifest,
    ) -> Result<(), PlatformError> {
        let value = manifest
            .to_json_checked()
            .map_err(|e| PlatformError::InvalidRequest {
                operation: operation::SET_STATE,
                message: e.to_string(),
            })?;
        self.connector
            .set_state(identity, &[(CONFIG_OTAU.to_string(), value)], &self.client)
            .map_err(|e| platform_error(operation::SET_STATE, e))
    }

    async fn add_identity_tag(&self, identity: &str, tag: &Tag) -> Result<bool, PlatformError> {
        let error = |e| platform_error(operation::SET_TAGS, e);
        let mut tags = self.connector.identity(identity).map_err(error)?.tags;
        let tag = super::model::Tag::new(tag.name.clone(), tag.value.clone());
        if tags.contains(&tag) {
            return Ok(false);
        }
        tags.push(tag);
        let patch = super::model::IdentityPatch {
            tags: Some(tags),
            ..Default::default()
        };
        self.connector
            .update_identity(identity, patch)
            .map_err(error)?;
        Ok(true)
    }

    async fn upload_content(&self, upload: ContentUpload) -> Result<(), PlatformError> {
        let op = operation::UPLOAD_POST;
        let limit = self.connector.content().max_bytes() as u64;
        if upload.length > limit {
            return Err(PlatformError::InvalidRequest {
                operation: op,
                message: format!(
                    "content {:?} is {} bytes, over the limit of {limit} bytes",
                    upload.id, upload.length
                ),
            });
        }
        let mut data = Vec::with_capacity(upload.length as usize);
        upload
            .body
            .take(upload.length + 1)
            .read_to_end(&mut data)
            .await
            .map_err(|e| PlatformError::BodyRead {
                operation: op,
                message: e.to_string(),
            })?;
        if data.len() as u64 != upload.length {
            return Err(PlatformError::InvalidRequest {
                operation: op,
                message: format!(
                    "content {:?}: the body is {} bytes, {} were announced",
                    upload.id,
                    data.len(),
                    upload.length
                ),
            });
        }
        let sha256 = hex::encode(Sha256::digest(&data));
        if !sha256.eq_ignore_ascii_case(&upload.sha256) {
            return Err(PlatformError::InvalidRequest {
                operation: op,
                message: format!(
                    "content {:?}: the body's sha256 is {sha256}, {} was announced",
                    upload.id, upload.sha256
                ),
            });
        }
        self.connector
            .content()
            .put(ContentItem {
                id: upload.id,
                content_type: upload.content_type,
                data: Bytes::from(data),
                tags: upload.tags,
                last_modified: self.connector.now_micros(),
            })
            .map_err(|e| platform_error(op, e))
    }

    async fn content_info(&self, id: &str) -> Result<ContentInfo, PlatformError> {
        self.connector
            .content()
            .get(id)
            .map(|item| content_info(&item))
            .ok_or_else(|| {
                platform_error(
                    operation::CONTENT_INFO,
                    ModelError::UnknownContent(id.to_string()),
                )
            })
    }

    async fn list_content(&self) -> Result<Vec<ContentInfo>, PlatformError> {
        Ok(self
            .connector
            .content()
            .list()
            .iter()
            .map(|item| content_info(item))
            .collect())
    }

    async fn delete_content(&self, id: &str) -> Result<(), PlatformError> {
        if self.connector.content().delete(id) {
            Ok(())
        } else {
            Err(platform_error(
                operation::CONTENT_DELETE,
                ModelError::UnknownContent(id.to_string()),
            ))
        }
    }

    async fn register_package(
        &self,
        package: &PackageRegistration,
    ) -> Result<PackageRegistered, PlatformError> {
        let content_id = package.content_id();
        let tags = package_tags(self.connector.id(), package)?;
        self.connector
            .content()
            .put(ContentItem {
                id: content_id.clone(),
                content_type: "application/json".to_string(),
                data: Bytes::new(),
                tags,
                last_modified: self.connector.now_micros(),
            })
            .map_err(|e| platform_error(operation::REGISTER_PACKAGE, e))?;
        Ok(PackageRegistered {
            content_id,
            path: RegistrationPath::ContentRest,
        })
    }
}

#[cfg(test)]
mod tests;
