//! No function in `src/` outside tests is longer than [`MAX_LINES`] lines (as rustfmt lays it
//! out, from `fn` to its closing brace): a decision buried in a long function is one a reader
//! cannot find (CONTRIBUTING.md, "Rules a change keeps"). Test code (`tests/` folders,
//! `tests.rs` files, `#[cfg(test)]` modules) may be longer: tables of cases read best whole.

use std::path::Path;

use regex::Regex;

use super::{repo_root, rust_files};

/// The longest a function may be.
const MAX_LINES: usize = 120;

/// (first line, name, length) of every function in `text` outside `#[cfg(test)]` modules.
fn functions(text: &str) -> Vec<(usize, String, usize)> {
    let start = Regex::new(
        r"^(\s*)(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)",
    )
    .expect("regex");
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            i = block_end(&lines, i + 1) + 1;
            continue;
        }
        if let Some(c) = start.captures(lines[i]) {
            let end = block_end(&lines, i);
            found.push((i + 1, c[2].to_owned(), end - i + 1));
        }
        i += 1;
    }
    found
}

/// The line that closes the item starting at `from`: the first line at its indentation that
/// is `}` (or the item's own line when it ends with `;`, a declaration without a body).
fn block_end(lines: &[&str], from: usize) -> usize {
    let Some(first) = lines.get(from) else {
        return from;
    };
    if first.trim_end().ends_with(';') {
        return from;
    }
    let indent = first.len() - first.trim_start().len();
    let close = format!("{}}}", " ".repeat(indent));
    (from..lines.len())
        .find(|&j| {
            lines[j].trim_end() == close || lines[j].trim_end().starts_with(&format!("{close} "))
        })
        .unwrap_or(lines.len() - 1)
}

fn is_test_file(path: &Path) -> bool {
    path.components().any(|c| c.as_os_str() == "tests")
        || path.file_name().is_some_and(|n| n == "tests.rs")
}

#[test]
fn no_function_in_src_outside_tests_is_over_the_limit() {
    let root = repo_root();
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut long = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&root).unwrap_or(&file).to_path_buf();
        if is_test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read a source file");
        for (line, name, length) in functions(&text) {
            if length > MAX_LINES {
                long.push(format!("{}:{line} `{name}`: {length} lines", rel.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_LINES} lines (split them into functions named after what they decide):\n{}",
        long.join("\n")
    );
}

#[test]
fn lengths_are_counted_from_fn_to_its_brace_and_test_modules_are_skipped() {
    let text = "pub async fn a() {\n    x();\n}\n\nfn b() -> u8 {\n    1\n}\n#[cfg(test)]\nmod tests {\n    fn long() {\n    }\n}\nfn c();\n";
    let found = functions(text);
    assert_eq!(
        found,
        vec![
            (1, "a".to_owned(), 3),
            (5, "b".to_owned(), 3),
            (13, "c".to_owned(), 1),
        ]
    );
    assert!(is_test_file(Path::new("src/engine/tests/fleet.rs")));
    assert!(is_test_file(Path::new("src/engine/index/tests.rs")));
    assert!(!is_test_file(Path::new("src/engine/index.rs")));
}
