//! Bad files get a message naming the file, the line and the field, and exit code 1.

use crate::harness::{PACKAGE, Run, group, profile, rollout, simulate, write};

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the test's own text"))
        + 1
}

fn check(run: &Run, expected: &[&str]) {
    assert_eq!(
        run.code, 1,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.is_empty(),
        "no report on bad input: {}",
        run.stdout
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    for e in expected {
        assert!(run.stderr.contains(e), "expected {e:?} in: {}", run.stderr);
    }
}

struct Files {
    dir: tempfile::TempDir,
    fleet: String,
}

fn files() -> Files {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleet = write(
        dir.path(),
        "fleet.yaml",
        &profile(1, &[group("ok", 10, "ok-", "{}")]),
    );
    Files { dir, fleet }
}

fn good_rollout() -> String {
    rollout(
        "    - percent: 50\n    - percent: 100\n",
        "    deviceTimeout: 10m\n",
        None,
    )
}

fn run_with(f: &Files, rollout_text: &str) -> (Run, String) {
    let text = format!("{rollout_text}---\n{PACKAGE}");
    let path = write(f.dir.path(), "r.yaml", &text);
    (simulate(&["-f", &path, "--profile", &f.fleet]), path)
}

#[test]
fn a_wrong_type_names_file_line_and_field() {
    let f = files();
    let bad = good_rollout().replace("percent: 50", "percent: half");
    let (run, path) = run_with(&f, &bad);
    let line = line_of(&bad, "percent: half");
    check(&run, &[&format!("{path}:{line}:"), "spec.waves[0].percent"]);
}

#[test]
fn an_unknown_field_is_refused_like_kubectl_strict_validation() {
    let f = files();
    let bad = good_rollout().replace("deviceTimeout: 10m", "deviceTimeout: 10m\n    retriez: 2");
    let (run, path) = run_with(&f, &bad);
    let line = line_of(&bad, "retriez");
    check(
        &run,
        &[
            &format!("{path}:{line}:"),
            "unknown field \"spec.policy.retriez\"",
        ],
    );
}

#[test]
fn a_bad_duration_names_its_field_and_line() {
    let f = files();
    let bad = good_rollout().replace("deviceTimeout: 10m", "deviceTimeout: ten minutes");
    let (run, path) = run_with(&f, &bad);
    let line = line_of(&bad, "ten minutes");
    check(
        &run,
        &[&format!("{path}:{line}:"), "spec.policy.deviceTimeout"],
    );
}

#[test]
fn a_missing_package_unknown_kind_broken_yaml_and_missing_file_are_explained() {
    let f = files();
    let only_rollout = write(f.dir.path(), "only.yaml", &good_rollout());
    let run = simulate(&["-f", &only_rollout, "--profile", &f.fleet]);
    check(
        &run,
        &["SoftwarePackage \"fw-2\"", "spec.packageRef.name", "-f"],
    );

    let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
    let path = write(f.dir.path(), "d.yaml", deployment);
    let run = simulate(&["-f", &path, "--profile", &f.fleet]);
    check(&run, &[&format!("{path}:2:"), "kind \"Deployment\""]);

    let broken = "apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: [unclosed\n";
    let path = write(f.dir.path(), "b.yaml", broken);
    let run = simulate(&["-f", &path, "--profile", &f.fleet]);
    check(&run, &[&format!("{path}:")]);

    let missing = f.dir.path().join("nope.yaml").display().to_string();
    let run = simulate(&["-f", &missing, "--profile", &f.fleet]);
    check(&run, &[&missing, "cannot read"]);
}

#[test]
fn a_bad_profile_names_the_profile_field() {
    let f = files();
    let bad_profile = write(
        f.dir.path(),
        "bad-fleet.yaml",
        &profile(1, &[group("ok", 10, "ok-", "{test_error: 1.5}")]),
    );
    let text = format!("{}---\n{PACKAGE}", good_rollout());
    let path = write(f.dir.path(), "r.yaml", &text);
    let run = simulate(&["-f", &path, "--profile", &bad_profile]);
    check(
        &run,
        &[&bad_profile, "groups[0].behaviour.outcomes.test_error"],
    );
}

#[test]
fn a_fleet_too_large_for_memory_is_refused_before_it_is_built() {
    let f = files();
    let fractions = write(
        f.dir.path(),
        "fractions.yaml",
        "seed: 1\ngroups:\n  - {name: a, fraction: 1, identity_prefix: a-, version: '1.0.0', tags: [{name: fleet, value: t}]}\n",
    );
    let text = format!("{}---\n{PACKAGE}", good_rollout());
    let path = write(f.dir.path(), "r.yaml", &text);
    // Near the fleet's cap (device indexes are u32): 4e9 devices need terabytes.
    let run = simulate(&[
        "-f",
        &path,
        "--profile",
        &fractions,
        "--devices",
        "4000000000",
    ]);
    check(
        &run,
        &[
            "--devices 4000000000: a fleet of 4000000000 devices needs about 2.7 TiB of memory",
            "available (",
            "simulate at most",
        ],
    );
    assert!(!run.stderr.contains("memory allocation"), "{}", run.stderr);
}

#[test]
fn thousands_of_documents_are_read_and_an_error_in_the_last_names_its_line() {
    let f = files();
    // 20,000 ignored documents before the Rollout: read in one pass over the file.
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\ndata: {{k: v}}\n---\n"
        ));
    }
    let good = format!("{text}{}---\n{PACKAGE}", good_rollout());
    let path = write(f.dir.path(), "many.yaml", &good);
    let run = simulate(&["-f", &path, "--profile", &f.fleet, "--output", "json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["totals"]["succeeded"], 10, "{}", run.stdout);
    assert_eq!(
        run.stderr.matches("note: ignored ConfigMap").count(),
        20_000
    );
    let bad_rollout = good_rollout().replace("percent: 50\n", "percent: half\n");
    let bad = format!("{text}{bad_rollout}---\n{PACKAGE}");
    let path = write(f.dir.path(), "many-bad.yaml", &bad);
    let run = simulate(&["-f", &path, "--profile", &f.fleet]);
    check(
        &run,
        &[&format!("{path}:{}: ", line_of(&bad, "percent: half"))],
    );
}
