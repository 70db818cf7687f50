//! The same files and seed give the same report, byte for byte; another seed another run.

use crate::harness::{repo, simulate};

fn example_run(seed: &str) -> crate::harness::Run {
    example_run_with(seed, &[])
}

fn example_run_with(seed: &str, extra: &[&str]) -> crate::harness::Run {
    let rollout = repo("examples/simulate-rollout.yaml");
    let package = repo("examples/package-from-url.yaml");
    let profile = repo("examples/fleet-profile.yaml");
    simulate(
        &[
            "-f",
            &rollout,
            "-f",
            &package,
            "--profile",
            &profile,
            "--devices",
            "600",
            "--seed",
            seed,
            "--output",
            "json",
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
    )
}

#[test]
fn the_same_seed_gives_byte_identical_json_and_another_seed_differs() {
    let first = example_run("7");
    assert!(
        [0, 2].contains(&first.code),
        "the example ends complete or paused: {}\n{}",
        first.stdout,
        first.stderr
    );
    let again = example_run("7");
    assert_eq!(first.code, again.code);
    assert!(first.stdout == again.stdout, "two runs with seed 7 differ");
    let r = first.json();
    assert_eq!(r["fleet"]["seed"], 7);
    assert_eq!(r["fleet"]["devices"], 600);
    let other = example_run("8");
    assert_eq!(other.json()["fleet"]["seed"], 8);
    assert_ne!(
        first.stdout.replace("\"seed\": 7", ""),
        other.stdout.replace("\"seed\": 8", ""),
        "another fleet seed gives another run"
    );
}

#[test]
fn folding_only_changed_devices_gives_the_report_of_full_polls() {
    let changed_only = example_run("3");
    let full = example_run_with("3", &["--full-polls"]);
    assert_eq!(changed_only.code, full.code);
    assert!(
        changed_only.stdout == full.stdout,
        "--full-polls changes the report:\n{}\n---\n{}",
        changed_only.stdout,
        full.stdout
    );
}
