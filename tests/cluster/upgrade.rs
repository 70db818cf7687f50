//! Applying this release's CRDs over objects stored before its rules existed (docs/install.md,
//! "Upgrading"). The apiserver ratchets validation: a rule is checked on an update only where
//! the value changed. So an object whose name is now too long, or whose spec now breaks a
//! rule, still gets its status written, its finalizer removed and is deleted, and an edit
//! that leaves the offending field alone goes through; an edit of that field must fix it.
//!
//! "Before" is this release's CRDs without any `x-kubernetes-validations` and without the
//! `metadata.name` bound: more permissive than any earlier release. Runs on the dedicated
//! control plane (it replaces the CRDs, which the other tests must not see).

use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::Status;
use otau_operator::api::{IoTConnector, Rollout, SoftwarePackage, crds};
use serde_json::{Value, json};

use crate::support::{ControlPlane, wait_for};

/// A name longer than the 236 characters the rule allows (and within Kubernetes' 253).
fn long_name(prefix: &str) -> String {
    format!("{prefix}-{}", "x".repeat(240 - prefix.len() - 1))
}

/// Drops every CEL rule, and the `metadata` node, from a schema.
fn strip_rules(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_rules);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_rules),
        _ => {}
    }
}

fn crd_documents(strip: bool) -> String {
    crds()
        .into_iter()
        .map(|crd| {
            let mut value = serde_json::to_value(crd).expect("CRD JSON");
            if strip {
                let root = &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
                root["properties"]
                    .as_object_mut()
                    .expect("root properties")
                    .remove("metadata");
                strip_rules(root);
            }
            serde_json::to_string(&value).expect("JSON")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn apply_crds(cp: &ControlPlane, strip: bool) {
    cp.kubectl_output(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &crd_documents(strip),
    );
    for name in [
        "iotconnectors.otau.dev",
        "softwarepackages.otau.dev",
        "rollouts.otau.dev",
    ] {
        cp.kubectl_output(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{name}"),
            ],
            "",
        );
    }
}

/// One stored object breaking new rules, and a spec edit that touches only what breaks them.
struct Case {
    resource: ApiResource,
    object: Value,
    /// A merge patch of a field the new rules do not judge: accepted (ratcheting).
    unrelated_edit: Value,
    /// A merge patch that changes an offending field but keeps it invalid, and the message.
    offending_edit: Option<(Value, &'static str)>,
}

fn cases() -> Vec<Case> {
    let finalizers = json!(["otau.dev/upgrade-test"]);
    let connector = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": "IoTConnector",
        "metadata": {"name": long_name("connector"), "finalizers": finalizers},
        "spec": {
            "productId": "p1abc",
            "tokenSecretRef": {"name": "exosite-token", "key": ".."},
            "managementUrl": "https://ops:pw@bizapi.hosted.exosite.io/api:1/",
            "checkInterval": "2562048h"
        }
    });
    let package_name = long_name("package");
    let package = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": "SoftwarePackage",
        "metadata": {"name": package_name, "finalizers": finalizers},
        "spec": {
            "connectorRef": {"name": "c"}, "version": "1.0.0",
            "files": [
                {"name": "a.bin", "contentId": format!("prod_{package_name}_b.bin"),
                 "configMapKeyRef": {"name": "cm", "key": "."}},
                {"name": "b.bin", "configMapKeyRef": {"name": "cm", "key": "b"}}
            ]
        }
    });
    let rollout = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": long_name("rollout"), "finalizers": finalizers},
        "spec": {
            "packageRef": {"name": "p"},
            "targets": {"identities": ["gw/01", "00AB01"],
                        "tags": [{"name": "region", "value": "eu "}]},
            "waves": [{"percent": 10, "soak": "2562048h"}, {"percent": 100}],
        }
    });
    // Stored before the rule that deviceTimeoutTotal is not shorter than deviceTimeout.
    let timeouts = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "rollout-timeouts", "finalizers": finalizers},
        "spec": {
            "packageRef": {"name": "p"},
            "targets": {"tags": [{"name": "region", "value": "eu"}]},
            "waves": [{"percent": 100}],
            "policy": {"deviceTimeout": "1h", "deviceTimeoutTotal": "30m"},
        }
    });
    vec![
        Case {
            resource: ApiResource::erase::<Rollout>(&()),
            object: timeouts,
            unrelated_edit: json!({"spec": {"paused": true}}),
            offending_edit: Some((
                json!({"spec": {"policy": {"deviceTimeoutTotal": "40m"}}}),
                "deviceTimeoutTotal must not be shorter than deviceTimeout",
            )),
        },
        Case {
            resource: ApiResource::erase::<IoTConnector>(&()),
            object: connector,
            unrelated_edit: json!({"spec": {"rateLimit": {"requestsPerSecond": 5}}}),
            offending_edit: Some((
                json!({"spec": {"checkInterval": "2562049h"}}),
                "checkInterval must be a duration from 10s to 8760h",
            )),
        },
        Case {
            resource: ApiResource::erase::<SoftwarePackage>(&()),
            object: package,
            // The spec is immutable: only metadata edits.
            unrelated_edit: json!({"metadata": {"labels": {"team": "a"}}}),
            offending_edit: None,
        },
        Case {
            resource: ApiResource::erase::<Rollout>(&()),
            object: rollout,
            unrelated_edit: json!({"spec": {"paused": true}}),
            offending_edit: Some((
                json!({"spec": {"waves": [{"percent": 20, "soak": "2562048h"}, {"percent": 100}]}}),
                "soak must be a duration from 0s to 8760h",
            )),
        },
    ]
}

