//! What the GitOps tools make of our objects, proven with the tools' own evaluators: every row of
//! the state table in docs/gitops.md ("What each state looks like") becomes an object on the
//! local apiserver whose status the operator's own functions build (the engine's
//! `set_conditions` and `reconcile_blocked`, the connector's and package's
//! `condition_for_error` and `set_conditions`) and whose status is written the operator's way
//! (`apply_status`: server-side apply on the status subresource). Each object is then read back
//! with kubectl and judged by
//!
//! - kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`, what Flux's health checks,
//!   kpt and `kubectl`-adjacent tools use), through the `kstatus` helper (hack/kstatus), and
//! - Argo CD's own Lua runtime (`github.com/argoproj/argo-cd/v3/util/lua`) running the health
//!   checks installed from the argocd-cm data `hack/argocd-cm.sh` generates, through the
//!   `argocd-lua` helper (hack/argocd-lua).
//!
//! Both answers must be the table's. hack/tools.sh builds both helpers.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use otau_operator::api::conditions::{FALSE, TRUE, reason, rollout_phase};
use otau_operator::api::{
    IoTConnector, IoTConnectorStatus, Rollout, RolloutStatus, SoftwarePackage,
    SoftwarePackageStatus,
};
use otau_operator::controller::error::Error;
use otau_operator::controller::status_write::apply_status;
use otau_operator::controller::{connector, package};
use otau_operator::engine::{self, Blocker, EngineInput, EngineMemory, Overall};
use otau_operator::platform::PlatformError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::{ControlPlane, argocd_cm, argocd_health, repo_root, run_json, tool};

/// The kinds, as the table names them.
const KINDS: [&str; 3] = ["Rollout", "IoTConnector", "SoftwarePackage"];

/// One row of the table in docs/gitops.md.
#[derive(Clone, Debug)]
struct Row {
    kinds: Vec<String>,
    case: String,
    kstatus: String,
    argocd: String,
}

/// The rows of the table under "## What each state looks like" in docs/gitops.md:
/// `| Kind(s) | state | kstatus | Argo CD | ... |`, the state being a reason in backticks or
/// `(no status yet)` / `(new generation)`; the kind `all` means the three kinds.
fn table() -> Vec<Row> {
    let doc = std::fs::read_to_string(repo_root().join("docs/gitops.md")).expect("docs/gitops.md");
    let section = doc
        .split("\n## What each state looks like")
        .nth(1)
        .expect("docs/gitops.md has a section \"What each state looks like\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().replace('`', ""))
            .collect();
        if cells.len() < 4 || cells[0] == "Kind" || cells[0].starts_with("---") {
            continue;
        }
        let kinds = if cells[0] == "all" {
            KINDS.iter().map(|k| k.to_string()).collect()
        } else {
            cells[0].split(", ").map(str::to_owned).collect()
        };
        rows.push(Row {
            kinds,
            case: cells[1].clone(),
            kstatus: cells[2].clone(),
            argocd: cells[3].clone(),
        });
    }
    rows
}

/// A whole-second time (what the apiserver keeps).
fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).expect("a time"))
}

/// The object a case starts from: the kind's example, named after the case.
fn base_object(kind: &str, name: &str) -> Value {
    let (file, document) = match kind {
        "Rollout" => ("examples/rollout-demo.yaml", 0),
        "IoTConnector" => ("examples/connector.yaml", 2),
        _ => ("examples/package-links-only.yaml", 0),
    };
    let text = std::fs::read_to_string(repo_root().join(file)).expect("example");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("yaml"))
        .filter(|v: &Value| !v.is_null())
        .collect();
    let mut object = docs[document].clone();
    assert_eq!(object["kind"], kind, "{file}");
    object["metadata"] = json!({ "name": name });
    object
}

/// A Kubernetes name for a case.
fn object_name(case: &str) -> String {
    let mut name = String::new();
    for (i, c) in case.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('-');
        }
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') && !name.is_empty() {
            name.push('-');
        }
    }
    name.trim_matches('-').to_owned()
}

