//! The management API under `/api:1/` (exosite-platform.md §5): token login / check / revoke,
//! the device2 routes, the content routes and service calls by operation name. Every route
//! except the token routes needs `Authorization: token <mtoken>`. Errors are JSON
//! `{"statusCode", "message"}`.
//!
//! Fault injection (edges helper) is a `.layer()` on the router [`router`] returns, applied
//! in `server.rs`.

mod calls;
mod content;
mod device2;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::de::DeserializeOwned;

use super::model::{Connector, ModelError};
use super::server::AppState;

/// The management router (paths relative to `/api:1`), state applied.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route(
            "/service/{cid}/device2",
            get(device2::get_settings).patch(device2::patch_settings),
        )
        .route("/service/{cid}/device2/identity", get(device2::list))
        .route("/service/{cid}/device2/identity/", get(device2::list))
        .route(
            "/service/{cid}/device2/identity/{identity}",
            get(device2::get_identity)
                .put(device2::add_identity)
                .patch(device2::update_identity)
                .delete(device2::remove_identity),
        )
        .route(
            "/service/{cid}/device2/identity/{identity}/state",
            get(device2::get_state).patch(device2::set_state),
        )
        .route(
            "/service/{cid}/content/item",
            get(content::list).delete(content::clear),
        )
        .route(
            "/service/{cid}/content/item/",
            get(content::list).delete(content::clear),
        )
        .route(
            "/service/{cid}/content/item/{id}",
            get(content::info).delete(content::delete),
        )
        .route(
            "/service/{cid}/content/item/{id}/upload",
            get(content::upload),
        )
        .route(
            "/service/{cid}/content/item/{id}/download",
            get(content::download),
        )
        .route(
            "/solution/{sid}/serviceconfig",
            get(calls::list_serviceconfigs),
        )
        .route(
            "/solution/{sid}/serviceconfig/",
            get(calls::list_serviceconfigs),
        )
        .route(
            "/solution/{sid}/serviceconfig/{scid}/call/{op}",
            any(calls::call),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/token", post(tokens::login))
        .route("/token/", post(tokens::login))
        .route("/token/{token}", get(tokens::check).delete(tokens::revoke))
        .merge(protected)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(state)
}

/// A management API error: `{"statusCode": <code>, "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Message for a person.
    pub message: String,
}

impl ApiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// A `400`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"statusCode": self.status.as_u16(), "message": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        ApiError::new(
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST),
            e.to_string(),
        )
    }
}

/// Result of a management handler.
pub type ApiResult<T = Response> = Result<T, ApiError>;

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("token"))
        .map(|(_, t)| t.trim().to_string());
    match token {
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: token <management token>",
        )
        .into_response(),
        Some(t) if !state.model.tokens().is_valid(&t) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "invalid or expired token").into_response()
        }
        Some(_) => next.run(req).await,
    }
}

/// The connector `cid`, or `404`.
pub(crate) fn connector(state: &AppState, cid: &str) -> ApiResult<Arc<Connector>> {
    Ok(state.model.require_connector(cid)?)
}

/// Parses a JSON body; an empty body reads as `{}`.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Who is writing, for the ground truth: `X-Otau-Client`, else `User-Agent`.
pub(crate) fn client_name(headers: &HeaderMap) -> String {
    headers
        .get("x-otau-client")
        .or_else(|| headers.get(header::USER_AGENT))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A JSON `200`.
pub(crate) fn json(value: impl serde::Serialize) -> Response {
    axum::Json(value).into_response()
}
