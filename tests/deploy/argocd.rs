//! The Argo CD health checks and resource actions in `deploy/argocd/` (Argo CD's own layout),
//! run in Argo CD's own Lua runtime (`github.com/argoproj/argo-cd/v3/util/lua`, through the
//! `argocd-lua` helper that hack/tools.sh builds) against their `health_test.yaml` /
//! `action_test.yaml` cases, installed the way docs/gitops.md says (`hack/argocd-cm.sh`), and
//! the test objects checked against the real CRDs with a server-side dry run.
//!
//! Argo CD's runtime opens only the base, table and (its safe) os libraries for custom scripts
//! unless `useOpenLibs` is set, so a script that calls `string.format` works under a plain Lua
//! 5.1 and fails in Argo CD; that is why the cases run there and not under `lua5.1`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{ControlPlane, argocd_cm, argocd_health, repo_root, run_json, tool};

/// The API group folder in Argo CD's layout.
const GROUP: &str = "otau.dev";
/// Every kind with a health check.
const KINDS: [&str; 3] = ["Rollout", "IoTConnector", "SoftwarePackage"];
/// The nonce in the expected outputs; the real one (Argo CD's clock) replaces it when compared.
const FIXED_NONCE: &str = "argocd-20261127T120000Z";

/// `health_test.yaml`.
#[derive(Debug, Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    health_status: HealthStatus,
    input_path: String,
}

#[derive(Debug, Deserialize, PartialEq)]
struct HealthStatus {
    status: String,
    message: String,
}

/// `actions/action_test.yaml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionTests {
    discovery_tests: Vec<DiscoveryTest>,
    action_tests: Vec<ActionTest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DiscoveryTest {
    input_path: String,
    result: Vec<DiscoveredAction>,
}

