//! The fault middleware.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use super::{Action, Faults, RouteInfo};
use crate::emulator::server::CloseConnection;

/// `router` with fault injection and the rate limit of `faults` in front of every route. Admin
/// routes and `/metrics` are never touched; other routes only as the rules say.
pub fn apply(router: Router, faults: Arc<Faults>) -> Router {
    router.layer(middleware::from_fn_with_state(faults, inject))
}

/// The middleware function behind [`apply`] (for `axum::middleware::from_fn_with_state`).
pub async fn inject(State(faults): State<Arc<Faults>>, req: Request, next: Next) -> Response {
    let route = RouteInfo::of(&req);
    let decision = faults.decide(&route);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    match decision.action {
        Action::Pass => next.run(req).await,
        Action::Drop => CloseConnection::response(),
        Action::Error(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            error_body(status, &format!("injected fault on route {}", route.name))
        }
        Action::Throttle { retry_after_secs } => too_many(
            retry_after_secs,
            &format!("injected throttle on route {}", route.name),
        ),
        Action::RateLimited { retry_after_secs } => too_many(
            retry_after_secs,
            &format!("rate limit of the {} API exceeded", route.api.as_str()),
        ),
    }
}

/// `{"statusCode", "message"}`, the management API's error shape (exosite-platform.md §5.6).
fn error_body(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"statusCode": status.as_u16(), "message": message});
    (status, axum::Json(body)).into_response()
}

fn too_many(retry_after_secs: u64, message: &str) -> Response {
    let mut resp = error_body(StatusCode::TOO_MANY_REQUESTS, message);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    resp
}
