//! One accept loop for every HTTP/1 listener: the operator's metrics and health server, its
//! push receiver (as leader and as follower), and the emulator's HTTP and HTTPS listeners; and
//! the same limits for HTTP connections another accept loop hands over ([`HandedOver`]: the
//! emulator's MQTT TLS port, HTTP by ALPN). It bounds what a client can make a listener hold,
//! whatever the client sends or fails to send (docs/security.md, "Listener limits"):
//!
//! - **Header timeout** ([`Limits::header_timeout`]): from the accept (a TLS handshake
//!   included), and again from the end of each response, a client has this long to deliver a
//!   request's complete headers; otherwise the connection is closed. This closes idle sockets,
//!   half-sent requests and idle keep-alive connections alike. It never bounds a handler: while
//!   a request is handled (a device's long poll waits up to 300 s) or its response is being
//!   sent, the clock is stopped.
//! - **Body timeout** ([`Limits::body_timeout`]): a request body must have arrived this long
//!   after its headers; reading it later fails with [`BodyRefusal::Timeout`].
//! - **Connection cap** ([`Limits::max_connections`]): one connection more is accepted and
//!   closed at once (see [`serve`] for why it is not left in the backlog).
//! - **Bodies in flight** ([`Limits::max_bodies_in_flight`]): requests whose body is being
//!   received at once; one more is answered `503` with `Retry-After: 1` before its body is
//!   read. With [`Limits::max_body_bytes`] this bounds the body bytes a listener buffers.
//! - **Body size** ([`Limits::max_body_bytes`]): a declared `Content-Length` over it is
//!   answered `413` at once; a chunked body that grows past it fails when read
//!   ([`BodyRefusal::TooLarge`]).
//! - **Header size** ([`Limits::max_header_bytes`]): a larger request head is answered `431`.
//! - **Accept errors** other than a connection's own (out of file descriptors, EMFILE or
//!   ENFILE; out of memory) back off from 50 ms, doubling up to 1 s, until an accept succeeds:
//!   a listener whose backlog holds connections it cannot accept would otherwise spin.
//!
//! Every refusal is counted in [`ListenerMetrics`] by listener and [`Refusal`] reason, with the
//! open connections per listener; the caller registers them in its own registry.

mod body;
mod connection;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::{Request, Response};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

pub use body::{BodyRefusal, body_refusal};

/// Header timeout of the operator's listeners.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Body timeout of the operator's listeners.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections one operator listener holds at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Request bodies one operator listener receives at once.
pub const DEFAULT_MAX_BODIES_IN_FLIGHT: usize = 32;
/// Largest request body of a listener that takes no bodies of its own (metrics and health).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;
/// Largest request head (request line and headers). hyper's floor is 8 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// How long open connections may run on after a stop is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First wait after an accept error that is not a connection's own.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// Longest wait between accept retries.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The limits of one listener. [`Limits::default`] holds the operator's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to deliver a request's complete headers, from the accept or the end of the
    /// previous response; never counts while a request is handled.
    pub header_timeout: Duration,
    /// Time for a request's body to arrive completely, from the end of its headers.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Requests with a body being received at once.
    pub max_bodies_in_flight: usize,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Largest request head (at least 8 KiB).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_bodies_in_flight: DEFAULT_MAX_BODIES_IN_FLIGHT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

impl Limits {
    /// The same limits with another largest body.
    pub fn with_max_body_bytes(self, max_body_bytes: u64) -> Limits {
        Limits {
            max_body_bytes,
            ..self
        }
    }

    /// Refuses limits that would stop a listener from serving anything: a zero timeout or
    /// cap; the message names the limit.
    pub fn check(&self) -> Result<(), String> {
        let zero = [
            ("header timeout", self.header_timeout.is_zero()),
            ("body timeout", self.body_timeout.is_zero()),
            ("connection cap", self.max_connections == 0),
            ("cap on bodies in flight", self.max_bodies_in_flight == 0),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(format!("the listener {name} must be above zero")),
            None => Ok(()),
        }
    }

    fn connection_permits(&self) -> usize {
        self.max_connections
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
    }

    fn body_permits(&self) -> usize {
        self.max_bodies_in_flight
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize))
    }
}

