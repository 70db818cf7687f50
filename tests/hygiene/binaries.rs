//! `cargo install` installs the operator and the kubectl plugin, nothing else: the benchmark
//! programs are `[[bench]]` targets with `harness = false` in `benches/`.

use std::collections::BTreeSet;

use super::repo_root;

/// The `name = "…"` values of every `[[<kind>]]` table of Cargo.toml (a line-based read of
/// the few tables this package has).
fn targets(manifest: &str, kind: &str) -> Vec<(String, Vec<String>)> {
    let header = format!("[[{kind}]]");
    let mut out = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            out.extend(current.take());
            if line == header {
                current = Some((String::new(), Vec::new()));
            }
            continue;
        }
        if let Some((name, keys)) = current.as_mut() {
            if let Some(value) = line.strip_prefix("name = ") {
                *name = value.trim_matches('"').to_string();
            } else if !line.is_empty() && !line.starts_with('#') {
                keys.push(line.to_string());
            }
        }
    }
    out.extend(current);
    out
}

#[test]
fn only_the_operator_and_the_plugin_are_binaries() {
    let root = repo_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let declared: BTreeSet<String> = targets(&manifest, "bin")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let discovered: BTreeSet<String> = std::fs::read_dir(root.join("src/bin"))
        .expect("src/bin")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    let binaries: BTreeSet<String> = declared.union(&discovered).cloned().collect();
    let expected: BTreeSet<String> = ["kubectl-otau", "otau-operator"].map(String::from).into();
    assert_eq!(
        binaries, expected,
        "installed binaries (Cargo.toml [[bin]] and src/bin/*.rs); benchmarks belong in benches/"
    );
}

#[test]
fn every_benchmark_is_a_bench_target_without_the_test_harness() {
    let root = repo_root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let benches = targets(&manifest, "bench");
    let files: BTreeSet<String> = std::fs::read_dir(root.join("benches"))
        .expect("benches/")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    let declared: BTreeSet<String> = benches.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(declared, files, "one [[bench]] per benches/*.rs");
    for (name, keys) in &benches {
        assert!(
            keys.iter().any(|k| k == "harness = false"),
            "[[bench]] {name} needs `harness = false` (a plain main run by `cargo bench`)"
        );
    }
}