#[derive(Debug, Deserialize)]
struct DiscoveredAction {
    name: String,
    disabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionTest {
    action: String,
    input_path: String,
    expected_output_path: String,
}

fn kind_dir(kind: &str) -> PathBuf {
    repo_root().join("deploy/argocd").join(GROUP).join(kind)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml_json(path: &Path) -> Value {
    serde_yaml::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// Runs `requests` in Argo CD's runtime (hack/argocd-lua) with the argocd-cm data of
/// `hack/argocd-cm.sh`; one result per request.
fn argocd(requests: &[Value]) -> Vec<Value> {
    let (_guard, cm) = argocd_cm();
    let results = run_json(
        &tool("argocd-lua"),
        &[&cm.to_string_lossy()],
        &Value::from(requests.to_vec()),
    );
    let results = results
        .as_array()
        .expect("argocd-lua prints an array")
        .clone();
    assert_eq!(results.len(), requests.len());
    results
}

/// Whether `value` is a nonce Argo CD's clock wrote between `before` and `after` (UTC,
/// `argocd-YYYYMMDDTHHMMSSZ`).
fn is_fresh_nonce(value: &str, before: &str, after: &str) -> bool {
    let Some(stamp) = value.strip_prefix("argocd-") else {
        return false;
    };
    stamp.len() == 16
        && stamp.as_bytes()[8] == b'T'
        && stamp.ends_with('Z')
        && before <= stamp
        && stamp <= after
}

/// Now as the action scripts write it.
fn stamp_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string()
}

#[test]
fn health_checks_match_their_test_cases() {
    let (_guard, cm) = argocd_cm();
    let mut cases = Vec::new();
    for kind in KINDS {
        let dir = kind_dir(kind);
        let tests: HealthTests = serde_yaml::from_str(&read(&dir.join("health_test.yaml")))
            .unwrap_or_else(|e| panic!("{kind}/health_test.yaml: {e}"));
        assert!(!tests.tests.is_empty(), "{kind}: no health tests");
        for test in tests.tests {
            let object = yaml_json(&dir.join(&test.input_path));
            cases.push((kind, test, object));
        }
    }
    let objects: Vec<Value> = cases.iter().map(|(_, _, o)| o.clone()).collect();
    let got = argocd_health(&cm, &objects);
    for ((kind, test, _), (status, message)) in cases.iter().zip(got) {
        assert_eq!(
            HealthStatus { status, message },
            test.health_status,
            "{kind} {}",
            test.input_path
        );
    }
    // Every state of the brief is covered at least once.
    assert!(cases.len() >= 20, "only {} health cases", cases.len());
}

/// Argo CD needs one script per kind, so the IoTConnector and SoftwarePackage checks are two
/// copies of one script: they may differ only in the kind's name, its failure reasons and its
/// healthy reason.
#[test]
fn the_connector_and_package_health_checks_differ_only_in_their_kind_data() {
    let normalise = |kind: &str, healthy: &str| -> Vec<String> {
        read(&kind_dir(kind).join("health.lua"))
            .lines()
            .filter(|l| !l.contains("failure reasons") && !l.contains("local failure_reasons"))
            .map(|l| l.replace(kind, "<Kind>").replace(healthy, "<Healthy>"))
            .collect()
    };
    assert_eq!(
        normalise("IoTConnector", "Connected"),
        normalise("SoftwarePackage", "Registered")
    );
}

#[test]
fn rollout_health_covers_every_argo_cd_status() {
    let dir = kind_dir("Rollout");
    let tests: HealthTests =
        serde_yaml::from_str(&read(&dir.join("health_test.yaml"))).expect("health_test.yaml");
    for status in ["Healthy", "Progressing", "Suspended", "Degraded"] {
        assert!(
            tests.tests.iter().any(|t| t.health_status.status == status),
            "no Rollout case ends {status}"
        );
    }
}

#[test]
fn rollout_actions_match_their_test_cases() {
    let dir = kind_dir("Rollout").join("actions");
    let tests: ActionTests =
        serde_yaml::from_str(&read(&dir.join("action_test.yaml"))).expect("action_test.yaml");
    let discovery: Vec<Value> = tests
        .discovery_tests
        .iter()
        .map(|t| json!({"op": "discovery", "object": yaml_json(&dir.join(&t.input_path))}))
        .collect();
    for (test, got) in tests.discovery_tests.iter().zip(argocd(&discovery)) {
        assert!(got["error"].is_null(), "{}: {got}", test.input_path);
        let got: Vec<(String, bool)> = got["actions"]
            .as_array()
            .expect("discovery lists actions")
            .iter()
            .map(|a| {
                let name = a["name"].as_str().unwrap_or_default().to_owned();
                (name, a["disabled"].as_bool().unwrap_or_default())
            })
            .collect();
        let mut want: Vec<(String, bool)> = test
            .result
            .iter()
            .map(|a| (a.name.clone(), a.disabled))
            .collect();
        want.sort();
        assert_eq!(got, want, "{}", test.input_path);
    }

    let requests: Vec<Value> = tests
        .action_tests
        .iter()
        .map(|t| {
            json!({"op": "action", "action": t.action, "object": yaml_json(&dir.join(&t.input_path))})
        })
        .collect();
    let before = stamp_now();
    let results = argocd(&requests);
    let after = stamp_now();
    let mut seen = std::collections::BTreeSet::new();
    for (test, got) in tests.action_tests.iter().zip(results) {
        let what = format!("{} on {}", test.action, test.input_path);
        assert!(got["error"].is_null(), "{what}: {got}");
        let objects = got["objects"].as_array().expect("impacted objects");
        assert_eq!(objects.len(), 1, "{what}: one object");
        assert_eq!(
            objects[0]["operation"], "patch",
            "{what}: Argo CD patches it"
        );
        let mut object = objects[0]["object"].clone();
        // The only change is the action's annotation, holding a nonce from Argo CD's clock.
        let key = format!("otau.dev/{}", test.action);
        let value = object["metadata"]["annotations"][&key]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let (prefix, nonce) = value.rsplit_once(':').unwrap_or(("", &value));
        assert!(
            is_fresh_nonce(nonce, &before, &after),
            "{what}: {key}: {value} is not a nonce from between {before} and {after}"
        );
        let fixed = if prefix.is_empty() {
            FIXED_NONCE.to_owned()
        } else {
            format!("{prefix}:{FIXED_NONCE}")
        };
        object["metadata"]["annotations"][&key] = Value::String(fixed);
        let want = yaml_json(&dir.join(&test.expected_output_path));
        assert_eq!(object, want, "{what}");
        let input = yaml_json(&dir.join(&test.input_path));
        let count = |o: &Value| {
            o["metadata"]["annotations"]
                .as_object()
                .map_or(0, |a| a.len())
        };
        assert_eq!(
            count(&object),
            count(&input) + 1,
            "{what}: adds one annotation"
        );
        seen.insert(test.action.clone());
    }
    let all: std::collections::BTreeSet<String> = ["abort", "approve", "pause", "resume"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(seen, all, "every action has a test");
}

#[test]
fn a_missing_action_is_refused_by_argo_cd() {
    let object = yaml_json(&kind_dir("Rollout").join("actions/testdata/wave-in-progress.yaml"));
    let got = argocd(&[json!({"op": "action", "action": "restart", "object": object})]);
    assert!(
        got[0]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}",
        got[0]
    );
}

/// Every test object (inputs and expected outputs), without its namespace so it lands in the
/// test namespace, as one `v1/List`.
fn all_test_objects() -> Value {
    let mut items = Vec::new();
    for kind in KINDS {
        for dir in [
            kind_dir(kind).join("testdata"),
            kind_dir(kind).join("actions/testdata"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths {
                let mut object = yaml_json(&path);
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("namespace");
                    meta.remove("generation");
                }
                items.push(object);
            }
        }
    }
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
}

#[tokio::test]
async fn every_test_object_is_valid_for_the_real_crds() {
    let objects = all_test_objects();
    let count = objects["items"].as_array().map_or(0, Vec::len);
    assert!(count >= 30, "only {count} test objects");
    let cp = ControlPlane::get();
    let ns = cp.namespace("argocd-testdata").await;
    // Object names repeat across files: a dry run checks each against the schema and CEL rules.
    for item in objects["items"].as_array().expect("items") {
        cp.kubectl_output(
            &["apply", "--dry-run=server", "-n", &ns, "-f", "-"],
            &item.to_string(),
        );
    }
}
