//! What every benchmark program shares: how it tells `cargo bench` (run the load) from
//! `cargo test --benches` / `--all-targets` (build it, run its quick self-checks, no load).
//!
//! The benchmarks are `[[bench]]` targets with `harness = false`, so they are never installed
//! with the operator. `cargo bench --bench <name> -- <flags>` runs one; cargo appends `--bench`
//! to the flags, which is how a program knows it was asked for a measurement.

/// The flag `cargo bench` appends to the arguments of a `harness = false` benchmark.
const BENCH_FLAG: &str = "--bench";

/// The program's arguments (without the program name and without cargo's `--bench`) when it
/// runs under `cargo bench`; `None` under `cargo test`, which passes no `--bench`.
pub fn bench_args() -> Option<Vec<String>> {
    split_bench_flag(std::env::args().skip(1))
}

/// `args` without every `--bench`, or `None` when there was none.
pub fn split_bench_flag(args: impl IntoIterator<Item = String>) -> Option<Vec<String>> {
    let mut seen = false;
    let rest = args
        .into_iter()
        .filter(|a| {
            let flag = a == BENCH_FLAG;
            seen |= flag;
            !flag
        })
        .collect();
    seen.then_some(rest)
}

/// What a benchmark prints when `cargo test` runs it: it built, and how to run the load.
pub fn not_a_bench_run(name: &str) {
    println!(
        "{name}: built; run the measurement with `cargo bench --bench {name} [-- <flags>]` \
         (see docs/scale.md)"
    );
    assert_eq!(
        split_bench_flag(["--devices", "10", "--bench"].map(String::from)),
        Some(vec!["--devices".to_string(), "10".to_string()]),
        "cargo's --bench flag is taken off the benchmark's own flags"
    );
    assert_eq!(
        split_bench_flag(["--devices", "10"].map(String::from)),
        None
    );
}
