//! Start-up check (docs/architecture.md §9.9): the three CRDs must exist and be Established
//! before the controllers start; a missing CRD stops the operator with instructions.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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
    for name in CRD_NAMES {
        match api.get_opt(name).await {
            Ok(Some(_)) => {}
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
