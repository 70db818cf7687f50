//! The container image (docs/architecture.md §9.11). No docker engine runs here, so: the Dockerfile
//! is linted with hadolint and checked for a non-root, shell-less final stage, and the static
//! binary it copies is built the same way (`hack/build-static.sh`), checked to be static (no
//! ELF program interpreter) and started (`--version`, `crds`).
//!
//! The static build has its own target folder (`<target>/static`). `OTAU_STATIC_PROFILE`
//! picks the cargo profile for the test (default `dev`, much faster than the image's
//! `release`; the linking is the same).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{repo_root, tool};

/// ELF program header type of the dynamic loader path.
const PT_INTERP: u32 = 3;

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("read Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(line.trim_end_matches('\\'));
        current.push(' ');
        if !line.ends_with('\\') {
            let joined = current.trim().to_string();
            current.clear();
            if let Some((keyword, rest)) = joined.split_once(' ') {
                out.push((keyword.to_uppercase(), rest.trim().to_string()));
            }
        }
    }
    out
}

#[test]
fn hadolint_accepts_the_dockerfile() {
    let output = Command::new(tool("hadolint"))
        .arg(repo_root().join("Dockerfile"))
        .output()
        .expect("run hadolint");
    assert!(
        output.status.success(),
        "hadolint found problems:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_final_stage_is_scratch_non_root_and_has_no_shell() {
    let all = instructions();
    let last_from = all
        .iter()
        .rposition(|(k, _)| k == "FROM")
        .expect("a FROM line");
    let (_, base) = &all[last_from];
    assert_eq!(base.split_whitespace().next(), Some("scratch"), "{base}");
    let stage = &all[last_from + 1..];
    assert!(
        stage.iter().all(|(k, _)| k != "RUN"),
        "the final stage has no shell to RUN anything"
    );
    let user = stage
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, v)| v.clone())
        .expect("a USER in the final stage");
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| {
            panic!("USER {user} is not numeric (Kubernetes runAsNonRoot needs a uid)")
        });
    assert_ne!(uid, 0, "USER must not be root");
    let entrypoint = stage
        .iter()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, v)| v.clone())
        .expect("an ENTRYPOINT");
    assert!(
        entrypoint.starts_with('['),
        "ENTRYPOINT must be the exec form (no shell): {entrypoint}"
    );
    // The builder stage runs the same script this test runs.
    assert!(
        all[..last_from]
            .iter()
            .any(|(k, v)| k == "RUN" && v.contains("hack/build-static.sh")),
        "the builder stage does not run hack/build-static.sh"
    );
}

/// Whether the ELF file at `path` has a program interpreter (a dynamic loader).
fn has_interpreter(path: &Path) -> bool {
    let bytes = std::fs::read(path).expect("read the binary");
    assert_eq!(&bytes[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(bytes[4], 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) == PT_INTERP
    })
}

/// Builds the static binary and copies it (without debug info) to `out`, as the Dockerfile's
/// builder stage does.
fn static_binary(out: &Path) -> PathBuf {
    let profile = std::env::var("OTAU_STATIC_PROFILE").unwrap_or_else(|_| "dev".to_string());
    let output = Command::new(repo_root().join("hack/build-static.sh"))
        .arg(&profile)
        .arg(out)
        .env_remove("RUSTFLAGS")
        .output()
        .expect("run hack/build-static.sh");
    assert!(
        output.status.success(),
        "hack/build-static.sh {profile} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("the script prints the binary's path")
            .trim(),
    )
}

#[test]
fn the_static_binary_has_no_loader_and_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = static_binary(&dir.path().join("otau-operator"));
    assert_eq!(binary, dir.path().join("otau-operator"));
    assert!(
        !has_interpreter(&binary),
        "{} has an ELF interpreter: it is not static",
        binary.display()
    );
    let ldd = Command::new("ldd").arg(&binary).output().expect("run ldd");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    assert!(
        said.contains("not a dynamic executable") || said.contains("statically linked"),
        "ldd: {said}"
    );
    // Started with an empty environment, as in the image.
    let version = Command::new(&binary)
        .arg("--version")
        .env_clear()
        .output()
        .expect("run --version");
    assert!(version.status.success());
    assert!(
        String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")),
        "{}",
        String::from_utf8_lossy(&version.stdout)
    );
    let crds = Command::new(&binary)
        .arg("crds")
        .env_clear()
        .output()
        .expect("run crds");
    assert!(
        crds.status.success(),
        "{}",
        String::from_utf8_lossy(&crds.stderr)
    );
    let text = String::from_utf8_lossy(&crds.stdout);
    assert_eq!(
        text.matches("kind: CustomResourceDefinition").count(),
        3,
        "{text}"
    );
}
