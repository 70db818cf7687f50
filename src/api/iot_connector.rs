//! `IoTConnector`: one Exosite IoT Connector (Murano product) and the credentials to manage it.

// kube-derive takes one `printcolumn(...)` per column, so keys such as `type_` repeat by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{
    MESSAGE_DATA_KEY, MESSAGE_OBJECT_NAME, RULE_DATA_KEY, RULE_NO_CREDENTIALS, RULE_OBJECT_NAME,
    not_plain_http,
};
use super::conditions::conditions_schema;
use super::duration::{CHECK_INTERVAL, GoDuration};

/// Default management API base URL (Exosite's hosted business API).
pub const DEFAULT_MANAGEMENT_URL: &str = "https://bizapi.hosted.exosite.io/api:1/";
/// Default key of the token inside the token Secret.
pub const DEFAULT_TOKEN_KEY: &str = "token";
/// Default key of the HMAC key inside the webhook Secret.
pub const DEFAULT_WEBHOOK_KEY: &str = "hmacKey";
/// Default key of the CA bundle inside its ConfigMap.
pub const DEFAULT_CA_BUNDLE_KEY: &str = "ca.crt";
/// Default client-side rate limit, requests per second.
pub const DEFAULT_REQUESTS_PER_SECOND: i32 = 10;
/// Default client-side burst.
pub const DEFAULT_BURST: i32 = 20;
/// Default interval between credential checks.
pub const DEFAULT_CHECK_INTERVAL: &str = "5m";

/// CEL on a URL that must end with `/` so that relative paths join below it.
const RULE_TRAILING_SLASH: &str = "self.endsWith('/')";

