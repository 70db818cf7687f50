//! `POST /api:1/token/`, `GET` and `DELETE /api:1/token/<t>` (exosite-platform.md §5.1).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiResult, json, parse_json};
use crate::emulator::server::AppState;

#[derive(Deserialize)]
struct Login {
    email: String,
    password: String,
}

/// Logs in with `{"email", "password"}`: `{"token": "…"}`.
pub(super) async fn login(State(state): State<AppState>, body: Bytes) -> ApiResult {
    let Login { email, password } = parse_json(&body)?;
    match state.model.tokens().login(&email, &password) {
        Some(token) => Ok(json(serde_json::json!({ "token": token }))),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unknown e-mail or wrong password",
        )),
    }
}

/// `{"email", "ttl"}` of a valid token, `401` otherwise.
pub(super) async fn check(State(state): State<AppState>, Path(token): Path<String>) -> ApiResult {
    state
        .model
        .tokens()
        .check(&token)
        .map(json)
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "invalid or expired token"))
}

/// Revokes a token: `204`, or `404` if it was not known.
pub(super) async fn revoke(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    if state.model.tokens().revoke(&token) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(StatusCode::NOT_FOUND, "unknown token").into_response()
    }
}
