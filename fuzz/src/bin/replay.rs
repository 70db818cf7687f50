//! Runs files through a fuzz target without AFL++: `replay <target> <file or folder>...`.
//! `hack/fuzz.sh` replays each corpus before fuzzing (a corpus input that fails is a
//! regression) and each crash AFL++ saved, to print its panic.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            files(&e, out);
        }
    } else if path.is_file() {
        out.push(path.to_path_buf());
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((name, paths)) = args.split_first() else {
        eprintln!("usage: replay <target> <file or folder>...");
        return ExitCode::from(2);
    };
    let Some(target) = otau_operator_fuzz::target(name) else {
        let names: Vec<&str> = otau_operator_fuzz::TARGETS.iter().map(|t| t.0).collect();
        eprintln!("unknown target {name}; targets: {}", names.join(", "));
        return ExitCode::from(2);
    };
    let mut inputs = Vec::new();
    for p in paths {
        files(Path::new(p), &mut inputs);
    }
    let mut failed = 0;
    for input in &inputs {
        let data = std::fs::read(input).unwrap_or_default();
        if std::panic::catch_unwind(|| target(&data)).is_err() {
            eprintln!("FAILED: {name} {}", input.display());
            failed += 1;
        }
    }
    println!("{name}: {} inputs replayed, {failed} failed", inputs.len());
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
