//! Repository hygiene, no apiserver and no network: every `§N` citation resolves to a heading
//! of a document in the repository ([`citations`]), text logs carry no ANSI escapes when stderr
//! is not a terminal ([`logs`]), each module uses only what the code map allows
//! ([`code_map`]), only the operator and the kubectl plugin are installed binaries
//! ([`binaries`]), every path the documents of record name exists ([`paths`]), no function in `src/` is
//! over 120 lines ([`function_length`]), and the fuzz targets, which the repository's
//! `cargo fmt` does not reach, are formatted ([`fuzz_format`]).

mod binaries;
mod citations;
mod code_map;
mod function_length;
mod fuzz_format;
mod logs;
mod paths;

/// The repository root (the package's manifest directory).
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file below `dir`, recursively.
pub fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read a source folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
