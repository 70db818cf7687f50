//! The device HTTP API (exosite-platform.md §3): activate, alias write / read / write-then-read
//! / long poll, record, content list / info / download with `Range`, and `/timestamp`.
//!
//! The connector is chosen by the `Host` header: `<cid>.m2.<any domain>` or
//! `<cid>.devmode-m2.<any domain>`; an IP address or `localhost` maps to the default connector
//! when one is configured. Any other host is closed without a response
//! ([`crate::emulator::server::CloseConnection`]).

mod alias;
mod auth;
mod provision;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::model::{Connector, ModelError};
use super::server::{AppState, CloseConnection};

pub use auth::credential_from_headers;

/// `Content-Type` of form-encoded answers.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";
/// `Content-Type` of plain-text answers.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// `Content-Type` of CSV answers.
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8";
/// Largest long-poll `Request-Timeout`, ms.
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 300_000;

/// The device API router (state applied). Every route first resolves the connector from `Host`.
pub fn router(state: AppState) -> Router {
    // Form bodies percent-encode values: allow three times the value limit plus some slack.
    let body_limit = state
        .model
        .config()
        .resource_max_bytes
        .saturating_mul(3)
        .saturating_add(64 * 1024);
    Router::new()
        .route("/provision/activate", post(provision::activate))
        .route("/provision/download", get(provision::download))
        .route(
            "/onep:v1/stack/alias",
            get(alias::read_or_poll).post(alias::write),
        )
        .route("/onep:v1/stack/record", post(alias::record))
        .route("/timestamp", get(provision::timestamp))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            resolve_connector,
        ))
        .with_state(state)
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not Found")
}

/// The connector a device request addresses, put into the request extensions.
#[derive(Debug, Clone)]
pub struct DeviceConnector(pub Arc<Connector>);

async fn resolve_connector(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().host().map(str::to_string))
        .unwrap_or_default();
    let Some(cid) = connector_for_host(&host, state.options.default_connector.as_deref()) else {
        return CloseConnection::response();
    };
    let Some(connector) = state.model.connector(&cid) else {
        return CloseConnection::response();
    };
    req.extensions_mut().insert(DeviceConnector(connector));
    next.run(req).await
}

/// The connector id a `Host` header names, if any (see the module docs).
pub fn connector_for_host(host: &str, default_connector: Option<&str>) -> Option<String> {
    let host = host.trim().to_ascii_lowercase();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [::1]:port
        rest.split(']').next().unwrap_or("").to_string()
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => host.clone(),
        }
    };
    let is_local = name == "localhost" || name.parse::<std::net::IpAddr>().is_ok();
    if is_local {
        return default_connector.map(str::to_string);
    }
    let mut labels = name.split('.');
    let cid = labels.next()?;
    let kind = labels.next()?;
    labels.next()?; // at least one domain label after m2 / devmode-m2
    if (kind == "m2" || kind == "devmode-m2") && !cid.is_empty() {
        Some(cid.to_string())
    } else {
        None
    }
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(TEXT_CONTENT_TYPE),
        )],
        body.into(),
    )
        .into_response()
}

/// The device API's answer for a model error.
pub(crate) fn model_error(e: &ModelError) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    text(status, e.to_string())
}

/// `415` unless the request has a `Content-Type` (exosite-platform.md §3.4).
#[allow(
    clippy::result_large_err,
    reason = "the error is the finished answer to a rejected request"
)]
pub(crate) fn require_content_type(headers: &HeaderMap) -> Result<(), Response> {
    if headers.contains_key(header::CONTENT_TYPE) {
        Ok(())
    } else {
        Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported media type - missing header",
        ))
    }
}

/// Parses a form-encoded body into pairs, in order.
pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Encodes pairs as a form body.
pub(crate) fn encode_form<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The identity the request's credentials belong to, or a `401` answer.
#[allow(
    clippy::result_large_err,
    reason = "the error is the finished answer to a rejected request"
)]
pub(crate) fn authenticate(
    connector: &Connector,
    headers: &HeaderMap,
) -> Result<Arc<str>, Response> {
    let unauthorized = || text(StatusCode::UNAUTHORIZED, "Unauthorized");
    let credential = credential_from_headers(headers).ok_or_else(unauthorized)?;
    connector
        .authenticate(credential.as_credential())
        .ok_or_else(unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_map_to_connectors() {
        assert_eq!(
            connector_for_host("abc123.m2.exosite.io", None).as_deref(),
            Some("abc123")
        );
        assert_eq!(
            connector_for_host("ABC.devmode-m2.example.com:8080", None).as_deref(),
            Some("abc")
        );
        assert_eq!(connector_for_host("abc.m2", None), None);
        assert_eq!(connector_for_host("www.example.com", None), None);
        assert_eq!(connector_for_host("127.0.0.1:9", None), None);
        assert_eq!(
            connector_for_host("127.0.0.1:9", Some("d")).as_deref(),
            Some("d")
        );
        assert_eq!(
            connector_for_host("[::1]:9", Some("d")).as_deref(),
            Some("d")
        );
        assert_eq!(
            connector_for_host("localhost", Some("d")).as_deref(),
            Some("d")
        );
    }
}
