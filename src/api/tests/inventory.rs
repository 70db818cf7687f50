//! The inventory of user input: every string field of the three kinds' specs, every duration
//! and the name every derived name starts from, with what bounds each (its `maxLength` and
//! the rules that judge its content) and the invalid fixtures (`tests/fixtures/invalid/`, run
//! against the real apiserver by `tests/cluster/crds.rs`) that show each rule refusing.
//!
//! The tests fail when a string field is added without a row here, when a row names a rule
//! the schema lacks, and when a duration field lacks its range (the same one the operator
//! parses with, `crate::api::duration::DurationRange`).

use std::path::PathBuf;

use serde_json::Value;

use crate::api::duration::{
    CHECK_INTERVAL, DEVICE_TIMEOUT, DEVICE_TIMEOUT_TOTAL, DURATION_MESSAGE, DurationRange, SOAK,
};
use crate::api::names::MAX_NAME_LENGTH;
use crate::api::{crds, names};

/// One string field and what bounds it.
struct Bound {
    /// The kind.
    kind: &'static str,
    /// The field: `metadata.name`, or a path below `spec` (`[]` for list items).
    path: &'static str,
    /// Its `maxLength` (`None` for an enum); for `metadata.name` the apiserver's 253, which
    /// its rule narrows to [`MAX_NAME_LENGTH`].
    max_length: Option<u64>,
    /// The rules that judge its content: the schema node the rule sits on (`""` for the root)
    /// and a part of its message.
    rules: &'static [(&'static str, &'static str)],
    /// Invalid fixtures that break one of these rules.
    fixtures: &'static [&'static str],
}

const OBJECT_NAME: &str = "must be an object name";
const DATA_KEY: &str = "and not '.', '..' or starting with '..'";
const IDENTITY: &str = "identity must not contain '/', spaces, control or format characters";
const TAG: &str = "tag names and values must not contain control or format characters";

/// A Secret or ConfigMap reference: `<at>.name` and `<at>.key` rows.
macro_rules! key_ref {
    ($kind:literal, $at:literal, [$($fixture:literal),*]) => {
        [
            Bound {
                kind: $kind,
                path: concat!($at, ".name"),
                max_length: Some(253),
                rules: &[(concat!($at, ".name"), OBJECT_NAME)],
                fixtures: &[],
            },
            Bound {
                kind: $kind,
                path: concat!($at, ".key"),
                max_length: Some(253),
                rules: &[(concat!($at, ".key"), DATA_KEY)],
                fixtures: &[$($fixture),*],
            },
        ]
    };
}

