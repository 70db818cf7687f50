//! The push receiver (docs/architecture.md §3, docs/push.md, exosite-platform.md §6.3):
//! `POST /hooks/device2?connector=<cid>` on its own listener (`--push-addr`), separate from
//! `/metrics`, served by the shared accept loop with its limits (`crate::net::server`).
//!
//! The checks, in order; everything up to the body is decided from the request line and
//! headers, before a byte of the body is read:
//!
//! 1. `connector=` present, else `400`.
//! 2. The connector: the IoTConnectors with that product id that some Rollout uses and that
//!    name a webhook Secret. None: refused like a bad signature (step 3), so that the answer
//!    does not tell which product ids the operator serves.
//! 3. The signature header: `X-Otau-Signature: sha256=<64 hex digits>`; missing or malformed:
//!    `401` with [`NOT_ACCEPTED`].
//! 4. The body: at most [`BODY_LIMIT`] bytes (a larger declared length is answered `413`
//!    without reading), within the listener's body timeout (`408` after it).
//! 5. The signature: HMAC-SHA256 over the raw body bytes, compared in constant time, with
//!    each candidate connector's key ([`super::webhook_keys`]: kept, read again only after a
//!    failure, at most once per interval per key). Wrong: `401` with [`NOT_ACCEPTED`], the
//!    same answer as steps 2 and 3.
//! 6. The event: one device2 event with a `timestamp`; not JSON, not an event or no
//!    timestamp: `400`.
//! 7. The time window: an event whose `timestamp` is more than [`EVENT_WINDOW`] away from
//!    the operator's clock is refused with `400` (a replay, or a clock that far off).
//! 8. A `data_in` event's `otau_in` and `config_otau` values are folded into the index of
//!    every Rollout that holds the device, newest timestamp wins (events may come twice or out
//!    of order), and those Rollouts reconcile at once. Anything else is accepted and ignored.
//!    Answer: `204`.
//!
//! Lost and refused events are harmless: the poll keeps running and repairs the index.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::rollout::RolloutContext;
use super::webhook_keys::WebhookKeys;
use crate::engine::{PartialUpdate, normalize_timestamp};
use crate::net::server::{self, BodyRefusal, Limits, ListenerMetrics, Setup, body_refusal};
use crate::otau::{CONFIG_OTAU, MAX_MANIFEST_BYTES, OTAU_IN};

/// The path of the receiver.
pub const PATH: &str = "/hooks/device2";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-otau-signature";
/// The largest body the receiver reads; a follower forwarding to the leader uses the same
/// limit. The largest legitimate event is one device write of both aliases the operator reads:
/// `config_otau` (an acknowledged manifest, at most [`MAX_MANIFEST_BYTES`]) and `otau_in` (at
/// most the platform's strict resource value size, the same 64 KiB, exosite-platform.md §8),
/// each at most doubled by JSON string escaping, plus 4 KiB for the rest of the event: 260 KiB.
pub const BODY_LIMIT: usize = 2 * 2 * MAX_MANIFEST_BYTES + 4096;
/// How far an event's `timestamp` may be from the operator's clock, either way. Longer than
/// any delivery retry (the emulator's four tries end within 40 s, the Murano forwarder does
/// not retry), with room for queueing and clock skew (exosite-platform.md §6.3).
pub const EVENT_WINDOW: Duration = Duration::from_secs(300);
/// The answer (`401`) to an unknown product id, a missing or malformed signature header and a
/// wrong signature alike.
pub const NOT_ACCEPTED: &str =
    "not accepted: unknown connector, or a missing or wrong X-Otau-Signature\n";
/// The listener's name in `otau_listener_*` metrics.
pub const LISTENER: &str = "push";
/// The `reason` labels of `otau_push_refused_total`.
pub const REFUSAL_REASONS: [&str; 7] = [
    "no_connector",
    "unknown_connector",
    "bad_signature",
    "too_large",
    "unreadable",
    "bad_event",
    "outside_window",
];

/// One device2 event as the receiver reads it (exosite-platform.md §6.1); unknown fields
/// are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceEvent {
    /// `data_in`, `connect`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The device identity.
    pub identity: String,
    /// When the event happened, µs (seconds and milliseconds are accepted too); required by
    /// the receiver's time window.
    #[serde(default)]
    pub timestamp: Option<i64>,
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

    /// Whether the event's timestamp is within [`EVENT_WINDOW`] of `now_micros`; an event
    /// without one is not.
    pub fn within_window(&self, now_micros: i64) -> bool {
        let window = i64::try_from(EVENT_WINDOW.as_micros()).unwrap_or(i64::MAX);
        self.timestamp.is_some_and(|t| {
            normalize_timestamp(t)
                .checked_sub(now_micros)
                .is_some_and(|d| d.abs() <= window)
        })
    }
}

