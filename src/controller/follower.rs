//! The push receiver of a follower (docs/leader-election.md "Followers: readiness, metrics,
//! push"): it forwards each request to the leader's receiver, whose URL the leader advertises
//! in the Lease, and returns the leader's answer.
//!
//! - A request that already carries [`FORWARDED_BY_HEADER`] is never forwarded again (no
//!   loops): `503` with `Retry-After: 1`.
//! - No leader URL known, or the forward fails (connection, timeout): `503` with
//!   `Retry-After: 1`, so the sender retries; the failure is logged with the URL, never the
//!   body.
//! - Forwarded: method, path and query, the body (at most [`BODY_LIMIT`]), `content-type` and
//!   the signature header, plus [`FORWARDED_BY_HEADER`] with this replica's identity.
//!
//! `otau_push_forwarded_total{outcome}` counts `forwarded`, `failed` and `no_leader`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use prometheus::{IntCounterVec, Opts, Registry};
use tokio::sync::watch;

use super::push::{BODY_LIMIT, SIGNATURE_HEADER};
use crate::net::server::{self, Setup};

/// The header a forwarding follower adds (its identity); a request carrying it is not
/// forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-otau-forwarded-by";
/// How long a forward to the leader may take.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// What a follower needs to forward pushes to the leader.
#[derive(Clone)]
pub struct Forwarding {
    /// This replica's identity, sent in [`FORWARDED_BY_HEADER`].
    pub identity: String,
    /// The push URL the leader advertises, as last read from the Lease.
    pub leader_url: watch::Receiver<Option<String>>,
    /// `otau_push_forwarded_total{outcome}`.
    pub forwarded: IntCounterVec,
}

/// Creates `otau_push_forwarded_total{outcome}` in `registry`, its three series at 0.
pub fn forwarded_counter(registry: &Registry) -> Result<IntCounterVec, prometheus::Error> {
    let counter = IntCounterVec::new(
        Opts::new(
            "otau_push_forwarded_total",
            "Pushes a follower received, by outcome: forwarded (the leader answered), failed \
             (the forward failed: 503 to the sender), no_leader (no leader URL known: 503).",
        ),
        &["outcome"],
    )?;
    for outcome in ["forwarded", "failed", "no_leader"] {
        counter.with_label_values(&[outcome]);
    }
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

struct FollowerState {
    forwarding: Forwarding,
    client: reqwest::Client,
}

/// Serves the follower's push receiver on `addr` until `stop` completes, with the push
/// listener's `setup` (its limits, the largest body [`BODY_LIMIT`]); the returned task ends
/// once the port is closed. Logs the bound address ("push receiver listening as a follower",
/// field `addr`).
pub async fn serve_follower_push(
    addr: SocketAddr,
    forwarding: Forwarding,
    setup: Setup,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let client = reqwest::Client::builder()
        .timeout(FORWARD_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build the HTTP client that forwards pushes: {e}"))?;
    let (listener, local) = super::push::bind(addr).await?;
    tracing::info!(addr = %local, "push receiver listening as a follower");
    let app = axum::Router::new()
        .fallback(forward)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(Arc::new(FollowerState { forwarding, client }));
    Ok(tokio::spawn(server::serve_router(
        listener, setup, app, stop,
    )))
}

/// `503` with `Retry-After: 1`.
fn retry_later(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        format!("{message}\n"),
    )
        .into_response()
}

async fn forward(
    State(state): State<Arc<FollowerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let count = |outcome: &str| {
        state
            .forwarding
            .forwarded
            .with_label_values(&[outcome])
            .inc();
    };
    if headers.contains_key(FORWARDED_BY_HEADER) {
        return retry_later(
            "this replica is a follower and the request was already forwarded once; the leader receives pushes",
        );
    }
    let Some(base) = state.forwarding.leader_url.borrow().clone() else {
        count("no_leader");
        return retry_later(
            "this replica is a follower and does not know the leader's push URL yet; the leader receives pushes",
        );
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut request = state
        .client
        .request(method, &url)
        .header(FORWARDED_BY_HEADER, state.forwarding.identity.as_str());
    for name in [header::CONTENT_TYPE.as_str(), SIGNATURE_HEADER] {
        for value in headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    let answered = match request.body(body).send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            answer
                .bytes()
                .await
                .map(|bytes| (status, content_type, bytes))
        }
        Err(e) => Err(e),
    };
    match answered {
        Ok((status, content_type, bytes)) => {
            count("forwarded");
            let mut response = (status, bytes).into_response();
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(e) => {
            count("failed");
            tracing::warn!(url = %url, error = %e.without_url(), "could not forward a push to the leader");
            retry_later("this replica is a follower and could not reach the leader; retry")
        }
    }
}
