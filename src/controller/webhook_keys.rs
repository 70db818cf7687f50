//! The webhook keys the push receiver checks signatures with (docs/push.md, "The key cache").
//!
//! Each key (an IoTConnector's `spec.webhook.secretRef`) is read from its Secret with `get`
//! on first use and kept. It is read again only when a signature fails against the kept
//! copy, and then at most once per [`REREAD_INTERVAL`] per key; pushes that fail at the same
//! time wait for that one read and share it (single flight). So forged pushes cost at most one
//! apiserver read per key per interval, however many arrive and however many connectors
//! claim the product id, while a rotated key is picked up at the first push signed with it
//! once the interval since the last read has passed. No Secret is listed or watched
//! (docs/architecture.md §9.10).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use sha2::Sha256;
use tokio::time::Instant;

use super::poller::WebhookKey;

/// The least time between two reads of one key's Secret.
pub const REREAD_INTERVAL: Duration = Duration::from_secs(5);

/// The kept keys, one entry per Secret key.
#[derive(Default)]
pub struct WebhookKeys {
    entries: Mutex<HashMap<WebhookKey, Arc<tokio::sync::Mutex<Kept>>>>,
}

/// One key as last read.
#[derive(Default)]
struct Kept {
    /// Empty: the Secret or its key is missing or empty (push is off for the connector).
    key: Vec<u8>,
    /// When the Secret was last read (tried, even if the read failed); `None`: never.
    read_at: Option<Instant>,
}

impl Kept {
    /// Whether `digest` is the HMAC-SHA256 of `body` under the kept key (constant time).
    fn signs(&self, body: &[u8], digest: &[u8]) -> bool {
        if self.key.is_empty() {
            return false;
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(body);
        mac.verify_slice(digest).is_ok()
    }

    /// Whether the Secret may be read again now.
    fn may_reread(&self) -> bool {
        self.read_at
            .is_none_or(|at| at.elapsed() >= REREAD_INTERVAL)
    }

    /// Reads the key from its Secret. A failed read keeps the previous key; both count as a
    /// read for [`REREAD_INTERVAL`].
    async fn read(&mut self, client: &Client, key: &WebhookKey) {
        self.read_at = Some(Instant::now());
        let api: Api<Secret> = Api::namespaced(client.clone(), &key.namespace);
        let bytes = match api.get_opt(&key.secret).await {
            // Only a Secret that opted in is used (src/controller/credentials.rs); the connector
            // shows CredentialNotAllowed for one that did not.
            Ok(Some(secret)) if !super::credentials::labelled(&secret.metadata) => Vec::new(),
            Ok(secret) => secret
                .and_then(|s| s.data)
                .and_then(|mut data| data.remove(&key.key))
                .map(|b| b.0)
                .unwrap_or_default(),
            Err(e) => {
                tracing::warn!(namespace = %key.namespace, secret = %key.secret, error = %e, "cannot read the webhook Secret");
                return;
            }
        };
        if bytes.is_empty() {
            tracing::warn!(namespace = %key.namespace, secret = %key.secret, key = %key.key, "the webhook Secret is missing or not labelled otau.dev/connector-credential=true, or its key is empty: pushed events are refused");
        }
        self.key = bytes;
    }
}

impl WebhookKeys {
    /// The connectors of `targets` whose key signs `body` with `digest`.
    pub async fn verified(
        &self,
        client: &Client,
        targets: &[(String, WebhookKey)],
        body: &[u8],
        digest: &[u8],
    ) -> Vec<String> {
        let mut verified = Vec::new();
        for (connector, key) in targets {
            if self.signs(client, key, body, digest).await {
                verified.push(connector.clone());
            }
        }
        verified
    }

    /// Whether `key` signs `body` with `digest`: the kept copy first, then (after a failure,
    /// at most once per [`REREAD_INTERVAL`]) a fresh read. Holding the key's lock across the
    /// read makes concurrent failures share it.
    async fn signs(&self, client: &Client, key: &WebhookKey, body: &[u8], digest: &[u8]) -> bool {
        let entry = self.entry(key);
        let mut kept = entry.lock().await;
        if kept.read_at.is_none() {
            kept.read(client, key).await;
        }
        if kept.signs(body, digest) {
            return true;
        }
        if !kept.may_reread() {
            return false;
        }
        kept.read(client, key).await;
        kept.signs(body, digest)
    }

    fn entry(&self, key: &WebhookKey) -> Arc<tokio::sync::Mutex<Kept>> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone()
    }
}