/// `sha256=<lowercase hex>` of HMAC-SHA256(`key`, `body`).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The digest a signature header claims: `sha256=` and 64 hex digits, else `None`.
pub fn claimed_digest(header: &str) -> Option<[u8; 32]> {
    let hex_digest = header.trim().strip_prefix("sha256=")?;
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest).ok()?;
    Some(digest)
}

/// Whether `header` is the signature of `body` under `key`, compared in constant time.
pub fn verify(key: &[u8], body: &[u8], header: &str) -> bool {
    let Some(digest) = claimed_digest(header) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&digest).is_ok()
}

#[derive(Clone)]
struct PushState {
    ctx: Arc<RolloutContext>,
    keys: Arc<WebhookKeys>,
}

/// The receiver's routes.
pub fn router(ctx: Arc<RolloutContext>) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .with_state(PushState {
            ctx,
            keys: Arc::default(),
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

/// Why a push was refused: its answer, and the `reason` of `otau_push_refused_total`.
#[derive(Debug)]
enum Refused {
    NoConnector,
    UnknownConnector,
    BadSignature,
    TooLarge,
    BodyTimeout,
    Unreadable,
    BadEvent(String),
    OutsideWindow,
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::NoConnector => "no_connector",
            Refused::UnknownConnector => "unknown_connector",
            Refused::BadSignature => "bad_signature",
            Refused::TooLarge => "too_large",
            Refused::BodyTimeout | Refused::Unreadable => "unreadable",
            Refused::BadEvent(_) => "bad_event",
            Refused::OutsideWindow => "outside_window",
        }
    }

    fn answer(&self) -> (StatusCode, String) {
        match self {
            Refused::NoConnector => (
                StatusCode::BAD_REQUEST,
                "the query parameter connector=<product id> is missing\n".into(),
            ),
            Refused::UnknownConnector | Refused::BadSignature => {
                (StatusCode::UNAUTHORIZED, NOT_ACCEPTED.into())
            }
            Refused::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is over {BODY_LIMIT} bytes\n"),
            ),
            Refused::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time\n".into(),
            ),
            Refused::Unreadable => (
                StatusCode::BAD_REQUEST,
                "the body could not be read\n".into(),
            ),
            Refused::BadEvent(why) => (
                StatusCode::BAD_REQUEST,
                format!("the body is not a device2 event: {why}\n"),
            ),
            Refused::OutsideWindow => (
                StatusCode::BAD_REQUEST,
                format!(
                    "the event's timestamp is more than {} s away from the operator's clock\n",
                    EVENT_WINDOW.as_secs()
                ),
            ),
        }
    }
}

fn count(state: &PushState, code: StatusCode) {
    state
        .ctx
        .metrics
        .push_requests
        .with_label_values(&[code.as_str()])
        .inc();
}

async fn receive(
    State(state): State<PushState>,
    Query(query): Query<PushQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&state, query, &headers, body).await {
        Ok(()) => {
            count(&state, StatusCode::NO_CONTENT);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refused) => {
            let (code, message) = refused.answer();
            count(&state, code);
            state
                .ctx
                .metrics
                .push_refused
                .with_label_values(&[refused.reason()])
                .inc();
            (code, message).into_response()
        }
    }
}

/// Steps 1 to 8 of the module docs; `Ok` once the event is applied (or ignored).
async fn accept(
    state: &PushState,
    query: PushQuery,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), Refused> {
    let cid = query
        .connector
        .filter(|c| !c.is_empty())
        .ok_or(Refused::NoConnector)?;
    let targets = state.ctx.pollers.push_targets(&cid);
    if targets.is_empty() {
        return Err(Refused::UnknownConnector);
    }
    let digest = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(claimed_digest)
        .ok_or(Refused::BadSignature)?;
    let bytes = read_body(headers, body).await?;
    let verified = state
        .keys
        .verified(&state.ctx.base.client, &targets, &bytes, &digest)
        .await;
    if verified.is_empty() {
        return Err(Refused::BadSignature);
    }
    let event: DeviceEvent =
        serde_json::from_slice(&bytes).map_err(|e| Refused::BadEvent(e.to_string()))?;
    if event.timestamp.is_none() {
        return Err(Refused::BadEvent("no timestamp".into()));
    }
    if !event.within_window(now_micros()) {
        return Err(Refused::OutsideWindow);
    }
    apply(state, &verified, &event);
    Ok(())
}

