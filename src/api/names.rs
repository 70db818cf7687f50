//! Names the operator derives from an object's name, and the bound that keeps them valid.
//!
//! | Derived name | Form | Limit | Bound on the object name |
//! |---|---|---|---|
//! | Event | `<name>.<16 hex digits>` (nanoseconds of its time) | 253 | [`MAX_NAME_LENGTH`] = 236 |
//! | default content id | `<namespace>_<package>_<file name>` | none known on the platform; `status.files[].contentId` holds 512 | 63 + 1 + 236 + 1 + 128 = 429 |
//! | registration item | `package_<namespace>_<package>.json` | `status.packageContentId` holds 512 | 8 + 63 + 1 + 236 + 5 = 313 |
//! | owner tag | `<namespace>/<package>` | none known | 300 |
//! | order seed | `<namespace>/<rollout>` | none (hashed) | |
//! | Lease | `--lease-name`, not derived from any object | 253 | |
//!
//! No object name becomes a label value (63). The bound sits on the `metadata.name` node of each
//! CRD's schema, so the apiserver ratchets it: an object stored with a longer name before the
//! bound existed keeps its name (names never change), and its status, finalizers and deletion
//! still go through; only new objects are refused.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, ValidationRule,
};

/// The longest name any Kubernetes object may have (a DNS-1123 subdomain).
pub const KUBERNETES_NAME_LIMIT: usize = 253;

/// What the Event recorder appends to the name of the object an Event is about: `.` and 16
/// hexadecimal digits (the event time in nanoseconds, 16 digits until the year 2554).
pub const EVENT_NAME_SUFFIX_LENGTH: usize = 17;

/// The longest name an IoTConnector, SoftwarePackage or Rollout may have, so that the names
/// of the Events about it fit [`KUBERNETES_NAME_LIMIT`]: 236.
pub const MAX_NAME_LENGTH: usize = KUBERNETES_NAME_LIMIT - EVENT_NAME_SUFFIX_LENGTH;

/// The message of the name rule of `kind`.
pub fn name_message(kind: &str) -> String {
    format!(
        "{kind} names may have at most {MAX_NAME_LENGTH} characters: the Events about an \
         object are named <name>.<16 hex digits>, and an Event name has at most \
         {KUBERNETES_NAME_LIMIT}; choose a shorter name"
    )
}

/// The `metadata` node of a CRD's root schema: only `name` is restricted (the apiserver allows
/// nothing else there), to at most [`MAX_NAME_LENGTH`] characters.
pub fn metadata_schema(kind: &str) -> JSONSchemaProps {
    let message = name_message(kind);
    let name = JSONSchemaProps {
        type_: Some("string".into()),
        // The apiserver's own limit; declared so that CEL's cost estimate knows it.
        max_length: Some(KUBERNETES_NAME_LIMIT as i64),
        x_kubernetes_validations: Some(vec![ValidationRule {
            rule: format!("size(self) <= {MAX_NAME_LENGTH}"),
            // A static message: a messageExpression that prints the length (`string(size(self))`)
            // is estimated far over the apiserver's CEL cost budget.
            message: Some(message),
            ..ValidationRule::default()
        }]),
        ..JSONSchemaProps::default()
    };
    JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some([("name".to_owned(), name)].into()),
        ..JSONSchemaProps::default()
    }
}
