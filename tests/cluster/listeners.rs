//! The operator's listeners (metrics and health, push) as a process, attacked over loopback
//! sockets: connections that send nothing or half a request are closed after the header
//! timeout, connections over the cap are closed at once and counted, and `/readyz` keeps
//! answering quickly while the push port is saturated (docs/security.md, "Listener limits").
//!
//! The limits are set through the environment (`OTAU_LISTENER_*`), so the same test runs
//! against a binary that does not know them: it then fails on what it checks, not on a flag.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::ControlPlane;
use crate::support::process::{OperatorProcess, operator_command};
use crate::support::raw_http::closed_within;

const DEADLINE: Duration = Duration::from_secs(90);

/// Starts the operator for `namespace` with its push receiver on 127.0.0.1:0 and `env`; the
/// process and the push address.
async fn operator(
    cp: &ControlPlane,
    namespace: &str,
    env: &[(&str, &str)],
) -> (OperatorProcess, SocketAddr) {
    let mut command = operator_command(cp.kubeconfig());
    command
        .args(["--watch-namespace", namespace])
        .args(["--push-addr", "127.0.0.1:0"])
        .envs(env.iter().copied());
    let mut op = OperatorProcess::start(&mut command, DEADLINE).await;
    let push = op
        .wait_logged_addr(&["push receiver listening"], DEADLINE)
        .await;
    (op, push)
}

/// The value of one series in the Prometheus text, 0 when absent.
fn series(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `GET /readyz` on a fresh connection; its status line and how long it took.
async fn readyz(addr: SocketAddr) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let text = closed_within(&mut stream, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_after_the_header_timeout() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("listener-timeouts").await;
    let (op, push) = operator(cp, &ns, &[("OTAU_LISTENER_HEADER_TIMEOUT", "1s")]).await;
    let mut idle = Vec::new();
    for addr in [op.metrics_addr, push] {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
        let mut half = TcpStream::connect(addr).await.expect("connect");
        half.write_all(b"POST /hooks/device2 HTTP/1.1\r\nHost: test\r\nX-Slow: ")
            .await
            .expect("write");
        idle.push(half);
    }
    // One header timeout plus room for a busy machine: a minute-long hold fails.
    for (i, stream) in idle.iter_mut().enumerate() {
        let closed = closed_within(stream, Duration::from_secs(15)).await;
        assert_eq!(
            closed.as_deref(),
            Some(""),
            "connection {i} was not closed without an answer within 15 s of a 1 s header timeout"
        );
    }
    let metrics = op.metrics().await;
    for listener in ["metrics", "push"] {
        let refused = series(
            &metrics,
            &format!(
                r#"otau_listener_refused_total{{listener="{listener}",reason="header_timeout"}}"#
            ),
        );
        assert_eq!(
            refused, 2.0,
            "{listener}: {refused} header timeouts counted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_closed_at_once_and_readyz_stays_fast() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("listener-cap").await;
    const CAP: usize = 40;
    const OVER: usize = 25;
    let (op, push) = operator(
        cp,
        &ns,
        &[
            ("OTAU_LISTENER_MAX_CONNECTIONS", &CAP.to_string()),
            ("OTAU_LISTENER_HEADER_TIMEOUT", "20s"),
        ],
    )
    .await;
    // The listener accepts in the order of the connections: these take the cap.
    let mut held = Vec::new();
    for _ in 0..CAP {
        held.push(TcpStream::connect(push).await.expect("connect"));
    }
    let started = Instant::now();
    for i in 0..OVER {
        let mut over = TcpStream::connect(push).await.expect("connect");
        let closed = closed_within(&mut over, Duration::from_secs(10)).await;
        assert_eq!(
            closed.as_deref(),
            Some(""),
            "connection {i} over the cap was not closed"
        );
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(15),
        "closing {OVER} connections over the cap took {took:?}: they waited for the header timeout"
    );
    let (status, latency) = readyz(op.metrics_addr).await;
    assert!(status.starts_with("HTTP/1.1 200"), "/readyz: {status:?}");
    assert!(
        latency < Duration::from_secs(1),
        "/readyz took {latency:?} with the push port saturated"
    );
    let metrics = op.metrics().await;
    let refused = series(
        &metrics,
        r#"otau_listener_refused_total{listener="push",reason="connection_cap"}"#,
    );
    assert_eq!(refused, OVER as f64);
    assert_eq!(
        series(&metrics, r#"otau_listener_connections{listener="push"}"#),
        CAP as f64,
        "the listener holds the cap"
    );
    drop(held);
}
