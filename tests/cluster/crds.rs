//! The CRDs on the real apiserver: examples apply and read back, every invalid fixture is
//! refused with its message, every valid fixture is accepted, immutable fields stay immutable,
//! and kubectl shows the printer columns, short names and the `otau` category.
//!
//! Fixtures live in `tests/fixtures/`:
//! - `invalid/*.yaml`: one object breaking one rule, with a `# expect: <text>` line naming part of
//!   the apiserver's message (the test fails when the rule is removed or its message changes),
//!   and optional `# not: <text>` lines the output must not contain (a misleading message);
//! - `valid/*.yaml`: boundary cases that must be accepted;
//! - `immutable/*.yaml`: two documents, the object and a changed copy the apiserver must refuse
//!   on update, with a `# expect:` line;
//! - `unchanged/*.yaml`: two documents that differ only in `field: null` lines (what Helm renders
//!   for unset values), which the apiserver must accept as no change of an immutable spec.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use otau_operator::api::conditions::{self, reason};
use otau_operator::api::rollout::{DeviceCounts, RolloutStatus, success_rate, wave_progress};
use otau_operator::api::{IoTConnector, Rollout, RolloutSpec, SoftwarePackage};
use serde_json::{Value, json};

use crate::support::{ControlPlane, repo_root};

/// How many kubectl processes run at once (the machine has 2 cores and is shared).
const PARALLEL_KUBECTL: usize = 4;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    yaml_files(&repo_root().join("tests/fixtures").join(kind))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// The texts after `# not:` in a fixture: what a refusal must not say.
fn unexpected_messages(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# not:"))
        .map(str::trim)
        .filter(|rest| !rest.is_empty())
        .collect()
}

/// The text after `# expect:` in a fixture.
fn expected_message(path: &Path, text: &str) -> String {
    text.lines()
        .find_map(|line| line.strip_prefix("# expect:"))
        .map(|rest| rest.trim().to_owned())
        .filter(|rest| !rest.is_empty())
        .unwrap_or_else(|| panic!("{} has no `# expect: <message>` line", path.display()))
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value: Value = serde::Deserialize::deserialize(doc).expect("fixture is YAML");
            value
        })
        .filter(|value| !value.is_null())
        .collect()
}

/// Runs kubectl with `stdin` as its input; returns the output (never panics on failure).
fn kubectl_with_input(cp: &ControlPlane, args: &[&str], stdin: &str) -> Output {
    let mut child = cp
        .kubectl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl starts");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing to kubectl");
    child.wait_with_output().expect("kubectl finishes")
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs a kubectl command that must succeed and returns its stdout.
fn kubectl_ok(mut command: Command) -> String {
    let output = command.output().expect("kubectl runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        combined(&output)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

/// Runs `check` for every path on a few threads; returns the problems it reported.
fn for_each_parallel(
    paths: &[PathBuf],
    check: impl Fn(&Path) -> Option<String> + Sync,
) -> Vec<String> {
    let mut problems = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .chunks(paths.len().div_ceil(PARALLEL_KUBECTL).max(1))
            .map(|chunk| {
                let check = &check;
                scope.spawn(move || chunk.iter().filter_map(|p| check(p)).collect::<Vec<_>>())
            })
            .collect();
        for handle in handles {
            problems.extend(handle.join().expect("fixture thread"));
        }
    });
    problems
}

/// Asserts that everything in `applied` is in `stored` with the same value (the apiserver may
/// add defaults, never change what was written). Lists must have the same length. An applied
/// `null` means "not set": the apiserver keeps it (an optional field), drops it or puts the
/// default in.
fn assert_subset(applied: &Value, stored: &Value, path: &str, problems: &mut Vec<String>) {
    match (applied, stored) {
        (Value::Object(a), Value::Object(s)) => {
            for (key, value) in a {
                match s.get(key) {
                    _ if value.is_null() => {}
                    Some(stored_value) => {
                        assert_subset(value, stored_value, &format!("{path}.{key}"), problems)
                    }
                    None => problems.push(format!("{path}.{key} is missing after read-back")),
                }
            }
        }
        (Value::Array(a), Value::Array(s)) if a.len() == s.len() => {
            for (i, (x, y)) in a.iter().zip(s).enumerate() {
                assert_subset(x, y, &format!("{path}[{i}]"), problems);
            }
        }
        (a, s) if a == s => {}
        (a, s) => problems.push(format!("{path}: applied {a}, read back {s}")),
    }
}

