//! Small types shared by the three kinds: references to other objects in the same namespace,
//! device tags, and the CEL snippets that validate names and URLs.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// CEL: `self` is a DNS-1123 subdomain (the name of a Kubernetes object).
pub(crate) const RULE_OBJECT_NAME: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
/// Message for [`RULE_OBJECT_NAME`].
pub(crate) const MESSAGE_OBJECT_NAME: &str = "must be an object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";

/// CEL: `self` is a valid key of a Secret or ConfigMap.
pub(crate) const RULE_DATA_KEY: &str = "self.matches('^[-._a-zA-Z0-9]+$')";
/// Message for [`RULE_DATA_KEY`].
pub(crate) const MESSAGE_DATA_KEY: &str =
    "must be a Secret/ConfigMap key: letters, digits, '-', '_' and '.'";

/// CEL: `self` uses the safe charset of ids that end up in URLs and manifests.
pub(crate) const RULE_SAFE_ID: &str = "self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')";

/// CEL: `self` is an absolute `http://` or `https://` URL with a host.
pub(crate) const RULE_HTTP_URL: &str =
    "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''";

/// A reference to another object of this API in the same namespace.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced object, in the same namespace as this one.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_OBJECT_NAME).message(MESSAGE_OBJECT_NAME))]
    pub name: String,
}

impl LocalRef {
    /// A reference to the object called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A key of a Secret in the same namespace; both parts are required.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_OBJECT_NAME).message(MESSAGE_OBJECT_NAME))]
    pub name: String,
    /// Key inside the Secret's `data`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_DATA_KEY).message(MESSAGE_DATA_KEY))]
    pub key: String,
}

/// A key of a ConfigMap in the same namespace; both parts are required.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_OBJECT_NAME).message(MESSAGE_OBJECT_NAME))]
    pub name: String,
    /// Key inside the ConfigMap's `data` or `binaryData`.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_DATA_KEY).message(MESSAGE_DATA_KEY))]
    pub key: String,
}

/// A device2 identity tag (`name` = `value`), as the platform stores it on identities.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceTag {
    /// Tag name.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// Tag value; an empty string matches a tag whose value is empty.
    #[schemars(length(max = 256))]
    pub value: String,
}

impl DeviceTag {
    /// The tag `name=value`.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}
