//! The content routes under `/api:1/service/<cid>/content/item` (exosite-platform.md §5.5).

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::{ApiError, ApiResult, connector, json};
use crate::emulator::model::{Connector, ModelError, UploadForm, UploadPolicy};
use crate::emulator::server::AppState;

/// Default `expires_in` of upload forms, seconds (the CLI's value).
pub const DEFAULT_UPLOAD_EXPIRES_SECS: i64 = 30;
/// Default `expires_in` of download URLs, seconds (the service docs' example).
pub const DEFAULT_DOWNLOAD_EXPIRES_SECS: i64 = 600;

/// `GET /content/item[?full=true]`: info objects with `full=true`, else ids.
pub(super) async fn list(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let conn = connector(&state, &cid)?;
    Ok(list_items(
        &conn,
        params.get("full").is_some_and(|v| v == "true"),
    ))
}

pub(crate) fn list_items(conn: &Connector, full: bool) -> Response {
    let items = conn.content().list();
    if full {
        json(items.iter().map(|i| i.info()).collect::<Vec<_>>())
    } else {
        json(items.iter().map(|i| i.id.clone()).collect::<Vec<_>>())
    }
}

/// `GET /content/item/<id>`: `{type, length, last_modified, id, tags}`.
pub(super) async fn info(
    State(state): State<AppState>,
    Path((cid, id)): Path<(String, String)>,
) -> ApiResult {
    let conn = connector(&state, &cid)?;
    item_info(&conn, &id)
}

pub(crate) fn item_info(conn: &Connector, id: &str) -> ApiResult {
    let item = conn
        .content()
        .get(id)
        .ok_or_else(|| ModelError::UnknownContent(id.to_string()))?;
    Ok(json(item.info()))
}

/// `DELETE /content/item/<id>`: `{}`.
pub(super) async fn delete(
    State(state): State<AppState>,
    Path((cid, id)): Path<(String, String)>,
) -> ApiResult {
    let conn = connector(&state, &cid)?;
    if !conn.content().delete(&id) {
        return Err(ModelError::UnknownContent(id).into());
    }
    Ok(json(serde_json::json!({})))
}

/// `DELETE /content/item`: `{}`.
pub(super) async fn clear(State(state): State<AppState>, Path(cid): Path<String>) -> ApiResult {
    connector(&state, &cid)?.content().clear();
    Ok(json(serde_json::json!({})))
}

/// The longest lifetime a presigned URL may ask for: 7 days, as for S3 presigned URLs (the
/// platform's content storage). A longer `expires_in` is refused, so the expiry time cannot
/// overflow.
pub(crate) const MAX_EXPIRES_IN_SECS: i64 = 7 * 24 * 3600;

/// Parses `expires_in` (whole seconds, from 0 to [`MAX_EXPIRES_IN_SECS`]).
pub(crate) fn expires_in(value: Option<&str>, default: i64) -> ApiResult<i64> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=MAX_EXPIRES_IN_SECS).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "expires_in must be a whole number of seconds from 0 to {MAX_EXPIRES_IN_SECS}, not {v:?}"
                ))
            }),
    }
}

/// Tags from a JSON object whose values are strings or numbers (stored as strings).
pub(crate) fn tags_from_json(value: &serde_json::Value) -> ApiResult<BTreeMap<String, String>> {
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::bad_request("tags must be a JSON object"));
    };
    map.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            serde_json::Value::Number(n) => Ok((k.clone(), n.to_string())),
            serde_json::Value::Bool(b) => Ok((k.clone(), b.to_string())),
            _ => Err(ApiError::bad_request(format!(
                "tag {k:?} must have a string value"
            ))),
        })
        .collect()
}

/// What step 1 of an upload asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct UploadRequest {
    pub(crate) sha256: Option<String>,
    pub(crate) expires_in: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) tags: Option<serde_json::Value>,
}

