//! Small types shared by the three kinds: references to other objects in the same namespace,
//! device tags, and the CEL snippets that validate names and URLs.

use kube::KubeSchema;
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// CEL: `self` is a DNS-1123 subdomain (the name of a Kubernetes object).
pub(crate) const RULE_OBJECT_NAME: &str =
    "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')";
/// Message for [`RULE_OBJECT_NAME`].
pub(crate) const MESSAGE_OBJECT_NAME: &str = "must be an object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit";

/// CEL: `self` is a key Kubernetes allows in a Secret or ConfigMap (its `IsConfigMapKey`:
/// the charset, and neither `.` nor `..` nor anything starting with `..`).
pub(crate) const RULE_DATA_KEY: &str =
    "self.matches('^[-._a-zA-Z0-9]+$') && self != '.' && !self.startsWith('..')";
/// Message for [`RULE_DATA_KEY`].
pub(crate) const MESSAGE_DATA_KEY: &str = "must be a Secret/ConfigMap key: letters, digits, '-', '_' and '.', and not '.', '..' or starting with '..' (Kubernetes allows no such key, so it would never be found)";

/// CEL: `self` uses the safe charset of ids that end up in URLs and manifests.
pub(crate) const RULE_SAFE_ID: &str = "self.matches('^[A-Za-z0-9][A-Za-z0-9._-]*$')";

/// CEL: `self` is an absolute `http://` or `https://` URL with a host (the scheme in any case:
/// `url()` lowercases it, as every HTTP client does).
pub(crate) const RULE_HTTP_URL: &str =
    "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''";

/// CEL: `self` carries no credentials (`user:password@` before the host). A URL is stored in
/// the object, shown by `kubectl get` to anyone who may read it, and logged.
pub(crate) const RULE_NO_CREDENTIALS: &str = "!self.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@')";

/// CEL, for the https rules: the URL `<url>` (a CEL expression) is not a plain `http://` URL.
/// Anything that is no http(s) URL at all passes here: the field's own rule names the problem,
/// so a scheme-less or `ftp:` URL is not told it "uses plain http://".
pub(crate) fn not_plain_http(url: &str) -> String {
    format!("(!isURL({url}) || url({url}).getScheme() != 'http')")
}

/// CEL: a device identity the platform accepts: no `/`, no spaces (any Unicode space), no
/// control or format characters (such as the bidi overrides U+202A-U+202E). An identity the
/// platform refuses can never match a device.
pub(crate) const RULE_IDENTITY: &str = r"!self.matches(r'[/\p{Z}\p{Cc}\p{Cf}]')";
/// Message for [`RULE_IDENTITY`].
pub(crate) const MESSAGE_IDENTITY: &str = "identity must not contain '/', spaces, control or format characters (such as bidi overrides): the platform refuses such identities, so it would never match a device";

/// CEL: a tag name or value devices can carry: no control or format characters, and no space
/// at either end (inside a value, spaces and `/` are fine, e.g. `Europe/Berlin`).
pub(crate) const RULE_TAG_TEXT: &str = r"!self.matches(r'[\p{Cc}\p{Cf}]|^\p{Z}|\p{Z}$')";
/// Message for [`RULE_TAG_TEXT`].
pub(crate) const MESSAGE_TAG_TEXT: &str = "tag names and values must not contain control or format characters (such as bidi overrides) nor start or end with a space: no device carries such a tag, so it would never match";

/// The longest device identity.
pub(crate) const MAX_IDENTITY_LENGTH: usize = 128;

/// Schema of a list of device identities: a set of at most
/// [`super::rollout::MAX_IDENTITIES`] strings of 1 to [`MAX_IDENTITY_LENGTH`] characters, each
/// checked by [`RULE_IDENTITY`] (the rule sits on the items, so the apiserver names the
/// offending index and ratchets unchanged items).
pub(crate) fn identity_list_schema(_generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": super::rollout::MAX_IDENTITIES,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDENTITY_LENGTH,
            "x-kubernetes-validations": [{
                "rule": RULE_IDENTITY,
                "message": MESSAGE_IDENTITY,
            }],
        },
    })
}

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
    /// Tag name, compared exactly (no control or format characters, no space at either end).
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(RULE_TAG_TEXT).message(MESSAGE_TAG_TEXT))]
    pub name: String,
    /// Tag value, compared exactly; an empty string matches a tag whose value is empty. Spaces
    /// and `/` inside are fine (`Europe/Berlin`); control or format characters and a space at
    /// either end are not.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(RULE_TAG_TEXT).message(MESSAGE_TAG_TEXT))]
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
