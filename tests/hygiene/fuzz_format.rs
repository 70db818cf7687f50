//! The fuzz targets (`fuzz/`, a workspace of its own that the repository's `cargo fmt` does not
//! reach) are formatted as `cargo fmt` inside `fuzz/` lays them out: `rustfmt --check` with the
//! package's edition on every source file.

use std::process::Command;

use crate::{repo_root, rust_files};

#[test]
fn the_fuzz_targets_pass_rustfmt_check() {
    let root = repo_root();
    let manifest = std::fs::read_to_string(root.join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    let edition = manifest
        .lines()
        .find_map(|l| l.strip_prefix("edition = "))
        .map(|e| e.trim_matches('"'))
        .expect("the fuzz package's edition");
    let mut files = Vec::new();
    rust_files(&root.join("fuzz/src"), &mut files);
    assert!(files.len() > 5, "fuzz sources: {files:?}");
    let rustfmt = std::env::var_os("RUSTFMT").unwrap_or_else(|| "rustfmt".into());
    let out = Command::new(rustfmt)
        .args(["--check", "--edition", edition])
        .args(&files)
        .output()
        .expect("run rustfmt (rustup component add rustfmt)");
    assert!(
        out.status.success(),
        "fuzz/ is not formatted; run `cargo fmt` in fuzz/:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
