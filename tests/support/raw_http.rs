//! HTTP/1 over raw loopback sockets, for tests that send what a client library would not:
//! half a request, a body that never comes, a body dripped slower than a timeout. Every read
//! has a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response as read off the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line and headers, lowercased.
    pub head: String,
    /// The body (by `Content-Length`, else up to the close).
    pub body: String,
}

/// Connects to `addr` and writes `bytes` (a request, or the start of one).
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    stream
}

/// Reads one complete response within `within`; `None` when none arrives in time (or the
/// peer closes first).
pub async fn read_response(stream: &mut TcpStream, within: Duration) -> Option<Answer> {
    tokio::time::timeout(within, read_one(stream))
        .await
        .ok()
        .flatten()
}

async fn read_one(stream: &mut TcpStream) -> Option<Answer> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        bytes.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // No body after 204 and 304; else `Content-Length`, a chunked body up to its last chunk,
    // or everything up to the close.
    let length = if status == 204 || status == 304 {
        Some(0)
    } else {
        head.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse::<usize>().ok())
        })
    };
    let chunked = head.contains("transfer-encoding: chunked");
    let mut body = bytes[head_end..].to_vec();
    loop {
        if length.is_some_and(|n| body.len() >= n) || (chunked && body.ends_with(b"0\r\n\r\n")) {
            break;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) if length.is_none() => break,
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    if let Some(n) = length {
        body.truncate(n);
    }
    Some(Answer {
        status,
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Reads until the peer closes the connection (or resets it); what was read, or `None` when
/// it is still open after `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut text = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&text).into_owned())
}