/// The Rollout status the engine writes in `case` (its `Ready` reason).
fn rollout_status(rollout: &Rollout, case: &str) -> RolloutStatus {
    let generation = rollout.metadata.generation;
    let t = now();
    let blocked = |blocker: Blocker| {
        let memory = EngineMemory::default();
        let annotations = Default::default();
        let status = RolloutStatus::default();
        let input = EngineInput {
            namespace: "ns",
            name: "r",
            generation,
            created_at: None,
            spec: &rollout.spec,
            annotations: &annotations,
            status: &status,
            memory: &memory,
            max_notifications: None,
        };
        engine::reconcile_blocked(&input, &blocker, t.0.as_microsecond()).status
    };
    let overall = match case {
        "PackageNotReady" => {
            return blocked(Blocker::PackageNotReady("package demo is not Ready".into()));
        }
        "ContentMissing" => {
            return blocked(Blocker::ContentMissing(
                "content item ns_demo_fw.bin (file fw.bin) of SoftwarePackage demo is missing"
                    .into(),
            ));
        }
        "ConnectorNotReady" => {
            return blocked(Blocker::ConnectorNotReady("connector is not Ready".into()));
        }
        "PlatformUnavailable" => {
            return blocked(Blocker::PlatformUnavailable("HTTP 503".into()));
        }
        "TargetConflict" => {
            return blocked(Blocker::TargetConflict(
                "5 targeted devices are also targets of the older Rollout other".into(),
            ));
        }
        "WaveInProgress" => Overall::WaveInProgress("wave 1/3: 3/5 succeeded".into()),
        "Soaking" => Overall::Soaking("wave 1/3: 5/5 succeeded; soaking".into()),
        "WaitingForApproval" => Overall::WaitingForApproval("wave 2 waits for approval".into()),
        "PausedByUser" => Overall::PausedByUser("paused by the otau.dev/pause annotation".into()),
        "FailureThresholdExceeded" => Overall::FailureThresholdExceeded(
            "wave 1: 2 of 5 finished devices failed (40.0%), over the threshold of 10%".into(),
        ),
        "Aborted" => Overall::Aborted("aborted by the otau.dev/abort annotation".into()),
        "AllTargetsExcluded" => Overall::AllTargetsExcluded(
            "no device to update: the targets select 3 device(s) and spec.targets.exclude removes every one"
                .into(),
        ),
        "AllWavesSucceeded" => Overall::Complete("3/3 waves: 100 updated, 0 failed".into()),
        "CompletedWithFailures" => Overall::CompletedWithFailures(
            "all 3 waves complete: 95/100 succeeded, 5 aborted; success rate 95.0%".into(),
        ),
        other => panic!("docs/gitops.md names a Rollout state the test does not know: {other}"),
    };
    let mut conditions: Vec<Condition> = Vec::new();
    engine::set_conditions(&mut conditions, &overall, false, generation, &t);
    RolloutStatus {
        phase: Some(rollout_phase(&conditions)),
        conditions,
        observed_generation: generation,
        ..RolloutStatus::default()
    }
}

fn platform(source: PlatformError) -> Error {
    Error::Platform { source }
}

fn unavailable() -> PlatformError {
    PlatformError::Unavailable {
        operation: "check",
        reason: "HTTP 503".into(),
    }
}

