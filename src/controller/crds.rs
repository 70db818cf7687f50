//! Start-up check (docs/architecture.md §9.9): the three CRDs must exist and be Established
//! before the controllers start; a missing CRD stops the operator with instructions.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::Client;
use kube::api::Api;
use kube::runtime::wait::{await_condition, conditions};

/// The CRDs the operator needs.
pub const CRD_NAMES: [&str; 3] = [
    "iotconnectors.otau.dev",
    "softwarepackages.otau.dev",
    "rollouts.otau.dev",
];

/// How to install the CRDs, for error messages.
pub const INSTALL_HINT: &str = "install them with `kubectl apply --server-side -f crds/` from the \
     repository (or `otau-operator crds | kubectl apply --server-side -f -`)";

/// Waits until every CRD is Established; a message for humans when one is missing or the
/// wait times out.
pub async fn wait_established(client: &Client, timeout: Duration) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = Vec::new();
    let mut outdated = Vec::new();
    for name in CRD_NAMES {
        match api.get_opt(name).await {
            Ok(Some(installed)) => outdated.extend(outdated_crd(&installed)),
            Ok(None) => missing.push(name),
            Err(e) => {
                return Err(format!(
                    "cannot read CustomResourceDefinition {name}: {e} (check the kubeconfig and that this identity may get customresourcedefinitions)"
                ));
            }
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "the CustomResourceDefinition(s) {} are not installed: {INSTALL_HINT}",
            missing.join(", ")
        ));
    }
    if !outdated.is_empty() {
        return Err(format!(
            "{}; the apiserver would drop what this operator writes there. Apply this release's CRDs first: `kubectl apply --server-side -f crds/` (Helm installs CRDs once and never upgrades them; see docs/install.md \"Upgrading\")",
            outdated.join("; ")
        ));
    }
    for name in CRD_NAMES {
        let established = await_condition(api.clone(), name, conditions::is_crd_established());
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("waiting for CRD {name}: {e}")),
            Err(_) => {
                return Err(format!(
                    "CRD {name} is not Established after {} s; check `kubectl get crd {name} -o yaml`, or reinstall: {INSTALL_HINT}",
                    timeout.as_secs()
                ));
            }
        }
    }
    Ok(())
}

/// How an installed CRD falls behind the one this binary was built with: the status fields it
/// writes that the installed schema lacks (Helm never upgrades CRDs), as one sentence.
pub fn outdated_crd(installed: &CustomResourceDefinition) -> Option<String> {
    let name = installed.metadata.name.as_deref().unwrap_or_default();
    let ours = crate::api::crds()
        .into_iter()
        .find(|crd| crd.metadata.name.as_deref() == Some(name))?;
    let mut lacking = Vec::new();
    for version in &ours.spec.versions {
        let Some(installed_version) = installed
            .spec
            .versions
            .iter()
            .find(|v| v.name == version.name)
        else {
            lacking.push(format!("version {}", version.name));
            continue;
        };
        let status_of = |v: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinitionVersion| {
            v.schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .and_then(|s| s.properties.as_ref())
                .and_then(|p| p.get("status"))
                .cloned()
        };
        let (Some(wanted), installed_status) = (status_of(version), status_of(installed_version))
        else {
            continue;
        };
        let have = installed_status.map_or_else(BTreeSet::new, |s| field_paths(&s, "status"));
        let preserved = |path: &str| {
            have.iter()
                .any(|h| h.ends_with(".*") && path.starts_with(&h[..h.len() - 1]))
        };
        for path in field_paths(&wanted, "status") {
            let under_lacking = lacking
                .iter()
                .any(|l| path.starts_with(&format!("{l}.")) || path.starts_with(&format!("{l}[]")));
            if !have.contains(&path) && !preserved(&path) && !under_lacking {
                lacking.push(path);
            }
        }
    }
    if lacking.is_empty() {
        return None;
    }
    let shown: Vec<&str> = lacking.iter().take(5).map(String::as_str).collect();
    let more = lacking.len().saturating_sub(shown.len());
    Some(format!(
        "the installed CustomResourceDefinition {name} lacks {}{} (this operator writes {})",
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        if lacking.len() == 1 { "it" } else { "them" }
    ))
}

/// Every field path under `prefix` a schema declares (`status.waves[].counts`); a node that
/// keeps unknown fields is `<path>.*`.
fn field_paths(schema: &JSONSchemaProps, prefix: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    collect_paths(schema, prefix, &mut paths);
    paths
}

fn collect_paths(schema: &JSONSchemaProps, path: &str, out: &mut BTreeSet<String>) {
    if schema.x_kubernetes_preserve_unknown_fields == Some(true) {
        out.insert(format!("{path}.*"));
    }
    for (key, child) in schema.properties.iter().flatten() {
        let child_path = format!("{path}.{key}");
        out.insert(child_path.clone());
        collect_paths(child, &child_path, out);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &schema.items {
        collect_paths(items, &format!("{path}[]"), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout_crd() -> CustomResourceDefinition {
        crate::api::crds()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some("rollouts.otau.dev"))
            .expect("the Rollout CRD")
    }

    /// The Rollout CRD without `status.plan.held`, as the previous release installed it.
    fn without_held(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
        let plan = status_plan(&mut crd)
            .properties
            .as_mut()
            .expect("plan fields");
        assert!(plan.remove("held").is_some());
        crd
    }

    /// The schema of `status.plan` in the Rollout CRD.
    fn status_plan(crd: &mut CustomResourceDefinition) -> &mut JSONSchemaProps {
        crd.spec.versions[0]
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"))
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("plan"))
            .expect("status.plan")
    }

    #[test]
    fn the_crds_this_binary_generates_are_up_to_date() {
        for crd in crate::api::crds() {
            assert_eq!(outdated_crd(&crd), None);
        }
    }

    #[test]
    fn an_installed_crd_without_a_status_field_this_binary_writes_is_named() {
        let message = outdated_crd(&without_held(rollout_crd())).expect("outdated");
        assert_eq!(
            message,
            "the installed CustomResourceDefinition rollouts.otau.dev lacks status.plan.held (this operator writes it)"
        );
    }

    #[test]
    fn a_status_that_keeps_unknown_fields_lacks_nothing() {
        let mut crd = without_held(rollout_crd());
        status_plan(&mut crd).x_kubernetes_preserve_unknown_fields = Some(true);
        assert_eq!(outdated_crd(&crd), None);
    }
}