/// The IoTConnector's string fields.
fn connector() -> Vec<Bound> {
    const K: &str = "IoTConnector";
    let mut rows = vec![
        Bound {
            kind: K,
            path: "metadata.name",
            max_length: Some(253),
            rules: &[("metadata.name", "IoTConnector names may have at most 236")],
            fixtures: &["connector-name-237"],
        },
        Bound {
            kind: K,
            path: "spec.productId",
            max_length: Some(63),
            rules: &[
                ("spec.productId", "productId may contain only"),
                ("spec.productId", "productId is immutable"),
            ],
            fixtures: &["connector-product-id-charset"],
        },
        Bound {
            kind: K,
            path: "spec.managementUrl",
            max_length: Some(2048),
            rules: &[
                (
                    "spec.managementUrl",
                    "managementUrl must be an absolute http(s) URL",
                ),
                ("spec.managementUrl", "managementUrl must end with '/'"),
                (
                    "spec.managementUrl",
                    "managementUrl must not contain credentials",
                ),
                ("spec", "plain http:// URLs send the token unencrypted"),
            ],
            fixtures: &[
                "connector-management-url-ftp",
                "connector-management-url-no-scheme",
                "connector-management-url-credentials",
                "connector-http-not-allowed",
            ],
        },
        Bound {
            kind: K,
            path: "spec.deviceApiUrl",
            max_length: Some(2048),
            rules: &[
                (
                    "spec.deviceApiUrl",
                    "deviceApiUrl must be an absolute http(s) URL",
                ),
                ("spec.deviceApiUrl", "deviceApiUrl must end with '/'"),
                (
                    "spec.deviceApiUrl",
                    "deviceApiUrl must not contain credentials",
                ),
                ("spec", "plain http:// URLs send the token unencrypted"),
            ],
            fixtures: &["connector-device-api-url-credentials"],
        },
        Bound {
            kind: K,
            path: "spec.exosense.graphqlUrl",
            max_length: Some(2048),
            rules: &[
                (
                    "spec.exosense.graphqlUrl",
                    "graphqlUrl must be an absolute http(s) URL",
                ),
                (
                    "spec.exosense.graphqlUrl",
                    "graphqlUrl must not contain credentials",
                ),
                ("spec", "plain http:// URLs send the token unencrypted"),
            ],
            fixtures: &[
                "connector-exosense-url-invalid",
                "connector-graphql-url-credentials",
            ],
        },
        Bound {
            kind: K,
            path: "spec.authScheme",
            max_length: None,
            rules: &[],
            fixtures: &["connector-auth-scheme-unknown"],
        },
        Bound {
            kind: K,
            path: "spec.checkInterval",
            max_length: Some(32),
            rules: &[
                ("spec.checkInterval", DURATION_MESSAGE),
                (
                    "spec.checkInterval",
                    "checkInterval must be a duration from 10s to 8760h",
                ),
            ],
            fixtures: &[
                "connector-check-interval-malformed",
                "connector-check-interval-too-short",
                "connector-check-interval-over-max",
                "connector-check-interval-overflow",
            ],
        },
    ];
    rows.extend(key_ref!(
        "IoTConnector",
        "spec.tokenSecretRef",
        ["connector-token-key-dot-dot-prefix"]
    ));
    rows.extend(key_ref!(
        "IoTConnector",
        "spec.exosense.tokenSecretRef",
        ["connector-exosense-token-key-dot"]
    ));
    rows.extend(key_ref!(
        "IoTConnector",
        "spec.webhook.secretRef",
        ["connector-webhook-key-dot"]
    ));
    rows.extend(key_ref!(
        "IoTConnector",
        "spec.tls.caBundle",
        ["connector-ca-bundle-key-dot-dot"]
    ));
    rows
}

/// The SoftwarePackage's string fields.
fn package() -> Vec<Bound> {
    const K: &str = "SoftwarePackage";
    let mut rows = vec![
        Bound {
            kind: K,
            path: "metadata.name",
            max_length: Some(253),
            rules: &[(
                "metadata.name",
                "SoftwarePackage names may have at most 236",
            )],
            fixtures: &["package-name-237"],
        },
        Bound {
            kind: K,
            path: "spec.connectorRef.name",
            max_length: Some(253),
            rules: &[("spec.connectorRef.name", OBJECT_NAME)],
            fixtures: &[],
        },
        Bound {
            kind: K,
            path: "spec.version",
            max_length: Some(128),
            rules: &[("spec.version", "version may contain only")],
            fixtures: &["package-version-charset", "package-version-too-long"],
        },
        // Free text: bounded by length only.
        Bound {
            kind: K,
            path: "spec.displayName",
            max_length: Some(256),
            rules: &[],
            fixtures: &[],
        },
        Bound {
            kind: K,
            path: "spec.description",
            max_length: Some(1024),
            rules: &[],
            fixtures: &[],
        },
        Bound {
            kind: K,
            path: "spec.registration.author",
            max_length: Some(256),
            rules: &[],
            fixtures: &[],
        },
        Bound {
            kind: K,
            path: "spec.files[].name",
            max_length: Some(128),
            rules: &[
                ("spec.files[].name", "file name may contain only"),
                ("spec", "file names must be unique"),
            ],
            fixtures: &["package-file-name-charset", "package-file-name-duplicate"],
        },
        Bound {
            kind: K,
            path: "spec.files[].contentId",
            max_length: Some(253),
            rules: &[
                ("spec.files[].contentId", "contentId may contain only"),
                ("spec.files[].contentId", "must not start with 'package_'"),
                ("spec", "contentIds must be unique"),
                (
                    "",
                    "of the default content id of another file of this package",
                ),
            ],
            fixtures: &[
                "package-content-id-charset",
                "package-content-id-reserved-prefix",
                "package-content-id-duplicate",
                "package-content-id-sibling-default",
            ],
        },
        Bound {
            kind: K,
            path: "spec.files[].url",
            max_length: Some(2048),
            rules: &[
                ("spec.files[].url", "url must be an absolute http(s) URL"),
                ("spec.files[].url", "url must not contain credentials"),
                ("spec", "a file url uses plain http://"),
            ],
            fixtures: &[
                "package-file-url-not-url",
                "package-file-url-ftp",
                "package-file-url-credentials",
                "package-http-url-not-allowed",
                "package-http-url-upper-case",
            ],
        },
        Bound {
            kind: K,
            path: "spec.files[].sha256",
            max_length: Some(64),
            rules: &[(
                "spec.files[].sha256",
                "sha256 must be 64 hexadecimal digits",
            )],
            fixtures: &["package-sha256-not-hex", "package-sha256-too-short"],
        },
        Bound {
            kind: K,
            path: "spec.files[].contentType",
            max_length: Some(128),
            rules: &[(
                "spec.files[].contentType",
                "contentType must be a MIME type",
            )],
            fixtures: &[
                "package-content-type-invalid",
                "package-content-type-quoted-parameter",
            ],
        },
        Bound {
            kind: K,
            path: "spec.links[]",
            max_length: Some(2048),
            rules: &[
                ("spec.links", "each link must be an absolute http(s) URL"),
                ("spec.links", "a link must not contain credentials"),
                ("spec", "a link uses plain http://"),
                ("spec", "links must be unique"),
            ],
            fixtures: &[
                "package-link-not-url",
                "package-link-no-scheme",
                "package-link-credentials",
                "package-http-link-not-allowed",
                "package-duplicate-links",
            ],
        },
    ];
    rows.extend(key_ref!(
        "SoftwarePackage",
        "spec.files[].configMapKeyRef",
        ["package-configmap-key-dot"]
    ));
    rows.extend(key_ref!(
        "SoftwarePackage",
        "spec.files[].secretKeyRef",
        ["package-secret-key-dot-dot"]
    ));
    rows
}

