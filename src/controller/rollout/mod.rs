//! The Rollout controller: drives the pure [`crate::engine`] with the device state
//! the connector's [poller](super::poller) (and [push](super::push)) keep in memory, writes
//! `config_otau` through the connector's platform client, and reports by server-side apply of
//! the whole status, Events and metrics.
//!
//! One reconcile is a pipeline (docs/architecture.md §9.1):
//!
//! 1. **Observe**: the package (Ready, with its manifest) and its connector (Ready); a missing
//!    prerequisite shows as `PackageNotReady` / `ConnectorNotReady` and nothing is written.
//!    The Rollout's index comes from its connector's poller; nothing is decided before one
//!    complete listing was folded into it, and a failed listing holds the wave
//!    (`PlatformUnavailable`).
//! 2. **Plan**: a Rollout that has not started yet waits for an older active Rollout whose
//!    targets overlap (`TargetConflict`); otherwise [`crate::engine::reconcile`] decides.
//! 3. **Act**: the notifications are written, a bounded number at once and within a time
//!    budget; what is left is due at the next pass (requeued at once).
//! 4. **Report**: Events, metrics, and the status, coalesced: a change of conditions, phase,
//!    wave or control markers is written at once, a change of counts alone at most once per
//!    `status_min_interval`.
//!
//! No finalizer: a Rollout owns nothing on the platform (a written manifest stays with the
//! device whatever happens to the Rollout, docs/architecture.md §1), so deletion needs no clean-up
//! there; the in-memory index, its poller subscription and the metric series are dropped by
//! [`garbage_collect`] once the Rollout is gone from the watch cache.

pub mod conflict;
pub mod content;
pub mod metrics;
mod pass;
pub mod state;
pub mod writes;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::error::Error;
use super::poller::{PollIntervals, Pollers, Subscription};
use super::status_write::apply_status;
use super::{CONCURRENCY, Context, api, report_results};
use crate::api::rollout::RolloutStatus;
use crate::api::{IoTConnector, Rollout, SoftwarePackage};
use crate::engine::{Decision, EngineEvent, EventType as EngineEventType};

use metrics::RolloutMetrics;
use state::TrackedRollouts;

/// Controller label of the Rollout controller (`otau_reconcile_total{controller}`).
pub const ROLLOUT_CONTROLLER: &str = "rollout";

/// How the Rollout controller runs.
#[derive(Clone, Debug)]
pub struct RolloutOptions {
    /// Poll intervals and page size.
    pub intervals: PollIntervals,
    /// `config_otau` writes in flight at once, per Rollout.
    pub write_concurrency: usize,
    /// How long one reconcile keeps starting writes.
    pub write_budget: Duration,
    /// The least time between two status writes of one Rollout that only change counts.
    pub status_min_interval: Duration,
    /// Where the push receiver listens (`None`: push is off).
    pub push_addr: Option<SocketAddr>,
    /// The least time between two checks of a package's content before writes that do not
    /// start a wave (retries, late joiners, the rest of a wave): [`content`].
    pub content_check_interval: Duration,
}

impl Default for RolloutOptions {
    fn default() -> Self {
        RolloutOptions {
            intervals: PollIntervals::default(),
            write_concurrency: 32,
            write_budget: Duration::from_secs(5),
            status_min_interval: Duration::from_secs(1),
            push_addr: None,
            content_check_interval: content::DEFAULT_CHECK_INTERVAL,
        }
    }
}

/// What every Rollout reconcile shares.
pub struct RolloutContext {
    /// The operator's shared context (client, recorder, metrics, connector clients).
    pub base: Arc<Context>,
    /// One poller per connector.
    pub pollers: Arc<Pollers>,
    /// Per-Rollout in-memory state.
    pub tracked: TrackedRollouts,
    /// Options.
    pub options: RolloutOptions,
    /// Per-Rollout metrics.
    pub metrics: RolloutMetrics,
    /// When each package's content was last checked (`content`).
    pub content_checks: content::ContentChecks,
    stores: Mutex<Vec<WatchCache>>,
}

/// One controller's Rollout cache and whether it has synced.
type WatchCache = (
    Store<DeserializeGuard<Rollout>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl RolloutContext {
    /// The context, with its collectors registered in the operator's registry.
    pub fn new(base: Arc<Context>, options: RolloutOptions) -> Result<Arc<Self>, String> {
        let registry = base.metrics.registry();
        let pollers = Pollers::new(options.intervals, registry)
            .map_err(|e| format!("poller metrics: {e}"))?;
        let metrics =
            RolloutMetrics::register(registry).map_err(|e| format!("rollout metrics: {e}"))?;
        Ok(Arc::new(RolloutContext {
            base,
            pollers,
            tracked: TrackedRollouts::default(),
            options,
            metrics,
            content_checks: content::ContentChecks::default(),
            stores: Mutex::new(Vec::new()),
        }))
    }

    fn rollouts(&self) -> Vec<Arc<DeserializeGuard<Rollout>>> {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(s, _)| s.state())
            .collect()
    }
}

