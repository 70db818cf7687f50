//! The operator's HTTP server: `/metrics` (Prometheus text), `/livez` (the process answers)
//! and `/readyz` (the controllers' caches have synced; with leader election, also ready as a
//! follower once the Lease is known to be held by another replica).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Metrics;
use super::leader::Role;

const NO_ELECTION: u8 = 0;
const LEASE_UNKNOWN: u8 = 1;
const FOLLOWER: u8 = 2;
const LEADER: u8 = 3;

/// Readiness, turned on once every controller's cache has synced, or, with leader election,
/// once this replica knows it is a follower.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    lease: AtomicU8,
}

impl Health {
    /// With leader election: not ready until the Lease's state is known.
    pub fn elect(&self) {
        self.lease.store(LEASE_UNKNOWN, Ordering::SeqCst);
    }

    /// Records this replica's role in the leader election.
    pub fn set_role(&self, role: &Role) {
        let value = match role {
            Role::Unknown => LEASE_UNKNOWN,
            Role::Follower(_) => FOLLOWER,
            Role::Leader => LEADER,
        };
        self.lease.store(value, Ordering::SeqCst);
    }

    /// Marks the operator ready.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether the operator is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct ServerState {
    metrics: Metrics,
    health: Arc<Health>,
}

/// The routes.
pub fn router(metrics: Metrics, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(ServerState { metrics, health })
}

async fn render_metrics(State(state): State<ServerState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn readyz(State(state): State<ServerState>) -> Response {
    match state.health.lease.load(Ordering::SeqCst) {
        LEASE_UNKNOWN => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "waiting to learn who holds the leader lease\n",
            )
                .into_response();
        }
        FOLLOWER => {
            return (
                StatusCode::OK,
                "ok: follower (another replica holds the leader lease)\n",
            )
                .into_response();
        }
        NO_ELECTION | LEADER => {}
        _ => {}
    }
    if state.health.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the controllers' caches to sync\n",
        )
            .into_response()
    }
}