/// Reads back every object of `file` from namespace `ns` and compares what was applied.
fn read_back_unchanged(cp: &ControlPlane, ns: &str, file: &Path, problems: &mut Vec<String>) {
    let text = std::fs::read_to_string(file).unwrap();
    let mut get = cp.kubectl();
    get.args(["get", "-n", ns, "-o", "json", "-f"]).arg(file);
    let list: Value = serde_json::from_str(&kubectl_ok(get)).unwrap();
    let items = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![list.clone()]);
    for applied in documents(&text) {
        let kind = applied["kind"].as_str().unwrap_or_default();
        let name = applied["metadata"]["name"].as_str().unwrap_or_default();
        let where_ = format!("{}: {kind}/{name}", file.display());
        let Some(stored) = items
            .iter()
            .find(|item| item["kind"] == kind && item["metadata"]["name"] == name)
        else {
            problems.push(format!("{where_} was not found after apply"));
            continue;
        };
        match kind {
            "Secret" => {
                for (key, value) in applied["stringData"].as_object().into_iter().flatten() {
                    let data = stored["data"][key].as_str().unwrap_or_default();
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(data)
                        .unwrap_or_default();
                    if decoded != value.as_str().unwrap_or_default().as_bytes() {
                        problems.push(format!("{where_}: data.{key} differs from stringData"));
                    }
                }
            }
            "ConfigMap" => assert_subset(&applied["data"], &stored["data"], &where_, problems),
            _ => assert_subset(&applied["spec"], &stored["spec"], &where_, problems),
        }
    }
}