/// The Rollout controller for one namespace (all when `None`): its run future and its cache.
/// A package or connector change re-queues the Rollouts that may depend on it; finished
/// listings and pushed events re-queue the affected Rollouts.
pub fn controller(
    ctx: &Arc<RolloutContext>,
    namespace: Option<&str>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> (BoxFuture<'static, ()>, Store<DeserializeGuard<Rollout>>) {
    let client = &ctx.base.client;
    let controller = Controller::new(
        api::<DeserializeGuard<Rollout>>(client, namespace),
        watcher::Config::default(),
    )
    .with_config(
        ControllerConfig::default()
            .concurrency(CONCURRENCY)
            .debounce(Duration::from_millis(100)),
    );
    let store = controller.store();
    let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let store = store.clone();
        let synced = synced.clone();
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                synced.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    ctx.stores
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((store.clone(), synced));
    let by_package = store.clone();
    let by_connector = store.clone();
    let results = controller
        .watches(
            api::<DeserializeGuard<SoftwarePackage>>(client, namespace),
            watcher::Config::default(),
            move |package| {
                let namespace = package.namespace();
                let name = package.name_any();
                by_package
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.namespace() == namespace
                            && r.0.as_ref().is_ok_and(|r| r.spec.package_ref.name == name)
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .watches(
            api::<DeserializeGuard<IoTConnector>>(client, namespace),
            watcher::Config::default(),
            move |connector| {
                let namespace = connector.namespace();
                by_connector
                    .state()
                    .into_iter()
                    .filter(|r| r.namespace() == namespace)
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_on(ctx.pollers.triggers(namespace))
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx.clone());
    (
        report_results(results, ctx.base.clone(), ROLLOUT_CONTROLLER).boxed(),
        store,
    )
}

/// Drops the in-memory state, poller subscription and metric series of Rollouts gone from
/// every (synced) watch cache; runs every few seconds until `stop`.
pub async fn garbage_collect(
    ctx: Arc<RolloutContext>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let stop = stop.fuse();
    futures::pin_mut!(stop);
    loop {
        futures::select! {
            () = stop => return,
            () = tokio::time::sleep(Duration::from_secs(5)).fuse() => {}
        }
        let all_synced = ctx
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|(_, synced)| synced.load(std::sync::atomic::Ordering::SeqCst));
        if !all_synced {
            continue;
        }
        let live: std::collections::HashSet<String> = ctx
            .rollouts()
            .iter()
            .filter(|r| r.meta().deletion_timestamp.is_none())
            .filter_map(|r| r.meta().uid.clone())
            .collect();
        let mut known = ctx.tracked.uids();
        known.extend(ctx.pollers.subscribed_uids());
        for uid in known {
            if live.contains(&uid) {
                continue;
            }
            forget(&ctx, &uid);
        }
    }
}

fn forget(ctx: &RolloutContext, uid: &str) {
    ctx.pollers.unsubscribe(uid);
    if let Some(t) = ctx.tracked.forget(uid) {
        tracing::info!(namespace = %t.namespace, name = %t.name, "rollout deleted: dropped its device index and metrics");
        ctx.metrics.forget(&t.namespace, &t.name);
    }
}

/// `error_policy`: transient errors back off (1 s doubling, capped), others wait for a change.
pub fn error_policy(
    obj: Arc<DeserializeGuard<Rollout>>,
    error: &Error,
    ctx: Arc<RolloutContext>,
) -> Action {
    if !error.is_transient() {
        return Action::await_change();
    }
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let mut failures = 1;
    ctx.tracked.update(&uid, |t| failures = t.failures.max(1));
    Action::requeue(ctx.base.schedule.backoff(failures))
}

/// Reconciles one Rollout.
pub async fn reconcile(
    obj: Arc<DeserializeGuard<Rollout>>,
    ctx: Arc<RolloutContext>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &obj.0 {
        Ok(rollout) => pass::reconcile_rollout(rollout, &ctx).await,
        Err(invalid) => Err(Error::Malformed {
            message: invalid.error.clone(),
        }),
    };
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let label = match &result {
        Ok(_) => {
            ctx.tracked.update(&uid, |t| t.failures = 0);
            "success"
        }
        Err(_) => {
            ctx.tracked
                .update(&uid, |t| t.failures = t.failures.saturating_add(1));
            "error"
        }
    };
    ctx.base
        .metrics
        .reconciled(ROLLOUT_CONTROLLER, label, started.elapsed().as_secs_f64());
    result
}

/// Emits the decision's events, keeps its status and memory, updates the metrics and writes
/// the status (coalesced). Returns how long a deferred status write waits.
async fn report(
    ctx: &RolloutContext,
    rollout: &Rollout,
    uid: &str,
    decision: Decision,
    subscription: Option<&Arc<Subscription>>,
) -> Result<Option<Duration>, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    for event in &decision.events {
        let type_ = match event.type_ {
            EngineEventType::Normal => EventType::Normal,
            EngineEventType::Warning => EventType::Warning,
        };
        tracing::info!(reason = event.reason, message = %event.message, "rollout event");
        ctx.base
            .event(
                &rollout.object_ref(&()),
                type_,
                event.reason,
                &event_action(event),
                &event.message,
            )
            .await;
    }
    let important = !decision.events.is_empty();
    ctx.tracked.update(uid, |t| {
        t.computed = Some(decision.status.clone());
        t.memory = decision.memory.clone();
    });
    let tally = subscription
        .map(|s| s.lock().reports.clone())
        .unwrap_or_default();
    ctx.metrics.observe(
        &namespace,
        &name,
        &decision.status,
        rollout.spec.policy.foreign_manifests,
        &tally,
    );
    write_status(ctx, rollout, uid, &decision.status, important).await
}

/// The Event `action` of an engine event: `Wave<k>` when the engine says it concerns wave k,
/// else `Rollout` (`action` is the machine-readable part of an Event; the note says what
/// happened).
pub fn event_action(event: &EngineEvent) -> String {
    event
        .wave
        .map_or_else(|| "Rollout".to_owned(), |k| format!("Wave{k}"))
}

/// Whether two statuses differ in more than counts and messages.
fn differs_in_substance(a: &RolloutStatus, b: &RolloutStatus) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.observed_generation,
        )
    };
    let conds = |s: &RolloutStatus| s.conditions.iter().map(key).collect::<Vec<_>>();
    let waves = |s: &RolloutStatus| {
        s.waves
            .iter()
            .map(|w| {
                (
                    w.started_at.clone(),
                    w.completed_at.clone(),
                    w.soak_until.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    conds(a) != conds(b)
        || a.phase != b.phase
        || a.current_wave != b.current_wave
        || a.observed_generation != b.observed_generation
        || a.pause != b.pause
        || a.acted_on != b.acted_on
        || a.plan != b.plan
        || waves(a) != waves(b)
}

/// Writes the whole status unless it is what was written last; a change of counts alone waits
/// until `status_min_interval` has passed since the last write (returns the wait).
async fn write_status(
    ctx: &RolloutContext,
    rollout: &Rollout,
    uid: &str,
    status: &RolloutStatus,
    important: bool,
) -> Result<Option<Duration>, Error> {
    let tracked = ctx.tracked.get(rollout, uid);
    if let Some((written, at)) = &tracked.written {
        if written == status {
            return Ok(None);
        }
        let since = at.elapsed();
        if !important
            && !differs_in_substance(written, status)
            && since < ctx.options.status_min_interval
        {
            return Ok(Some(ctx.options.status_min_interval - since));
        }
    }
    let namespace = rollout.namespace().unwrap_or_default();
    let api: Api<Rollout> = Api::namespaced(ctx.base.client.clone(), &namespace);
    match apply_status(&api, &rollout.name_any(), "Rollout", status).await {
        Ok(()) => {
            ctx.metrics
                .status_writes
                .with_label_values(&["success"])
                .inc();
            let written = (status.clone(), Instant::now());
            ctx.tracked.update(uid, |t| t.written = Some(written));
            Ok(None)
        }
        Err(e) => {
            ctx.metrics
                .status_writes
                .with_label_values(&["error"])
                .inc();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine;

    #[test]
    fn event_actions_name_the_wave_the_engine_names() {
        let started = EngineEvent::normal(engine::reason::WAVE_STARTED, "wave 2/4 started".into());
        assert_eq!(event_action(&started.clone().about_wave(2)), "Wave2");
        assert_eq!(event_action(&started.about_wave(12)), "Wave12");
        let complete = EngineEvent::normal(engine::reason::ROLLOUT_COMPLETE, "all 4 waves".into());
        assert_eq!(event_action(&complete), "Rollout");
    }
}
