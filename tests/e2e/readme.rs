//! The README's cluster walkthrough, run as written: every `sh` block of "On a cluster" (the
//! quick profile to Complete, then the start over on the realistic profile to its automatic
//! pause) and the resume commands it gives in prose, in one bash script. The only
//! substitutions: the release build line puts this test build's binaries on `PATH`, the fixed
//! ports 8080 and 9090 become free ones (in the commands and in a copy of `examples/`), and
//! the control plane gets a folder of its own.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::repo_root;

/// The part of the README the walkthrough is.
fn cluster_section(readme: &str) -> &str {
    let start = readme
        .find("## On a cluster")
        .expect("README section 'On a cluster'");
    let rest = &readme[start..];
    let end = rest
        .find("## Watch and drive rollouts")
        .expect("README section 'Watch and drive rollouts'");
    &rest[..end]
}

/// The ```sh blocks of a section, in order.
fn sh_blocks(section: &str) -> Vec<String> {
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_owned())
        .collect()
}

/// Inline commands of the prose that start with `prefix` (`` `kubectl otau resume ...` ``).
fn inline_commands(section: &str, prefix: &str) -> Vec<String> {
    section
        .split('`')
        .filter(|span| span.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Copies `examples/` with the emulator's fixed port replaced.
fn examples_copy(into: &Path, emulator_port: u16) {
    let dir = into.join("examples");
    std::fs::create_dir_all(&dir).expect("examples dir");
    for entry in std::fs::read_dir(repo_root().join("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("example");
        let text = text.replace("127.0.0.1:8080", &format!("127.0.0.1:{emulator_port}"));
        std::fs::write(dir.join(path.file_name().expect("name")), text).expect("write");
    }
}

#[test]
fn the_readme_cluster_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let section = cluster_section(&readme);
    let blocks = sh_blocks(section);
    assert!(blocks.len() >= 3, "the walkthrough's sh blocks: {blocks:?}");
    let build = "cargo build --release && export PATH=$PWD/target/release:$PATH";
    assert!(blocks[0].contains(build), "{}", blocks[0]);
    let resume = [
        inline_commands(section, "kubectl otau resume"),
        inline_commands(section, "kubectl -n demo annotate"),
    ]
    .concat();
    assert_eq!(
        resume.len(),
        2,
        "the resume commands of the prose: {resume:?}"
    );

    let work = tempfile::tempdir().expect("tempdir");
    let (emulator_port, metrics_port) = (free_port(), free_port());
    examples_copy(work.path(), emulator_port);
    for linked in ["hack", "crds"] {
        std::os::unix::fs::symlink(repo_root().join(linked), work.path().join(linked))
            .expect("symlink");
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_otau-operator"))
        .parent()
        .expect("bin dir");
    let tools_bin = crate::support::tool("kubectl")
        .parent()
        .expect("tools bin")
        .to_path_buf();
    let mut script = format!(
        "set -euo pipefail\nexport OTAU_CONTROL_PLANE_DIR={cp}\ntrap 'kill $(jobs -p) 2>/dev/null || true; hack/control-plane.sh down >/dev/null 2>&1 || true' EXIT\n",
        cp = work.path().join("control-plane").display()
    );
    for block in &blocks {
        script.push_str(&block.replace(
            build,
            &format!(
                "export PATH={}:{}:$PATH",
                bin_dir.display(),
                tools_bin.display()
            ),
        ));
    }
    // The prose's resume commands, the annotation one twice: a second resume must work too.
    script.push_str("kubectl -n demo get rollouts.otau.dev -o wide\n");
    for command in [&resume[0], &resume[1], &resume[1]] {
        script.push_str(command);
        script.push('\n');
    }
    let script = script
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{emulator_port}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{metrics_port}"));

    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(work.path())
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let tail: String = err
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        status.success(),
        "the walkthrough failed ({status}) after {:?}\nscript:\n{script}\nstdout:\n{out}\nstderr (last lines):\n{tail}",
        started.elapsed()
    );
    assert!(
        out.contains("condition met"),
        "kubectl wait reported nothing:\n{out}"
    );
    assert!(
        out.contains("FailureThresholdExceeded"),
        "the realistic run paused by itself:\n{out}"
    );
}
