//! Service calls by operation name (exosite-platform.md §5.7):
//! `/api:1/solution/<sid>/serviceconfig/<id>/call/<op>` with JSON arguments.
//!
//! In the emulator a connector is its own solution: `<sid>` is the connector id and the
//! service config ids are `device2` and `content`. A service config id that names a connector
//! (an application linked to it) also reaches that connector's device2 operations.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::content::{UploadRequest, download_url, item_info, list_items, presign};
use super::device2::{IdentityBody, apply_set_state, list_query, state_values};
use super::{ApiError, ApiResult, client_name, json, parse_json};
use crate::emulator::model::{Connector, ModelError};
use crate::emulator::server::AppState;

/// `GET /solution/<sid>/serviceconfig/`: `{"items": [{id, service, script_key, solution_id}]}`.
pub(super) async fn list_serviceconfigs(
    State(state): State<AppState>,
    Path(sid): Path<String>,
) -> ApiResult {
    state.model.require_connector(&sid)?;
    let items: Vec<serde_json::Value> = ["device2", "content"]
        .iter()
        .map(|s| serde_json::json!({"id": s, "service": s, "script_key": s, "solution_id": sid}))
        .collect();
    Ok(json(serde_json::json!({ "items": items })))
}

enum Service {
    Device2(Arc<Connector>),
    Content(Arc<Connector>),
}

fn service(state: &AppState, sid: &str, scid: &str) -> ApiResult<Service> {
    if let Some(c) = state.model.connector(scid) {
        return Ok(Service::Device2(c));
    }
    let conn = state.model.require_connector(sid)?;
    match scid {
        "device2" => Ok(Service::Device2(conn)),
        "content" => Ok(Service::Content(conn)),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("service config {scid:?} not found (use device2 or content)"),
        )),
    }
}

/// Any method on `/solution/<sid>/serviceconfig/<scid>/call/<op>`; arguments are the JSON body,
/// or the query string when the body is empty.
pub(super) async fn call(
    State(state): State<AppState>,
    Path((sid, scid, op)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = || -> ApiResult {
        let args: serde_json::Map<String, serde_json::Value> =
            if body.iter().all(u8::is_ascii_whitespace) {
                query
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect()
            } else {
                parse_json(&body)?
            };
        match service(&state, &sid, &scid)? {
            Service::Device2(conn) => device2_call(&state, &conn, &op, args, &headers),
            Service::Content(conn) => content_call(&state, &conn, &op, args),
        }
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

fn arg_string(args: &serde_json::Map<String, serde_json::Value>, name: &str) -> Option<String> {
    match args.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn required(args: &serde_json::Map<String, serde_json::Value>, name: &str) -> ApiResult<String> {
    arg_string(args, name)
        .ok_or_else(|| ApiError::bad_request(format!("argument {name:?} is required")))
}

fn device2_call(
    state: &AppState,
    conn: &Connector,
    op: &str,
    args: serde_json::Map<String, serde_json::Value>,
    headers: &HeaderMap,
) -> ApiResult {
    let no_content = || Ok(StatusCode::NO_CONTENT.into_response());
    match op {
        "getIdentity" => Ok(json(conn.identity(&required(&args, "identity")?)?)),
        "getIdentityState" => Ok(json(conn.state(&required(&args, "identity")?)?)),
        "setIdentityState" => {
            let identity = required(&args, "identity")?;
            let values = state_values(&args, &["identity"])?;
            apply_set_state(state, conn, &identity, &values, &client_name(headers))
        }
        "listIdentities" => {
            let params: HashMap<String, String> = args
                .keys()
                .filter_map(|k| arg_string(&args, k).map(|v| (k.clone(), v)))
                .collect();
            Ok(json(conn.list_identities(&list_query(&params)?)))
        }
        "countIdentities" => Ok(json(serde_json::json!({"total": conn.identity_count()}))),
        "addIdentity" => {
            let identity = required(&args, "identity")?;
            let body: IdentityBody = serde_json::from_value(serde_json::Value::Object(args))
                .map_err(|e| ApiError::bad_request(format!("invalid arguments: {e}")))?;
            Ok(json(conn.add_identity(&identity, body.into_new())?))
        }
        "updateIdentity" => {
            let identity = required(&args, "identity")?;
            let body: IdentityBody = serde_json::from_value(serde_json::Value::Object(args))
                .map_err(|e| ApiError::bad_request(format!("invalid arguments: {e}")))?;
            Ok(json(conn.update_identity(&identity, body.into_patch())?))
        }
        "removeIdentity" => {
            conn.remove_identity(&required(&args, "identity")?)?;
            no_content()
        }
        "getGatewaySettings" => Ok(json(conn.settings())),
        _ => Err(unknown_op("device2", op)),
    }
}

fn content_call(
    state: &AppState,
    conn: &Connector,
    op: &str,
    args: serde_json::Map<String, serde_json::Value>,
) -> ApiResult {
    match op {
        "list" => Ok(list_items(conn, true)),
        "info" => item_info(conn, &required(&args, "id")?),
        "delete" => {
            let id = required(&args, "id")?;
            if !conn.content().delete(&id) {
                return Err(ModelError::UnknownContent(id).into());
            }
            Ok(json(serde_json::json!({ "id": id })))
        }
        "deleteMulti" => {
            let ids: Vec<String> = match args.get("ids").or_else(|| args.get("id")) {
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => {
                    return Err(ApiError::bad_request(
                        "argument \"ids\" must be a list of ids",
                    ));
                }
            };
            let deleted: Vec<serde_json::Value> = ids
                .into_iter()
                .filter(|id| conn.content().delete(id))
                .map(|id| serde_json::json!({ "id": id }))
                .collect();
            Ok(json(deleted))
        }
        "clear" => {
            let ids: Vec<serde_json::Value> = conn
                .content()
                .clear()
                .into_iter()
                .map(|id| serde_json::json!({ "id": id }))
                .collect();
            Ok(json(ids))
        }
        "download" => download_url(
            state,
            conn,
            &required(&args, "id")?,
            arg_string(&args, "expires_in").as_deref(),
        ),
        "upload" => {
            let id = required(&args, "id")?;
            let form = presign(
                state,
                conn,
                &id,
                UploadRequest {
                    sha256: arg_string(&args, "sha256"),
                    expires_in: arg_string(&args, "expires_in"),
                    content_type: arg_string(&args, "type"),
                    tags: args.get("tags").cloned(),
                },
            )?;
            Ok(json(form))
        }
        _ => Err(unknown_op("content", op)),
    }
}

fn unknown_op(service: &str, op: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("operation {op:?} not found in service {service}"),
    )
}
