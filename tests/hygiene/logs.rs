//! Text logs are plain text when stderr is a file or a pipe.

use std::fs::File;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `run --log-format text` with stderr redirected to a file: the error it logs (no such
/// kubeconfig) is there, with no ANSI escape sequence. `NO_COLOR` is removed from the
/// child's environment, so only "stderr is not a terminal" can turn colour off.
#[test]
fn text_logs_to_a_file_carry_no_ansi_escapes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("stderr.log");
    let stderr = File::create(&log_path).expect("create the log file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_otau-operator"))
        .args(["run", "--log-format", "text", "--kubeconfig"])
        .arg(dir.path().join("no-such-kubeconfig"))
        .args(["--metrics-addr", "127.0.0.1:0", "--push-addr", "off"])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("OTAU_LOG_LEVEL")
        .env_remove("OTAU_LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        .spawn()
        .expect("start otau-operator run");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for otau-operator") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("otau-operator run did not exit within 60 s without a kubeconfig");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log_path).expect("read the log file");
    assert!(
        !status.success(),
        "run without a kubeconfig must fail; log:\n{text}"
    );
    assert!(
        text.contains("ERROR") && text.contains("no-such-kubeconfig"),
        "the failure is logged as an ERROR line; log:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI escape in a log written to a file; log:\n{text:?}"
    );
}