/// Step 1 of an upload: the presigned POST form.
pub(crate) fn presign(
    state: &AppState,
    conn: &Connector,
    id: &str,
    req: UploadRequest,
) -> ApiResult<UploadForm> {
    if id.is_empty() {
        return Err(ApiError::bad_request("the content id must not be empty"));
    }
    let sha256 = req
        .sha256
        .map(|s| s.trim().to_ascii_lowercase())
        .map(|s| {
            if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(s)
            } else {
                Err(ApiError::bad_request(
                    "sha256 must be 64 hexadecimal characters",
                ))
            }
        })
        .transpose()?;
    let expires_in = expires_in(req.expires_in.as_deref(), DEFAULT_UPLOAD_EXPIRES_SECS)?;
    let tags = match &req.tags {
        None => BTreeMap::new(),
        Some(t) => tags_from_json(t)?,
    };
    let policy = UploadPolicy {
        connector: conn.id().to_string(),
        id: id.to_string(),
        content_type: req
            .content_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "application/octet-stream".into()),
        sha256,
        length: None,
        tags,
        expires: state.model.clock().now_micros() + expires_in * 1_000_000,
    };
    Ok(state
        .model
        .uploads()
        .presign(&state.model.public_url(), &policy))
}

/// `GET /content/item/<id>/upload?sha256=&expires_in=&type=&tags=`: the upload form.
pub(super) async fn upload(
    State(state): State<AppState>,
    Path((cid, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let conn = connector(&state, &cid)?;
    let tags = params
        .get("tags")
        .map(|t| {
            serde_json::from_str::<serde_json::Value>(t)
                .map_err(|e| ApiError::bad_request(format!("tags is not JSON: {e}")))
        })
        .transpose()?;
    let form = presign(
        &state,
        &conn,
        &id,
        UploadRequest {
            sha256: params.get("sha256").cloned(),
            expires_in: params.get("expires_in").cloned(),
            content_type: params.get("type").cloned(),
            tags,
        },
    )?;
    Ok(json(form))
}

/// An expiring download URL: `{"url", "method": "GET", "id"}`.
pub(crate) fn download_url(
    state: &AppState,
    conn: &Connector,
    id: &str,
    expires_in_value: Option<&str>,
) -> ApiResult {
    if conn.content().get(id).is_none() {
        return Err(ModelError::UnknownContent(id.to_string()).into());
    }
    let expires_in = expires_in(expires_in_value, DEFAULT_DOWNLOAD_EXPIRES_SECS)?;
    let expires = state.model.clock().now_secs() + expires_in;
    let url = state
        .model
        .uploads()
        .download_url(&state.model.public_url(), conn.id(), id, expires);
    Ok(json(
        serde_json::json!({"url": url, "method": "GET", "id": id}),
    ))
}

/// `GET /content/item/<id>/download[?expires_in=]`.
pub(super) async fn download(
    State(state): State<AppState>,
    Path((cid, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let conn = connector(&state, &cid)?;
    download_url(
        &state,
        &conn,
        &id,
        params.get("expires_in").map(String::as_str),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `emulator_management` fuzz target: `expires_in=60000000000000` overflowed
    /// the expiry time (µs) of an upload form.
    #[test]
    fn expires_in_is_bounded_so_the_expiry_cannot_overflow() {
        assert_eq!(expires_in(None, 30).ok(), Some(30));
        assert_eq!(expires_in(Some(" 600 "), 30).ok(), Some(600));
        assert_eq!(
            expires_in(Some(&MAX_EXPIRES_IN_SECS.to_string()), 30).ok(),
            Some(MAX_EXPIRES_IN_SECS)
        );
        for refused in [
            "60000000000000",
            "604801",
            "-1",
            "9223372036854775807",
            "1.5",
            "",
        ] {
            assert!(
                expires_in(Some(refused), 30).is_err(),
                "{refused:?} must be refused"
            );
        }
        // The largest accepted value, added to a clock far in the future, still fits.
        let far = 4_102_444_800_000_000i64; // 2100-01-01 in µs
        assert!(far.checked_add(MAX_EXPIRES_IN_SECS * 1_000_000).is_some());
    }
}
