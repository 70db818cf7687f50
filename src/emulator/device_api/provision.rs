//! `/provision/activate`, `/provision/download` and `/timestamp` (exosite-platform.md §3.5,
//! §3.10, §3.12).

use std::collections::HashMap;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{
    CSV_CONTENT_TYPE, DeviceConnector, TEXT_CONTENT_TYPE, authenticate, model_error, parse_form,
    require_content_type, text,
};
use crate::emulator::model::{ByteRange, ModelError, RangeError};
use crate::emulator::server::AppState;

/// `POST /provision/activate` with `id=<identity>` (or legacy `sn=<identity>`): the token.
pub(super) async fn activate(
    Extension(DeviceConnector(connector)): Extension<DeviceConnector>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = require_content_type(&headers) {
        return r;
    }
    let form = parse_form(&body);
    let identity = form
        .iter()
        .find(|(k, _)| k == "id")
        .or_else(|| form.iter().find(|(k, _)| k == "sn"))
        .map(|(_, v)| v.clone());
    let Some(identity) = identity.filter(|i| !i.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the body must name the device: id=<identity> (or sn=<identity>)",
        );
    };
    match connector.activate(&identity) {
        Ok(token) => text(StatusCode::OK, token),
        Err(e) => model_error(&e),
    }
}

/// `GET /timestamp`: server time in unix seconds.
pub(super) async fn timestamp(State(state): State<AppState>) -> Response {
    text(StatusCode::OK, state.model.clock().now_secs().to_string())
}

/// `GET /provision/download[?id=<id>[&info=true]]`: list, info line, or the file with `Range`.
pub(super) async fn download(
    Extension(DeviceConnector(connector)): Extension<DeviceConnector>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = authenticate(&connector, &headers) {
        return r;
    }
    let csv = |body: String| {
        (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(CSV_CONTENT_TYPE),
            )],
            body,
        )
            .into_response()
    };
    let Some(id) = query.get("id") else {
        let ids: Vec<String> = connector
            .content()
            .list()
            .iter()
            .map(|i| i.id.clone())
            .collect();
        return csv(ids.join("\n"));
    };
    let Some(item) = connector.content().get(id) else {
        return model_error(&ModelError::UnknownContent(id.clone()));
    };
    if query.get("info").is_some_and(|v| v == "true") {
        return csv(item.device_info_line());
    }
    let total = item.data.len() as u64;
    let content_type = HeaderValue::from_str(&item.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    let range = headers
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .map(|r| ByteRange::parse(r, total));
    match range {
        Some(Ok(r)) => {
            let bytes = connector.content().read(id, Some(r)).unwrap_or_default();
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
                    (
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes {}-{}/{total}", r.first, r.last))
                            .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
                    ),
                ],
                Body::from(bytes),
            )
                .into_response()
        }
        Some(Err(RangeError::NotSatisfiable { total })) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(TEXT_CONTENT_TYPE),
                ),
                (
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&format!("bytes */{total}"))
                        .unwrap_or_else(|_| HeaderValue::from_static("bytes */0")),
                ),
            ],
            "Range Not Satisfiable",
        )
            .into_response(),
        // No Range, or one this server does not understand: the whole file.
        None | Some(Err(RangeError::Unsupported(_))) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type),
                (header::ACCEPT_RANGES, HeaderValue::from_static("bytes")),
            ],
            Body::from(item.data.clone()),
        )
            .into_response(),
    }
}
