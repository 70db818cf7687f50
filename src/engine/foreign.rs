//! Which manifests a device may hold that are not foreign: those of the SoftwarePackages of
//! the Rollout's IoTConnector (docs/rollouts.md, "Busy and foreign devices"). The caller reads
//! the packages; this decides which of them count, so the controller, `simulate` and
//! `kubectl otau devices` agree.

use crate::api::SoftwarePackage;
use crate::otau::Manifest;

/// The manifests (`status.manifest`, parsed) of the packages that name `connector` in
/// `connector_namespace`: the packages of other connectors, without a manifest yet or with
/// one that does not parse are left out.
pub fn connector_manifests<'a>(
    packages: impl IntoIterator<Item = &'a SoftwarePackage>,
    connector_namespace: &str,
    connector: &str,
) -> Vec<Manifest> {
    packages
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref().unwrap_or_default() == connector_namespace)
        .filter(|p| p.spec.connector_ref.name == connector)
        .filter_map(|p| p.status.as_ref()?.manifest.as_deref())
        .filter_map(|text| Manifest::parse(text).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(namespace: &str, connector: &str, manifest: Option<&str>) -> SoftwarePackage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "otau.dev/v1alpha1", "kind": "SoftwarePackage",
            "metadata": {"name": "p", "namespace": namespace},
            "spec": {"connectorRef": {"name": connector}, "version": "1.0",
                     "links": ["https://vendor.example.com/fw.img"]},
            "status": {"manifest": manifest},
        }))
        .expect("package")
    }

    #[test]
    fn only_parsed_manifests_of_the_connectors_packages_count() {
        let m = Manifest::url_list("1.0", "fw", "", vec!["https://x.example/a".into()]);
        let json = m.to_json();
        let packages = [
            package("ns", "c", Some(&json)),
            package("ns", "other", Some(&json)),
            package("elsewhere", "c", Some(&json)),
            package("ns", "c", None),
            package("ns", "c", Some("not a manifest")),
        ];
        assert_eq!(connector_manifests(&packages, "ns", "c"), vec![m]);
    }
}