/// The body, at most [`BODY_LIMIT`] bytes: a larger declared length is refused before a byte
/// is read.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Refused> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(Refused::TooLarge);
    }
    match axum::body::to_bytes(body, BODY_LIMIT + 1).await {
        Ok(bytes) if bytes.len() > BODY_LIMIT => Err(Refused::TooLarge),
        Ok(bytes) => Ok(bytes),
        Err(e) => Err(match body_refusal(&e) {
            Some(BodyRefusal::Timeout) => Refused::BodyTimeout,
            Some(BodyRefusal::TooLarge) => Refused::TooLarge,
            None => Refused::Unreadable,
        }),
    }
}

/// The wall clock, µs since the epoch.
fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Folds a `data_in` event into the verified connectors' indexes and counts the reports.
fn apply(state: &PushState, verified: &[String], event: &DeviceEvent) {
    if event.kind != "data_in" {
        return;
    }
    let update = event.update();
    if update.otau_in.is_none() && update.config_otau.is_none() {
        return;
    }
    let changed = state.ctx.pollers.apply(verified, &event.identity, &update);
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
    fn a_signature_header_claims_a_digest_only_when_well_formed() {
        let good = format!("sha256={}", "ab".repeat(32));
        assert_eq!(claimed_digest(&good), Some([0xab; 32]));
        assert_eq!(claimed_digest(&format!(" {good} ")), Some([0xab; 32]));
        let bad = [
            String::new(),
            "ab".repeat(32),
            "sha256=".to_string(),
            "sha256=abab".to_string(),
            format!("sha256={}", "ab".repeat(33)),
            format!("sha256={}", "zz".repeat(32)),
            format!("sha1={}", "ab".repeat(32)),
        ];
        for bad in &bad {
            assert_eq!(claimed_digest(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_events_within_the_window_either_way_are_current() {
        let now = 1_800_000_000_000_000i64;
        let window = EVENT_WINDOW.as_micros() as i64;
        let at = |timestamp: Option<i64>| DeviceEvent {
            kind: "data_in".into(),
            identity: "d".into(),
            timestamp,
            payload: Vec::new(),
        };
        assert!(at(Some(now)).within_window(now));
        assert!(at(Some(now - window)).within_window(now));
        assert!(at(Some(now + window)).within_window(now));
        assert!(!at(Some(now - window - 1)).within_window(now), "a replay");
        assert!(
            !at(Some(now + window + 1)).within_window(now),
            "from the future"
        );
        assert!(at(Some(now / 1000)).within_window(now), "milliseconds");
        assert!(at(Some(now / 1_000_000)).within_window(now), "seconds");
        assert!(!at(None).within_window(now), "no timestamp");
        assert!(!at(Some(i64::MIN)).within_window(now));
    }

    #[test]
    fn the_body_limit_holds_the_largest_legitimate_event() {
        // One write of both aliases at their largest, every byte a quote (escaped to two).
        let value = "\"".repeat(MAX_MANIFEST_BYTES);
        let body = serde_json::json!({
            "type": "data_in",
            "identity": "i".repeat(128),
            "timestamp": 1_700_000_000_000_000i64,
            "ip": "2001:db8::1",
            "connection_id": "c".repeat(64),
            "payload": [{"values": {"config_otau": value, "otau_in": value},
                         "timestamp": 1_700_000_000_000_000i64}],
        })
        .to_string();
        assert!(body.len() <= BODY_LIMIT, "{} > {BODY_LIMIT}", body.len());
        assert_eq!(BODY_LIMIT, 266_240);
    }

    #[test]
    fn every_refusal_has_a_counted_reason_and_unknown_answers_as_bad_signature() {
        let all = [
            Refused::NoConnector,
            Refused::UnknownConnector,
            Refused::BadSignature,
            Refused::TooLarge,
            Refused::BodyTimeout,
            Refused::Unreadable,
            Refused::BadEvent(String::new()),
            Refused::OutsideWindow,
        ];
        for refused in &all {
            assert!(REFUSAL_REASONS.contains(&refused.reason()), "{refused:?}");
        }
        assert_eq!(
            Refused::UnknownConnector.answer(),
            Refused::BadSignature.answer()
        );
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
