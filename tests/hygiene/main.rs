//! Repository hygiene, no apiserver and no network: every `§N` citation resolves to a heading
//! of a document in the repository ([`citations`]), text logs carry no ANSI escapes when stderr
//! is not a terminal ([`logs`]), each module uses only what the code map allows
//! ([`code_map`]), only the operator and the kubectl plugin are installed binaries
//! ([`binaries`]), every path the documents of record name exists ([`paths`]), and no function in `src/` is
//! over 120 lines ([`function_length`]).

mod binaries;
mod citations;
mod code_map;
mod function_length;
mod logs;
mod paths;

/// The repository root (the package's manifest directory).
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
