//! The emulator's listeners on the shared accept loop (docs/emulator.md, "Listener limits"),
//! over real loopback sockets: a long poll outlives the header timeout, the device listener
//! holds 10,000 connections with its defaults, and out of file descriptors the accept loop
//! backs off instead of spinning.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use otau_operator::net::server::Limits;
use reqwest::{Method, StatusCode};
use tokio::net::TcpStream;

use crate::harness::{Emu, Killed};

/// A long poll waits far longer than the header timeout: the timeout bounds reading the
/// request, never the handler's wait (exosite-platform.md §3.9: up to 300 s).
#[tokio::test]
async fn a_long_poll_outlives_the_header_timeout() {
    let header_timeout = Duration::from_millis(500);
    let emu = Emu::start_with_limits(Limits {
        header_timeout,
        ..Limits::default()
    })
    .await;
    let token = emu.device("poller").await;
    let started = Instant::now();
    let r = emu
        .dev(Method::GET, "/onep:v1/stack/alias?config_otau", &token)
        .header("request-timeout", "3000")
        .send()
        .await
        .expect("the long poll is answered, not cut");
    let waited = started.elapsed();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(
        waited >= Duration::from_millis(2900),
        "answered after {waited:?}, before its Request-Timeout of 3 s"
    );
    assert!(waited > header_timeout * 5);
}

/// `/proc/<pid>/stat`: user and system CPU time in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The command name may hold spaces; fields count from the last ')'.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// The emulator binary with `ulimit -n <files>`; the child and its ready line.
fn start_limited(files: u32, extra: &str) -> (Killed, serde_json::Value) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n {files} && exec \"$0\" emulator --listen 127.0.0.1:0 {extra}"
        ))
        .arg(env!("CARGO_BIN_EXE_otau-operator"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the emulator binary");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the emulator prints its JSON line");
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    (guard, ready)
}

fn listen_addr(ready: &serde_json::Value) -> std::net::SocketAddr {
    ready["device_url"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|a| a.parse().ok())
        .expect("the device URL's address")
}

/// Out of file descriptors (EMFILE), with connections waiting in the backlog, the accept loop
/// must not spin: over two seconds it uses a small share of one core.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_accept_loop_backs_off() {
    const FILES: u32 = 64;
    let (emulator, ready) = start_limited(FILES, "");
    let addr = listen_addr(&ready);
    // Twice the process's whole allowance of files: it accepts until it runs out, the rest
    // wait in the backlog and keep the listener readable.
    let mut open = Vec::new();
    for _ in 0..2 * FILES {
        open.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let pid = emulator.0.id();
    let window = Duration::from_secs(2);
    let before = cpu_ticks(pid);
    let started = Instant::now();
    // The measurement window itself (nothing is waited for): CPU time over two seconds.
    tokio::time::sleep(window).await;
    let used = cpu_ticks(pid) - before;
    let share = used as f64 / (started.elapsed().as_secs_f64() * 100.0);
    assert!(
        share < 0.25,
        "the emulator used {:.0} % of a core over {window:?} while out of file descriptors",
        share * 100.0
    );
    drop(open);
}

/// With its defaults, the device listener holds 10,000 open connections (a fleet's long
/// polls) and still answers a new one. Needs `ulimit -n` above 10,000 for the test and the
/// emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_listener_holds_ten_thousand_connections_by_default() {
    const DEVICES: usize = 10_000;
    let (_emulator, ready) = start_limited(DEVICES as u32 + 1024, "--listener-header-timeout 300s");
    let addr = listen_addr(&ready);
    let held = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(r#"otau_emulator_listener_connections{listener="http"}"#))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let metrics_url = ready["metrics_url"]
        .as_str()
        .expect("metrics URL")
        .to_string();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut open = Vec::with_capacity(DEVICES);
    let mut text = String::new();
    let started = Instant::now();
    while open.len() < DEVICES {
        // One at a time, in batches below the listen backlog (1,024), each accepted before the
        // next: a burst of handshakes that overflows the kernel's queues loses connections the
        // client already counts as open.
        for _ in 0..500.min(DEVICES - open.len()) {
            open.push(TcpStream::connect(addr).await.expect("connect"));
        }
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the listener holds {} of the {} connections opened",
                held(&text),
                open.len()
            );
            text = http
                .get(&metrics_url)
                .send()
                .await
                .expect("GET /metrics on one more connection")
                .text()
                .await
                .expect("metrics text");
            // The scrape's own connection counts too.
            if held(&text) > open.len() as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let refused = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                r#"otau_emulator_listener_refused_total{listener="http",reason="connection_cap"}"#,
            )
        })
        .map(str::trim);
    assert_eq!(refused, Some("0"), "none refused by the cap");
    // Every one of them is still open.
    let mut buf = [0u8; 1];
    let closed = open
        .iter()
        .filter(|s| matches!(s.try_read(&mut buf), Ok(0)))
        .count();
    assert_eq!(closed, 0, "{closed} connections were closed");
}

/// A request head far over the operator listeners' 16 KiB is served: the operator's
/// upload-form request carries a package's device tags in its query (a URI, at most 64 KiB).
#[tokio::test]
async fn a_request_head_with_a_query_of_device_tags_is_served() {
    let emu = Emu::start().await;
    let tag = format!("%22t41hp23nod8s00000.{}%22:%221%22,", "d".repeat(100));
    let tags = tag.repeat(60 * 1024 / tag.len());
    let r = emu
        .http
        .get(format!("{}/timestamp?tags={tags}", emu.base))
        .send()
        .await
        .map_err(|e| e.without_url())
        .expect("an answer");
    assert_eq!(r.status(), StatusCode::OK, "a {} byte query", tags.len());
}
