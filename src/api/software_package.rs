//! `SoftwarePackage`: one immutable, versioned package of files and links.

// kube-derive takes one `printcolumn(...)` per column, so keys such as `type_` repeat by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    ConfigMapKeyRef, LocalRef, RULE_HTTP_URL, RULE_NO_CREDENTIALS, RULE_SAFE_ID, SecretKeyRef,
    not_plain_http,
};
use super::conditions::conditions_schema;

/// The most files a package may upload.
pub const MAX_FILES: usize = 32;
/// The most external links a package may list.
pub const MAX_LINKS: usize = 32;
/// The prefix of package registration items in a connector's content area; file content ids
/// must not use it.
pub const PACKAGE_CONTENT_PREFIX: &str = "package_";
/// Default bound on per-device targeting tags on a package registration.
pub const DEFAULT_MAX_DEVICE_TAGS: i32 = 1000;

/// The message of the rule that keeps a SoftwarePackage's spec as it was created.
pub const IMMUTABLE_SPEC_MESSAGE: &str =
    "the spec of a SoftwarePackage is immutable: publish a new SoftwarePackage instead";

/// The media types `contentType` accepts (RE2 and Rust regex): `type/subtype`, then any
/// parameters `; name=value` (RFC 9110 tokens, spaces after `;`). Left out: quoted values
/// (the platform lists an item's type in a comma-separated line) and spaces before `;` (the
/// upload's multipart encoder refuses them).
pub const CONTENT_TYPE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(; *[A-Za-z0-9!#$&^_.+-]+=[A-Za-z0-9!#$&^_.+-]+)*$";

/// Desired state of a SoftwarePackage. The whole spec is immutable once created.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "otau.dev",
    version = "v1alpha1",
    kind = "SoftwarePackage",
    plural = "softwarepackages",
    singular = "softwarepackage",
    namespaced,
    status = "SoftwarePackageStatus",
    shortname = "swpkg",
    category = "otau",
    derive = "PartialEq",
    selectable = ".spec.connectorRef.name",
    doc = "One immutable, versioned software package on an IoTConnector. Files (from an https URL checked \
           against its sha256, a ConfigMap key or a Secret key) are uploaded into the connector's content \
           area; links are external URLs devices fetch as they are. The operator builds the config_otau \
           manifest (status.manifest) and registers the package the way ExoSense lists packages. The spec \
           cannot change: publish a new SoftwarePackage for a new version. Deleting it removes uploaded \
           content (unless retainContent) once no active Rollout uses it.",
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Connector",
        type_ = "string",
        json_path = ".spec.connectorRef.name"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Files",
        type_ = "string",
        json_path = ".spec.files[*].name",
        description = "Names of the uploaded files",
        priority = 1
    ),
    printcolumn(
        name = "Content ID",
        type_ = "string",
        json_path = ".status.packageContentId",
        description = "The package registration item",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        priority = 1
    )
)]
// The rule that keeps the whole spec immutable is added by `crate::api::crds`
// (`IMMUTABLE_SPEC_MESSAGE`): it is built from the finished schema.
#[x_kube(
    validation = Rule::new("(has(self.files) && size(self.files) > 0) || (has(self.links) && size(self.links) > 0)")
        .message("a package needs at least one file or link")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new(format!(
        "(has(self.allowInsecureHttp) && self.allowInsecureHttp) || !has(self.files) \
         || self.files.all(f, !has(f.url) || {})",
        not_plain_http("f.url")
    )).message("a file url uses plain http://: use https:// or set allowInsecureHttp: true"),
    validation = Rule::new(format!(
        "(has(self.allowInsecureHttp) && self.allowInsecureHttp) || !has(self.links) \
         || self.links.all(l, {})",
        not_plain_http("l")
    )).message("a link uses plain http://: use https:// or set allowInsecureHttp: true"),
    validation = Rule::new("!has(self.files) || self.files.all(f, self.files.exists_one(g, g.name == f.name))")
        .message("file names must be unique within the package"),
    validation = Rule::new(
        "!has(self.files) || self.files.all(f, !has(f.contentId) \
         || self.files.exists_one(g, has(g.contentId) && g.contentId == f.contentId))"
    ).message("contentIds must be unique within the package"),
    validation = Rule::new("!has(self.links) || self.links.all(l, self.links.exists_one(m, m == l))")
        .message("links must be unique within the package")
)]
#[serde(rename_all = "camelCase")]
pub struct SoftwarePackageSpec {
    /// The IoTConnector (same namespace) whose content area and devices this package is for.
    pub connector_ref: LocalRef,

