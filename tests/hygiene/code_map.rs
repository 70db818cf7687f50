//! The arrows of the code map (docs/architecture.md §4): each module of the library uses only
//! the modules its arrow names. A `crate::<module>` path in a file of `src/<folder>/` is a use
//! of that module.

use std::collections::BTreeMap;

use regex::Regex;

use super::{repo_root, rust_files};

/// Module -> the modules it may use.
const ARROWS: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("otau", &[]),
    ("engine", &["api", "otau", "platform"]),
    ("net", &[]),
    ("platform", &["otau", "net"]),
    ("controller", &["api", "otau", "engine", "platform", "net"]),
    ("emulator", &["otau", "platform", "net"]),
    ("plugin", &["api", "otau", "engine", "platform", "net"]),
];

/// Uses that are allowed only through one path, or only in some files: (module, used module,
/// the path prefix a use must start with, the files that may use it).
const NARROW: &[(&str, &str, &str, &[&str])] = &[
    (
        "engine",
        "platform",
        "crate::platform::types",
        &["src/engine/observation.rs"],
    ),
    (
        "emulator",
        "platform",
        "crate::platform",
        &[
            "src/emulator/platform_adapter.rs",
            "src/emulator/platform_adapter/",
        ],
    ),
];

/// The uses of other modules in `text`, as (module used, the whole path).
fn uses(text: &str) -> Vec<(String, String)> {
    let path = Regex::new(r"crate::([a-z_]+)(?:::[A-Za-z0-9_:]*)?").expect("regex");
    path.captures_iter(text)
        .map(|c| (c[1].to_string(), c[0].to_string()))
        .collect()
}

#[test]
fn every_module_uses_only_what_the_code_map_allows() {
    let root = repo_root();
    let arrows: BTreeMap<&str, &[&str]> = ARROWS.iter().copied().collect();
    let mut problems = Vec::new();
    for (module, allowed) in &arrows {
        let mut files = Vec::new();
        rust_files(&root.join("src").join(module), &mut files);
        assert!(!files.is_empty(), "src/{module}/ has no Rust files");
        for file in files {
            let rel = file
                .strip_prefix(&root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&file).expect("read a source file");
            for (used, path) in uses(&text) {
                if used == *module || !arrows.contains_key(used.as_str()) {
                    continue;
                }
                if !allowed.contains(&used.as_str()) {
                    problems.push(format!("{rel}: {module} uses {used} (`{path}`)"));
                    continue;
                }
                for (m, u, prefix, only_in) in NARROW {
                    if *m != *module || *u != used {
                        continue;
                    }
                    let in_place = only_in.is_empty() || only_in.iter().any(|f| rel.starts_with(f));
                    if !path.starts_with(prefix) || !in_place {
                        problems.push(format!(
                            "{rel}: {module} may use {used} only as `{prefix}`{}: `{path}`",
                            if only_in.is_empty() {
                                String::new()
                            } else {
                                format!(" in {}", only_in.join(", "))
                            }
                        ));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "uses against the code map of docs/architecture.md §4:\n{}",
        problems.join("\n")
    );
}

#[test]
fn uses_are_read_from_crate_paths() {
    let found = uses(
        "use crate::api::Rollout;\nlet x = crate::controller::poller::observe::from_identity;",
    );
    assert_eq!(
        found,
        vec![
            ("api".to_string(), "crate::api::Rollout".to_string()),
            (
                "controller".to_string(),
                "crate::controller::poller::observe::from_identity".to_string()
            ),
        ]
    );
}