/// Why a listener refused a connection or a request: the `reason` label of
/// `*_listener_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A connection over [`Limits::max_connections`]: accepted and closed at once.
    ConnectionCap,
    /// An accept failed for want of resources (file descriptors, memory); the loop backs off.
    AcceptError,
    /// No complete request headers within [`Limits::header_timeout`] of the accept (TLS
    /// handshake included): the connection is closed.
    HeaderTimeout,
    /// A body still incomplete [`Limits::body_timeout`] after its headers.
    BodyTimeout,
    /// A body over [`Limits::max_body_bytes`] (`413`).
    BodyTooLarge,
    /// A request with a body over [`Limits::max_bodies_in_flight`] (`503`).
    BodiesInFlight,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 6] = [
        Refusal::ConnectionCap,
        Refusal::AcceptError,
        Refusal::HeaderTimeout,
        Refusal::BodyTimeout,
        Refusal::BodyTooLarge,
        Refusal::BodiesInFlight,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionCap => "connection_cap",
            Refusal::AcceptError => "accept_error",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BodiesInFlight => "bodies_in_flight",
        }
    }

    fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// The listeners' metrics, shared by every listener of a process: `<namespace>_listener_refused_total{listener,reason}`
/// and the gauge `<namespace>_listener_connections{listener}` (connections open now).
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    refused: IntCounterVec,
    connections: IntGaugeVec,
}

impl ListenerMetrics {
    /// The two metrics, named under `namespace` (`otau` gives `otau_listener_refused_total`;
    /// an empty namespace leaves the prefix to a registry that adds its own).
    pub fn new(namespace: &str) -> Result<ListenerMetrics, prometheus::Error> {
        let refused = IntCounterVec::new(
            Opts::new(
                "listener_refused_total",
                "Connections and requests a listener refused, by listener and reason: \
                 connection_cap, accept_error, header_timeout, body_timeout, body_too_large, \
                 bodies_in_flight.",
            )
            .namespace(namespace),
            &["listener", "reason"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "listener_connections",
                "Connections a listener holds open now.",
            )
            .namespace(namespace),
            &["listener"],
        )?;
        Ok(ListenerMetrics {
            refused,
            connections,
        })
    }

    /// Registers both metrics in `registry`.
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.refused.clone()))?;
        registry.register(Box::new(self.connections.clone()))
    }

    /// Refusals of `listener` for `reason` so far.
    pub fn refused(&self, listener: &str, reason: Refusal) -> u64 {
        self.refused
            .with_label_values(&[listener, reason.label()])
            .get()
    }

    /// Connections `listener` holds open now.
    pub fn connections(&self, listener: &str) -> i64 {
        self.connections.with_label_values(&[listener]).get()
    }

    /// The series of one listener, every reason at 0 from the start.
    fn counters(&self, listener: &str) -> Counters {
        Counters {
            refused: Refusal::ALL
                .iter()
                .map(|r| self.refused.with_label_values(&[listener, r.label()]))
                .collect(),
            open: self.connections.with_label_values(&[listener]),
        }
    }
}

/// One listener's series.
#[derive(Debug, Clone)]
struct Counters {
    refused: Vec<IntCounter>,
    open: IntGauge,
}

impl Counters {
    fn count(&self, reason: Refusal) {
        if let Some(counter) = self.refused.get(reason.index()) {
            counter.inc();
        }
    }
}

/// One listener: its name (the `listener` label), its limits and the metrics it counts into.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `listener` label: `metrics`, `push`, `http`, `https`, ...
    pub name: &'static str,
    /// Its limits.
    pub limits: Limits,
    /// Where its refusals and open connections are counted.
    pub metrics: ListenerMetrics,
}

/// What a listener does to a freshly accepted TCP stream before HTTP is spoken on it: nothing
/// ([`Plain`]) or a TLS handshake. It runs under the header timeout.
pub trait Handshake: Clone + Send + Sync + 'static {
    /// The stream HTTP is spoken on.
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// Turns the accepted stream into [`Handshake::Io`].
    fn handshake(
        &self,
        stream: TcpStream,
    ) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

/// Plain HTTP: the TCP stream as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    async fn handshake(&self, stream: TcpStream) -> std::io::Result<TcpStream> {
        Ok(stream)
    }
}

/// What every connection of one listener shares.
pub(crate) struct Shared {
    limits: Limits,
    counters: Counters,
    bodies: Arc<Semaphore>,
}

/// Serves `router` on `listener` over plain HTTP until `shutdown` completes (see [`serve`]).
pub async fn serve_router(
    listener: TcpListener,
    setup: Setup,
    router: axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    let make =
        move |_remote: SocketAddr| hyper_util::service::TowerToHyperService::new(router.clone());
    serve(listener, setup, Plain, make, shutdown).await;
}

