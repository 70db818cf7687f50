//! Child processes (the operator binary, mostly) whose stdout and stderr are copied line by
//! line into one shared log that tests read while the process runs.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// The lines a child wrote so far, stdout and stderr interleaved as they arrived.
pub type SharedLog = Arc<Mutex<String>>;

/// Starts `command` with stdout and stderr piped and copies each line into the returned log
/// (one thread per stream, ending with the stream). Panics with `what` if it cannot start.
pub fn spawn_logged(command: &mut Command, what: &str) -> (Child, SharedLog) {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let log = SharedLog::default();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let mut text = log.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
    }
    (child, log)
}

/// A copy of everything in the log so far.
pub fn log_text(log: &SharedLog) -> String {
    log.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The `addr` field of the first JSON log line whose `message` is `message` (how the
/// operator announces its listeners: `--log-format json`).
pub fn logged_addr(log: &str, message: &str) -> Option<std::net::SocketAddr> {
    log.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        (v["message"] == message)
            .then(|| v["addr"].as_str()?.parse().ok())
            .flatten()
    })
}

/// Waits (up to `deadline`) until `GET http://addr/readyz` answers 2xx; the panic message
/// carries the child's log.
pub async fn wait_ready(
    addr: std::net::SocketAddr,
    log: &SharedLog,
    deadline: std::time::Duration,
) {
    let url = format!("http://{addr}/readyz");
    let ready = tokio::time::timeout(
        deadline,
        super::wait_for(deadline, "/readyz to answer 2xx", || {
            let url = url.clone();
            async move {
                reqwest::get(&url)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        }),
    )
    .await;
    if ready.is_err() {
        panic!(
            "not ready within {deadline:?} ({url}); its log:\n{}",
            log_text(log)
        );
    }
}
