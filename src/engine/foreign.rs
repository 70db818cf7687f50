//! Which manifests a device may hold that are not foreign: those of the SoftwarePackages of
//! the Rollout's IoTConnector; and which of them belong to newer Rollouts (docs/rollouts.md,
//! "Busy and foreign devices"). The caller reads the packages and Rollouts; this decides which
//! of them count, so the controller and `kubectl otau devices` agree.

use kube::ResourceExt;

use crate::api::{Rollout, SoftwarePackage};
use crate::otau::Manifest;

/// Whether `a` was created before `b` (ties: by name): which of two Rollouts is the older,
/// for `TargetConflict` and for which one a device belongs to.
pub fn created_before(a: &Rollout, b: &Rollout) -> bool {
    let created = |r: &Rollout| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (created(a), a.name_any()) < (created(b), b.name_any())
}

/// The packages of the Rollouts of `me`'s namespace created after `me`.
pub fn newer_rollout_packages<'a>(
    me: &Rollout,
    rollouts: impl IntoIterator<Item = &'a Rollout>,
) -> Vec<&'a str> {
    rollouts
        .into_iter()
        .filter(|r| r.namespace() == me.namespace() && r.uid() != me.uid())
        .filter(|r| created_before(me, r))
        .map(|r| r.spec.package_ref.name.as_str())
        .collect()
}

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

/// The manifests of the packages named in `newer_rollout_packages` (the packages of the
/// Rollouts on the connector created after this one, this Rollout's own package left out),
/// among `connector_manifests`' packages.
pub fn newer_rollout_manifests<'a>(
    packages: impl IntoIterator<Item = &'a SoftwarePackage>,
    connector_namespace: &str,
    connector: &str,
    own_package: &str,
    newer_rollout_packages: &[&str],
) -> Vec<Manifest> {
    let newer: Vec<&SoftwarePackage> = packages
        .into_iter()
        .filter(|p| {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            name != own_package && newer_rollout_packages.contains(&name)
        })
        .collect();
    connector_manifests(newer, connector_namespace, connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(version: &str) -> Manifest {
        Manifest::url_list(
            version,
            "fw",
            "",
            vec![format!("https://x.example/{version}")],
        )
    }

    fn package(
        name: &str,
        namespace: &str,
        connector: &str,
        manifest: Option<&str>,
    ) -> SoftwarePackage {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "otau.dev/v1alpha1", "kind": "SoftwarePackage",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"connectorRef": {"name": connector}, "version": "1.0",
                     "links": ["https://vendor.example.com/fw.img"]},
            "status": {"manifest": manifest},
        }))
        .expect("package")
    }

    #[test]
    fn only_parsed_manifests_of_the_connectors_packages_count() {
        let m = manifest("1.0");
        let json = m.to_json();
        let packages = [
            package("a", "ns", "c", Some(&json)),
            package("b", "ns", "other", Some(&json)),
            package("c", "elsewhere", "c", Some(&json)),
            package("d", "ns", "c", None),
            package("e", "ns", "c", Some("not a manifest")),
        ];
        assert_eq!(connector_manifests(&packages, "ns", "c"), vec![m]);
    }

    #[test]
    fn only_the_packages_of_newer_rollouts_other_than_this_ones_count() {
        let (v1, v2, v3) = (manifest("1.0"), manifest("2.0"), manifest("3.0"));
        let (j1, j2, j3) = (v1.to_json(), v2.to_json(), v3.to_json());
        let packages = [
            package("fw-1", "ns", "c", Some(&j1)),
            package("fw-2", "ns", "c", Some(&j2)),
            package("fw-3", "ns", "c", Some(&j3)),
            package("fw-4", "ns", "other", Some(&j3)),
        ];
        // This Rollout rolls fw-2; newer Rollouts roll fw-3, fw-4 (another connector) and,
        // a second one, fw-2.
        let got = newer_rollout_manifests(&packages, "ns", "c", "fw-2", &["fw-3", "fw-4", "fw-2"]);
        assert_eq!(got, vec![v3]);
    }
}
