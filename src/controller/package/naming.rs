//! Names and tags the package controller gives things on the platform (pure functions).
//!
//! - File content ids: `spec.files[].contentId`, else `<namespace>_<package>_<file name>`
//!   (see [`crate::api::software_package::default_content_id`]); object names never contain
//!   `_`, so two packages' defaults never collide on one connector.
//! - Every uploaded file carries the tags `owner` = `<namespace>/<package>` and `sha256`.
//! - The registration item is `package_<namespace>_<package>.json`.

use std::collections::BTreeMap;

use crate::api::SoftwarePackage;
use crate::otau::Manifest;
use kube::ResourceExt;

/// Tag naming the SoftwarePackage (`<namespace>/<name>`) that owns an uploaded item.
pub const OWNER_TAG: &str = "owner";
/// Tag holding an uploaded item's sha256 (lowercase hex).
pub const SHA256_TAG: &str = "sha256";
/// MIME type of files whose spec names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// `author` in `otau_info` when the spec names none.
pub const DEFAULT_AUTHOR: &str = "otau-operator";

/// `<namespace>/<name>`: the owner tag value of a package.
pub fn owner(package: &SoftwarePackage) -> String {
    format!(
        "{}/{}",
        package.namespace().unwrap_or_default(),
        package.name_any()
    )
}

/// The registration slug: `<namespace>_<name>` (item `package_<slug>.json`).
pub fn slug(package: &SoftwarePackage) -> String {
    format!(
        "{}_{}",
        package.namespace().unwrap_or_default(),
        package.name_any()
    )
}

/// The content id of each file, in spec order.
pub fn content_ids(package: &SoftwarePackage) -> Vec<String> {
    let namespace = package.namespace().unwrap_or_default();
    let name = package.name_any();
    package
        .spec
        .files
        .iter()
        .map(|f| f.effective_content_id(&namespace, &name))
        .collect()
}

/// Two files of the package that would be stored under one content id, with that id: an
/// explicit `contentId` equal to another file's default (or explicit) id. The schema refuses
/// this when a package is created; this catches packages stored before that rule, with the
/// exact namespace the schema cannot see.
pub fn shared_content_id(package: &SoftwarePackage) -> Option<(String, String, String)> {
    let ids = content_ids(package);
    let files = &package.spec.files;
    ids.iter().enumerate().find_map(|(i, id)| {
        ids[i + 1..].iter().position(|other| other == id).map(|j| {
            (
                files[i].name.clone(),
                files[i + 1 + j].name.clone(),
                id.clone(),
            )
        })
    })
}

/// The tags of an uploaded file.
pub fn file_tags(owner: &str, sha256: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (OWNER_TAG.to_string(), owner.to_string()),
        (SHA256_TAG.to_string(), sha256.to_string()),
    ])
}

/// The manifest: `version`, `name` (displayName, else the object name), `description`, type
/// `URL_LIST`, payload = the uploaded content ids (no host) then the links, in spec order.
pub fn manifest(package: &SoftwarePackage) -> Manifest {
    let mut payload = content_ids(package);
    payload.extend(package.spec.links.iter().cloned());
    Manifest::url_list(
        package.spec.version.clone(),
        package
            .spec
            .display_name
            .clone()
            .unwrap_or_else(|| package.name_any()),
        package.spec.description.clone().unwrap_or_default(),
        payload,
    )
}

/// The `author` of the registration.
pub fn author(package: &SoftwarePackage) -> String {
    package
        .spec
        .registration
        .author
        .clone()
        .unwrap_or_else(|| DEFAULT_AUTHOR.to_string())
}

/// Whether a stored `otau_info` tag says what we would register now (compared as JSON).
pub fn otau_info_matches(stored: &str, author: &str, product: &str, manifest: &Manifest) -> bool {
    let Ok(stored) = serde_json::from_str::<serde_json::Value>(stored) else {
        return false;
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(&manifest.to_json()) else {
        return false;
    };
    stored.get("author").and_then(|v| v.as_str()) == Some(author)
        && stored.get("product").and_then(|v| v.as_str()) == Some(product)
        && stored.get("config_otau") == Some(&config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::software_package::{PackageFile, SoftwarePackageSpec};
    use crate::api::{LocalRef, SoftwarePackage};

    fn package() -> SoftwarePackage {
        let mut p = SoftwarePackage::new(
            "fw-1-0-2",
            SoftwarePackageSpec {
                connector_ref: LocalRef::new("emulator"),
                version: "1.0.2".into(),
                display_name: Some("Firmware".into()),
                description: None,
                files: vec![
                    PackageFile {
                        name: "fw.bin".into(),
                        url: Some("https://example.com/fw.bin".into()),
                        ..PackageFile::default()
                    },
                    PackageFile {
                        name: "notes.txt".into(),
                        content_id: Some("notes-1.0.2.txt".into()),
                        ..PackageFile::default()
                    },
                ],
                links: vec!["https://cdn.example.com/extra.bin".into()],
                allow_insecure_http: false,
                retain_content: false,
                registration: Default::default(),
            },
        );
        p.metadata.namespace = Some("team-a".into());
        p
    }

    #[test]
    fn ids_owner_and_slug() {
        let p = package();
        assert_eq!(
            content_ids(&p),
            vec!["team-a_fw-1-0-2_fw.bin", "notes-1.0.2.txt"]
        );
        assert_eq!(owner(&p), "team-a/fw-1-0-2");
        assert_eq!(slug(&p), "team-a_fw-1-0-2");
        let tags = file_tags("team-a/fw-1-0-2", "ab");
        assert_eq!(tags[OWNER_TAG], "team-a/fw-1-0-2");
        assert_eq!(tags[SHA256_TAG], "ab");
    }

    #[test]
    fn a_content_id_equal_to_a_siblings_default_is_found() {
        let mut p = package();
        assert_eq!(shared_content_id(&p), None);
        // notes.txt takes fw.bin's default id: two files, one platform item.
        p.spec.files[1].content_id = Some("team-a_fw-1-0-2_fw.bin".into());
        assert_eq!(
            shared_content_id(&p),
            Some((
                "fw.bin".into(),
                "notes.txt".into(),
                "team-a_fw-1-0-2_fw.bin".into()
            ))
        );
        // The same form for another namespace is another package's id, not a sibling's.
        p.spec.files[1].content_id = Some("team-b_fw-1-0-2_fw.bin".into());
        assert_eq!(shared_content_id(&p), None);
    }

    #[test]
    fn manifest_lists_files_then_links_in_spec_order() {
        let m = manifest(&package());
        assert_eq!(
            m.to_json(),
            r#"{"version":"1.0.2","name":"Firmware","type":"URL_LIST","payload":["team-a_fw-1-0-2_fw.bin","notes-1.0.2.txt","https://cdn.example.com/extra.bin"]}"#
        );
    }

    #[test]
    fn otau_info_is_compared_as_json() {
        let m = manifest(&package());
        let stored = serde_json::json!({
            "product": "emulator",
            "author": "ops",
            "config_otau": serde_json::from_str::<serde_json::Value>(&m.to_json()).unwrap(),
        })
        .to_string();
        assert!(otau_info_matches(&stored, "ops", "emulator", &m));
        assert!(!otau_info_matches(&stored, "someone", "emulator", &m));
        let other = Manifest::url_list("1.0.3", "Firmware", "", vec![]);
        assert!(!otau_info_matches(&stored, "ops", "emulator", &other));
        assert!(!otau_info_matches("not json", "ops", "emulator", &m));
    }
}
