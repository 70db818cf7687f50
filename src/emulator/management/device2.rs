//! The device2 routes under `/api:1/service/<cid>/device2` (exosite-platform.md §5.2, §5.3).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiResult, client_name, connector, json, parse_json};
use crate::emulator::model::{Connector, IdentityPatch, ListQuery, ModelError, NewIdentity, Tag};
use crate::emulator::server::AppState;

/// `GET /device2`: the settings object.
pub(super) async fn get_settings(
    State(state): State<AppState>,
    Path(cid): Path<String>,
) -> ApiResult {
    Ok(json(connector(&state, &cid)?.settings()))
}

/// `PATCH /device2`: update settings or resources; `204`.
pub(super) async fn patch_settings(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let patch: serde_json::Value = parse_json(&body)?;
    connector(&state, &cid)?.patch_settings(&patch)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Builds a list query from `limit`, `before`, `offset`, `identity`, `status`; other
/// parameters are ignored.
pub(crate) fn list_query(params: &HashMap<String, String>) -> ApiResult<ListQuery> {
    fn number<T: std::str::FromStr>(
        params: &HashMap<String, String>,
        name: &str,
    ) -> ApiResult<Option<T>> {
        params
            .get(name)
            .map(|v| {
                v.trim().parse::<T>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter {name} must be a whole number, not {v:?}"
                    ))
                })
            })
            .transpose()
    }
    let identity = params
        .get("identity")
        .map(|p| {
            regex::Regex::new(p)
                .map_err(|e| ApiError::bad_request(format!("identity is not a valid regex: {e}")))
        })
        .transpose()?;
    Ok(ListQuery {
        limit: number::<usize>(params, "limit")?,
        before: number::<i64>(params, "before")?,
        offset: number::<usize>(params, "offset")?.unwrap_or(0),
        identity,
        status: params.get("status").cloned(),
    })
}

/// `GET /device2/identity/`: `{"mayLoadMore", "devices"}`, newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    Path(cid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> ApiResult {
    let query = list_query(&params)?;
    Ok(json(connector(&state, &cid)?.list_identities(&query)))
}

/// `GET /device2/identity/<identity>`: the identity object.
pub(super) async fn get_identity(
    State(state): State<AppState>,
    Path((cid, identity)): Path<(String, String)>,
) -> ApiResult {
    Ok(json(connector(&state, &cid)?.identity(&identity)?))
}

/// The `auth` object of add and update bodies.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    key: Option<String>,
    expire: Option<i64>,
}

/// Body of `PUT` and `PATCH /device2/identity/<identity>`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IdentityBody {
    auth: Option<AuthBody>,
    locked: Option<bool>,
    tags: Option<Vec<Tag>>,
}

impl IdentityBody {
    pub(crate) fn into_new(self) -> NewIdentity {
        let auth = self.auth.unwrap_or_default();
        NewIdentity {
            auth_type: auth.kind,
            auth_key: auth.key,
            auth_expire: auth.expire,
            locked: self.locked.unwrap_or(false),
            tags: self.tags.unwrap_or_default(),
        }
    }

    pub(crate) fn into_patch(self) -> IdentityPatch {
        IdentityPatch {
            locked: self.locked,
            tags: self.tags,
            auth_expire: self.auth.and_then(|a| a.expire),
        }
    }
}

/// `PUT /device2/identity/<identity>`: add (whitelist); the identity object.
pub(super) async fn add_identity(
    State(state): State<AppState>,
    Path((cid, identity)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let body: IdentityBody = parse_json(&body)?;
    Ok(json(
        connector(&state, &cid)?.add_identity(&identity, body.into_new())?,
    ))
}

/// `PATCH /device2/identity/<identity>`: lock, unlock, tags, `auth.expire`; the identity
/// object.
pub(super) async fn update_identity(
    State(state): State<AppState>,
    Path((cid, identity)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let body: IdentityBody = parse_json(&body)?;
    Ok(json(
        connector(&state, &cid)?.update_identity(&identity, body.into_patch())?,
    ))
}

/// `DELETE /device2/identity/<identity>`: `204`.
pub(super) async fn remove_identity(
    State(state): State<AppState>,
    Path((cid, identity)): Path<(String, String)>,
) -> ApiResult {
    connector(&state, &cid)?.remove_identity(&identity)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /device2/identity/<identity>/state`: `{alias: {reported, set, timestamp}}`.
pub(super) async fn get_state(
    State(state): State<AppState>,
    Path((cid, identity)): Path<(String, String)>,
) -> ApiResult {
    Ok(json(connector(&state, &cid)?.state(&identity)?))
}

/// The aliases and values of a set-state body; every value must be a JSON string.
pub(crate) fn state_values(
    body: &serde_json::Map<String, serde_json::Value>,
    skip: &[&str],
) -> ApiResult<Vec<(String, String)>> {
    let mut values = Vec::new();
    for (alias, value) in body {
        if skip.contains(&alias.as_str()) {
            continue;
        }
        match value {
            serde_json::Value::String(s) => values.push((alias.clone(), s.clone())),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "the value of {alias:?} must be a JSON string (JSON text goes in a string)"
                )));
            }
        }
    }
    if values.is_empty() {
        return Err(ApiError::bad_request("the body names no resource to set"));
    }
    Ok(values)
}

/// A cloud write, answering `204` (or `404`, or `204` for an unknown identity with the
/// `set_state_unknown_204` bug mode).
pub(crate) fn apply_set_state(
    state: &AppState,
    connector: &Connector,
    identity: &str,
    values: &[(String, String)],
    client: &str,
) -> ApiResult {
    match connector.set_state(identity, values, client) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(ModelError::UnknownIdentity(_)) if state.options.set_state_unknown_204 => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// `PATCH /device2/identity/<identity>/state` with `{"<alias>": "<string>"}`: `204`;
/// `400 Value is not settable`; `404` unknown identity.
pub(super) async fn set_state(
    State(state): State<AppState>,
    Path((cid, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = || -> ApiResult {
        let conn = connector(&state, &cid)?;
        let body: serde_json::Map<String, serde_json::Value> = parse_json(&body)?;
        let values = state_values(&body, &[])?;
        apply_set_state(&state, &conn, &identity, &values, &client_name(&headers))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}
