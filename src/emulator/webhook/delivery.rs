//! The delivery worker: device2 events from the model's broadcast, through a bounded queue, to
//! the connectors' webhook receivers, signed, with retries (exosite-platform.md §6.3).
//!
//! The model never waits on delivery: the broadcast drops the oldest events for a slow reader
//! (counted as `lagged`), and a full queue drops new events (counted as `queue_full`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use serde::Serialize;
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::JoinHandle;

use super::{SIGNATURE_HEADER, WebhookConfig, signature};
use crate::emulator::events::ConnectorEvent;
use crate::emulator::model::Model;

/// Counters of webhook delivery, shared with the admin endpoint and `/metrics`.
#[derive(Debug, Default)]
pub struct WebhookStats {
    queued: AtomicU64,
    delivered: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    queue_full: AtomicU64,
    lagged: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
}

/// A copy of [`WebhookStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStatsSnapshot {
    /// Events put on the delivery queue.
    pub queued: u64,
    /// Events a receiver accepted (2xx or 3xx).
    pub delivered: u64,
    /// Events a receiver refused with a 4xx (not retried).
    pub rejected: u64,
    /// Events dropped after the last retry failed (connection error, timeout or 5xx).
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub queue_full: u64,
    /// Events the worker missed because the model's broadcast overtook it.
    pub lagged: u64,
    /// HTTP tries, first tries and retries together.
    pub attempts: u64,
    /// Retries (tries after the first).
    pub retries: u64,
}

impl WebhookStatsSnapshot {
    /// Events whose delivery has ended one way or another.
    pub fn finished(&self) -> u64 {
        self.delivered + self.rejected + self.failed
    }

    /// `(outcome, count)` pairs for metrics.
    pub fn outcomes(&self) -> [(&'static str, u64); 5] {
        [
            ("delivered", self.delivered),
            ("rejected", self.rejected),
            ("failed", self.failed),
            ("queue_full", self.queue_full),
            ("lagged", self.lagged),
        ]
    }
}

impl WebhookStats {
    /// The counters now.
    pub fn snapshot(&self) -> WebhookStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookStatsSnapshot {
            queued: get(&self.queued),
            delivered: get(&self.delivered),
            rejected: get(&self.rejected),
            failed: get(&self.failed),
            queue_full: get(&self.queue_full),
            lagged: get(&self.lagged),
            attempts: get(&self.attempts),
            retries: get(&self.retries),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One signed request waiting to be sent.
struct Job {
    url: url::Url,
    body: Bytes,
    signature: String,
}

/// The running delivery worker. Dropping it stops delivery (in-flight requests are aborted).
#[derive(Debug)]
pub struct WebhookDelivery {
    stats: Arc<WebhookStats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for WebhookDelivery {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How one try ended.
enum TryOutcome {
    Accepted,
    Refused,
    Retryable,
}

impl WebhookDelivery {
    /// Subscribes to `model`'s device2 events and starts delivering them as `config` says.
    /// Must be called inside a tokio runtime. With no active target it still runs (and sends
    /// nothing), so callers need not special-case it.
    pub fn start(model: &Model, config: WebhookConfig) -> Result<WebhookDelivery, reqwest::Error> {
        let events = model.subscribe_events();
        Self::start_with(events, config)
    }

    /// [`WebhookDelivery::start`] on a given event receiver.
    pub fn start_with(
        events: broadcast::Receiver<ConnectorEvent>,
        config: WebhookConfig,
    ) -> Result<WebhookDelivery, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.response_timeout)
            .timeout(config.connect_timeout + config.response_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("otau-emulator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let stats = Arc::new(WebhookStats::default());
        let config = Arc::new(config);
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let dispatcher = tokio::spawn(dispatch(events, tx, config.clone(), stats.clone()));
        let sender = tokio::spawn(send_loop(rx, client, config, stats.clone()));
        Ok(WebhookDelivery {
            stats,
            tasks: vec![dispatcher, sender],
        })
    }

    /// The delivery counters.
    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }
}

/// Turns events into signed jobs and queues them without ever waiting.
async fn dispatch(
    mut events: broadcast::Receiver<ConnectorEvent>,
    queue: mpsc::Sender<Job>,
    config: Arc<WebhookConfig>,
    stats: Arc<WebhookStats>,
) {
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                stats.lagged.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !config.event_types.contains(&event.event.kind) {
            continue;
        }
        let Some(target) = config.targets.get(&event.connector) else {
            continue;
        };
        if target.secret.is_empty() {
            continue;
        }
        let body = match serde_json::to_vec(&event.event) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot serialise a device event");
                continue;
            }
        };
        let job = Job {
            url: WebhookConfig::delivery_url(target, &event.connector),
            signature: signature(target.secret.as_bytes(), &body),
            body,
        };
        match queue.try_send(job) {
            Ok(()) => bump(&stats.queued),
            Err(mpsc::error::TrySendError::Full(_)) => bump(&stats.queue_full),
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Takes jobs off the queue and runs up to `max_in_flight` deliveries at once.
async fn send_loop(
    mut queue: mpsc::Receiver<Job>,
    client: reqwest::Client,
    config: Arc<WebhookConfig>,
    stats: Arc<WebhookStats>,
) {
    let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
    while let Some(job) = queue.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, config, stats) = (client.clone(), config.clone(), stats.clone());
        tokio::spawn(async move {
            deliver(&client, &job, &config.retry_delays, &stats).await;
            drop(permit);
        });
    }
}

/// One event: the first try, then one retry per delay on connection errors, timeouts and 5xx.
async fn deliver(
    client: &reqwest::Client,
    job: &Job,
    retry_delays: &[Duration],
    stats: &WebhookStats,
) {
    let mut delays = retry_delays.iter();
    loop {
        bump(&stats.attempts);
        match try_once(client, job).await {
            TryOutcome::Accepted => {
                bump(&stats.delivered);
                return;
            }
            TryOutcome::Refused => {
                bump(&stats.rejected);
                return;
            }
            TryOutcome::Retryable => match delays.next() {
                Some(delay) => {
                    tokio::time::sleep(*delay).await;
                    bump(&stats.retries);
                }
                None => {
                    bump(&stats.failed);
                    tracing::warn!(url = %redacted(&job.url), "webhook: event dropped after the last retry");
                    return;
                }
            },
        }
    }
}

async fn try_once(client: &reqwest::Client, job: &Job) -> TryOutcome {
    let sent = client
        .post(job.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, &job.signature)
        .body(job.body.clone())
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status();
            // Read the body so the connection can be reused; its content does not matter.
            let _ = resp.bytes().await;
            if status.is_server_error() {
                TryOutcome::Retryable
            } else if status.is_client_error() {
                tracing::debug!(%status, url = %redacted(&job.url), "webhook: receiver refused an event");
                TryOutcome::Refused
            } else {
                TryOutcome::Accepted
            }
        }
        Err(e) => {
            tracing::debug!(error = %e.without_url(), url = %redacted(&job.url), "webhook: try failed");
            TryOutcome::Retryable
        }
    }
}

/// The URL without user info, for logs.
fn redacted(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}
