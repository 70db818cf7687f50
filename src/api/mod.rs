//! The CRD API: `IoTConnector`, `SoftwarePackage` and `Rollout` (group `otau.dev`, version
//! `v1alpha1`), all namespaced, in the category `otau` (`kubectl get otau` lists all three).
//!
//! The types are the single source of the CRDs: [`crds`] returns them, `otau-operator crds`
//! prints them, and `crds/` holds them as committed YAML (a unit test fails when it drifts;
//! regenerate with `cargo run -- crds --output-dir crds`).
//!
//! Validation lives in the schema (OpenAPI bounds plus CEL rules with readable messages), so a
//! bad manifest is refused at `kubectl apply` time. Every list and string is bounded, which
//! keeps the apiserver's CEL cost estimates within budget. This module uses nothing else in the
//! crate.

pub mod common;
pub mod conditions;
pub mod duration;
pub mod immutable;
pub mod iot_connector;
pub mod names;
pub mod opt_in;
pub mod rollout;
pub mod rollout_decisions;
pub mod software_package;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use kube::CustomResourceExt;

pub use common::{ConfigMapKeyRef, DeviceTag, LocalRef, SecretKeyRef};
pub use duration::{DurationError, GoDuration, parse_duration};
pub use iot_connector::{IoTConnector, IoTConnectorSpec, IoTConnectorStatus};
pub use rollout::{Rollout, RolloutPhase, RolloutSpec, RolloutStatus};
pub use software_package::{SoftwarePackage, SoftwarePackageSpec, SoftwarePackageStatus};

/// The API group.
pub const GROUP: &str = "otau.dev";
/// The API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every kind.
pub const API_VERSION: &str = "otau.dev/v1alpha1";
/// The category all three kinds belong to.
pub const CATEGORY: &str = "otau";

/// Every CRD of this API, in dependency order (connector, package, rollout), finished by
/// [`finish`].
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        finish(IoTConnector::crd(), Vec::new(), None),
        finish(
            SoftwarePackage::crd(),
            software_package::root_rules(),
            Some(software_package::IMMUTABLE_SPEC_MESSAGE),
        ),
        finish(Rollout::crd(), Vec::new(), None),
    ]
}

/// What kube-derive cannot do, on the root schema of every version: the bound on
/// `metadata.name` ([`names::metadata_schema`]), `rules` at the root (rules that read the name,
/// [`software_package::root_rules`]), and, with `immutable_spec`, the rule that keeps the whole
/// spec as it was created, built from the spec's schema so that `field: null` lines change
/// nothing ([`immutable`]).
fn finish(
    mut crd: CustomResourceDefinition,
    rules: Vec<ValidationRule>,
    immutable_spec: Option<&str>,
) -> CustomResourceDefinition {
    let kind = crd.spec.names.kind.clone();
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let properties = root.properties.get_or_insert_with(Default::default);
        if let (Some(message), Some(spec)) = (immutable_spec, properties.get_mut("spec")) {
            let rule = ValidationRule {
                rule: immutable::rule(spec),
                message: Some(message.to_owned()),
                ..ValidationRule::default()
            };
            spec.x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .insert(0, rule);
        }
        properties.insert("metadata".into(), names::metadata_schema(&kind));
        if !rules.is_empty() {
            root.x_kubernetes_validations
                .get_or_insert_with(Vec::new)
                .extend(rules.iter().cloned());
        }
    }
    crd
}

/// The file a CRD is stored in under `crds/`: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.{}.yaml", crd.spec.names.plural, crd.spec.group)
}

/// One CRD as a YAML document (no leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(crd)
}

/// Every CRD as one multi-document YAML stream.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
