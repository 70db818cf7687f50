//! Ground truth for tests and benchmarks: admin JSON endpoints under `/admin/`
//! and `/metrics` in Prometheus text, plus [`attach`], which plugs every edge part (GraphQL,
//! admin, metrics, fault injection, request counting) into the emulator's router.
//!
//! | Endpoint | Answer |
//! |---|---|
//! | `GET /admin/devices/<cid>/<identity>/writes` | every cloud write of `config_otau` to that device: when, which client, attempt |
//! | `GET /admin/config_otau_writes[?connector=<cid>]` | per device: write count, clients, first and last write time |
//! | `GET /admin/requests`, `DELETE /admin/requests` | per-route counts and timings; reset |
//! | `GET /admin/faults`, `PUT /admin/faults` | the fault setting (JSON [`FaultConfig`]) and counts |
//! | `GET /admin/webhooks` | webhook delivery counters |
//! | `GET /metrics` | Prometheus text |
//!
//! The admin endpoints need no credentials: the emulator is a local test tool.

pub mod edges;
pub mod metrics;
pub mod requests;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::faults::{self, FaultConfig, Faults};
use super::graphql::{self, GraphqlState};
use super::model::{CloudWriteRecord, Model};
use super::webhook::WebhookStats;
pub use edges::{EdgeArgs, EdgeError, Edges};
pub use requests::{RequestMetrics, RequestsReport, RouteTally, count_requests};

/// Everything the edge parts share with the admin endpoints.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The platform model.
    pub model: Arc<Model>,
    /// The live fault setting.
    pub faults: Arc<Faults>,
    /// Request counters.
    pub requests: Arc<RequestMetrics>,
    /// Webhook delivery counters, if delivery runs.
    pub webhook: Option<Arc<WebhookStats>>,
}

/// `app` with GraphQL (`/api/graphql`), the admin endpoints and `/metrics` merged in, fault
/// injection in front of every route (it only touches routes its rules name) and request
/// counting outermost (so injected faults are counted too). `app` must not already serve those
/// paths.
pub fn attach(app: Router, admin: AdminState, graphql: GraphqlState) -> Router {
    let app = app
        .merge(graphql::router(graphql))
        .merge(router(admin.clone()));
    let app = faults::apply(app, admin.faults.clone());
    app.layer(middleware::from_fn_with_state(
        admin.requests.clone(),
        count_requests,
    ))
}

/// The admin and metrics routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/devices/{cid}/{identity}/writes", get(device_writes))
        .route("/admin/config_otau_writes", get(config_otau_writes))
        .route(
            "/admin/requests",
            get(requests_report).delete(reset_requests),
        )
        .route("/admin/faults", get(get_faults).put(put_faults))
        .route("/admin/webhooks", get(webhooks))
        .route("/metrics", get(metrics::render))
        .with_state(state)
}

fn json_error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"statusCode": status.as_u16(), "message": message.into()});
    (status, axum::Json(body)).into_response()
}

/// Answer of `GET /admin/devices/<cid>/<identity>/writes`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceWrites {
    /// Connector id.
    pub connector: String,
    /// Identity.
    pub identity: String,
    /// Number of `config_otau` cloud writes.
    pub count: usize,
    /// The writes, oldest first.
    pub writes: Vec<CloudWriteRecord>,
}

async fn device_writes(
    State(state): State<AdminState>,
    Path((cid, identity)): Path<(String, String)>,
) -> Response {
    let Some(connector) = state.model.connector(&cid) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("connector {cid:?} not found"),
        );
    };
    let writes = connector.ground_truth(&identity);
    if writes.is_empty() && connector.device_id(&identity).is_none() {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("identity {identity:?} not found on connector {cid:?}"),
        );
    }
    axum::Json(DeviceWrites {
        connector: cid,
        identity,
        count: writes.len(),
        writes,
    })
    .into_response()
}

/// One device's line in the `config_otau` write summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeviceWriteSummary {
    /// Number of cloud writes.
    pub count: usize,
    /// Writes that changed the value.
    pub changed: usize,
    /// Write count per client (`X-Otau-Client`, else `User-Agent`).
    pub clients: BTreeMap<String, usize>,
    /// First write, µs.
    pub first_at: i64,
    /// Last write, µs.
    pub last_at: i64,
    /// Highest `attempt` written.
    pub max_attempt: Option<u64>,
}

impl DeviceWriteSummary {
    /// The summary of `writes` (oldest first).
    pub fn of(writes: &[CloudWriteRecord]) -> Self {
        let mut s = DeviceWriteSummary {
            count: writes.len(),
            first_at: writes.first().map_or(0, |w| w.at),
            last_at: writes.last().map_or(0, |w| w.at),
            ..Default::default()
        };
        for w in writes {
            *s.clients.entry(w.client.clone()).or_default() += 1;
            s.changed += usize::from(w.changed);
            s.max_attempt = s.max_attempt.max(w.attempt);
        }
        s
    }
}

/// One connector's `config_otau` write summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConnectorWriteSummary {
    /// Writes over all devices.
    pub total_writes: usize,
    /// Devices that received at least one write.
    pub devices_written: usize,
    /// Devices that received more than one write.
    pub devices_written_more_than_once: usize,
    /// Per device.
    pub devices: BTreeMap<String, DeviceWriteSummary>,
}

#[derive(Debug, Deserialize)]
struct ConnectorQuery {
    connector: Option<String>,
}

async fn config_otau_writes(
    State(state): State<AdminState>,
    Query(q): Query<ConnectorQuery>,
) -> Response {
    let connectors = match &q.connector {
        Some(cid) => match state.model.connector(cid) {
            Some(c) => vec![c],
            None => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    format!("connector {cid:?} not found"),
                );
            }
        },
        None => state.model.connectors(),
    };
    let mut out: BTreeMap<String, ConnectorWriteSummary> = BTreeMap::new();
    for c in connectors {
        let mut summary = ConnectorWriteSummary::default();
        for (identity, writes) in c.ground_truth_all() {
            let d = DeviceWriteSummary::of(&writes);
            summary.total_writes += d.count;
            summary.devices_written += usize::from(d.count > 0);
            summary.devices_written_more_than_once += usize::from(d.count > 1);
            summary.devices.insert(identity, d);
        }
        out.insert(c.id().to_string(), summary);
    }
    axum::Json(serde_json::json!({ "connectors": out })).into_response()
}

async fn requests_report(State(state): State<AdminState>) -> Response {
    axum::Json(state.requests.report()).into_response()
}

async fn reset_requests(State(state): State<AdminState>) -> StatusCode {
    state.requests.reset_tallies();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(state): State<AdminState>) -> Response {
    axum::Json(serde_json::json!({
        "config": state.faults.config(),
        "counts": state.faults.counts(),
    }))
    .into_response()
}

async fn put_faults(State(state): State<AdminState>, body: Bytes) -> Response {
    let config: FaultConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a fault setting: {e}"),
            );
        }
    };
    match state.faults.set_config(config) {
        Ok(()) => axum::Json(serde_json::json!({
            "config": state.faults.config(),
            "counts": state.faults.counts(),
        }))
        .into_response(),
        Err(e) => json_error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn webhooks(State(state): State<AdminState>) -> Response {
    match &state.webhook {
        Some(stats) => axum::Json(serde_json::json!({
            "enabled": true,
            "stats": stats.snapshot(),
        }))
        .into_response(),
        None => axum::Json(serde_json::json!({"enabled": false})).into_response(),
    }
}