/// Serves HTTP/1 on `listener` until `shutdown` completes, then stops accepting, lets open
/// requests finish for up to [`SHUTDOWN_GRACE`] and closes what is left. `make_service` gives
/// the service of each accepted connection (it gets the peer's address); a service error
/// closes the connection without a response.
///
/// Over the connection cap, a connection is accepted and closed at once rather than left in
/// the kernel's backlog: the client learns at once (a sender retries or gives up) instead of
/// waiting for its own connect timeout, the refusal is counted, and the backlog keeps moving,
/// so connections that arrive after others closed are served in order. Left in the backlog,
/// refused connections would cost no file descriptor, but the backlog would fill, further
/// connection attempts would be dropped by the kernel, and nothing would show why. Accepting
/// costs one file descriptor for a moment per refused connection.
pub async fn serve<H, M, S>(
    listener: TcpListener,
    setup: Setup,
    handshake: H,
    make_service: M,
    shutdown: impl Future<Output = ()>,
) where
    H: Handshake,
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let limits = setup.limits;
    let shared = Arc::new(Shared {
        limits,
        counters: setup.metrics.counters(setup.name),
        bodies: Arc::new(Semaphore::new(limits.body_permits())),
    });
    let slots = Arc::new(Semaphore::new(limits.connection_permits()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, remote)) => {
                backoff.succeeded();
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    shared.counters.count(Refusal::ConnectionCap);
                    tracing::debug!(listener = setup.name, %remote, "over the connection cap: closed");
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let open = connection::OpenGauge::new(&shared.counters.open);
                let task = connection::Connection {
                    shared: shared.clone(),
                    state: Arc::default(),
                    stop: stop_rx.clone(),
                };
                let service = make_service(remote);
                let handshake = handshake.clone();
                tokio::spawn(async move {
                    task.run(stream, remote, handshake, service).await;
                    drop((slot, open));
                });
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(listener = setup.name, error = %e, "accept: connection failed");
            }
            Err(e) => {
                shared.counters.count(Refusal::AcceptError);
                let wait = backoff.failed(setup.name, &e);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut shutdown => break,
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it ends; they end within the grace.
    let all = u32::try_from(limits.connection_permits()).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(
        SHUTDOWN_GRACE + Duration::from_secs(1),
        slots.acquire_many(all),
    )
    .await;
}

/// The limits of one listener for connections another accept loop accepted and handed over
/// after its own handshake: the emulator's MQTT TLS port hands over those that chose HTTP by
/// ALPN. Each request gets what [`serve`] gives its own connections (header and body timeouts,
/// the cap on bodies in flight, which all handed-over connections share, the body and head
/// sizes), counted in the listener's metrics with its open connections; the connection cap and
/// the accept backoff are the other loop's.
#[derive(Clone)]
pub struct HandedOver {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HandedOver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedOver")
            .field("limits", &self.shared.limits)
            .finish()
    }
}

impl HandedOver {
    /// The listener `setup` names, for connections accepted elsewhere.
    pub fn new(setup: Setup) -> HandedOver {
        let limits = setup.limits;
        HandedOver {
            shared: Arc::new(Shared {
                limits,
                counters: setup.metrics.counters(setup.name),
                bodies: Arc::new(Semaphore::new(limits.body_permits())),
            }),
        }
    }

    /// Serves HTTP/1 on `io` with `service` until the connection ends, waits longer than the
    /// header timeout for a request's headers (from now, or from the end of a response), or
    /// `stop` turns true (then open requests get [`SHUTDOWN_GRACE`]).
    pub async fn serve<Io, S>(
        &self,
        io: Io,
        remote: SocketAddr,
        service: S,
        stop: watch::Receiver<bool>,
    ) where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let _open = connection::OpenGauge::new(&self.shared.counters.open);
        let connection = connection::Connection {
            shared: self.shared.clone(),
            state: Arc::default(),
            stop,
        };
        connection.serve(io, remote, service).await;
    }
}

/// Whether an accept error belongs to one connection (the peer went away before the accept):
/// the loop goes on at once.
pub(crate) fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// The wait after accept errors: from [`ACCEPT_BACKOFF_FIRST`], doubling, at most
/// [`ACCEPT_BACKOFF_MAX`]; back to the start after an accept succeeds.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    next: Option<Duration>,
}

impl AcceptBackoff {
    pub(crate) fn succeeded(&mut self) {
        self.next = None;
    }

    /// The wait before the next accept; logs the first error of a run at warn.
    pub(crate) fn failed(&mut self, listener: &str, e: &std::io::Error) -> Duration {
        let wait = self.next.unwrap_or(ACCEPT_BACKOFF_FIRST);
        if self.next.is_none() {
            tracing::warn!(listener, error = %e, "accept failed (out of file descriptors or memory?): backing off until an accept succeeds");
        } else {
            tracing::debug!(listener, error = %e, wait_ms = wait.as_millis() as u64, "accept failed again");
        }
        self.next = Some((wait * 2).min(ACCEPT_BACKOFF_MAX));
        wait
    }
}

#[cfg(test)]
mod tests;
