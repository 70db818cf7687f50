//! Every `§N` citation resolves to a numbered heading of a document in the repository.
//!
//! A citation is `§N` or `§N.M…`. It refers to the nearest document named before it (any
//! `<name>.md`, e.g. `docs/architecture.md §4` or "`exosite-platform.md`; its §9"):
//!
//! - in a Markdown file, the nearest one named earlier in the same paragraph, else the file
//!   itself (a document citing its own sections);
//! - in any other file, the nearest one named earlier in the file; a citation with no
//!   document before it is unresolved.
//!
//! A document name resolves to the file at that path from the repository root, else to
//! `docs/<file name>`, else to `<file name>` at the root. The citation resolves when that
//! document has a heading (outside code fences) whose text starts with the number, as in
//! `## 4. Code map` or `### 2.5 Statuses`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regex::Regex;

use super::repo_root;

/// The folders whose files are scanned, from the repository root.
const SCANNED_DIRS: &[&str] = &[
    "src", "tests", "examples", "docs", "hack", "deploy", "charts", "benches",
];
/// Single files at the root that are scanned.
const SCANNED_FILES: &[&str] = &["README.md", "CONTRIBUTING.md", "Dockerfile", "Cargo.toml"];
/// This file: its tests hold unresolvable citations on purpose.
const SELF: &str = "tests/hygiene/citations.rs";

/// One citation and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Citation {
    /// The citing file, from the repository root.
    file: String,
    /// 1-based line.
    line: usize,
    /// The document it refers to as named in the text (`None`: no document named before it);
    /// for a Markdown file citing itself, that file's path.
    document: Option<String>,
    /// The section number, e.g. `2.5`.
    section: String,
}

/// The documents of the repository: path from the root -> numbers of its headings.
#[derive(Debug, Default)]
struct Library {
    documents: BTreeMap<String, BTreeSet<String>>,
}

impl Library {
    /// Adds a Markdown document's numbered headings.
    fn add(&mut self, path: &str, text: &str) {
        self.documents
            .insert(path.to_string(), heading_numbers(text));
    }

    /// The repository path a document name refers to.
    fn resolve(&self, name: &str) -> Option<&str> {
        let name = name.trim_start_matches("./");
        let file = name.rsplit('/').next().unwrap_or(name);
        [name.to_string(), format!("docs/{file}"), file.to_string()]
            .into_iter()
            .find_map(|c| self.documents.get_key_value(&c).map(|(k, _)| k.as_str()))
    }

    /// Why `c` does not resolve, or `None` when it does.
    fn problem(&self, c: &Citation) -> Option<String> {
        let Some(name) = &c.document else {
            return Some(format!(
                "§{}: no document named before it (write `docs/<name>.md §{}`)",
                c.section, c.section
            ));
        };
        let Some(path) = self.resolve(name) else {
            return Some(format!(
                "{name} §{}: {name} is not a document of the repository",
                c.section
            ));
        };
        if self.documents[path].contains(&c.section) {
            None
        } else {
            Some(format!(
                "{name} §{}: {path} has no heading numbered {}",
                c.section, c.section
            ))
        }
    }
}

/// The numbers that start the headings of a Markdown text (`## 1. Platform model` -> `1`,
/// `### 2.5 Statuses` -> `2.5`), fenced code blocks skipped.
fn heading_numbers(text: &str) -> BTreeSet<String> {
    let number = Regex::new(r"^(\d+(?:\.\d+)*)").expect("regex");
    let mut fenced = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let rest = line.trim_start_matches('#');
        if !rest.starts_with(' ') {
            continue;
        }
        if let Some(m) = number.captures(rest.trim_start()) {
            out.insert(m[1].to_string());
        }
    }
    out
}

/// The citations in the text of `path` (a repository path), each with the document it
/// refers to by the rules of the module docs.
fn scan(path: &str, text: &str) -> Vec<Citation> {
    let document = Regex::new(r"[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.md\b").expect("regex");
    let section = Regex::new(r"§ ?(\d+(?:\.\d+)*)").expect("regex");
    let markdown = path.ends_with(".md");
    let mut named: Option<String> = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if markdown && line.trim().is_empty() {
            named = None;
        }
        let mut marks: Vec<(usize, Option<String>, Option<String>)> = document
            .find_iter(line)
            .map(|m| (m.start(), Some(m.as_str().to_string()), None))
            .collect();
        marks.extend(section.captures_iter(line).map(|c| {
            (
                c.get(0).map_or(0, |m| m.start()),
                None,
                Some(c[1].to_string()),
            )
        }));
        marks.sort_by_key(|m| m.0);
        for (_, doc, number) in marks {
            if let Some(doc) = doc {
                named = Some(doc);
            } else if let Some(number) = number {
                let document = named.clone().or_else(|| markdown.then(|| path.to_string()));
                out.push(Citation {
                    file: path.to_string(),
                    line: i + 1,
                    document,
                    section: number,
                });
            }
        }
    }
    out
}

