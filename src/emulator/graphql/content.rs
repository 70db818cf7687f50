//! `createContent` (exosite-platform.md §7.2): registers a content item (a package item with its
//! tags, or a file) in the connector's content store and answers the upload instructions, the
//! presigned POST form of the emulator's object store (§5.5).

use std::collections::BTreeMap;

use async_graphql::{
    Context, InputObject, InputValueError, InputValueResult, Json, Object, Result, Scalar,
    ScalarType, SimpleObject, Value,
};
use axum::body::Bytes;
use sha2::{Digest, Sha256};

use super::GraphqlState;
use crate::emulator::model::{ContentItem, UploadPolicy};

/// How long the upload form of `createContent` stays valid, in seconds.
pub const UPLOAD_EXPIRES_SECS: i64 = 3600;
/// MIME type stored when the input names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A tag value: a string, or a number (the guide sends `total-devices` as a JSON number).
/// Stored as a string either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagValue(pub String);

#[Scalar(name = "TagValue")]
impl ScalarType for TagValue {
    fn parse(value: Value) -> InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(TagValue(s)),
            Value::Number(n) => Ok(TagValue(n.to_string())),
            other => Err(InputValueError::custom(format!(
                "a tag value must be a string or a number, not {other}"
            ))),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

/// One `{name, value}` tag of a content item.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "ContentTagInput")]
pub struct TagInput {
    /// Tag name.
    pub name: String,
    /// Tag value.
    pub value: TagValue,
}

/// The `content` argument of `createContent`.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "ContentInput", rename_fields = "snake_case")]
pub struct ContentInput {
    /// Content id (`package_<…>.json` for a package item).
    pub name: String,
    /// MIME type or kind (`firmware` in the guide).
    pub content_type: Option<String>,
    /// Kind; used as the type when `content_type` is absent.
    #[graphql(name = "type")]
    pub kind: Option<String>,
    /// Length in bytes of the body that will be uploaded.
    pub length: Option<i64>,
    /// Tags.
    pub tags: Option<Vec<TagInput>>,
    /// Connector id.
    pub product_id: Option<String>,
}

/// The upload instructions `createContent` answers.
#[derive(Debug, Clone, SimpleObject)]
#[graphql(name = "ContentUpload")]
pub struct ContentUpload {
    /// Content id.
    pub id: String,
    /// Where to POST the form.
    pub url: String,
    /// Form fields to send unchanged, before the file (a JSON object).
    pub inputs: Json<BTreeMap<String, String>>,
    /// `POST`.
    pub method: String,
    /// Name of the file field.
    pub field: String,
    /// `multipart/form-data`.
    pub enctype: String,
}

/// The content mutations.
#[derive(Debug, Default)]
pub struct ContentMutations;

#[Object]
impl ContentMutations {
    /// Registers a content item (replacing one with the same name) and answers how to upload
    /// its body. The item is visible at once, with an empty body, to the management API and to
    /// devices; the upload replaces the body and keeps the tags.
    async fn create_content(
        &self,
        ctx: &Context<'_>,
        content: Option<ContentInput>,
    ) -> Result<ContentUpload> {
        let state = ctx.data::<GraphqlState>()?;
        let content = content.ok_or("createContent needs the `content` argument")?;
        create_content(state, content).map_err(async_graphql::Error::new)
    }
}

/// `createContent` itself; errors are messages for a person.
pub fn create_content(state: &GraphqlState, input: ContentInput) -> Result<ContentUpload, String> {
    let id = input.name.trim().to_string();
    if id.is_empty() {
        return Err("content.name must not be empty".into());
    }
    let tags: BTreeMap<String, String> = input
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.name, t.value.0))
        .collect();
    let cid = input
        .product_id
        .clone()
        .filter(|p| !p.is_empty())
        .or_else(|| tags.get("pid").cloned())
        .or_else(|| state.default_connector.clone())
        .ok_or("content.product_id is missing and no default connector is configured")?;
    let connector = state
        .model
        .connector(&cid)
        .ok_or_else(|| format!("connector {cid:?} not found"))?;
    let length = input.length.unwrap_or(0);
    let max = connector.content().max_bytes();
    let length = u64::try_from(length)
        .ok()
        .filter(|l| *l <= max as u64)
        .ok_or_else(|| format!("content.length {length} must be between 0 and {max}"))?;
    let content_type = input
        .content_type
        .or(input.kind)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
    let now = connector.now_micros();
    connector
        .content()
        .put(ContentItem {
            id: id.clone(),
            content_type: content_type.clone(),
            data: Bytes::new(),
            tags: tags.clone(),
            last_modified: now,
        })
        .map_err(|e| e.to_string())?;
    let policy = UploadPolicy {
        connector: cid,
        id,
        content_type,
        // An empty body has a known digest; for others only the size is declared.
        sha256: (length == 0).then(|| hex::encode(Sha256::digest(b""))),
        length: Some(length),
        tags,
        expires: now.saturating_add(UPLOAD_EXPIRES_SECS * 1_000_000),
    };
    let form = state
        .model
        .uploads()
        .presign(&state.model.public_url(), &policy);
    Ok(ContentUpload {
        id: form.id,
        url: form.url,
        inputs: Json(form.inputs),
        method: form.method,
        field: form.field,
        enctype: form.enctype,
    })
}