    /// The package version, written as `version` in the manifest and compared with what devices
    /// report as installed. Letters, digits, `.`, `_`, `+` and `-`.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._+-]*$')")
        .message("version may contain only letters, digits, '.', '_', '+' and '-', starting with a letter or digit"))]
    pub version: String,

    /// Human-readable name, written as `name` in the manifest (e.g. `Security update`).
    /// Defaults to `metadata.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub display_name: Option<String>,

    /// Free text, written as `description` in the manifest (left out when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Files uploaded into the connector's content area; devices download them by content id.
    /// They come first in the manifest payload, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub files: Vec<PackageFile>,

    /// External `https://` URLs devices fetch as they are, after the files in the payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 2048)))]
    #[x_kube(
        validation = Rule::new(format!("self.all(l, {})", RULE_HTTP_URL.replace("self", "l")))
            .message("each link must be an absolute http(s) URL such as https://downloads.example.com/fw.bin"),
        validation = Rule::new(format!("self.all(l, {})", RULE_NO_CREDENTIALS.replace("self", "l")))
            .message("a link must not contain credentials (user:password@): links are written into config_otau, which every targeted device reads")
    )]
    pub links: Vec<String>,

    /// Allow plain `http://` file URLs and links. Off by default: a device or the operator could
    /// then be handed tampered content (file URLs are still checked against their sha256).
    #[serde(default)]
    pub allow_insecure_http: bool,

    /// Keep uploaded content on the platform when this SoftwarePackage is deleted (the
    /// registration item is still removed).
    #[serde(default)]
    pub retain_content: bool,

    /// How the package is registered so that ExoSense lists it.
    #[serde(default)]
    pub registration: Registration,
}

/// One file of a package. Exactly one source: `url`, `configMapKeyRef` or `secretKeyRef`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(
    validation = Rule::new("[has(self.url), has(self.configMapKeyRef), has(self.secretKeyRef)].filter(x, x).size() == 1")
        .message("each file needs exactly one source: url, configMapKeyRef or secretKeyRef"),
    validation = Rule::new("!has(self.url) || has(self.sha256)")
        .message("a file with a url needs its sha256 (64 hex digits), so the download can be verified")
        .reason(Reason::FieldValueRequired)
)]
#[serde(rename_all = "camelCase")]
pub struct PackageFile {
    /// The file's name within the package (e.g. `firmware.bin`); unique in the package. Part of
    /// the default content id.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new(RULE_SAFE_ID)
        .message("file name may contain only letters, digits, '.', '_' and '-', starting with a letter or digit"))]
    pub name: String,

    /// The content id in the connector's content area (what the manifest payload lists and
    /// devices download). Defaults to `<namespace>_<package name>_<file name>`, which cannot
    /// collide with another package's default (names never contain `_`). Must not start with
    /// `package_` (reserved for registrations). The operator never overwrites an item another
    /// package owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(
        validation = Rule::new(RULE_SAFE_ID)
            .message("contentId may contain only letters, digits, '.', '_' and '-', starting with a letter or digit"),
        validation = Rule::new("!self.startsWith('package_')")
            .message("contentId must not start with 'package_': that prefix is reserved for package registrations")
    )]
    pub content_id: Option<String>,

    /// Download the file from this URL (fetched by the operator, never by devices). Its host
    /// (and that of each redirect, at most 5) must resolve to public addresses only, unless
    /// the operator runs with `--allow-private-sources` or names the host with
    /// `--platform-host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new(RULE_HTTP_URL)
            .message("url must be an absolute http(s) URL such as https://downloads.example.com/fw.bin"),
        validation = Rule::new(RULE_NO_CREDENTIALS)
            .message("url must not contain credentials (user:password@): anyone who may read the SoftwarePackage would see them; use a presigned URL or a secretKeyRef source")
    )]
    pub url: Option<String>,

    /// Expected SHA-256 of the file, 64 hex digits. Required with `url`; optional with the
    /// other sources (checked when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 64, max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{64}$')")
        .message("sha256 must be 64 hexadecimal digits"))]
    pub sha256: Option<String>,

    /// Take the file from a ConfigMap key (`binaryData` or `data`). The ConfigMap must carry
    /// the label `otau.dev/package-source: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeyRef>,

    /// Take the file from a Secret key. The Secret must carry the label
    /// `otau.dev/package-source: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,

    /// MIME type stored with the content item, parameters allowed (`text/plain;
    /// charset=utf-8`). Defaults to `application/octet-stream`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 128))]
    #[x_kube(validation = Rule::new(format!("self.matches('{CONTENT_TYPE_PATTERN}')"))
        .message("contentType must be a MIME type such as application/octet-stream or text/plain; charset=utf-8 (parameters as name=value, no quotes)"))]
    pub content_type: Option<String>,
}

