//! The emulator's own object store: step 2 of presigned uploads (a multipart POST of the
//! step-1 form) and expiring download URLs (exosite-platform.md §5.5).
//!
//! Step 2 checks that every signed input is present and unchanged and that the form has not
//! expired (`403` otherwise), then that the file matches the declared SHA-256 and size (`400`
//! otherwise), and stores it in the connector's content store with the step-1 type and tags
//! (`204`).

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

use super::model::{ContentItem, OBJECT_DOWNLOAD_PATH, OBJECT_STORE_PATH, UploadError};
use super::server::AppState;

/// The object store router (upload and download paths), state applied.
pub fn router(state: AppState) -> Router {
    let limit = state
        .model
        .config()
        .content_max_bytes
        .saturating_add(1 << 20);
    Router::new()
        .route(OBJECT_STORE_PATH, post(upload))
        .route(
            &format!("{OBJECT_DOWNLOAD_PATH}/{{cid}}/{{id}}"),
            get(download),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"statusCode": status.as_u16(), "message": message.into()});
    (status, axum::Json(body)).into_response()
}

fn upload_error(e: &UploadError) -> Response {
    error(
        StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::FORBIDDEN),
        e.to_string(),
    )
}

async fn upload(State(state): State<AppState>, mut form: Multipart) -> Response {
    let mut fields = BTreeMap::new();
    let mut file: Option<(axum::body::Bytes, Option<String>)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}"));
            }
        };
        let name = field.name().unwrap_or("").to_string();
        if name == super::model::FILE_FIELD {
            let part_type = field.content_type().map(str::to_string);
            match field.bytes().await {
                Ok(b) => file = Some((b, part_type)),
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("bad file part: {e}"));
                }
            }
        } else {
            match field.text().await {
                Ok(t) => {
                    if fields.insert(name.clone(), t).is_some() {
                        return error(
                            StatusCode::FORBIDDEN,
                            format!("form field {name:?} appears twice"),
                        );
                    }
                }
                Err(e) => {
                    return error(StatusCode::BAD_REQUEST, format!("bad form field: {e}"));
                }
            }
        }
    }
    let now = state.model.clock().now_micros();
    let policy = match state.model.uploads().verify_form(&fields, now) {
        Ok(p) => p,
        Err(e) => return upload_error(&e),
    };
    let Some((data, _part_type)) = file else {
        return error(
            StatusCode::BAD_REQUEST,
            "the form has no file part named \"file\"",
        );
    };
    if let Some(expected) = &policy.sha256 {
        let actual = hex::encode(Sha256::digest(&data));
        if &actual != expected {
            return upload_error(&UploadError::BadFile(format!(
                "the file's SHA-256 is {actual}, the form declared {expected}"
            )));
        }
    }
    if let Some(length) = policy.length
        && length != data.len() as u64
    {
        return upload_error(&UploadError::BadFile(format!(
            "the file is {} bytes, the form declared {length}",
            data.len()
        )));
    }
    let Some(conn) = state.model.connector(&policy.connector) else {
        return error(StatusCode::NOT_FOUND, "the connector of this form is gone");
    };
    let item = ContentItem {
        id: policy.id,
        content_type: policy.content_type,
        data,
        tags: policy.tags,
        last_modified: now,
    };
    match conn.content().put(item) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn download(
    State(state): State<AppState>,
    Path((cid, id)): Path<(String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let Some(expires) = params.get("expires").and_then(|e| e.parse::<i64>().ok()) else {
        return error(
            StatusCode::FORBIDDEN,
            "the URL has no valid expires parameter",
        );
    };
    let signature = params.get("signature").map(String::as_str).unwrap_or("");
    let now = state.model.clock().now_micros();
    if let Err(e) = state
        .model
        .uploads()
        .verify_download(&cid, &id, expires, signature, now)
    {
        return upload_error(&e);
    }
    let Some(item) = state
        .model
        .connector(&cid)
        .and_then(|c| c.content().get(&id))
    else {
        return error(
            StatusCode::NOT_FOUND,
            format!("content item {id:?} not found"),
        );
    };
    let content_type = HeaderValue::from_str(&item.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type)],
        Body::from(item.data.clone()),
    )
        .into_response()
}