/// Every file under `dir` (recursively), as repository paths.
fn files_under(root: &Path, dir: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
        match entry.file_type() {
            Ok(t) if t.is_dir() => files_under(root, &rel, out),
            Ok(t) if t.is_file() => out.push(rel),
            _ => {}
        }
    }
}

/// The repository's documents (every `.md` at the root and under `docs/`).
fn library(root: &Path) -> Library {
    let mut paths = Vec::new();
    files_under(root, "docs", &mut paths);
    for entry in std::fs::read_dir(root).expect("repository root").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") {
            paths.push(name);
        }
    }
    let mut library = Library::default();
    for path in paths.iter().filter(|p| p.ends_with(".md")) {
        if let Ok(text) = std::fs::read_to_string(root.join(path)) {
            library.add(path, &text);
        }
    }
    library
}

#[test]
fn every_section_citation_resolves_to_a_heading_in_the_repository() {
    let root = repo_root();
    let library = library(&root);
    assert!(
        library.resolve("exosite-platform.md").is_some()
            && library.resolve("architecture.md").is_some(),
        "docs/exosite-platform.md and docs/architecture.md are documents of the repository"
    );
    let mut files = Vec::new();
    for dir in SCANNED_DIRS {
        files_under(&root, dir, &mut files);
    }
    files.extend(SCANNED_FILES.iter().map(|f| f.to_string()));
    let mut checked = 0;
    let mut unresolved = Vec::new();
    for file in files.iter().filter(|f| f.as_str() != SELF) {
        let Ok(text) = std::fs::read_to_string(root.join(file)) else {
            continue; // binary, or absent
        };
        for c in scan(file, &text) {
            checked += 1;
            if let Some(problem) = library.problem(&c) {
                unresolved.push(format!("{}:{}: {problem}", c.file, c.line));
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} citations found: is the scan broken?"
    );
    assert!(
        unresolved.is_empty(),
        "{} of {checked} citations do not resolve to a heading of a repository document:\n{}",
        unresolved.len(),
        unresolved.join("\n")
    );
}

/// A small library for the scanner's own tests.
fn sample_library() -> Library {
    let mut l = Library::default();
    l.add(
        "docs/exosite-platform.md",
        "# Contract\n\n## 1. Platform model\n\n### 1.4 The acknowledgement rule\n\n## 2. OTAU schema\n### 2.5 Statuses\n```\n# 7. not a heading\n```\n",
    );
    l.add("docs/architecture.md", "# Architecture\n\n## 4. Code map\n");
    l.add("README.md", "# Readme\n");
    l
}

fn problems(path: &str, text: &str) -> Vec<String> {
    let l = sample_library();
    scan(path, text)
        .iter()
        .filter_map(|c| l.problem(c).map(|p| format!("{}: {p}", c.line)))
        .collect()
}

#[test]
fn scanner_resolves_named_and_bare_citations() {
    let rust = "//! The client (docs/architecture.md §4, exosite-platform.md §2.5).\n\
                /// §1.4: acked by echo.\n\
                /// The code map of `architecture.md` §4 and §1 of exosite-platform.md.\n";
    assert_eq!(
        problems("src/x.rs", rust),
        vec!["3: architecture.md §1: docs/architecture.md has no heading numbered 1".to_string()]
    );
    let cited = scan("src/x.rs", rust);
    assert_eq!(cited.len(), 5);
    assert_eq!(cited[2].document.as_deref(), Some("exosite-platform.md"));
    assert_eq!(cited[2].section, "1.4");
}

#[test]
fn scanner_reports_missing_documents_headings_and_unnamed_citations() {
    let text = "// design.md §2 and house-style.md §3\n// exosite-platform.md §7\n";
    let found = problems("src/y.rs", text);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].contains("design.md is not a document"),
        "{found:?}"
    );
    assert!(
        found[1].contains("house-style.md is not a document"),
        "{found:?}"
    );
    assert!(
        found[2].contains("has no heading numbered 7"),
        "a heading inside a code fence does not count: {found:?}"
    );
    assert_eq!(
        problems("tests/z.rs", "/// §9 Must: long poll.\n"),
        vec!["1: §9: no document named before it (write `docs/<name>.md §9`)".to_string()]
    );
}

#[test]
fn scanner_reads_markdown_paragraphs_and_the_document_itself() {
    let l = sample_library();
    let md = "The contract is `exosite-platform.md`; its §2.5 table.\n\nSee §4 below.\n";
    let cited = scan("docs/architecture.md", md);
    assert_eq!(cited[0].document.as_deref(), Some("exosite-platform.md"));
    assert_eq!(
        cited[1].document.as_deref(),
        Some("docs/architecture.md"),
        "a new paragraph cites the document itself"
    );
    assert!(cited.iter().all(|c| l.problem(c).is_none()), "{cited:?}");
    assert_eq!(
        problems("README.md", "Nothing here but §3.\n").len(),
        1,
        "README.md has no heading 3"
    );
}
