//! The push receiver (docs/architecture.md §3, exosite-platform.md §6.3):
//! `POST /hooks/device2?connector=<cid>` on its own listener (`--push-addr`), separate from
//! `/metrics`, served by the shared accept loop with its limits (`crate::net::server`).
//!
//! 1. The connector: the IoTConnectors with that product id that some Rollout uses and that
//!    name a webhook Secret; none: `404`.
//! 2. The signature: `X-Otau-Signature: sha256=<hex>`, HMAC-SHA256 over the raw body bytes
//!    with the key from the connector's Secret (read with `get`, cached for a few seconds),
//!    compared in constant time before anything is parsed; missing or wrong: `401`, nothing
//!    applied. An empty key disables push for that connector.
//! 3. The body: one device2 event; not JSON or not an event: `400`. A `data_in` event's
//!    `otau_in` and `config_otau` values are folded into the index of every Rollout that holds
//!    the device, newest timestamp wins (events may come twice or out of order), and those
//!    Rollouts reconcile at once. Anything else is accepted and ignored. Answer: `204`.
//!
//! Lost events are harmless: the poll keeps running and repairs the index.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::Deserialize;
use sha2::Sha256;

use super::poller::WebhookKey;
use super::rollout::RolloutContext;
use crate::engine::{PartialUpdate, normalize_timestamp};
use crate::net::server::{self, Limits, ListenerMetrics, Setup};
use crate::otau::{CONFIG_OTAU, OTAU_IN};

/// The path of the receiver.
pub const PATH: &str = "/hooks/device2";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-otau-signature";
/// The largest body the receiver reads (a larger one is answered `413`); a follower
/// forwarding to the leader uses the same limit.
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;
/// The listener's name in `otau_listener_*` metrics.
pub const LISTENER: &str = "push";
/// How long a webhook key read from its Secret is used before it is read again.
pub const SECRET_TTL: Duration = Duration::from_secs(10);

/// One device2 event as the receiver reads it (exosite-platform.md §6.1); unknown fields
/// are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceEvent {
    /// `data_in`, `connect`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The device identity.
    pub identity: String,
    /// For `data_in`: the writes.
    #[serde(default)]
    pub payload: Vec<EventPayload>,
}

/// One write of a `data_in` event.
#[derive(Debug, Clone, Deserialize)]
pub struct EventPayload {
    /// Alias → value written (string values only; others are ignored).
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    /// When, µs (seconds and milliseconds are accepted too).
    pub timestamp: i64,
}

impl DeviceEvent {
    /// The newest `config_otau` and `otau_in` values of the event.
    pub fn update(&self) -> PartialUpdate {
        let mut update = PartialUpdate::default();
        for p in &self.payload {
            let at = normalize_timestamp(p.timestamp);
            for (alias, slot) in [
                (CONFIG_OTAU, &mut update.config_otau),
                (OTAU_IN, &mut update.otau_in),
            ] {
                if let Some(serde_json::Value::String(v)) = p.values.get(alias)
                    && slot.as_ref().is_none_or(|(_, t)| *t <= at)
                {
                    *slot = Some((v.clone(), at));
                }
            }
        }
        update
    }
}

/// `sha256=<lowercase hex>` of HMAC-SHA256(`key`, `body`).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `header` is the signature of `body` under `key`, compared in constant time.
pub fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_digest) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(digest) = hex::decode(hex_digest) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

/// Webhook keys read from Secrets, kept for [`SECRET_TTL`].
#[derive(Default)]
struct SecretCache {
    keys: Mutex<HashMap<WebhookKey, (Vec<u8>, Instant)>>,
}

#[derive(Clone)]
struct PushState {
    ctx: Arc<RolloutContext>,
    secrets: Arc<SecretCache>,
}

/// The receiver's routes.
pub fn router(ctx: Arc<RolloutContext>) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(PushState {
            ctx,
            secrets: Arc::default(),
        })
}

/// The receiver being served: the address it is bound to, and the server (it ends on `stop`).
pub type Serving = (
    SocketAddr,
    futures::future::BoxFuture<'static, std::io::Result<()>>,
);

/// Binds the push port (`--push-addr`); the listener and the address it got.
pub async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (--push-addr): {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("push listener: {e}"))?;
    Ok((listener, local))
}

/// The push listener's setup: `limits` with [`BODY_LIMIT`] as its largest body.
pub fn listener_setup(limits: Limits, metrics: &ListenerMetrics) -> Setup {
    Setup {
        name: LISTENER,
        limits: limits.with_max_body_bytes(BODY_LIMIT as u64),
        metrics: metrics.clone(),
    }
}