/// Desired state of an IoTConnector.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "otau.dev",
    version = "v1alpha1",
    kind = "IoTConnector",
    plural = "iotconnectors",
    singular = "iotconnector",
    namespaced,
    status = "IoTConnectorStatus",
    shortname = "iotconn",
    category = "otau",
    derive = "PartialEq",
    doc = "An Exosite IoT Connector (Murano product) the operator manages: its product id, the management API, \
           the Secret holding the management token, optional ExoSense GraphQL access, the optional webhook key \
           for pushed device events, a client-side rate limit and TLS settings. The operator checks the \
           credentials every checkInterval and reports Ready; SoftwarePackages reference it by name.",
    printcolumn(
        name = "Product",
        type_ = "string",
        json_path = ".spec.productId",
        description = "The connector's product id"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        description = "Whether the credentials work"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Token TTL",
        type_ = "integer",
        json_path = ".status.tokenTtlSeconds",
        description = "Seconds the management token had left at the last check",
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        priority = 1
    )
)]
#[x_kube(validation = Rule::new(format!(
    "(has(self.allowInsecureHttp) && self.allowInsecureHttp) || ({} \
     && (!has(self.deviceApiUrl) || {}) && (!has(self.exosense) || {}))",
    not_plain_http("self.managementUrl"),
    not_plain_http("self.deviceApiUrl"),
    not_plain_http("self.exosense.graphqlUrl"),
)).message("plain http:// URLs send the token unencrypted: use https:// or set allowInsecureHttp: true (local emulator only)"))]
#[serde(rename_all = "camelCase")]
pub struct IoTConnectorSpec {
    /// The connector's product id (solution id), e.g. `09iolmnn8090ol`. Immutable: packages
    /// and device registrations belong to one product; create a new IoTConnector for another.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(
        validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9_-]*$')")
            .message("productId may contain only letters, digits, '-' and '_', starting with a letter or digit"),
        validation = Rule::new("self == oldSelf")
            .message("productId is immutable: create a new IoTConnector for another product")
    )]
    pub product_id: String,

    /// Base URL of the management API, ending with `/`. Defaults to Exosite's hosted business
    /// API; point it at the local emulator (`http://127.0.0.1:<port>/api:1/`) for tests. Its
    /// host must resolve to public addresses only, unless the operator runs with
    /// `--allow-private-sources` or names the host with `--platform-host`; redirects are not
    /// followed.
    #[serde(default = "default_management_url")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new(super::common::RULE_HTTP_URL)
            .message("managementUrl must be an absolute http(s) URL such as https://bizapi.hosted.exosite.io/api:1/"),
        validation = Rule::new(RULE_TRAILING_SLASH)
            .message("managementUrl must end with '/' (e.g. https://bizapi.hosted.exosite.io/api:1/)"),
        validation = Rule::new(RULE_NO_CREDENTIALS)
            .message("managementUrl must not contain credentials (user:password@): the token comes from the Secret tokenSecretRef names")
    )]
    pub management_url: String,

    /// Base URL of the device HTTP API (`https://<productId>.m2.exosite.io/`), ending with `/`.
    /// Optional: derived from the product id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new(super::common::RULE_HTTP_URL)
            .message("deviceApiUrl must be an absolute http(s) URL such as https://<productId>.m2.exosite.io/"),
        validation = Rule::new(RULE_TRAILING_SLASH).message("deviceApiUrl must end with '/'"),
        validation = Rule::new(RULE_NO_CREDENTIALS)
            .message("deviceApiUrl must not contain credentials (user:password@): the token comes from the Secret tokenSecretRef names")
    )]
    pub device_api_url: Option<String>,

    /// The Secret key holding the management API token. The Secret must carry the label
    /// `otau.dev/connector-credential: "true"` and name managementUrl's host in its annotation
    /// `otau.dev/allowed-hosts` (comma-separated hosts), unless the operator's
    /// `--platform-host` list names it; otherwise the connector is `CredentialNotAllowed` and
    /// the token is sent nowhere. The token never appears in logs, events or status.
    pub token_secret_ref: TokenSecretRef,

    /// How the token is sent: `token` (`Authorization: token <t>`, the management API's scheme)
    /// or `Bearer` (`Authorization: Bearer <t>`).
    #[serde(default)]
    pub auth_scheme: AuthScheme,

    /// Allow plain `http://` URLs (management, device API, ExoSense). Only for a local emulator:
    /// the token then travels unencrypted.
    #[serde(default)]
    pub allow_insecure_http: bool,

    /// ExoSense GraphQL access, used to register packages the way ExoSense lists them. Optional:
    /// without it, packages are registered through the content API with the same tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exosense: Option<ExoSenseSpec>,

    /// Push of device2 events to the operator's webhook (`POST /hooks/device2`). Optional:
    /// without it, device status comes from polling only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,

    /// Client-side rate limit for calls to this connector's APIs (a token bucket shared by
    /// every package and rollout on the connector).
    #[serde(default)]
    pub rate_limit: RateLimit,

    /// TLS settings for the connector's HTTPS endpoints.
    #[serde(default)]
    pub tls: TlsSpec,

    /// How often the credentials (and the token's remaining lifetime) are checked, as a Go
    /// duration (`5m`, `1h`). From `10s` to `8760h`.
    #[serde(default = "default_check_interval")]
    #[x_kube(validation = CHECK_INTERVAL.rule())]
    pub check_interval: GoDuration,
}

fn default_management_url() -> String {
    DEFAULT_MANAGEMENT_URL.to_owned()
}

fn default_token_key() -> String {
    DEFAULT_TOKEN_KEY.to_owned()
}

fn default_webhook_key() -> String {
    DEFAULT_WEBHOOK_KEY.to_owned()
}

fn default_ca_bundle_key() -> String {
    DEFAULT_CA_BUNDLE_KEY.to_owned()
}

fn default_check_interval() -> GoDuration {
    GoDuration::new(DEFAULT_CHECK_INTERVAL)
}

fn default_requests_per_second() -> i32 {
    DEFAULT_REQUESTS_PER_SECOND
}

fn default_burst() -> i32 {
    DEFAULT_BURST
}

