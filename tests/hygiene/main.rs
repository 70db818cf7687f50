//! Repository hygiene, no apiserver and no network: every `§N` citation resolves to a heading
//! of a document in the repository ([`citations`]), text logs carry no ANSI escapes when stderr
//! is not a terminal ([`logs`]), each module uses only what the code map allows
//! ([`code_map`]), only the operator and the kubectl plugin are installed binaries
//! ([`binaries`]), and every path the documents of record name exists ([`paths`]).

mod binaries;
mod citations;
mod code_map;
mod logs;
mod paths;

/// The repository root (the package's manifest directory).
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
