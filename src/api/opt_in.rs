//! The labels and annotations by which a Secret or ConfigMap opts in to being read by the
//! operator for a user's object (docs/security.md). They are part of the API: users set them,
//! the operator and `kubectl otau` check them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The label (value `true`) a Secret needs before the operator uses it for an IoTConnector
/// (management token, ExoSense token, webhook key).
pub const CREDENTIAL_LABEL: &str = "otau.dev/connector-credential";
/// The annotation naming the hosts (comma-separated host names) a credential Secret's token
/// may be sent to.
pub const ALLOWED_HOSTS_ANNOTATION: &str = "otau.dev/allowed-hosts";
/// The label (value `true`) a Secret or ConfigMap needs before a SoftwarePackage may use it
/// as a file source.
pub const PACKAGE_SOURCE_LABEL: &str = "otau.dev/package-source";

/// A host name as the checks compare it: lowercase, without a trailing dot or IPv6 brackets.
pub fn normalize_host(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether `meta` carries the label `key` with the value `true`.
pub fn has_true_label(meta: &ObjectMeta, key: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == "true")
}

/// Whether a Secret opted in as a connector credential.
pub fn is_credential(meta: &ObjectMeta) -> bool {
    has_true_label(meta, CREDENTIAL_LABEL)
}

/// The hosts a credential Secret's annotation allows, normalised.
pub fn allowed_hosts(meta: &ObjectMeta) -> Vec<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(ALLOWED_HOSTS_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(normalize_host)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn hosts_are_compared_normalised_and_the_label_must_say_true() {
        let meta = ObjectMeta {
            labels: Some(BTreeMap::from([(CREDENTIAL_LABEL.into(), "True".into())])),
            annotations: Some(BTreeMap::from([(
                ALLOWED_HOSTS_ANNOTATION.into(),
                " A.example.com., ,[::1]".into(),
            )])),
            ..Default::default()
        };
        assert_eq!(allowed_hosts(&meta), vec!["a.example.com", "::1"]);
        assert!(!is_credential(&meta), "only the exact value true opts in");
    }
}
