//! The Argo CD health checks and resource actions in `deploy/argocd/` (Argo CD's own layout),
//! run under a real Lua 5.1 interpreter (Debian's `lua5.1`; Argo CD uses Lua 5.1 semantics)
//! against their `health_test.yaml` / `action_test.yaml` cases, and the test objects checked
//! against the real CRDs with a server-side dry run.
//!
//! Each object is converted here (serde_yaml → a Lua table literal) so the Lua side needs no
//! JSON library. The harness fixes `os.time`/`os.date` at 2026-11-27T12:00:00Z, so the nonce an
//! action writes is known, and prints results as JSON with a small encoder.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use crate::support::{ControlPlane, repo_root};

/// The API group folder in Argo CD's layout.
const GROUP: &str = "otau.dev";
/// Every kind with a health check.
const KINDS: [&str; 3] = ["Rollout", "IoTConnector", "SoftwarePackage"];
/// The nonce the actions write with the harness's fixed clock.
const FIXED_NONCE: &str = "argocd-20261127T120000Z";

/// The Lua harness: a fixed clock and a JSON encoder.
const PRELUDE: &str = r#"
local FIXED = 1795780800
local real_date = os.date
os.time = function() return FIXED end
os.date = function(format, t) return real_date(format, t or FIXED) end

local function encode(v)
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format("%d", v) end
    return string.format("%.17g", v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  end
  if t ~= "table" then error("cannot encode a " .. t) end
  local count = 0
  for _ in pairs(v) do count = count + 1 end
  if count > 0 and count == #v then
    local items = {}
    for i = 1, #v do items[i] = encode(v[i]) end
    return "[" .. table.concat(items, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local items = {}
  for _, k in ipairs(keys) do items[#items + 1] = encode(k) .. ":" .. encode(v[k]) end
  return "{" .. table.concat(items, ",") .. "}"
end
"#;

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

/// A Lua string literal: printable ASCII as is, every other byte as a decimal escape.
fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b}")),
        }
    }
    out.push('"');
    out
}

/// A JSON value as a Lua table literal (arrays 1-based; `null` becomes `nil`).
fn lua_literal(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua_literal).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_literal(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// The `lua5.1` interpreter (Debian's package; Argo CD runs Lua 5.1 semantics).
fn lua() -> PathBuf {
    let candidates = [PathBuf::from("/usr/bin/lua5.1")];
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("lua5.1 is missing: install Debian's lua5.1 package (hack/tools.sh does)")
        })
}

/// Runs `script` (a file) with `obj` set to `object`, and returns what the harness printed:
/// the script's result encoded as JSON.
fn run(script: &Path, object: &Value) -> Value {
    let program = format!(
        "{PRELUDE}\nobj = {}\nlocal result = dofile({})\nio.write(encode(result))\n",
        lua_literal(object),
        lua_string(&script.to_string_lossy())
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("harness.lua");
    std::fs::write(&file, program).expect("write the harness");
    let output = Command::new(lua()).arg(&file).output().expect("run lua5.1");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed under lua5.1: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed something that is not JSON ({e}): {stdout}",
            script.display()
        )
    })
}

#[test]
fn the_lua_literal_round_trips_through_the_interpreter() {
    let value = serde_json::json!({
        "s": "quote \" backslash \\ newline \n tab \t unicode é ✓",
        "n": 3, "f": 1.5, "b": false,
        "list": [1, "two", {"three": 3}],
        "nested": {"a": {"b": "c"}}
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let identity = dir.path().join("identity.lua");
    std::fs::write(&identity, "return obj\n").expect("write");
    assert_eq!(run(&identity, &value), value);
}

#[test]
fn health_checks_match_their_test_cases() {
    let mut cases = 0;
    for kind in KINDS {
        let dir = kind_dir(kind);
        let script = dir.join("health.lua");
        let tests: HealthTests = serde_yaml::from_str(&read(&dir.join("health_test.yaml")))
            .unwrap_or_else(|e| panic!("{kind}/health_test.yaml: {e}"));
        assert!(!tests.tests.is_empty(), "{kind}: no health tests");
        for test in tests.tests {
            let object = yaml_json(&dir.join(&test.input_path));
            let got: HealthStatus = serde_json::from_value(run(&script, &object))
                .unwrap_or_else(|e| panic!("{kind} {}: {e}", test.input_path));
            assert_eq!(got, test.health_status, "{kind} {}", test.input_path);
            cases += 1;
        }
    }
    // Every state of the brief is covered at least once.
    assert!(cases >= 20, "only {cases} health cases");
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
    let discovery = dir.join("discovery.lua");
    for test in &tests.discovery_tests {
        let object = yaml_json(&dir.join(&test.input_path));
        let got = run(&discovery, &object);
        let names: Vec<&str> = got
            .as_object()
            .expect("discovery returns a table of actions")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want: Vec<&str> = test.result.iter().map(|a| a.name.as_str()).collect();
        want.sort_unstable();
        assert_eq!(names, want, "{}", test.input_path);
        for action in &test.result {
            assert_eq!(
                got[&action.name]["disabled"],
                Value::Bool(action.disabled),
                "{}: {} disabled",
                test.input_path,
                action.name
            );
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for test in &tests.action_tests {
        let object = yaml_json(&dir.join(&test.input_path));
        let got = run(&dir.join(&test.action).join("action.lua"), &object);
        let want = yaml_json(&dir.join(&test.expected_output_path));
        assert_eq!(got, want, "{} on {}", test.action, test.input_path);
        // The only change is the action's annotation, holding the fixed clock's nonce.
        let before = object["metadata"]["annotations"]
            .as_object()
            .map_or(0, |a| a.len());
        let after = got["metadata"]["annotations"]
            .as_object()
            .map_or(0, |a| a.len());
        assert_eq!(after, before + 1, "{} adds one annotation", test.action);
        let value = got["metadata"]["annotations"][format!("otau.dev/{}", test.action)]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(value.ends_with(FIXED_NONCE), "{}: {value}", test.action);
        seen.insert(test.action.clone());
    }
    let all: std::collections::BTreeSet<String> = ["abort", "approve", "pause", "resume"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(seen, all, "every action has a test");
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
