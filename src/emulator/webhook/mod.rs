//! Push of device2 events to webhook receivers (exosite-platform.md §6.3).
//!
//! - [`signature`] / [`verify`]: the `X-Otau-Signature: sha256=<hex>` HMAC-SHA256 over the raw
//!   body bytes, keyed by the connector's shared secret.
//! - [`WebhookConfig`]: one target URL and secret per connector, the event types to send, the
//!   timeouts and retry delays.
//! - [`WebhookArgs`]: the command-line form (`--webhook-url`, `--webhook-secret-file`,
//!   `--webhook-event-types`; the secret also from [`SECRET_ENV`]). A secret is never a flag's
//!   value.
//! - [`delivery::WebhookDelivery`]: the worker that subscribes to the model's event broadcast
//!   and POSTs each event with retries, through a bounded queue that never blocks the model.

pub mod args;
pub mod delivery;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use args::{SECRET_ENV, WebhookArgs, WebhookConfigError};
pub use delivery::{WebhookDelivery, WebhookStats, WebhookStatsSnapshot};

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Otau-Signature";
/// The prefix of the signature header's value.
pub const SIGNATURE_PREFIX: &str = "sha256=";
/// Connect timeout of a delivery (the Http service default, exosite-platform.md §6.2).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3000);
/// Response timeout of a delivery (the Http service default).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(5000);
/// Waits before the second, third and fourth try (exosite-platform.md §6.3).
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// Default capacity of the delivery queue; events beyond it are dropped and counted.
pub const QUEUE_CAPACITY: usize = 10_000;
/// Default number of deliveries in flight at once.
pub const MAX_IN_FLIGHT: usize = 32;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length, so this never fails.
    <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// The `X-Otau-Signature` value for `body`: `sha256=` and the lowercase hex HMAC-SHA256 of the
/// raw body bytes keyed by `secret` (the secret's UTF-8 bytes).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!(
        "{SIGNATURE_PREFIX}{}",
        hex::encode(m.finalize().into_bytes())
    )
}

/// Whether `header` is the right signature of `body` under `secret`, compared in constant time.
/// A missing prefix, bad hex or wrong digest all give false.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix(SIGNATURE_PREFIX) else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&digest).is_ok()
}

/// A shared webhook secret. Its `Debug` output never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl WebhookSecret {
    /// A secret from its bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        WebhookSecret(bytes.into())
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An empty secret disables push for its connector (exosite-platform.md §6.3).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret(<{} bytes>)", self.0.len())
    }
}

/// Where one connector's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// The receiver's URL; `connector=<cid>` is added to its query when sent.
    pub url: url::Url,
    /// The signing key. Empty: the connector's events are not sent.
    pub secret: WebhookSecret,
}

/// Settings of webhook delivery.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Target per connector id.
    pub targets: BTreeMap<String, WebhookTarget>,
    /// Event types sent (`data_in` by default; `webhook_event_types` adds others).
    pub event_types: BTreeSet<String>,
    /// Connect timeout of one try.
    pub connect_timeout: Duration,
    /// Time allowed for the response of one try, after connecting.
    pub response_timeout: Duration,
    /// Waits before each retry; their number is the number of retries.
    pub retry_delays: Vec<Duration>,
    /// Capacity of the delivery queue.
    pub queue_capacity: usize,
    /// Deliveries in flight at once.
    pub max_in_flight: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            targets: BTreeMap::new(),
            event_types: BTreeSet::from([crate::emulator::events::DATA_IN.to_string()]),
            connect_timeout: CONNECT_TIMEOUT,
            response_timeout: RESPONSE_TIMEOUT,
            retry_delays: RETRY_DELAYS.to_vec(),
            queue_capacity: QUEUE_CAPACITY,
            max_in_flight: MAX_IN_FLIGHT,
        }
    }
}