/// A Secret key holding a token; the key defaults to `token`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// Name of the Secret, in the IoTConnector's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_OBJECT_NAME).message(MESSAGE_OBJECT_NAME))]
    pub name: String,
    /// Key inside the Secret holding the token.
    #[serde(default = "default_token_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_DATA_KEY).message(MESSAGE_DATA_KEY))]
    pub key: String,
}

/// The HTTP authorization scheme used with the management token.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum AuthScheme {
    /// `Authorization: token <token>` (the management API's documented scheme).
    #[default]
    #[serde(rename = "token")]
    Token,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

/// ExoSense GraphQL access.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExoSenseSpec {
    /// The ExoSense GraphQL endpoint, e.g. `https://<instance>.apps.exosite.io/api/graphql`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new(super::common::RULE_HTTP_URL)
            .message("graphqlUrl must be an absolute http(s) URL such as https://example.apps.exosite.io/api/graphql"),
        validation = Rule::new(RULE_NO_CREDENTIALS)
            .message("graphqlUrl must not contain credentials (user:password@): the token comes from the Secret tokenSecretRef names")
    )]
    pub graphql_url: String,
    /// The Secret key holding the ExoSense token (sent as `Authorization: Automation <t>`).
    /// The Secret needs the label `otau.dev/connector-credential: "true"` and graphqlUrl's host
    /// in its annotation `otau.dev/allowed-hosts` (or on the operator's `--platform-host`
    /// list).
    pub token_secret_ref: TokenSecretRef,
}

/// The shared key that signs device2 events pushed to the operator.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The Secret key holding the HMAC-SHA256 key that the connector's event handler uses to
    /// sign pushed events. Events with a missing or wrong signature are refused. The Secret
    /// needs the label `otau.dev/connector-credential: "true"` (the key is sent nowhere, so no
    /// host annotation).
    pub secret_ref: WebhookSecretRef,
}

/// A Secret key holding the webhook HMAC key; the key defaults to `hmacKey`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecretRef {
    /// Name of the Secret, in the IoTConnector's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_OBJECT_NAME).message(MESSAGE_OBJECT_NAME))]
    pub name: String,
    /// Key inside the Secret holding the HMAC key.
    #[serde(default = "default_webhook_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_DATA_KEY).message(MESSAGE_DATA_KEY))]
    pub key: String,
}

/// Client-side token bucket for the connector's APIs. The defaults are conservative: the
/// platform's own limits are not documented.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second.
    #[serde(default = "default_requests_per_second")]
    #[schemars(range(min = 1, max = 100000))]
    pub requests_per_second: i32,
    /// Requests allowed in a burst above the sustained rate (bucket size).
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1, max = 100000))]
    pub burst: i32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            burst: DEFAULT_BURST,
        }
    }
}

/// TLS settings for the connector's endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Skip certificate verification. Never on a real platform: anyone on the path could read
    /// the token.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Extra CA certificates (PEM) trusted in addition to the built-in roots, from a ConfigMap
    /// (public data: no opt-in label needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,
}

/// A ConfigMap key holding PEM CA certificates; the key defaults to `ca.crt`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaBundleRef {
    /// Name of the ConfigMap, in the IoTConnector's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_OBJECT_NAME).message(MESSAGE_OBJECT_NAME))]
    pub name: String,
    /// Key inside the ConfigMap.
    #[serde(default = "default_ca_bundle_key")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(RULE_DATA_KEY).message(MESSAGE_DATA_KEY))]
    pub key: String,
}

/// Observed state of an IoTConnector, written only by the operator.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IoTConnectorStatus {
    /// Conditions: `Ready` (credentials accepted), `Stalled` (credentials rejected) and
    /// `Reconciling` (neither yet: initializing, Secret missing, platform unavailable).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The product's name on the platform (the `product` of package registrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub product_name: Option<String>,
    /// When the management token expires, if the platform told us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<Time>,
    /// Seconds the management token had left at `lastCheckedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_seconds: Option<i64>,
    /// When the credentials were last checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<Time>,
}
