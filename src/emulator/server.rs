//! One HTTP listener for the whole emulator: the device API at `/` (chosen by `Host`), the
//! management API under `/api:1/`, the object store under `/objectstore/`, and the places
//! where ExoSense GraphQL (`/api/graphql`), the admin endpoints and `/metrics` plug in.
//!
//! The accept loop is the shared one (`crate::net::server`, with the emulator's limits:
//! [`default_limits`]), not `axum::serve`, for two reasons: its limits (header and body
//! timeouts that never cut a long poll, a connection cap of at least 10,000 devices, a cap on
//! bodies in flight, a backoff on accept errors), and because a handler (or a middleware such
//! as fault injection) can ask for the connection to be closed without any response, as the
//! platform does for an unknown host (exosite-platform.md §3.1). It does so by putting a
//! [`CloseConnection`] marker in the response extensions; the service then fails the request,
//! and hyper drops the connection without writing a byte.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::model::Model;
use crate::net::server::{self as net, Handshake, Limits, ListenerMetrics, Plain, Setup};

/// Format of the long poll's `Last-Modified` header (exosite-platform.md §3.9, flag
/// `last_modified_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LastModifiedFormat {
    /// `Fri, 15 Jun 2018 19:04:13 GMT` (the default).
    #[default]
    HttpDate,
    /// Unix seconds, `1408088412`.
    Unix,
}

/// Behaviour switches of the HTTP APIs.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Connector served for requests whose `Host` is an IP address or `localhost`
    /// (flag `default_connector`). Unset: such device API requests are closed without response.
    pub default_connector: Option<String>,
    /// `Last-Modified` format of long-poll answers.
    pub last_modified_format: LastModifiedFormat,
    /// Reproduce the platform bug MUR-10697: set state of an unknown identity answers `204`.
    pub set_state_unknown_204: bool,
}

/// What every handler gets: the model and the options.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The platform model.
    pub model: Arc<Model>,
    /// The options.
    pub options: Arc<ServerOptions>,
}

/// Put this in a response's extensions to close the connection without sending the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloseConnection;

impl CloseConnection {
    /// A response that closes the connection instead of being sent.
    pub fn response() -> Response {
        let mut r = StatusCode::BAD_REQUEST.into_response();
        r.extensions_mut().insert(CloseConnection);
        r
    }
}

/// Path of ExoSense GraphQL (the edges helper's router is merged at this path).
pub const GRAPHQL_PATH: &str = "/api/graphql";
/// Prefix of the management API.
pub const MANAGEMENT_PREFIX: &str = "/api:1";
/// Prefix of the admin endpoints.
pub const ADMIN_PREFIX: &str = "/admin";

/// The emulator's complete router.
///
/// Plug-in places (edges helper): fault injection is a `.layer()` on the management router
/// (see [`super::management::router`]); GraphQL, admin and metrics are `.merge()`d below
/// before the device API fallback.
pub fn router(state: AppState) -> Router {
    let management = super::management::router(state.clone());
    Router::new()
        .nest(MANAGEMENT_PREFIX, management)
        .merge(super::object_store::router(state.clone()))
        // GraphQL (/api/graphql), admin (/admin/...) and /metrics merge here.
        .fallback_service(super::device_api::router(state))
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on (the real port when started with port 0).
    pub local_addr: SocketAddr,
    /// `http://<local_addr>`.
    pub base_url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets open requests finish (long polls are cut after a grace period)
    /// and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Header timeout of the emulator's listeners: a device sends its request at once; an idle
/// keep-alive connection is closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Body timeout of the emulator's listeners: room for the largest upload over loopback.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(120);
/// Connections the emulator's listeners hold at once: a simulated or real fleet of 10,000
/// devices each holding a long poll, with room to spare (the process needs as many file
/// descriptors: raise `ulimit -n`).
pub const MAX_CONNECTIONS: usize = 16_384;
/// Request bodies received at once (device writes are small and quick).
pub const MAX_BODIES_IN_FLIGHT: usize = 1_024;
/// Largest request head of the emulator's listeners: the operator's upload-form request
/// carries a package's tags in its query, one per targeted device (1,000 by default), up to
/// the 64 KiB a URI may have, plus its headers.
pub const MAX_HEADER_BYTES: usize = 128 * 1024;
/// The listener name (`listener` label) of the plain HTTP listener.
pub const HTTP_LISTENER: &str = "http";

/// The emulator listeners' default limits; the largest body is the largest upload of
/// `model` (its content limit plus 1 MiB of form fields).
pub fn default_limits(model: &Model) -> Limits {
    limits_for_uploads(model.config().content_max_bytes)
}

/// The emulator listeners' default limits for uploads of at most `content_max_bytes`.
pub fn limits_for_uploads(content_max_bytes: usize) -> Limits {
    Limits {
        header_timeout: HEADER_TIMEOUT,
        body_timeout: BODY_TIMEOUT,
        max_connections: MAX_CONNECTIONS,
        max_bodies_in_flight: MAX_BODIES_IN_FLIGHT,
        max_body_bytes: content_max_bytes.saturating_add(1 << 20) as u64,
        max_header_bytes: MAX_HEADER_BYTES,
    }
}

/// How a listener of the emulator is set up: its limits and where it counts refusals.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// The limits.
    pub limits: Limits,
    /// `otau_emulator_listener_refused_total` and `otau_emulator_listener_connections` once
    /// registered (see [`crate::emulator::admin::RequestMetrics::registry`]).
    pub metrics: ListenerMetrics,
}