#[tokio::test]
async fn examples_apply_server_side_and_read_back_unchanged() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("crds-examples").await;
    // Emulator fleet profiles (examples/fleet-profile*.yaml) are not Kubernetes objects.
    let files: Vec<PathBuf> = yaml_files(&repo_root().join("examples"))
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let docs = documents(&text);
            !docs.is_empty() && docs.iter().all(|d| d.get("apiVersion").is_some())
        })
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "connector.yaml",
        "package-from-url.yaml",
        "package-from-configmap.yaml",
        "package-links-only.yaml",
        "rollout-percent-waves.yaml",
        "rollout-count-waves.yaml",
        "rollout-approval-gate.yaml",
    ] {
        assert!(
            names.contains(&wanted.to_owned()),
            "examples/{wanted} is missing: {names:?}"
        );
    }
    let mut problems = Vec::new();
    for file in &files {
        let mut apply = cp.kubectl();
        apply
            .args([
                "apply",
                "--server-side",
                "--field-manager=examples-test",
                "-n",
                &ns,
                "-f",
            ])
            .arg(file);
        kubectl_ok(apply);
        read_back_unchanged(cp, &ns, file, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "examples changed on read-back:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn invalid_fixtures_are_rejected_with_their_message() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("crds-invalid").await;
    let files = fixtures("invalid");
    assert!(files.len() >= 25, "only {} invalid fixtures", files.len());
    let problems = for_each_parallel(&files, |path| {
        let text = std::fs::read_to_string(path).unwrap();
        let expected = expected_message(path, &text);
        let output = kubectl_with_input(cp, &["apply", "-n", &ns, "-f", "-"], &text);
        let out = combined(&output);
        if output.status.success() {
            Some(format!(
                "{}: ACCEPTED, but must be refused with {expected:?}",
                path.display()
            ))
        } else if !out.contains(&expected) {
            Some(format!(
                "{}: refused, but the output does not contain {expected:?}:\n{out}",
                path.display()
            ))
        } else {
            unexpected_messages(&text)
                .into_iter()
                .find(|wrong| out.contains(wrong))
                .map(|wrong| {
                    format!(
                        "{}: refused, but the output also says {wrong:?}, which misleads:\n{out}",
                        path.display()
                    )
                })
        }
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn valid_fixtures_are_accepted_and_read_back_unchanged() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("crds-valid").await;
    let files = fixtures("valid");
    assert!(files.len() >= 10, "only {} valid fixtures", files.len());
    let problems = for_each_parallel(&files, |path| {
        let mut apply = cp.kubectl();
        apply.args(["apply", "-n", &ns, "-f"]).arg(path);
        let output = apply.output().expect("kubectl runs");
        if !output.status.success() {
            return Some(format!(
                "{}: refused:\n{}",
                path.display(),
                combined(&output)
            ));
        }
        let mut problems = Vec::new();
        read_back_unchanged(cp, &ns, path, &mut problems);
        (!problems.is_empty()).then(|| problems.join("\n"))
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Applies the first document, then the second; the second must be refused with the message.
fn check_immutable(cp: &ControlPlane, ns: &str, path: &Path, server_side: bool) -> Option<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let expected = expected_message(path, &text);
    let docs = documents(&text);
    assert_eq!(docs.len(), 2, "{} must hold two documents", path.display());
    let mut args = vec!["apply", "-n", ns, "-f", "-"];
    if server_side {
        args.push("--server-side");
    }
    let mode = if server_side {
        "server-side apply"
    } else {
        "apply"
    };
    let first = kubectl_with_input(cp, &args, &serde_json::to_string(&docs[0]).unwrap());
    if !first.status.success() {
        return Some(format!(
            "{} ({mode}): the original is refused:\n{}",
            path.display(),
            combined(&first)
        ));
    }
    let second = kubectl_with_input(cp, &args, &serde_json::to_string(&docs[1]).unwrap());
    let out = combined(&second);
    if second.status.success() {
        Some(format!(
            "{} ({mode}): the change was ACCEPTED",
            path.display()
        ))
    } else if !out.contains(&expected) {
        Some(format!(
            "{} ({mode}): refused without {expected:?}:\n{out}",
            path.display()
        ))
    } else {
        None
    }
}

#[tokio::test]
async fn immutable_fields_refuse_changes() {
    let cp = ControlPlane::get();
    let files = fixtures("immutable");
    assert!(files.len() >= 5, "only {} immutable fixtures", files.len());
    let client_side = cp.namespace("crds-immutable").await;
    let server_side = cp.namespace("crds-immutable-ssa").await;
    let mut problems = for_each_parallel(&files, |path| {
        check_immutable(cp, &client_side, path, false)
    });
    problems.extend(for_each_parallel(&files, |path| {
        check_immutable(cp, &server_side, path, true)
    }));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Applies the first document, then the second, which differs only in `null` lines: both must
/// be accepted, and the object read back must hold what the second one says.
fn check_unchanged(cp: &ControlPlane, ns: &str, path: &Path, server_side: bool) -> Option<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs = documents(&text);
    assert_eq!(docs.len(), 2, "{} must hold two documents", path.display());
    let mut args = vec!["apply", "-n", ns, "-f", "-", "-o", "json"];
    if server_side {
        args.push("--server-side");
    }
    let mode = if server_side {
        "server-side apply"
    } else {
        "apply"
    };
    let mut stored = Value::Null;
    for (i, doc) in docs.iter().enumerate() {
        let output = kubectl_with_input(cp, &args, &serde_json::to_string(doc).unwrap());
        if !output.status.success() {
            return Some(format!(
                "{} ({mode}): document {} is refused:\n{}",
                path.display(),
                i + 1,
                combined(&output)
            ));
        }
        stored = serde_json::from_slice(&output.stdout).expect("kubectl -o json");
    }
    let mut problems = Vec::new();
    assert_subset(&docs[1]["spec"], &stored["spec"], "spec", &mut problems);
    (!problems.is_empty()).then(|| format!("{} ({mode}): {}", path.display(), problems.join("; ")))
}

#[tokio::test]
async fn null_lines_change_nothing_in_immutable_specs() {
    let cp = ControlPlane::get();
    let files = fixtures("unchanged");
    assert!(files.len() >= 4, "only {} unchanged fixtures", files.len());
    let client_side = cp.namespace("crds-unchanged").await;
    let server_side = cp.namespace("crds-unchanged-ssa").await;
    let mut problems = for_each_parallel(&files, |path| {
        check_unchanged(cp, &client_side, path, false)
    });
    problems.extend(for_each_parallel(&files, |path| {
        check_unchanged(cp, &server_side, path, true)
    }));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn apply_fixtures(cp: &ControlPlane, ns: &str, names: &[&str]) {
    for name in names {
        let mut apply = cp.kubectl();
        apply.args(["apply", "-n", ns, "-f"]).arg(
            repo_root()
                .join("tests/fixtures/valid")
                .join(format!("{name}.yaml")),
        );
        kubectl_ok(apply);
    }
}

#[tokio::test]
async fn kubectl_get_otau_lists_all_three_kinds_and_short_names_work() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("crds-category").await;
    apply_fixtures(
        cp,
        &ns,
        &[
            "connector-minimal",
            "package-links-only",
            "rollout-single-wave",
        ],
    );
    let mut get = cp.kubectl();
    get.args(["get", "otau", "-n", &ns, "-o", "name"]);
    let listed = kubectl_ok(get);
    for expected in [
        "iotconnector.otau.dev/connector-minimal",
        "softwarepackage.otau.dev/package-links-only",
        "rollout.otau.dev/rollout-single-wave",
    ] {
        assert!(
            listed.contains(expected),
            "`kubectl get otau` lacks {expected}:\n{listed}"
        );
    }
    let mut short = cp.kubectl();
    short.args(["get", "iotconn,swpkg,otaro", "-n", &ns, "-o", "name"]);
    assert_eq!(kubectl_ok(short).lines().count(), 3);
    // Selectable fields: filter rollouts by package on the server.
    let mut select = cp.kubectl();
    select.args([
        "get",
        "rollouts.otau.dev",
        "-n",
        &ns,
        "-o",
        "name",
        "--field-selector",
        "spec.packageRef.name=p",
    ]);
    assert_eq!(
        kubectl_ok(select).trim(),
        "rollout.otau.dev/rollout-single-wave"
    );
    let mut none = cp.kubectl();
    none.args([
        "get",
        "rollouts.otau.dev",
        "-n",
        &ns,
        "-o",
        "name",
        "--field-selector",
        "spec.packageRef.name=other",
    ]);
    assert_eq!(kubectl_ok(none).trim(), "");
}

/// Now, in whole seconds: metav1.Time is stored with second precision.
fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap())
}

#[tokio::test]
async fn rollout_status_shows_in_printer_columns() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("crds-columns").await;
    apply_fixtures(cp, &ns, &["rollout-percent-1-and-100"]);
    let name = "rollout-percent-1-and-100";

    // Write a status the way the controller will: typed, server-side apply on the subresource.
    let totals = DeviceCounts {
        targeted: 120,
        succeeded: 37,
        failed: 2,
        in_progress: 5,
        pending: 76,
        ..DeviceCounts::default()
    };
    let mut conds = Vec::new();
    let message = "wave 2/2: 37/120 updated, 2 failed";
    conditions::set_condition(
        &mut conds,
        conditions::new_condition(
            conditions::READY,
            conditions::FALSE,
            reason::WAVE_IN_PROGRESS,
            message,
            Some(1),
            now(),
        ),
    );
    conditions::set_condition(
        &mut conds,
        conditions::new_condition(
            conditions::PROGRESSING,
            conditions::TRUE,
            reason::WAVE_IN_PROGRESS,
            message,
            Some(1),
            now(),
        ),
    );
    let status = RolloutStatus {
        phase: Some(conditions::rollout_phase(&conds)),
        conditions: conds,
        observed_generation: Some(1),
        current_wave: 2,
        wave_progress: Some(wave_progress(2, 2)),
        success_rate: success_rate(&totals),
        totals,
        ..RolloutStatus::default()
    };
    let rollouts: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let body = json!({"apiVersion": "otau.dev/v1alpha1", "kind": "Rollout", "status": status});
    rollouts
        .patch_status(
            name,
            &PatchParams::apply("otau-operator").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("status patch accepted");
    let stored = rollouts.get_status(name).await.unwrap().status.unwrap();
    assert_eq!(stored, status, "status round trip through the apiserver");

    let mut get = cp.kubectl();
    get.args(["get", "rollouts.otau.dev", name, "-n", &ns]);
    let table = kubectl_ok(get);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "PACKAGE",
            "PHASE",
            "WAVE",
            "SUCCEEDED",
            "FAILED",
            "SUCCESS",
            "RATE",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    // 37 of 39 finished: 94.9 % (rounded to the nearest tenth), as the status says.
    assert_eq!(status.success_rate.as_deref(), Some("94.9%"));
    assert_eq!(
        &row[..7],
        [name, "p", "Progressing", "2/2", "37", "2", "94.9%"],
        "{table}"
    );

    let mut wide = cp.kubectl();
    wide.args(["get", "rollouts.otau.dev", name, "-n", &ns, "-o", "wide"]);
    let table = kubectl_ok(wide);
    let header = table.lines().next().unwrap();
    for column in ["TARGETED", "READY", "REASON", "MESSAGE"] {
        assert!(
            header.contains(column),
            "wide output lacks {column}:\n{table}"
        );
    }
    assert!(table.contains("120") && table.contains(message), "{table}");
}

#[tokio::test]
async fn status_writes_do_not_trip_spec_immutability() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("crds-status").await;
    apply_fixtures(cp, &ns, &["package-links-only", "connector-minimal"]);
    let client = cp.client().await;
    let packages: Api<SoftwarePackage> = Api::namespaced(client.clone(), &ns);
    let body = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": "SoftwarePackage",
        "status": {"observedGeneration": 1, "manifest": "{\"version\":\"1.0.0\"}",
                   "packageContentId": "package_x.json"}
    });
    packages
        .patch_status(
            "package-links-only",
            &PatchParams::apply("otau-operator").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("a status write on an immutable-spec package is accepted");
    let connectors: Api<IoTConnector> = Api::namespaced(client, &ns);
    let body = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": "IoTConnector",
        "status": {"observedGeneration": 1, "tokenTtlSeconds": 172800}
    });
    connectors
        .patch_status(
            "connector-minimal",
            &PatchParams::apply("otau-operator").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("connector status accepted");
    let mut get = cp.kubectl();
    get.args(["get", "iotconnectors.otau.dev", "-n", &ns, "-o", "wide"]);
    let table = kubectl_ok(get);
    assert!(
        table.contains("TOKEN TTL") && table.contains("172800"),
        "{table}"
    );
}

#[tokio::test]
async fn apiserver_defaults_equal_the_rust_defaults() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("crds-defaults").await;
    let minimal = "apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata: {name: minimal}\nspec:\n  \
                   packageRef: {name: p}\n  targets: {identities: [a]}\n  waves: [{percent: 100}]\n";
    let output = kubectl_with_input(
        cp,
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        minimal,
    );
    assert!(output.status.success(), "{}", combined(&output));
    let stored = Api::<Rollout>::namespaced(cp.client().await, &ns)
        .get("minimal")
        .await
        .unwrap();
    let local: BTreeMap<String, Value> = serde_yaml::from_str(minimal).unwrap();
    let local_spec: RolloutSpec = serde_json::from_value(local["spec"].clone()).unwrap();
    assert_eq!(
        stored.spec, local_spec,
        "apiserver defaults differ from the Rust defaults"
    );
}