/// The Rollout's string fields.
fn rollout() -> Vec<Bound> {
    const K: &str = "Rollout";
    let mut rows = vec![
        Bound {
            kind: K,
            path: "metadata.name",
            max_length: Some(253),
            rules: &[("metadata.name", "Rollout names may have at most 236")],
            fixtures: &["rollout-name-237"],
        },
        Bound {
            kind: K,
            path: "spec.packageRef.name",
            max_length: Some(253),
            rules: &[("spec.packageRef.name", OBJECT_NAME)],
            fixtures: &["rollout-package-ref-name-invalid"],
        },
        Bound {
            kind: K,
            path: "spec.waves[].name",
            max_length: Some(63),
            rules: &[
                ("spec.waves[].name", "wave name must be lowercase letters"),
                ("spec.waves", "wave names must be unique"),
            ],
            fixtures: &["rollout-wave-name-duplicate"],
        },
        Bound {
            kind: K,
            path: "spec.waves[].soak",
            max_length: Some(32),
            rules: &[
                ("spec.waves[].soak", DURATION_MESSAGE),
                (
                    "spec.waves[].soak",
                    "soak must be a duration from 0s to 8760h",
                ),
            ],
            fixtures: &[
                "rollout-soak-malformed",
                "rollout-soak-over-max",
                "rollout-soak-overflow",
            ],
        },
        Bound {
            kind: K,
            path: "spec.policy.deviceTimeout",
            max_length: Some(32),
            rules: &[
                ("spec.policy.deviceTimeout", DURATION_MESSAGE),
                (
                    "spec.policy.deviceTimeout",
                    "deviceTimeout must be a duration from 1s to 8760h",
                ),
            ],
            fixtures: &[
                "rollout-device-timeout-malformed",
                "rollout-device-timeout-zero",
                "rollout-device-timeout-below-min",
                "rollout-device-timeout-overflow",
            ],
        },
        Bound {
            kind: K,
            path: "spec.policy.deviceTimeoutTotal",
            max_length: Some(32),
            rules: &[
                ("spec.policy.deviceTimeoutTotal", DURATION_MESSAGE),
                (
                    "spec.policy.deviceTimeoutTotal",
                    "deviceTimeoutTotal must be a duration from 1s to 8760h",
                ),
                (
                    "spec.policy",
                    "deviceTimeoutTotal must not be shorter than deviceTimeout",
                ),
            ],
            fixtures: &[
                "rollout-device-timeout-total-malformed",
                "rollout-device-timeout-total-overflow",
                "rollout-device-timeout-total-below-timeout",
                "rollout-device-timeout-total-below-default-timeout",
            ],
        },
        Bound {
            kind: K,
            path: "spec.policy.onFailure",
            max_length: None,
            rules: &[],
            fixtures: &["rollout-on-failure-unknown"],
        },
        Bound {
            kind: K,
            path: "spec.policy.busyDevices",
            max_length: None,
            rules: &[],
            fixtures: &["rollout-busy-devices-unknown"],
        },
        Bound {
            kind: K,
            path: "spec.policy.foreignManifests",
            max_length: None,
            rules: &[],
            fixtures: &["rollout-foreign-manifests-unknown"],
        },
        // Free text: bounded by length only (the token is compared, the seed hashed).
        Bound {
            kind: K,
            path: "spec.resumeToken",
            max_length: Some(128),
            rules: &[],
            fixtures: &[],
        },
        Bound {
            kind: K,
            path: "spec.orderSeed",
            max_length: Some(256),
            rules: &[("spec", "orderSeed is immutable")],
            fixtures: &[],
        },
    ];
    for (list, fixtures) in [
        (
            "spec.targets.identities[]",
            &[
                "rollout-identity-slash",
                "rollout-identity-space",
                "rollout-identity-no-break-space",
                "rollout-identity-control",
                "rollout-identity-bidi",
            ][..],
        ),
        (
            "spec.targets.exclude.identities[]",
            &["rollout-exclude-identity-zero-width"][..],
        ),
    ] {
        rows.push(Bound {
            kind: K,
            path: list,
            max_length: Some(128),
            rules: if list.contains("exclude") {
                &[("spec.targets.exclude.identities[]", IDENTITY)]
            } else {
                &[("spec.targets.identities[]", IDENTITY)]
            },
            fixtures,
        });
    }
    for (field, max_length, fixtures) in [
        (
            "spec.targets.tags[].name",
            128,
            &["rollout-tag-name-leading-space"][..],
        ),
        (
            "spec.targets.tags[].value",
            256,
            &[
                "rollout-tag-value-trailing-space",
                "rollout-tag-value-control",
                "rollout-tag-value-bidi",
            ][..],
        ),
        ("spec.targets.exclude.tags[].name", 128, &[][..]),
        (
            "spec.targets.exclude.tags[].value",
            256,
            &["rollout-exclude-tag-control"][..],
        ),
    ] {
        let rules: &'static [(&'static str, &'static str)] = match field {
            "spec.targets.tags[].name" => &[("spec.targets.tags[].name", TAG)],
            "spec.targets.tags[].value" => &[("spec.targets.tags[].value", TAG)],
            "spec.targets.exclude.tags[].name" => &[("spec.targets.exclude.tags[].name", TAG)],
            _ => &[("spec.targets.exclude.tags[].value", TAG)],
        };
        rows.push(Bound {
            kind: K,
            path: field,
            max_length: Some(max_length),
            rules,
            fixtures,
        });
    }
    rows
}