impl WebhookConfig {
    /// Whether any connector has a target with a non-empty secret.
    pub fn is_active(&self) -> bool {
        self.targets.values().any(|t| !t.secret.is_empty())
    }

    /// The URL an event of connector `cid` is POSTed to: the target URL with
    /// `connector=<cid>` added to its query (unless it already names a connector).
    pub fn delivery_url(target: &WebhookTarget, cid: &str) -> url::Url {
        let mut url = target.url.clone();
        if !url.query_pairs().any(|(k, _)| k == "connector") {
            url.query_pairs_mut().append_pair("connector", cid);
        }
        url
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::events::{DATA_IN, DeviceEvent, EventPayload};

    const VECTOR_DIGEST: &str = "6913c02cc36bc794757a06b94572a0ade43f92f4bb63b4cb89f1a854e1f0e9ac";

    fn vector_event() -> DeviceEvent {
        DeviceEvent {
            kind: DATA_IN.into(),
            identity: "00AB01".into(),
            timestamp: 1_700_000_000_000_000,
            ip: "203.0.113.7".into(),
            connection_id: "c-1".into(),
            payload: vec![EventPayload {
                values: BTreeMap::from([(
                    "otau_in".to_string(),
                    r#"{"version":"1.0.2","status":"INSTALLED_VERSION","message":""}"#.to_string(),
                )]),
                timestamp: 1_700_000_000_000_000,
            }],
        }
    }

    #[test]
    fn signer_reproduces_the_contract_test_vector() {
        let body = serde_json::to_vec(&vector_event()).unwrap();
        assert_eq!(body.len(), 248);
        assert_eq!(
            body,
            br#"{"type":"data_in","identity":"00AB01","timestamp":1700000000000000,"ip":"203.0.113.7","connection_id":"c-1","payload":[{"values":{"otau_in":"{\"version\":\"1.0.2\",\"status\":\"INSTALLED_VERSION\",\"message\":\"\"}"},"timestamp":1700000000000000}]}"#
        );
        assert_eq!(
            signature(b"test-secret", &body),
            format!("sha256={VECTOR_DIGEST}")
        );
    }

    #[test]
    fn verify_accepts_the_right_signature_only() {
        let body = serde_json::to_vec(&vector_event()).unwrap();
        let good = format!("sha256={VECTOR_DIGEST}");
        assert!(verify(b"test-secret", &body, &good));
        assert!(!verify(b"other-secret", &body, &good));
        assert!(!verify(b"test-secret", &body[1..], &good));
        assert!(
            !verify(b"test-secret", &body, VECTOR_DIGEST),
            "prefix missing"
        );
        assert!(!verify(b"test-secret", &body, "sha256=zz"), "bad hex");
        assert!(!verify(b"test-secret", &body, "sha256="), "empty digest");
    }

    #[test]
    fn delivery_url_names_the_connector_once() {
        let target = WebhookTarget {
            url: url::Url::parse("http://127.0.0.1:9/hooks/device2").unwrap(),
            secret: WebhookSecret::new("s"),
        };
        assert_eq!(
            WebhookConfig::delivery_url(&target, "abc").as_str(),
            "http://127.0.0.1:9/hooks/device2?connector=abc"
        );
        let named = WebhookTarget {
            url: url::Url::parse("http://h/x?connector=zzz&a=1").unwrap(),
            ..target
        };
        assert_eq!(
            WebhookConfig::delivery_url(&named, "abc").as_str(),
            "http://h/x?connector=zzz&a=1"
        );
    }

    #[test]
    fn secret_debug_hides_the_value() {
        let s = WebhookSecret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = WebhookConfig::default();
        assert_eq!(c.connect_timeout, Duration::from_millis(3000));
        assert_eq!(c.response_timeout, Duration::from_millis(5000));
        assert_eq!(
            c.retry_delays,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4)
            ]
        );
        assert_eq!(c.event_types, BTreeSet::from(["data_in".to_string()]));
        assert!(!c.is_active());
    }
}
