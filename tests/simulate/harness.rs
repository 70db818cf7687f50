//! Running the built binary with a deadline, and writing scenario files.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The longest any one simulate run may take before the test fails (a guard, not a speed
/// assertion: the runs take well under a second to a few seconds).
pub const DEADLINE: Duration = Duration::from_secs(300);

/// The built `otau-operator` binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_otau-operator")
}

/// What a run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The JSON report on stdout.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `program args`, waiting for it at most [`DEADLINE`] (killed and failed after).
pub fn run_with_deadline(program: &str, args: &[String]) -> Run {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// `otau-operator simulate <args>`.
pub fn simulate(args: &[&str]) -> Run {
    let mut all = vec!["simulate".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    run_with_deadline(bin(), &all)
}

/// Writes `text` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

/// The repository root (for the example files).
pub fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// A package for every test rollout: version 2.0.0, one external link (nothing to upload).
pub const PACKAGE: &str = "apiVersion: otau.dev/v1alpha1
kind: SoftwarePackage
metadata:
  name: fw-2
spec:
  connectorRef: {name: emulator}
  version: 2.0.0
  links: [https://downloads.example.com/fw-2.bin]
";

/// Fixed, short step durations: every device finishes an update within 5 s, well inside one
/// 30 s poll, so every wave is judged once with all of its devices finished.
pub const FAST: &str = "{ step: 100ms, test: 300ms, download: 500ms, install: 1s, reboot: 500ms }";

/// One profile group: `count` devices `<prefix>000000…` on 1.0.0, tagged `fleet=t`, with the
/// given `outcomes` (YAML flow mapping, e.g. `{install_error: 1}`) and [`FAST`] durations.
pub fn group(name: &str, count: u64, prefix: &str, outcomes: &str) -> String {
    format!(
        "  - name: {name}\n    count: {count}\n    identity_prefix: {prefix}\n    version: \"1.0.0\"\n    tags: [{{name: fleet, value: t}}]\n    behaviour: {{ outcomes: {outcomes}, durations: {FAST} }}\n"
    )
}

/// A profile from groups.
pub fn profile(seed: u64, groups: &[String]) -> String {
    format!("seed: {seed}\ngroups:\n{}", groups.concat())
}

/// A Rollout named `r` in namespace `default` targeting `fleet=t`, with the given waves and
/// policy (YAML blocks indented for `spec:`), and an optional orderSeed.
pub fn rollout(waves: &str, policy: &str, order_seed: Option<&str>) -> String {
    let seed = order_seed.map_or(String::new(), |s| format!("  orderSeed: {s}\n"));
    format!(
        "apiVersion: otau.dev/v1alpha1
kind: Rollout
metadata:
  name: r
spec:
  packageRef: {{name: fw-2}}
  targets:
    tags: [{{name: fleet, value: t}}]
{seed}  waves:
{waves}  policy:
{policy}"
    )
}

/// The identity of device `i` of a group: prefix + at least 6 zero-padded digits (as
/// docs/fleet-profiles.md says).
pub fn identity(prefix: &str, count: u64, i: u64) -> String {
    let width = count.saturating_sub(1).to_string().len().max(6);
    format!("{prefix}{i:0width$}")
}

/// The device order of docs/architecture.md §2, computed here from its definition: by the first 8
/// bytes (big-endian) of sha256(seed ‖ 0x00 ‖ identity), ties by identity.
pub fn ordered(seed: &str, mut identities: Vec<String>) -> Vec<String> {
    let key = |id: &str| {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update([0u8]);
        h.update(id.as_bytes());
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
    };
    identities.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.cmp(b)));
    identities
}

/// Cumulative wave sizes: ⌈N·p/100⌉ for each percent.
pub fn cumulative(n: u64, percents: &[u64]) -> Vec<u64> {
    percents.iter().map(|p| (n * p).div_ceil(100)).collect()
}