fn inventory() -> Vec<Bound> {
    let mut rows = connector();
    rows.extend(package());
    rows.extend(rollout());
    rows
}

fn root_schema(kind: &str) -> Value {
    let crd = crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    serde_json::to_value(crd).unwrap()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The schema node at `path` (`""`: the root; `a.b[]`: the items of list `b`).
fn node_at<'s>(root: &'s Value, path: &str) -> Option<&'s Value> {
    let mut node = root;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        node = node.get("properties")?.get(name)?;
        if items {
            node = node.get("items")?;
        }
    }
    Some(node)
}

/// The messages (and message expressions) of the rules on one node.
fn messages(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| ["message", "messageExpression"].map(|key| rule[key].clone()))
        .filter_map(|m| m.as_str().map(str::to_owned))
        .collect()
}

/// Every string node of a kind's spec, and `metadata.name`.
fn string_fields(root: &Value) -> Vec<String> {
    fn walk(path: &str, node: &Value, out: &mut Vec<String>) {
        if node["type"] == "string" {
            out.push(path.to_owned());
        }
        for (name, sub) in node["properties"].as_object().into_iter().flatten() {
            walk(&format!("{path}.{name}"), sub, out);
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, out);
        }
    }
    let mut out = Vec::new();
    walk("spec", &root["properties"]["spec"], &mut out);
    walk("metadata", &root["properties"]["metadata"], &mut out);
    out
}