/// Serves the receiver on `addr` until `stop`, with the listener `limits`; logs the bound
/// address ("push receiver listening", field `addr`) and returns it with the server.
pub async fn serve(
    ctx: Arc<RolloutContext>,
    addr: SocketAddr,
    limits: Limits,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Serving, String> {
    let (listener, local) = bind(addr).await?;
    tracing::info!(addr = %local, path = PATH, "push receiver listening");
    let setup = listener_setup(limits, &ctx.base.metrics.listeners);
    let app = router(ctx);
    Ok((
        local,
        Box::pin(async move {
            server::serve_router(listener, setup, app, stop).await;
            Ok(())
        }),
    ))
}

#[derive(Debug, Deserialize)]
struct PushQuery {
    connector: Option<String>,
}

fn answer(state: &PushState, code: StatusCode, message: &str) -> Response {
    state
        .ctx
        .metrics
        .push_requests
        .with_label_values(&[code.as_str()])
        .inc();
    if code == StatusCode::NO_CONTENT {
        code.into_response()
    } else {
        (code, format!("{message}\n")).into_response()
    }
}

async fn receive(
    State(state): State<PushState>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(cid) = query.connector.filter(|c| !c.is_empty()) else {
        return answer(
            &state,
            StatusCode::BAD_REQUEST,
            "the query parameter connector=<product id> is missing",
        );
    };
    let targets = state.ctx.pollers.push_targets(&cid);
    if targets.is_empty() {
        return answer(
            &state,
            StatusCode::NOT_FOUND,
            "unknown connector: no Rollout uses an IoTConnector with this product id and a webhook Secret",
        );
    }
    let Some(header) = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return answer(&state, StatusCode::UNAUTHORIZED, "missing X-Otau-Signature");
    };
    let mut verified = Vec::new();
    for (connector_key, key) in &targets {
        let secret = match webhook_key(&state, key, false).await {
            Some(s) => s,
            None => continue,
        };
        if verify(&secret, &body, &header) {
            verified.push(connector_key.clone());
            continue;
        }
        // The key may have been rotated: read it again once.
        if let Some(fresh) = webhook_key(&state, key, true).await
            && fresh != secret
            && verify(&fresh, &body, &header)
        {
            verified.push(connector_key.clone());
        }
    }
    if verified.is_empty() {
        return answer(&state, StatusCode::UNAUTHORIZED, "bad signature");
    }
    let event: DeviceEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            return answer(
                &state,
                StatusCode::BAD_REQUEST,
                &format!("the body is not a device2 event: {e}"),
            );
        }
    };
    if event.kind == "data_in" {
        let update = event.update();
        if update.otau_in.is_some() || update.config_otau.is_some() {
            let changed = state.ctx.pollers.apply(&verified, &event.identity, &update);
            if update.otau_in.is_some() {
                for rollout in changed {
                    let namespace = rollout.namespace.clone().unwrap_or_default();
                    state
                        .ctx
                        .metrics
                        .reports
                        .with_label_values(&[&namespace, &rollout.name, "push"])
                        .inc();
                }
            }
        }
    }
    answer(&state, StatusCode::NO_CONTENT, "")
}

/// The webhook key of a connector (`None` when its Secret or key is missing or empty: push
/// is then off for it).
async fn webhook_key(state: &PushState, key: &WebhookKey, refresh: bool) -> Option<Vec<u8>> {
    if !refresh
        && let Some((bytes, at)) = state
            .secrets
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        && at.elapsed() < SECRET_TTL
    {
        return (!bytes.is_empty()).then(|| bytes.clone());
    }
    let api: Api<Secret> = Api::namespaced(state.ctx.base.client.clone(), &key.namespace);
    let bytes = match api.get_opt(&key.secret).await {
        Ok(Some(secret)) => secret
            .data
            .as_ref()
            .and_then(|d| d.get(&key.key))
            .map(|b| b.0.clone())
            .unwrap_or_default(),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(namespace = %key.namespace, secret = %key.secret, error = %e, "cannot read the webhook Secret");
            return None;
        }
    };
    if bytes.is_empty() {
        tracing::warn!(namespace = %key.namespace, secret = %key.secret, key = %key.key, "the webhook Secret or key is missing or empty: pushed events are refused");
    }
    state
        .secrets
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), (bytes.clone(), Instant::now()));
    (!bytes.is_empty()).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's test vector (exosite-platform.md §6.3).
    #[test]
    fn the_contract_test_vector_verifies() {
        let body = r#"{"type":"data_in","identity":"00AB01","timestamp":1700000000000000,"ip":"203.0.113.7","connection_id":"c-1","payload":[{"values":{"otau_in":"{\"version\":\"1.0.2\",\"status\":\"INSTALLED_VERSION\",\"message\":\"\"}"},"timestamp":1700000000000000}]}"#;
        assert_eq!(body.len(), 248);
        let expected = "sha256=6913c02cc36bc794757a06b94572a0ade43f92f4bb63b4cb89f1a854e1f0e9ac";
        assert_eq!(signature(b"test-secret", body.as_bytes()), expected);
        assert!(verify(b"test-secret", body.as_bytes(), expected));
        assert!(!verify(b"other-secret", body.as_bytes(), expected));
        assert!(!verify(b"test-secret", body.as_bytes(), "sha256=00"));
        assert!(!verify(b"test-secret", body.as_bytes(), "6913c02c"));
        let mut tampered = body.as_bytes().to_vec();
        tampered[10] ^= 1;
        assert!(!verify(b"test-secret", &tampered, expected));

        let event: DeviceEvent = serde_json::from_str(body).expect("event");
        let update = event.update();
        assert_eq!(
            update
                .otau_in
                .map(|(v, t)| (v.contains("INSTALLED_VERSION"), t)),
            Some((true, 1_700_000_000_000_000))
        );
        assert!(update.config_otau.is_none());
    }

    #[test]
    fn the_newest_value_of_an_event_wins() {
        let event: DeviceEvent = serde_json::from_value(serde_json::json!({
            "type": "data_in",
            "identity": "d",
            "payload": [
                {"values": {"otau_in": "b", "config_otau": "ack"}, "timestamp": 1_700_000_000_000_200i64},
                {"values": {"otau_in": "a"}, "timestamp": 1_700_000_000_000_100i64},
                {"values": {"otau_in": 5}, "timestamp": 1_700_000_000_000_300i64},
            ],
        }))
        .expect("event");
        let update = event.update();
        assert_eq!(update.otau_in, Some(("b".into(), 1_700_000_000_000_200)));
        assert_eq!(
            update.config_otau,
            Some(("ack".into(), 1_700_000_000_000_200))
        );
    }
}
