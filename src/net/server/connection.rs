//! One accepted connection: the handshake under the header timeout, hyper's HTTP/1 on it, the
//! watch that closes it when no complete request headers arrive in time, and the service
//! wrapper that applies the body limits and stops that watch while a request is handled.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::body::LimitedBody;
use super::{Handshake, Refusal, SHUTDOWN_GRACE, Shared};

/// Counts a connection in the open-connections gauge while it lives.
pub(super) struct OpenGauge(IntGauge);

impl OpenGauge {
    pub(super) fn new(gauge: &IntGauge) -> OpenGauge {
        gauge.inc();
        OpenGauge(gauge.clone())
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Whether a request is being handled, and since when the connection waits for headers.
#[derive(Debug)]
pub(super) struct ConnState {
    busy: AtomicUsize,
    idle_since: Mutex<Instant>,
    served: AtomicU64,
    changed: Notify,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            served: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }
}

impl ConnState {
    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completes once the connection has waited `timeout` for request headers with no
    /// request in hand: from the accept, or from the end of the last response.
    async fn waited_too_long_for_headers(&self, timeout: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.busy.load(Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            let deadline = self.idle_since() + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

/// A request in hand, from its complete headers until its response has been sent (or
/// dropped): the header timeout does not count meanwhile.
pub(super) struct Busy(Arc<ConnState>);

impl Busy {
    fn start(state: &Arc<ConnState>) -> Busy {
        state.busy.fetch_add(1, Ordering::SeqCst);
        state.changed.notify_waiters();
        Busy(state.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.served.fetch_add(1, Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

/// A response body that keeps its request [`Busy`] until it has been sent or dropped.
pub(super) struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The service of one connection: refuses a body over the limits before it is read, hands
/// the rest to `inner` with a [`LimitedBody`].
pub(super) struct Limited<S> {
    inner: S,
    state: Arc<ConnState>,
    shared: Arc<Shared>,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<Response<Guarded>, E>> + Send>>;

impl<S> hyper::service::Service<Request<Incoming>> for Limited<S>
where
    S: hyper::service::Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Guarded>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = Busy::start(&self.state);
        let slot = match self.body_slot(request.body()) {
            Ok(slot) => slot,
            Err(refusal) => {
                self.shared.counters.count(refusal);
                let response =
                    refusal_response(refusal).map(|inner| Guarded { inner, _busy: busy });
                return Box::pin(std::future::ready(Ok(response)));
            }
        };
        let (parts, body) = request.into_parts();
        let body = Body::new(LimitedBody::new(body, slot, self.shared.clone()));
        let answer = self.inner.call(Request::from_parts(parts, body));
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|inner| Guarded { inner, _busy: busy }))
        })
    }
}

impl<S> Limited<S> {
    /// The body slot a request with a body holds while its body is received; `None` for a
    /// request without one. Refused: a declared length over the largest body, or every slot
    /// taken.
    fn body_slot(&self, body: &Incoming) -> Result<Option<OwnedSemaphorePermit>, Refusal> {
        if body.is_end_stream() {
            return Ok(None);
        }
        if body
            .size_hint()
            .exact()
            .is_some_and(|declared| declared > self.shared.limits.max_body_bytes)
        {
            return Err(Refusal::BodyTooLarge);
        }
        self.shared
            .bodies
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| Refusal::BodiesInFlight)
    }
}

/// The answer to a request refused before its body is read; the connection closes after it
/// (the body is left unread).
fn refusal_response(refusal: Refusal) -> Response<Body> {
    let (status, message) = match refusal {
        Refusal::BodyTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than this listener accepts\n",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests are sending a body at once; retry\n",
        ),
    };
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// One accepted connection: the listener's limits and counters, its own request state, and
/// the listener's stop signal.
pub(super) struct Connection {
    pub(super) shared: Arc<Shared>,
    pub(super) state: Arc<ConnState>,
    pub(super) stop: watch::Receiver<bool>,
}

/// How serving a connection ended.
enum Ended {
    /// hyper finished (the peer closed, or an error).
    Served(Result<(), hyper::Error>),
    /// No complete request headers in time.
    HeaderTimeout,
    /// The listener stops.
    Stopping,
}

impl Connection {
    /// Runs the handshake and serves HTTP/1 until the connection ends, waits too long for
    /// headers, or the listener stops (then open requests get [`SHUTDOWN_GRACE`]).
    pub(super) async fn run<H, S>(
        mut self,
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
        handshake: H,
        inner: S,
    ) where
        H: Handshake,
        S: hyper::service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let limits = self.shared.limits;
        let shaken = tokio::select! {
            shaken = tokio::time::timeout(limits.header_timeout, handshake.handshake(stream)) => shaken,
            _ = self.stop.wait_for(|stop| *stop) => return,
        };
        let io = match shaken {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %remote, "handshake failed");
                return;
            }
            Err(_) => {
                self.shared.counters.count(Refusal::HeaderTimeout);
                tracing::debug!(%remote, "handshake timed out");
                return;
            }
        };
        self.serve(io, remote, inner).await;
    }

    /// Serves HTTP/1 on `io` (handshake done) under the listener's limits until the connection
    /// ends, waits too long for headers, or the listener stops (then open requests get
    /// [`SHUTDOWN_GRACE`]).
    pub(super) async fn serve<Io, S>(mut self, io: Io, remote: SocketAddr, inner: S)
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        let limits = self.shared.limits;
        let service = Limited {
            inner,
            state: self.state.clone(),
            shared: self.shared.clone(),
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(limits.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let ended = tokio::select! {
            served = conn.as_mut() => Ended::Served(served),
            () = self.state.waited_too_long_for_headers(limits.header_timeout) => Ended::HeaderTimeout,
            _ = self.stop.wait_for(|stop| *stop) => Ended::Stopping,
        };
        let served = match ended {
            Ended::Served(served) => served,
            Ended::HeaderTimeout => {
                // A connection that never completed a request was refused; one that goes
                // idle after its responses is simply closed.
                if self.state.served.load(Ordering::SeqCst) == 0 {
                    self.shared.counters.count(Refusal::HeaderTimeout);
                }
                tracing::debug!(%remote, "no complete request headers in time: closed");
                return;
            }
            Ended::Stopping => {
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                    Ok(served) => served,
                    Err(_) => return,
                }
            }
        };
        if let Err(e) = served {
            tracing::debug!(error = %e, %remote, "connection ended");
        }
    }
}