fn refusal(error: kube::Error) -> Status {
    match error {
        kube::Error::Api(response) => *response,
        other => panic!("expected a refusal from the apiserver, got {other}"),
    }
}

async fn stored_object_stays_usable(api: &Api<DynamicObject>, case: &Case) {
    let name = case.object["metadata"]["name"].as_str().unwrap().to_owned();
    let kind = case.resource.kind.clone();
    let apply = PatchParams::apply("otau-operator").force();
    let status = json!({
        "apiVersion": "otau.dev/v1alpha1", "kind": kind,
        "status": {"observedGeneration": 1}
    });
    api.patch_status(&name, &apply, &Patch::Apply(&status))
        .await
        .unwrap_or_else(|e| panic!("{kind}: status write refused: {e}"));
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(&case.unrelated_edit),
    )
    .await
    .unwrap_or_else(|e| panic!("{kind}: an edit that leaves the offending fields alone: {e}"));
    if let Some((edit, message)) = &case.offending_edit {
        let refused = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(edit))
            .await
            .expect_err("an edit of an offending field must fix it");
        let refused = refusal(refused);
        assert!(
            refused.message.contains(message),
            "{kind}: {}",
            refused.message
        );
    }
    // Deleted the way a user does it: the finalizer holds the object, the controller writes
    // status once more and lets go.
    api.delete(&name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{kind}: delete refused: {e}"));
    api.patch_status(&name, &apply, &Patch::Apply(&status))
        .await
        .unwrap_or_else(|e| panic!("{kind}: status write while deleting refused: {e}"));
    let release = json!({"metadata": {"finalizers": null}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap_or_else(|e| panic!("{kind}: finalizer removal refused: {e}"));
    wait_for(
        Duration::from_secs(30),
        &format!("{kind} {name} to go"),
        || async { matches!(api.get_opt(&name).await, Ok(None)) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_stored_before_the_new_rules_keep_their_status_finalizers_and_deletion() {
    let (cp, _exclusive) = ControlPlane::dedicated_exclusive().await;
    let client = cp.client().await;
    apply_crds(cp, true);
    let ns = cp.namespace("crds-upgrade").await;
    let cases = cases();
    for case in &cases {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &case.resource);
        let object: DynamicObject = serde_json::from_value(case.object.clone()).unwrap();
        api.create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("{}: stored under the old CRD: {e}", case.resource.kind));
    }

    apply_crds(cp, false);
    for case in &cases {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &case.resource);
        // The new rules are in force: a second object with a long name is refused (polled:
        // the apiserver takes a moment to serve a changed CRD schema).
        let mut copy = case.object.clone();
        copy["metadata"] = json!({"name": long_name("copy")});
        let copy: DynamicObject = serde_json::from_value(copy).unwrap();
        let wanted = format!(
            "{} names may have at most 236 characters",
            case.resource.kind
        );
        wait_for(Duration::from_secs(30), &wanted, || async {
            match api.create(&PostParams::default(), &copy).await {
                Err(kube::Error::Api(response)) => response.message.contains(&wanted),
                Ok(_) => {
                    let _ = api
                        .delete(
                            copy.metadata.name.as_deref().unwrap(),
                            &DeleteParams::default(),
                        )
                        .await;
                    false
                }
                Err(_) => false,
            }
        })
        .await;
        stored_object_stays_usable(&api, case).await;
    }
}
