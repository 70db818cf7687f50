//! Running `kubectl-otau` (directly, through kubectl, or under a pseudo-terminal) and
//! waiting on what it prints.

use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{ControlPlane, tool};

/// The plugin binary cargo built for this test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kubectl-otau");

/// What one run printed.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Ran {
    fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `kubectl-otau --kubeconfig <kubeconfig> -n <namespace> <args>` (stdout not a
/// terminal, so no colour).
pub fn run_with(kubeconfig: &Path, namespace: &str, args: &[&str]) -> Ran {
    crate::support::process::kubectl_otau(kubeconfig, namespace, args)
        .output()
        .expect("run kubectl-otau")
        .into()
}

/// [`run_with`] on the admin kubeconfig; panics (with the output) unless it exits 0.
pub fn otau(cp: &ControlPlane, namespace: &str, args: &[&str]) -> String {
    crate::support::process::kubectl_otau_stdout(cp.kubeconfig(), namespace, args)
}

/// Runs `kubectl otau <args>` through the real kubectl, with the plugin's folder first on
/// `PATH` (kubectl finds `kubectl-otau` there).
pub fn through_kubectl(args: &[&str]) -> Ran {
    let folder = Path::new(BIN).parent().expect("bin folder");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![folder.to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    Command::new(tool("kubectl"))
        .arg("otau")
        .args(args)
        .env("PATH", std::env::join_paths(dirs).expect("PATH"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
        .into()
}

/// The plugin running under a pseudo-terminal (util-linux `script`), its output collected.
pub struct Terminal {
    child: Child,
    /// Held open: `script` forwards it to the terminal (write `\x03` for Ctrl-C).
    stdin: ChildStdin,
    output: Arc<Mutex<String>>,
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl Terminal {
    /// Starts `kubectl-otau --kubeconfig .. -n <namespace> <args>` on a terminal, with
    /// colour allowed (no `NO_COLOR`).
    pub fn start(cp: &ControlPlane, namespace: &str, args: &[&str]) -> Terminal {
        // `exec`: the plugin replaces the shell `script` starts, so Ctrl-C reaches the plugin
        // alone (dash, /bin/sh on Debian, keeps itself as the parent and dies of the SIGINT).
        let mut command = vec![
            "exec".into(),
            quote(BIN),
            "--kubeconfig".into(),
            quote(&cp.kubeconfig().display().to_string()),
            "-n".into(),
            quote(namespace),
        ];
        command.extend(args.iter().map(|a| quote(a)));
        let mut child = Command::new("script")
            .args(["-qefc", &command.join(" "), "/dev/null"])
            .env_remove("NO_COLOR")
            .env_remove("KUBECONFIG")
            .env("TERM", "xterm")
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script (util-linux)");
        let stdin = child.stdin.take().expect("stdin");
        let output = Arc::new(Mutex::new(String::new()));
        for mut stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Terminal {
            child,
            stdin,
            output,
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The length of the output so far (to look only at what comes after).
    pub fn mark(&self) -> usize {
        self.output.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until the output after `from` contains `text`; returns how long that took.
    /// Panics with the output after `deadline`.
    pub async fn wait_for_text(&self, from: usize, text: &str, deadline: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if self.output().get(from..).is_some_and(|s| s.contains(text)) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < deadline,
                "no {text:?} on the terminal within {deadline:?}; it shows:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends Ctrl-C to the terminal.
    pub fn interrupt(&mut self) {
        use std::io::Write;
        self.stdin.write_all(b"\x03").expect("write Ctrl-C");
        self.stdin.flush().expect("flush");
    }

    /// Waits for the program to exit; its exit code. Panics after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                started.elapsed() < deadline,
                "the plugin did not exit within {deadline:?}; it shows:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The lines of `text` that start (after indentation) with `prefix`.
pub fn line_starting<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|l| l.trim_start().starts_with(prefix))
}
