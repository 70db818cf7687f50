//! Which packages a ConfigMap change concerns. ConfigMaps used as file sources are watched
//! (in the namespaces the operator watches, and only those labelled
//! `otau.dev/package-source=true`: [`WATCH_SELECTOR`]), so an edited ConfigMap re-reconciles
//! the packages that read it at once: their files are read again and re-uploaded when the
//! sha256 changed. Labelling a ConfigMap brings it into the watch, which re-reads the packages
//! that were refused for lack of the label.
//!
//! Secrets are not watched (docs/architecture.md §9.10: the operator only `get`s Secrets, it never
//! lists or watches them). A changed Secret file source is picked up by the periodic resync
//! (`--package-resync`) or at once by any change to the package (for example
//! `kubectl annotate softwarepackage <name> otau.dev/recheck=$(date +%s)`).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};

use super::super::Context;
use crate::api::SoftwarePackage;

/// The label selector of the ConfigMap watch: package sources only (the label of
/// [`super::fetch::SOURCE_LABEL`]; a test checks they agree).
pub const WATCH_SELECTOR: &str = "otau.dev/package-source=true";

/// Whether `package` reads a file from the ConfigMap `name` (in its own namespace).
pub fn reads_config_map(package: &SoftwarePackage, name: &str) -> bool {
    package.spec.files.iter().any(|f| {
        f.config_map_key_ref
            .as_ref()
            .is_some_and(|r| r.name == name)
    })
}

/// The packages in `packages` that read a file from `config_map`. Each one's schedule is
/// expired, so its reconcile does the work now instead of waiting for the next resync.
pub fn packages_using_config_map(
    packages: &Store<DeserializeGuard<SoftwarePackage>>,
    ctx: &Context,
    config_map: &ConfigMap,
) -> Vec<ObjectRef<DeserializeGuard<SoftwarePackage>>> {
    let namespace = config_map.namespace();
    let name = config_map.name_any();
    packages
        .state()
        .into_iter()
        .filter(|p| p.namespace() == namespace)
        .filter_map(|p| {
            let package = p.0.as_ref().ok()?;
            if !reads_config_map(package, &name) {
                return None;
            }
            if let Some(uid) = &package.metadata.uid {
                ctx.schedule.expire(uid);
            }
            Some(ObjectRef::from_obj(&*p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(yaml: &str) -> SoftwarePackage {
        serde_yaml::from_str(yaml).expect("package yaml")
    }

    #[test]
    fn the_watch_selects_the_opt_in_label() {
        assert_eq!(
            WATCH_SELECTOR,
            format!("{}=true", super::super::fetch::SOURCE_LABEL)
        );
    }

    #[test]
    fn only_packages_naming_the_config_map_read_it() {
        let p = package(
            "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: p\n  namespace: n\nspec:\n  connectorRef:\n    name: c\n  version: 1.0.0\n  files:\n    - name: a.bin\n      url: https://example.com/a.bin\n      sha256: 0000000000000000000000000000000000000000000000000000000000000000\n    - name: b.bin\n      configMapKeyRef:\n        name: fw\n        key: b.bin\n",
        );
        assert!(reads_config_map(&p, "fw"));
        assert!(!reads_config_map(&p, "other"));
        assert!(!reads_config_map(&p, "a.bin"));
    }
}