/// The IoTConnector status the connector controller writes in `case`.
fn connector_status(generation: Option<i64>, case: &str) -> IoTConnectorStatus {
    let error = match case {
        "Connected" => None,
        "SecretNotFound" => Some(Error::SecretNotFound {
            message: "Secret fleet/exosite-token not found".into(),
        }),
        "PlatformUnavailable" => Some(platform(unavailable())),
        "CredentialsRejected" => Some(platform(PlatformError::Authentication {
            operation: "check",
            status: 401,
            message: "invalid token".into(),
        })),
        "ProductNotFound" => Some(platform(PlatformError::NotFound {
            operation: "check",
            message: "no such product".into(),
        })),
        "ConfigurationInvalid" => Some(Error::ConnectorSpecInvalid {
            message: "managementUrl is not a URL".into(),
        }),
        "ResourcesMissing" => Some(Error::ResourcesMissing {
            message:
                "connector t41hp23nod8s00000 cannot deliver packages: resource otau_in is missing"
                    .into(),
        }),
        other => {
            panic!("docs/gitops.md names an IoTConnector state the test does not know: {other}")
        }
    };
    let (decision, message) = match &error {
        None => ((TRUE, FALSE, reason::CONNECTED), "connected".to_owned()),
        Some(e) => (connector::condition_for_error(e), e.to_string()),
    };
    let mut status = IoTConnectorStatus {
        observed_generation: generation,
        ..IoTConnectorStatus::default()
    };
    connector::set_conditions(
        &mut status.conditions,
        generation,
        decision,
        &message,
        now(),
    );
    status
}

/// The SoftwarePackage status the package controller writes in `case`.
fn package_status(generation: Option<i64>, case: &str) -> SoftwarePackageStatus {
    let (ready, progressing, stalled, why, message) = match case {
        "Uploading" => (
            FALSE,
            TRUE,
            FALSE,
            reason::UPLOADING,
            "uploading 1 of 2 files".to_owned(),
        ),
        "Registered" => (
            TRUE,
            FALSE,
            FALSE,
            reason::REGISTERED,
            "registered".to_owned(),
        ),
        "ContentMissing" => (
            FALSE,
            FALSE,
            FALSE,
            reason::CONTENT_MISSING,
            "content item ns_demo_fw.bin (file fw.bin) is missing on the platform; uploading it again"
                .to_owned(),
        ),
        other => {
            let error = match other {
                "ConnectorNotReady" => Error::SecretNotFound {
                    message: "Secret fleet/exosite-token not found".into(),
                },
                "SourceUnavailable" => Error::SourceUnavailable {
                    file: "modem.img".into(),
                    message: "HTTP 404".into(),
                },
                "PlatformUnavailable" => platform(unavailable()),
                "InUseByRollout" => Error::InUse {
                    rollouts: "fw-1-0-2".into(),
                },
                "PackageInvalid" => platform(PlatformError::Rejected {
                    operation: "register",
                    status: 400,
                    message: "duplicate file name".into(),
                }),
                other => panic!(
                    "docs/gitops.md names a SoftwarePackage state the test does not know: {other}"
                ),
            };
            let (ready, stalled, why) = package::condition_for_error(&error);
            (ready, FALSE, stalled, why, error.to_string())
        }
    };
    let mut status = SoftwarePackageStatus {
        observed_generation: generation,
        ..SoftwarePackageStatus::default()
    };
    package::set_conditions(
        &mut status.conditions,
        generation,
        ready,
        progressing,
        stalled,
        why,
        &message,
    );
    status
}

