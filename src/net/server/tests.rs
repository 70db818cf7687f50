//! The accept loop over real loopback sockets, with a small router: each limit against the
//! client behaviour it is there for.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::*;

/// How long a test waits for something that must happen.
const DEADLINE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    metrics: ListenerMetrics,
    _stop: oneshot::Sender<()>,
}

impl Running {
    fn refused(&self, reason: Refusal) -> u64 {
        self.metrics.refused("test", reason)
    }
}

async fn echo(body: Body) -> axum::response::Response {
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => format!("{}\n", bytes.len()).into_response(),
        Err(e) => match body_refusal(&e) {
            Some(BodyRefusal::Timeout) => StatusCode::REQUEST_TIMEOUT.into_response(),
            Some(BodyRefusal::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
            None => StatusCode::BAD_REQUEST.into_response(),
        },
    }
}

async fn start(limits: Limits) -> Running {
    let app = Router::new()
        .route("/", get(|| async { "ok\n" }))
        .route(
            "/slow",
            get(|| async {
                // The handler's own time (a long poll): the header timeout must not cut it.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "done\n"
            }),
        )
        .route("/echo", post(echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = ListenerMetrics::new("test").expect("metrics");
    let setup = Setup {
        name: "test",
        limits,
        metrics: metrics.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_router(listener, setup, app, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        metrics,
        _stop: stop,
    }
}

fn limits(header_timeout_ms: u64) -> Limits {
    Limits {
        header_timeout: Duration::from_millis(header_timeout_ms),
        ..Limits::default()
    }
}

/// Reads until the peer closes (or resets) the connection; what was read, and when it ended.
async fn read_until_closed(stream: &mut TcpStream) -> (String, Instant) {
    let mut text = Vec::new();
    let read = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection was still open after {DEADLINE:?}; read so far: {:?}",
        String::from_utf8_lossy(&text)
    );
    (String::from_utf8_lossy(&text).into_owned(), Instant::now())
}

/// Waits (with a deadline) until `reason` was counted `n` times.
async fn wait_counted(running: &Running, reason: Refusal, n: u64) {
    let start = Instant::now();
    while running.refused(reason) < n {
        assert!(
            start.elapsed() < DEADLINE,
            "{} counted {} times, expected {n}",
            reason.label(),
            running.refused(reason)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let running = start(limits(300)).await;
    let opened = Instant::now();
    let mut idle = TcpStream::connect(running.addr).await.expect("connect");
    let (text, closed) = read_until_closed(&mut idle).await;
    assert_eq!(text, "", "closed without an answer");
    let after = closed - opened;
    assert!(
        after >= Duration::from_millis(300),
        "closed after {after:?}"
    );
    wait_counted(&running, Refusal::HeaderTimeout, 1).await;
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_timeout() {
    let running = start(limits(300)).await;
    let mut slow = TcpStream::connect(running.addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nX-Drip: ")
        .await
        .expect("write");
    let (text, _) = read_until_closed(&mut slow).await;
    assert_eq!(text, "");
    wait_counted(&running, Refusal::HeaderTimeout, 1).await;
}

#[tokio::test]
async fn a_handler_that_runs_longer_than_the_header_timeout_is_not_cut() {
    // The handler takes 1.5 s, five header timeouts.
    let running = start(limits(300)).await;
    let mut client = TcpStream::connect(running.addr).await.expect("connect");
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (text, _) = read_until_closed(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("done\n"), "{text}");
    assert_eq!(running.refused(Refusal::HeaderTimeout), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_without_counting_a_refusal() {
    let running = start(limits(300)).await;
    let mut client = TcpStream::connect(running.addr).await.expect("connect");
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("write");
    let (text, _) = read_until_closed(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(running.refused(Refusal::HeaderTimeout), 0);
}

#[tokio::test]
async fn a_body_slower_than_the_body_timeout_is_refused() {
    let running = start(Limits {
        body_timeout: Duration::from_millis(300),
        ..limits(5000)
    })
    .await;
    let mut client = TcpStream::connect(running.addr).await.expect("connect");
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    let (text, _) = read_until_closed(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(running.refused(Refusal::BodyTimeout), 1);
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_answered_413_before_it_is_sent() {
    let running = start(limits(5000).with_max_body_bytes(1000)).await;
    let mut client = TcpStream::connect(running.addr).await.expect("connect");
    client
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 1001\r\n\r\n")
        .await
        .expect("write");
    let (text, _) = read_until_closed(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert_eq!(running.refused(Refusal::BodyTooLarge), 1);
}

#[tokio::test]
async fn a_chunked_body_that_grows_over_the_limit_fails_when_read() {
    let running = start(limits(5000).with_max_body_bytes(10)).await;
    let mut client = TcpStream::connect(running.addr).await.expect("connect");
    client
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n0\r\n\r\n",
        )
        .await
        .expect("write");
    let (text, _) = read_until_closed(&mut client).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(running.refused(Refusal::BodyTooLarge), 1);
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_counted() {
    let running = start(Limits {
        max_connections: 3,
        ..limits(30_000)
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(running.addr).await.expect("connect"));
    }
    // The listener has taken the three (the gauge), so the next one is over the cap.
    let start = Instant::now();
    while running.metrics.connections("test") < 3 {
        assert!(
            start.elapsed() < DEADLINE,
            "the three connections were not accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut over = TcpStream::connect(running.addr).await.expect("connect");
    let (text, _) = read_until_closed(&mut over).await;
    assert_eq!(text, "");
    assert_eq!(running.refused(Refusal::ConnectionCap), 1);
    // One closes: a new connection is served.
    drop(held.pop());
    let start = Instant::now();
    while running.metrics.connections("test") > 2 {
        assert!(
            start.elapsed() < DEADLINE,
            "the closed connection was not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut next = TcpStream::connect(running.addr).await.expect("connect");
    next.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (text, _) = read_until_closed(&mut next).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn a_body_over_the_cap_on_bodies_in_flight_is_answered_503_before_it_is_read() {
    let running = start(Limits {
        max_bodies_in_flight: 1,
        body_timeout: Duration::from_secs(3),
        ..limits(30_000)
    })
    .await;
    // The first body arrives slowly and holds the only slot.
    let mut first = TcpStream::connect(running.addr).await.expect("connect");
    first
        .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .expect("write");
    let mut answer = String::new();
    let start = Instant::now();
    while !answer.starts_with("HTTP/1.1 503") {
        assert!(
            start.elapsed() < DEADLINE,
            "no 503 for the second body: {answer}"
        );
        let mut second = TcpStream::connect(running.addr).await.expect("connect");
        second
            .write_all(b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\n")
            .await
            .expect("write");
        answer = read_until_closed(&mut second).await.0;
    }
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(running.refused(Refusal::BodiesInFlight) >= 1);
    // The first one completes its body and is answered.
    first.write_all(b"56789").await.expect("write");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, first.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn limits_with_a_zero_are_refused_by_name() {
    assert_eq!(Limits::default().check(), Ok(()));
    let zero = Limits {
        max_connections: 0,
        ..Limits::default()
    };
    assert!(zero.check().unwrap_err().contains("connection cap"));
    let zero = Limits {
        body_timeout: Duration::ZERO,
        ..Limits::default()
    };
    assert!(zero.check().unwrap_err().contains("body timeout"));
}

#[test]
fn accept_backoff_doubles_up_to_a_second_and_restarts_after_a_success() {
    let mut backoff = AcceptBackoff::default();
    let e = std::io::Error::other("EMFILE");
    let waits: Vec<u64> = (0..7)
        .map(|_| backoff.failed("test", &e).as_millis() as u64)
        .collect();
    assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
    backoff.succeeded();
    assert_eq!(backoff.failed("test", &e), ACCEPT_BACKOFF_FIRST);
}
