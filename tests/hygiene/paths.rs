//! The documents of record name real code: every repository path in backticks in
//! docs/architecture.md and CONTRIBUTING.md exists, and a path followed by a name in backticks
//! (`` `src/engine/waves.rs` `advance` ``) names an item that file defines, so the answers to
//! "where is this decided?" cannot drift from the code.

use regex::Regex;

use super::repo_root;

/// The documents checked.
const DOCUMENTS: &[&str] = &["docs/architecture.md", "CONTRIBUTING.md"];

/// The top-level folders a path in backticks may start with.
const ROOTS: &str = "src|tests|benches|hack|docs|charts|deploy|examples|crds|\\.ci";

/// (path, the name after it if any) for every backticked repository path in `text`.
fn named_paths(text: &str) -> Vec<(String, Option<String>)> {
    let pattern = Regex::new(&format!(
        r"`((?:{ROOTS})/[^`\s]*)`(?:\s+`([A-Za-z_][A-Za-z0-9_:<>]*)`)?"
    ))
    .expect("regex");
    pattern
        .captures_iter(text)
        .map(|c| (c[1].to_owned(), c.get(2).map(|m| m.as_str().to_owned())))
        .collect()
}

/// Whether `source` defines `name` (its last `::` segment): a function, type, trait,
/// constant, static, module or macro of that name.
fn defines(source: &str, name: &str) -> bool {
    let name = name.rsplit("::").next().unwrap_or(name);
    let name = name.split('<').next().unwrap_or(name);
    let item = Regex::new(&format!(
        r"\b(?:fn|struct|enum|trait|const|static|type|mod|macro_rules!)\s+{}\b",
        regex::escape(name)
    ))
    .expect("regex");
    item.is_match(source)
}

/// What is wrong with one named path, if anything.
fn problem(root: &std::path::Path, path: &str, name: Option<&str>) -> Option<String> {
    if path.contains(['*', '<', '{']) {
        return None; // a pattern, not one file
    }
    let full = root.join(path.trim_end_matches('/'));
    if !full.exists() {
        return Some(format!("`{path}` does not exist"));
    }
    let (Some(name), true) = (name, path.ends_with(".rs")) else {
        return None;
    };
    let source = std::fs::read_to_string(&full).ok()?;
    (!defines(&source, name)).then(|| format!("`{path}` defines no `{name}`"))
}

#[test]
fn every_path_the_documents_of_record_name_exists_with_the_items_they_name() {
    let root = repo_root();
    let mut problems = Vec::new();
    for document in DOCUMENTS {
        let text = std::fs::read_to_string(root.join(document)).expect("read a document");
        for (path, name) in named_paths(&text) {
            if let Some(p) = problem(&root, &path, name.as_deref()) {
                problems.push(format!("{document}: {p}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn paths_and_the_names_after_them_are_read_from_backticks() {
    let found = named_paths(
        "`src/engine/waves.rs` `advance` (`why_no_next_wave`), `tests/e2e/`, and `Cargo.toml`",
    );
    assert_eq!(
        found,
        vec![
            ("src/engine/waves.rs".to_owned(), Some("advance".to_owned())),
            ("tests/e2e/".to_owned(), None),
        ]
    );
    assert!(defines("pub async fn advance(x: u8) {}", "advance"));
    assert!(defines(
        "impl X { pub fn apply_partial() {} }",
        "DeviceIndex::apply_partial"
    ));
    assert!(!defines("fn advanced() {}", "advance"));
    let root = repo_root();
    assert!(problem(&root, "src/engine/nowhere.rs", None).is_some());
    assert!(problem(&root, "src/engine/waves.rs", Some("no_such_item")).is_some());
    assert!(problem(&root, "src/engine/waves.rs", Some("advance")).is_none());
}