/// The `Ready` reason of a status, to check the operator's functions produced the row's state.
fn ready_reason(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// Writes the case's status the operator's way and returns it as JSON.
async fn write_case_status(
    client: &kube::Client,
    ns: &str,
    kind: &str,
    name: &str,
    case: &str,
) -> Value {
    match kind {
        "Rollout" => {
            let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
            let object = api.get(name).await.expect("get rollout");
            let status = rollout_status(&object, case);
            apply_status(&api, name, kind, &status)
                .await
                .expect("write status");
            serde_json::to_value(&status).expect("json")
        }
        "IoTConnector" => {
            let api: Api<IoTConnector> = Api::namespaced(client.clone(), ns);
            let object = api.get(name).await.expect("get connector");
            let status = connector_status(object.metadata.generation, case);
            apply_status(&api, name, kind, &status)
                .await
                .expect("write status");
            serde_json::to_value(&status).expect("json")
        }
        _ => {
            let api: Api<SoftwarePackage> = Api::namespaced(client.clone(), ns);
            let object = api.get(name).await.expect("get package");
            let status = package_status(object.metadata.generation, case);
            apply_status(&api, name, kind, &status)
                .await
                .expect("write status");
            serde_json::to_value(&status).expect("json")
        }
    }
}

#[tokio::test]
async fn kstatus_and_argo_cd_agree_with_the_docs_in_every_state() {
    let rows = table();
    // Every kind has rows, and each verdict is one the tools can give.
    for kind in KINDS {
        assert!(
            rows.iter()
                .filter(|r| r.kinds.iter().any(|k| k == kind))
                .count()
                >= 4,
            "docs/gitops.md lists too few {kind} states"
        );
    }
    for row in &rows {
        assert!(
            ["Current", "InProgress", "Failed", "Terminating"].contains(&row.kstatus.as_str()),
            "{row:?}"
        );
        assert!(
            ["Healthy", "Progressing", "Suspended", "Degraded"].contains(&row.argocd.as_str()),
            "{row:?}"
        );
    }

    let cp = ControlPlane::get();
    let ns = cp.namespace("gitops-health").await;
    let client = cp.client().await;

    // 1. Create every object (spec only, as Git holds it).
    let mut cases: Vec<(String, String, String, &Row)> = Vec::new();
    for row in &rows {
        for kind in &row.kinds {
            let name = format!("{}-{}", object_name(kind), object_name(&row.case));
            cases.push((kind.clone(), name, row.case.clone(), row));
        }
    }
    // A package deleted while a Rollout uses it stays, held by the operator's finalizer.
    let deleted_while_in_use = |case: &str| case == package::REASON_IN_USE;
    let items: Vec<Value> = cases
        .iter()
        .map(|(kind, name, case, _)| {
            let mut object = base_object(kind, name);
            if deleted_while_in_use(case) {
                object["metadata"]["finalizers"] = json!([package::FINALIZER]);
            }
            object
        })
        .collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    cp.kubectl_output(
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        &list.to_string(),
    );

    for (_, name, _, _) in cases.iter().filter(|(_, _, c, _)| deleted_while_in_use(c)) {
        cp.kubectl_output(
            &[
                "delete",
                "-n",
                &ns,
                "softwarepackage.otau.dev",
                name,
                "--wait=false",
            ],
            "",
        );
    }

    // 2. Write each status as the operator does.
    for (kind, name, case, _) in &cases {
        match case.as_str() {
            "(no status yet)" => {}
            "(new generation)" => {
                // Observed, then the spec changes in Git: the status lags a generation.
                let observed = if kind == "Rollout" {
                    "WaveInProgress"
                } else {
                    "Connected"
                };
                write_case_status(&client, &ns, kind, name, observed).await;
                let patch = if kind == "Rollout" {
                    json!({"spec": {"policy": {"deviceTimeout": "3m"}}})
                } else {
                    json!({"spec": {"checkInterval": "11m"}})
                };
                let resource = if kind == "Rollout" {
                    "rollout.otau.dev"
                } else {
                    "iotconnector.otau.dev"
                };
                cp.kubectl_output(
                    &[
                        "patch",
                        "-n",
                        &ns,
                        resource,
                        name,
                        "--type",
                        "merge",
                        "-p",
                        &patch.to_string(),
                    ],
                    "",
                );
            }
            _ => {
                let status = write_case_status(&client, &ns, kind, name, case).await;
                assert_eq!(
                    ready_reason(&status),
                    *case,
                    "{kind} {case}: the operator's functions give another Ready reason"
                );
            }
        }
    }

    // 3. Read them back from the apiserver and judge them with the real evaluators.
    let mut objects = Vec::new();
    for (kind, name, _, _) in &cases {
        let resource = format!("{}.otau.dev", kind.to_lowercase());
        let text = cp.kubectl_output(&["get", "-n", &ns, &resource, name, "-o", "json"], "");
        objects.push(serde_json::from_str::<Value>(&text).expect("kubectl prints JSON"));
    }
    let kstatus = run_json(
        &tool("kstatus"),
        &[],
        &json!({"apiVersion": "v1", "kind": "List", "items": objects}),
    );
    let kstatus = kstatus.as_array().expect("an array");
    let (_guard, cm) = argocd_cm();
    let health = argocd_health(&cm, &objects);
    assert_eq!(kstatus.len(), cases.len());
    assert_eq!(health.len(), cases.len());

    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, (kind, name, case, row)) in cases.iter().enumerate() {
        let got_kstatus = kstatus[i]["status"].as_str().unwrap_or_default();
        assert_eq!(
            kstatus[i]["name"],
            name.as_str(),
            "kstatus answers in order"
        );
        if got_kstatus != row.kstatus {
            failures.push(format!(
                "{kind} {case}: kstatus says {got_kstatus} ({}), docs/gitops.md says {}",
                kstatus[i]["message"], row.kstatus
            ));
        }
        if health[i].0 != row.argocd {
            failures.push(format!(
                "{kind} {case}: Argo CD says {} ({}), docs/gitops.md says {}",
                health[i].0, health[i].1, row.argocd
            ));
        }
        seen.insert((kind.clone(), got_kstatus.to_owned(), health[i].0.clone()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The table spans every verdict, so a tool that answered one thing for everything fails.
    for (kind, kstatus, argocd) in [
        ("Rollout", "Failed", "Degraded"),
        ("Rollout", "Current", "Healthy"),
        ("Rollout", "InProgress", "Suspended"),
        ("IoTConnector", "InProgress", "Progressing"),
        ("SoftwarePackage", "Failed", "Degraded"),
        ("SoftwarePackage", "Terminating", "Progressing"),
    ] {
        assert!(
            seen.contains(&(kind.to_owned(), kstatus.to_owned(), argocd.to_owned())),
            "no {kind} case is {kstatus} and {argocd}"
        );
    }
}

/// A status written by the previous release (no `Reconciling`) still reads, and kstatus judges
/// it from `Ready` until the operator's next write adds `Reconciling`.
#[tokio::test]
async fn a_status_without_reconciling_still_reads_and_is_judged() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("gitops-old-status").await;
    let client = cp.client().await;
    let name = "old-status";
    let object = base_object("IoTConnector", name);
    cp.kubectl_output(
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        &object.to_string(),
    );
    let api: Api<IoTConnector> = Api::namespaced(client.clone(), &ns);
    let old = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": "IoTConnector",
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "SecretNotFound", "message": "no Secret",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-27T12:00:00Z"},
            {"type": "Stalled", "status": "False", "reason": "SecretNotFound", "message": "",
             "observedGeneration": 1, "lastTransitionTime": "2026-11-27T12:00:00Z"}]}
    });
    api.patch_status(
        name,
        &PatchParams::apply("previous-release").force(),
        &Patch::Apply(&old),
    )
    .await
    .expect("write an old status");
    let read = api
        .get(name)
        .await
        .expect("the typed client reads an old status");
    let status = read.status.expect("status");
    assert_eq!(status.conditions.len(), 2);
    let (verdict, message) = cp.kstatus_of(&ns, "iotconnector.otau.dev", name);
    assert_eq!(verdict, "InProgress", "{message}");
    assert_eq!(message, "no Secret", "judged by the Ready condition");
}

/// hack/tools.sh labels each helper's build stamp with its pinned version; the version the
/// helper is built from is the one in its go.mod. They must agree.
#[test]
fn the_helper_versions_in_tools_sh_are_their_go_mod_versions() {
    let read = |path: &str| std::fs::read_to_string(repo_root().join(path)).expect(path);
    let tools = read("hack/tools.sh");
    let pinned = |name: &str| -> String {
        let prefix = format!("{name}=");
        tools
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("hack/tools.sh sets no {name}"))
            .to_owned()
    };
    for (go_mod, module, variable) in [
        (
            "hack/kstatus/go.mod",
            "sigs.k8s.io/cli-utils",
            "CLI_UTILS_VERSION",
        ),
        (
            "hack/argocd-lua/go.mod",
            "github.com/argoproj/argo-cd/v3",
            "ARGOCD_VERSION",
        ),
    ] {
        let want = format!("{module} {}", pinned(variable));
        assert!(
            read(go_mod).lines().any(|l| l.trim() == want),
            "{go_mod} does not require {want}"
        );
    }
}