/// How the package is registered for ExoSense.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// `author` in the registration's `otau_info` (e.g. a team e-mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub author: Option<String>,
    /// The most per-device tags (`<productId>.<identity>`) on the registration item, one per
    /// device a Rollout notified. Above this many the item carries `total-devices` only
    /// (ExoSense then does not list the package per device); rollouts are unaffected.
    #[serde(default = "default_max_device_tags")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_device_tags: i32,
}

fn default_max_device_tags() -> i32 {
    DEFAULT_MAX_DEVICE_TAGS
}

impl Default for Registration {
    fn default() -> Self {
        Self {
            author: None,
            max_device_tags: DEFAULT_MAX_DEVICE_TAGS,
        }
    }
}

/// CEL (at the root of a SoftwarePackage, where `self.metadata.name` is known and the
/// namespace is not): file `f`'s `contentId` has the form `<namespace>_<package>_<g's name>`
/// of the default content id of another file `g`, for any namespace.
const CONTENT_ID_CLASH: &str = "g.name != f.name \
     && f.contentId.endsWith('_' + self.metadata.name + '_' + g.name) \
     && size(f.contentId) > size(self.metadata.name) + size(g.name) + 2 \
     && f.contentId.substring(0, size(f.contentId) - size(self.metadata.name) - size(g.name) - 2)\
        .matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')";

/// The rules at the root of the SoftwarePackage schema (`crate::api::crds` adds them; a rule
/// below the root cannot see the object's name).
///
/// A `contentId` equal to the default content id of another file of the package would store
/// both files as one platform item. The namespace is out of CEL's reach, so the rule refuses
/// the default's form for any namespace (a value that imitates another package's default id
/// deserves no better). It is checked when the package is created (`optionalOldSelf`: the
/// spec is immutable, and a package stored before the rule can still have its status written
/// and be deleted); the package controller checks the exact id for packages stored before.
pub(crate) fn root_rules() -> Vec<ValidationRule> {
    let clashing = format!("has(f.contentId) && self.spec.files.exists(g, {CONTENT_ID_CLASH})");
    vec![ValidationRule {
        rule: format!(
            "oldSelf.hasValue() || !has(self.spec.files) || !self.spec.files.exists(f, {clashing})"
        ),
        optional_old_self: Some(true),
        field_path: Some(".spec.files".into()),
        // No reason: with `FieldValueDuplicate` the apiserver prints "Duplicate value" and drops
        // the message.
        reason: None,
        // Static: a messageExpression naming the files (filter, map, join over the list) is
        // estimated far over the apiserver's CEL cost budget.
        message: Some(CONTENT_ID_CLASH_MESSAGE.into()),
        message_expression: None,
    }]
}

/// The message of the rule of [`root_rules`].
pub const CONTENT_ID_CLASH_MESSAGE: &str = "a contentId has the form <namespace>_<package name>_<file name> of the default content id of another file of this package: both files would be stored as one platform item; choose another contentId or leave it out";

/// The default content id of a file: `<namespace>_<package>_<file>`. Namespaces and object
/// names never contain `_`, so two packages' defaults never collide.
pub fn default_content_id(namespace: &str, package: &str, file_name: &str) -> String {
    format!("{namespace}_{package}_{file_name}")
}

impl PackageFile {
    /// The content id this file is stored under: `contentId`, or the default.
    pub fn effective_content_id(&self, namespace: &str, package: &str) -> String {
        self.content_id
            .clone()
            .unwrap_or_else(|| default_content_id(namespace, package, &self.name))
    }
}

/// Observed state of a SoftwarePackage, written only by the operator.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoftwarePackageStatus {
    /// Conditions: `Ready` (registered), `Progressing` (uploading), `Stalled` (invalid) and
    /// `Reconciling` (neither registered nor invalid yet).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The exact `config_otau` value written to devices (compact JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub manifest: Option<String>,
    /// The content id of the registration item (`package_....json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub package_content_id: Option<String>,
    /// The uploaded files as stored on the platform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub files: Vec<UploadedFile>,
    /// When the package was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Time>,
}

/// One uploaded file.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadedFile {
    /// The file's name in the spec.
    #[schemars(length(max = 128))]
    pub name: String,
    /// Its content id in the connector's content area.
    #[schemars(length(max = 512))]
    pub content_id: String,
    /// Size in bytes.
    pub size: i64,
    /// SHA-256 of the uploaded bytes, hex.
    #[schemars(length(max = 64))]
    pub sha256: String,
}