impl ListenerOptions {
    /// [`default_limits`] of `model`, counted in metrics no registry shows.
    pub fn defaults(model: &Model) -> ListenerOptions {
        ListenerOptions::with_limits(default_limits(model))
    }

    /// `limits`, counted in metrics no registry shows.
    pub fn with_limits(limits: Limits) -> ListenerOptions {
        ListenerOptions {
            limits,
            metrics: ListenerMetrics::new("").expect("the listener metrics' names are valid"),
        }
    }
}

/// Binds `addr` (port 0 picks a free port), sets the model's public URL and serves
/// [`router`] in a background task.
pub async fn start(addr: SocketAddr, state: AppState) -> std::io::Result<RunningServer> {
    let app = router(state.clone());
    start_with_router(addr, state, app).await
}

/// Like [`start`], with a router the caller extended (GraphQL, admin, faults).
pub async fn start_with_router(
    addr: SocketAddr,
    state: AppState,
    app: Router,
) -> std::io::Result<RunningServer> {
    let listener = ListenerOptions::defaults(&state.model);
    start_with(addr, state, app, listener).await
}

/// Like [`start_with_router`], with the listener's limits and metrics.
pub async fn start_with(
    addr: SocketAddr,
    state: AppState,
    app: Router,
    listener_options: ListenerOptions,
) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let base_url = format!("http://{local_addr}");
    state.model.set_public_url(&base_url);
    let (stop, stopped) = watch::channel(false);
    let setup = Setup {
        name: HTTP_LISTENER,
        limits: listener_options.limits,
        metrics: listener_options.metrics,
    };
    let task = tokio::spawn(serve(listener, setup, Plain, app, wait_true(stopped)));
    Ok(RunningServer {
        local_addr,
        base_url,
        stop,
        task,
    })
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: stop as well.
    let _ = rx.wait_for(|v| *v).await;
}

/// Serves `app` on `listener` (after `handshake`, e.g. TLS) with the limits of `setup` until
/// `shutdown` completes, then drains open connections for a grace period (long polls are cut
/// after it).
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    setup: Setup,
    handshake: H,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    net::serve(
        listener,
        setup,
        handshake,
        move |remote| connection_service(app.clone(), remote),
        shutdown,
    )
    .await;
}

/// The error that makes hyper close a connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection closed without response")]
pub(crate) struct ClosedWithoutResponse;

/// The hyper service of one accepted connection (plain or TLS): the app with the peer's
/// address, closing the connection without a response when a fault rule asks for it.
pub(crate) fn connection_service(
    app: Router,
    remote: SocketAddr,
) -> impl hyper::service::Service<
    Request<Body>,
    Response = Response,
    Error = ClosedWithoutResponse,
    Future = impl Future<Output = Result<Response, ClosedWithoutResponse>> + Send,
> + Clone
+ Send
+ 'static {
    let inner = TowerToHyperService::new(app);
    hyper::service::service_fn(move |mut req: Request<Body>| {
        req.extensions_mut().insert(ConnectInfo(remote));
        let fut = hyper::service::Service::call(&inner, req);
        async move {
            let resp: Response = match fut.await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if resp.extensions().get::<CloseConnection>().is_some() {
                Err(ClosedWithoutResponse)
            } else {
                Ok(resp)
            }
        }
    })
}
