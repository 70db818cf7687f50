//! The kube-runtime controllers of the operator and what they share.
//!
//! - [`connector`]: checks each IoTConnector's credentials and the token's remaining lifetime.
//! - [`package`]: fetches, verifies, uploads and registers each SoftwarePackage, and removes
//!   its content on delete (finalizer `otau.dev/platform-cleanup`).
//! - [`runtime`]: starts both controllers and the metrics/health server, and stops them as
//!   one unit.
//!
//! Uses [`crate::api`], [`crate::otau`], [`crate::engine`], [`crate::platform`] and
//! [`crate::net`] (docs/architecture.md §4).

pub mod clients;
pub mod connector;
pub mod crds;
pub mod credentials;
pub mod error;
pub mod events;
pub mod failpoint;
pub mod follower;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod package;
pub mod poller;
pub mod push;
pub mod rollout;
pub mod runtime;
pub mod schedule;
pub mod status_write;
pub mod webhook_keys;
pub mod write_gate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::EventType;

use events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

pub use error::Error;
pub use metrics::Metrics;

use crate::net::outbound::OutboundPolicy;
use crate::platform::RetryPolicy;
use clients::ConnectorClients;
use schedule::Schedule;

/// The name that reports events (`reportingController`).
pub const REPORTING_CONTROLLER: &str = "otau-operator";

/// Reconciles of one controller that may run at once (each of the three kinds).
pub const CONCURRENCY: u16 = 8;

/// Package files staged in the work dir at once by default (`--upload-concurrency`): with the
/// default `--max-file-bytes` of 512Mi, the chart's 1Gi work dir holds two.
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 2;

/// The API of the namespaced kind `K` in `namespace`, or in every namespace when `None`.
fn api<K>(client: &kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    }
}

/// What the operator was started with that the controllers use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This replica's name (pod name): in `User-Agent` and as the event reporting instance.
    pub instance: String,
    /// Which destinations user-named URLs may reach (connector endpoints, package sources):
    /// `--allow-private-sources` and the platform-host allow-list (src/net/outbound.rs).
    pub outbound: OutboundPolicy,
    /// The most bytes of one identity listing page or content list answer.
    pub platform_page_max_bytes: u64,
    /// Files staged in the work dir at once, operator-wide (`--upload-concurrency`): a
    /// package holds a permit from the start of a file's download until its upload ended, so
    /// the work dir never holds more than this many files of at most `max_file_bytes`.
    pub staging: Arc<tokio::sync::Semaphore>,
    /// The largest file a package may upload, bytes.
    pub max_file_bytes: u64,
    /// How long one URL download may take.
    pub fetch_timeout: Duration,
    /// Where downloads are staged while they are verified.
    pub work_dir: PathBuf,
    /// A token with less time left than this is reported in the Ready message and an event.
    pub token_expiry_warning: Duration,
    /// The most per-device tags on a package registration (bounds the spec's value).
    pub max_device_tags: u32,
    /// The least time between two looks of a running Rollout at its package's ExoSense
    /// listing (src/controller/package/listing.rs); a completed Rollout looks once more.
    pub listing_interval: Duration,
    /// Timeout of each platform request.
    pub platform_request_timeout: Duration,
    /// Retries of idempotent platform requests.
    pub platform_retry: RetryPolicy,
    /// How often a Ready package is checked against the platform again.
    pub package_resync: Duration,
    /// The longest backoff after repeated transient failures.
    pub error_backoff_max: Duration,
    /// The "still leader" token every platform write checks (always open without leader
    /// election; set by [`runtime::run`]).
    pub write_gate: write_gate::WriteGate,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            instance: crate::platform::config::default_instance(),
            outbound: OutboundPolicy::default(),
            platform_page_max_bytes: crate::platform::config::DEFAULT_PAGE_MAX_BYTES,
            staging: Arc::new(tokio::sync::Semaphore::new(DEFAULT_UPLOAD_CONCURRENCY)),
            max_file_bytes: 512 * 1024 * 1024,
            fetch_timeout: Duration::from_secs(600),
            work_dir: std::env::temp_dir(),
            token_expiry_warning: Duration::from_secs(24 * 3600),
            max_device_tags: crate::api::software_package::DEFAULT_MAX_DEVICE_TAGS as u32,
            listing_interval: package::listing::DEFAULT_LISTING_INTERVAL,
            platform_request_timeout: Duration::from_secs(30),
            platform_retry: RetryPolicy::default(),
            package_resync: Duration::from_secs(600),
            error_backoff_max: Duration::from_secs(60),
            write_gate: write_gate::WriteGate::always_open(),
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// The one shared event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: Settings,
    /// One platform client per connector.
    pub connectors: ConnectorClients,
    /// When each object is next due.
    pub schedule: Schedule,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: kube::Client, settings: Settings, metrics: Metrics) -> Arc<Context> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: REPORTING_CONTROLLER.to_string(),
                instance: settings.instance.clone(),
            },
        );
        Arc::new(Context {
            client,
            recorder,
            metrics,
            schedule: Schedule::new(settings.error_backoff_max),
            settings,
            connectors: ConnectorClients::default(),
        })
    }

    /// Publishes an event about `reference`.
    pub async fn event(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        events::publish(&self.recorder, reference, type_, reason, action, note).await;
    }
}

/// `error_policy` of both controllers: the delay the reconcile stored for the object (a
/// backoff for transient errors, a fixed delay or a wait for a change for the others).
pub fn error_policy<K>(obj: Arc<DeserializeGuard<K>>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource,
{
    let uid = obj.meta().uid.clone().unwrap_or_default();
    match ctx.schedule.pending(&uid) {
        Some(Some(delay)) => Action::requeue(delay),
        Some(None) => Action::await_change(),
        None if error.is_transient() => Action::requeue(ctx.schedule.backoff(1)),
        None => Action::await_change(),
    }
}

/// Consumes a controller's result stream: the one place where reconcile errors are logged and
/// become Warning events (docs/architecture.md §9.5).
pub async fn report_results<K, S>(results: S, ctx: Arc<Context>, controller_name: &'static str)
where
    K: Resource<DynamicType = ()> + 'static,
    S: futures::Stream<
            Item = Result<
                (ObjectRef<DeserializeGuard<K>>, Action),
                controller::Error<Error, kube::runtime::watcher::Error>,
            >,
        >,
{
    results
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    Ok((object, _)) => {
                        tracing::debug!(controller = controller_name, object = %object, "reconciled");
                    }
                    Err(controller::Error::ReconcilerFailed(error, object)) => {
                        ctx.metrics.failed(controller_name, error.metric_label());
                        let namespace = object.namespace.clone().unwrap_or_default();
                        if error.is_transient() {
                            tracing::warn!(controller = controller_name, %namespace, name = %object.name, error = %error, "reconcile failed; retrying");
                        } else {
                            tracing::error!(controller = controller_name, %namespace, name = %object.name, error = %error, "reconcile failed; needs a change");
                        }
                        let reference = ObjectReference {
                            api_version: Some(K::api_version(&()).into_owned()),
                            kind: Some(K::kind(&()).into_owned()),
                            name: Some(object.name.clone()),
                            namespace: object.namespace.clone(),
                            ..ObjectReference::default()
                        };
                        ctx.event(
                            &reference,
                            EventType::Warning,
                            error.event_reason(),
                            "Reconcile",
                            &error.to_string(),
                        )
                        .await;
                    }
                    Err(other) => {
                        tracing::warn!(controller = controller_name, error = %other, "controller stream error");
                    }
                }
            }
        })
        .await;
}