#[test]
fn every_string_field_has_a_row_and_every_row_is_in_the_schema() {
    let rows = inventory();
    let mut problems = Vec::new();
    for kind in ["IoTConnector", "SoftwarePackage", "Rollout"] {
        let root = root_schema(kind);
        let fields = string_fields(&root);
        assert!(fields.contains(&"metadata.name".to_owned()), "{kind}");
        for field in &fields {
            let matching: Vec<&Bound> = rows
                .iter()
                .filter(|r| r.kind == kind && r.path == field)
                .collect();
            if matching.len() != 1 {
                problems.push(format!("{kind} {field}: {} inventory rows", matching.len()));
            }
        }
        for row in rows.iter().filter(|r| r.kind == kind) {
            if !fields.iter().any(|f| f == row.path) {
                problems.push(format!("{kind} {}: no such string field", row.path));
                continue;
            }
            let node = node_at(&root, row.path).expect("the field's node");
            let max_length = node.get("maxLength").and_then(Value::as_u64);
            if max_length != row.max_length {
                problems.push(format!(
                    "{kind} {}: maxLength {max_length:?}, the inventory says {:?}",
                    row.path, row.max_length
                ));
            }
            if row.max_length.is_none() && node.get("enum").is_none() {
                problems.push(format!("{kind} {}: no maxLength and no enum", row.path));
            }
            for (at, message) in row.rules {
                let found = node_at(&root, at)
                    .map(messages)
                    .unwrap_or_default()
                    .iter()
                    .any(|m| m.contains(message));
                if !found {
                    problems.push(format!(
                        "{kind} {}: no rule at {at:?} says {message:?}",
                        row.path
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn every_fixture_the_inventory_names_exists_for_its_kind() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid");
    for row in inventory() {
        for fixture in row.fixtures {
            let path = dir.join(format!("{fixture}.yaml"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                text.contains(&format!("kind: {}\n", row.kind)),
                "{fixture} is not a {}",
                row.kind
            );
        }
    }
}

/// Each kind of duration has exactly its range's rule (the one the operator parses with) and
/// the shape rule; there is no other duration field.
#[test]
fn every_duration_field_carries_its_range() {
    let fields: [(&str, &str, DurationRange); 4] = [
        ("IoTConnector", "spec.checkInterval", CHECK_INTERVAL),
        ("Rollout", "spec.policy.deviceTimeout", DEVICE_TIMEOUT),
        (
            "Rollout",
            "spec.policy.deviceTimeoutTotal",
            DEVICE_TIMEOUT_TOTAL,
        ),
        ("Rollout", "spec.waves[].soak", SOAK),
    ];
    for kind in ["IoTConnector", "SoftwarePackage", "Rollout"] {
        let root = root_schema(kind);
        for field in string_fields(&root) {
            let node = node_at(&root, &field).unwrap();
            let rules: Vec<Value> = node["x-kubernetes-validations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let is_duration = messages(node).iter().any(|m| m == DURATION_MESSAGE);
            let range = fields
                .iter()
                .find(|(k, f, _)| *k == kind && *f == field)
                .map(|(_, _, r)| r);
            assert_eq!(is_duration, range.is_some(), "{kind} {field}");
            if let Some(range) = range {
                let wanted = serde_json::to_value(range.rule()).unwrap();
                assert_eq!(rules.len(), 2, "{kind} {field}: {rules:#?}");
                assert!(rules.contains(&wanted), "{kind} {field}: {rules:#?}");
            }
        }
    }
}

/// The name every derived name starts from is bounded on `metadata.name` in all three kinds,
/// by a rule (so the apiserver ratchets it for objects stored before), at 253 - 17.
#[test]
fn the_name_bound_leaves_room_for_the_event_suffix() {
    assert_eq!(MAX_NAME_LENGTH, 236);
    assert_eq!(
        names::KUBERNETES_NAME_LIMIT - names::EVENT_NAME_SUFFIX_LENGTH,
        MAX_NAME_LENGTH
    );
    // 16 hex digits of nanoseconds since the epoch: until the year 2554.
    assert_eq!(format!("{:x}", 1_765_000_000_000_000_000_i128).len(), 16);
    for kind in ["IoTConnector", "SoftwarePackage", "Rollout"] {
        let root = root_schema(kind);
        let name = node_at(&root, "metadata.name").unwrap();
        assert_eq!(
            name["x-kubernetes-validations"][0]["rule"],
            format!("size(self) <= {MAX_NAME_LENGTH}")
        );
        assert_eq!(
            root["properties"]["metadata"]["properties"]
                .as_object()
                .unwrap()
                .len(),
            1,
            "only name is restricted"
        );
    }
}
