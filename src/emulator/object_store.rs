//! The emulator's own object store: step 2 of presigned uploads (a multipart POST of the
//! step-1 form) and expiring download URLs (exosite-platform.md §5.5).
//!
//! Step 2 reads the form fields up to the file part (each at most [`MAX_FIELD_BYTES`], at
//! most [`MAX_FIELDS`]), checks that every signed input is present and unchanged and that the
//! form has not expired (`403` otherwise) *before it reads a byte of the file*, so an
//! unauthenticated upload costs no buffer; then it reads the file, checks it against the
//! declared SHA-256 and size (`400` otherwise), and stores it in the connector's content store
//! with the step-1 type and tags (`204`). Parts after the file are ignored (the file part comes
//! last, exosite-platform.md §5.5).

use std::collections::{BTreeMap, HashMap};

use axum::Router;
use axum::body::Body;
use axum::extract::multipart::Field;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest, Sha256};

use super::model::{ContentItem, OBJECT_DOWNLOAD_PATH, OBJECT_STORE_PATH, UploadError};
use super::server::AppState;

/// The largest form field other than the file (the signed inputs are short).
pub const MAX_FIELD_BYTES: usize = 64 * 1024;
/// The most form fields before the file part.
pub const MAX_FIELDS: usize = 64;

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
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "the form has no file part named \"file\"",
                );
            }
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, format!("bad multipart body: {e}"));
            }
        };
        let name = field.name().unwrap_or("").to_string();
        if name == super::model::FILE_FIELD {
            return store(&state, &fields, field).await;
        }
        if fields.len() >= MAX_FIELDS {
            return error(
                StatusCode::BAD_REQUEST,
                format!("more than {MAX_FIELDS} form fields before the file"),
            );
        }
        let text = match read_field(field).await {
            Ok(t) => t,
            Err(response) => return response,
        };
        if fields.insert(name.clone(), text).is_some() {
            return error(
                StatusCode::FORBIDDEN,
                format!("form field {name:?} appears twice"),
            );
        }
    }
}

/// One form field other than the file, at most [`MAX_FIELD_BYTES`].
async fn read_field(mut field: Field<'_>) -> Result<String, Response> {
    let mut bytes = Vec::new();
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() > MAX_FIELD_BYTES => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("a form field is over {MAX_FIELD_BYTES} bytes"),
                ));
            }
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("bad form field: {e}"),
                ));
            }
        }
    }
    String::from_utf8(bytes)
        .map_err(|_| error(StatusCode::BAD_REQUEST, "a form field is not UTF-8"))
}

/// Checks the form `fields`, then reads the file part and stores it.
async fn store(state: &AppState, fields: &BTreeMap<String, String>, file: Field<'_>) -> Response {
    let now = state.model.clock().now_micros();
    let policy = match state.model.uploads().verify_form(fields, now) {
        Ok(p) => p,
        Err(e) => return upload_error(&e),
    };
    let data = match file.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return error(StatusCode::BAD_REQUEST, format!("bad file part: {e}"));
        }
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
