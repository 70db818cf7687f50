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
pub mod metrics;
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
use super::poller::{PollIntervals, Pollers, SubscribeRequest, Subscription, WebhookKey};
use super::status::apply_status;
use super::{CONCURRENCY, Context, api, report_results};
use crate::api::conditions::{self, READY, UNKNOWN, new_condition, reason};
use crate::api::rollout::RolloutStatus;
use crate::api::{IoTConnector, Rollout, SoftwarePackage};
use crate::engine::{
    self, Blocker, Decision, EngineError, EngineEvent, EngineInput, EventType as EngineEventType,
    IndexConfig, PollHint, order_seed,
};
use crate::otau::Manifest;
use crate::platform::Platform;

use metrics::RolloutMetrics;
use state::TrackedRollouts;
use writes::{WriteLimits, deliver, now_micros};

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
}

impl Default for RolloutOptions {
    fn default() -> Self {
        RolloutOptions {
            intervals: PollIntervals::default(),
            write_concurrency: 32,
            write_budget: Duration::from_secs(5),
            status_min_interval: Duration::from_secs(1),
            push_addr: None,
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
        Ok(rollout) => reconcile_rollout(rollout, &ctx).await,
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

/// What a Rollout needs before it can deliver.
struct Prerequisites {
    manifest: Manifest,
    connector: IoTConnector,
    platform: Arc<dyn Platform>,
}

fn not_ready_text(kind: &str, name: &str, conds: &[Condition]) -> String {
    match conditions::find_condition(conds, READY) {
        Some(c) => format!(
            "{kind} {name} is not Ready ({}): {}",
            c.reason,
            super::events::truncate(&c.message, 300)
        ),
        None => format!("{kind} {name} is not Ready yet"),
    }
}

async fn prerequisites(
    rollout: &Rollout,
    ctx: &RolloutContext,
) -> Result<Result<Prerequisites, Blocker>, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let client = &ctx.base.client;
    let package_name = &rollout.spec.package_ref.name;
    let packages: Api<SoftwarePackage> = Api::namespaced(client.clone(), &namespace);
    let Some(package) = packages
        .get_opt(package_name)
        .await
        .map_err(Error::kube("get SoftwarePackage"))?
    else {
        return Ok(Err(Blocker::PackageNotReady(format!(
            "SoftwarePackage {package_name} does not exist"
        ))));
    };
    let status = package.status.clone().unwrap_or_default();
    if !conditions::is_true(&status.conditions, READY) {
        return Ok(Err(Blocker::PackageNotReady(not_ready_text(
            "SoftwarePackage",
            package_name,
            &status.conditions,
        ))));
    }
    let manifest = match status.manifest.as_deref().map(Manifest::parse) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            return Ok(Err(Blocker::PackageNotReady(format!(
                "SoftwarePackage {package_name}: its manifest cannot be read: {e}"
            ))));
        }
        None => {
            return Ok(Err(Blocker::PackageNotReady(format!(
                "SoftwarePackage {package_name} has no manifest yet"
            ))));
        }
    };
    let connector_name = &package.spec.connector_ref.name;
    let connectors: Api<IoTConnector> = Api::namespaced(client.clone(), &namespace);
    let Some(connector) = connectors
        .get_opt(connector_name)
        .await
        .map_err(Error::kube("get IoTConnector"))?
    else {
        return Ok(Err(Blocker::ConnectorNotReady(format!(
            "IoTConnector {connector_name} does not exist"
        ))));
    };
    let conds = connector
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    if !conditions::is_true(&conds, READY) {
        return Ok(Err(Blocker::ConnectorNotReady(not_ready_text(
            "IoTConnector",
            connector_name,
            &conds,
        ))));
    }
    let client = ctx
        .base
        .connectors
        .get(
            &ctx.base.client,
            &ctx.base.settings,
            &ctx.base.metrics.platform,
            &connector,
        )
        .await?;
    Ok(Ok(Prerequisites {
        manifest,
        connector,
        platform: client.platform.clone(),
    }))
}

/// Conditions of a first visit: all `Unknown`, reason `Initializing`.
fn initial_status(rollout: &Rollout, message: &str) -> RolloutStatus {
    let now = super::status::now();
    let generation = rollout.metadata.generation;
    let mut status = rollout.status.clone().unwrap_or_default();
    for type_ in [
        READY,
        conditions::PROGRESSING,
        conditions::PAUSED,
        conditions::COMPLETE,
        conditions::STALLED,
    ] {
        if conditions::find_condition(&status.conditions, type_).is_none() {
            status.conditions.push(new_condition(
                type_,
                UNKNOWN,
                reason::INITIALIZING,
                message,
                generation,
                now.clone(),
            ));
        }
    }
    conditions::set_reconciling(&mut status.conditions, generation, now);
    status.phase = Some(conditions::rollout_phase(&status.conditions));
    status.observed_generation = generation;
    status
}

#[tracing::instrument(skip_all, fields(kind = "Rollout", namespace = %rollout.namespace().unwrap_or_default(), name = %rollout.name_any(), generation = rollout.metadata.generation))]
async fn reconcile_rollout(rollout: &Rollout, ctx: &Arc<RolloutContext>) -> Result<Action, Error> {
    if rollout.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let uid = rollout.uid().unwrap_or_default();
    if let Some(sub) = ctx.pollers.subscription(&uid) {
        // Before the index is read: events pushed from now on trigger the next reconcile.
        sub.take_push_trigger();
    }
    let tracked = ctx.tracked.get(rollout, &uid);
    let previous = tracked.computed.clone().unwrap_or_default();
    let annotations = rollout.metadata.annotations.clone().unwrap_or_default();
    let input = EngineInput {
        namespace: &namespace,
        name: &name,
        generation: rollout.metadata.generation,
        spec: &rollout.spec,
        annotations: &annotations,
        status: &previous,
        memory: &tracked.memory,
        max_notifications: Some(notification_batch(ctx.options.write_concurrency)),
    };
    let intervals = ctx.options.intervals;
    let now = now_micros();

    let ready = match prerequisites(rollout, ctx).await? {
        Ok(ready) => ready,
        Err(blocker) => {
            if let Some(sub) = ctx.pollers.subscription(&uid) {
                sub.set_active(false);
            }
            let decision = engine::reconcile_blocked(&input, &blocker, now);
            report(ctx, rollout, &uid, decision, None).await?;
            return Ok(Action::requeue(intervals.idle));
        }
    };

    let connector_namespace = ready.connector.namespace().unwrap_or_default();
    let connector_key = format!("{connector_namespace}/{}", ready.connector.name_any());
    let webhook = ready.connector.spec.webhook.as_ref().map(|w| WebhookKey {
        namespace: connector_namespace.clone(),
        secret: w.secret_ref.name.clone(),
        key: w.secret_ref.key.clone(),
    });
    let sub = ctx.pollers.subscribe(SubscribeRequest {
        connector_key: &connector_key,
        product_id: &ready.connector.spec.product_id,
        webhook,
        platform: ready.platform.clone(),
        uid: &uid,
        trigger: ObjectRef::new(&name).within(&namespace),
        config: IndexConfig {
            seed: order_seed(&rollout.spec, &namespace, &name),
            targets: rollout.spec.targets.clone(),
            manifest: ready.manifest.clone(),
        },
    });

    // Nothing is decided before a complete listing; a failed listing holds the wave.
    let (listed, last_error) = {
        let held = sub.lock();
        (held.ready, held.last_error.clone())
    };
    if let Some(message) = last_error {
        sub.set_active(true);
        let decision =
            engine::reconcile_blocked(&input, &Blocker::PlatformUnavailable(message), now);
        report(ctx, rollout, &uid, decision, Some(&sub)).await?;
        return Ok(Action::requeue(intervals.active));
    }
    if !listed {
        if rollout.status.is_none() && tracked.written.is_none() {
            let status = initial_status(
                rollout,
                "reading the devices of the connector (first listing)",
            );
            write_status(ctx, rollout, &uid, &status, true).await?;
        }
        return Ok(Action::requeue(intervals.active));
    }

    // A Rollout that has not started waits for older active Rollouts over the same devices.
    let aborted = rollout.spec.abort || tracked.memory.aborted.is_some();
    if previous.current_wave == 0 && !aborted {
        let others: Vec<(Rollout, Arc<Subscription>)> = ctx
            .pollers
            .subscriptions_of(&connector_key)
            .into_iter()
            .filter(|s| s.uid != uid)
            .filter_map(|s| {
                let other = ctx.rollouts().into_iter().find_map(|r| {
                    r.0.as_ref()
                        .ok()
                        .filter(|r| r.uid().as_deref() == Some(s.uid.as_str()))
                        .cloned()
                })?;
                Some((other, s))
            })
            .collect();
        if let Some(message) = conflict::find(rollout, &sub, &others) {
            let status = conflict::waiting_status(
                &previous,
                &message,
                rollout.metadata.generation,
                super::status::now(),
            );
            let was_waiting = conditions::find_condition(&previous.conditions, READY)
                .is_some_and(|c| c.reason == conflict::TARGET_CONFLICT);
            if !was_waiting {
                tracing::info!(%message, "waiting for another rollout");
                publish(
                    ctx,
                    rollout,
                    EventType::Normal,
                    conflict::TARGET_CONFLICT,
                    &message,
                )
                .await;
            }
            ctx.tracked
                .update(&uid, |t| t.computed = Some(status.clone()));
            write_status(ctx, rollout, &uid, &status, true).await?;
            sub.set_active(false);
            return Ok(Action::requeue(intervals.active));
        }
    }

    let run_engine = |max_notifications| {
        let held = sub.lock();
        let input = EngineInput {
            max_notifications,
            ..input
        };
        engine::reconcile(&input, &held.index, now)
    };
    let mut decision = run_engine(input.max_notifications).map_err(engine_error)?;
    let mut more_due = false;
    let mut write_error = None;
    if !decision.notifications.is_empty() {
        let notifications = std::mem::take(&mut decision.notifications);
        let total = notifications.len();
        let metrics = ctx.metrics.notifications.clone();
        let delivery = deliver(
            &ready.platform,
            &sub,
            &ready.manifest,
            notifications,
            &tracked.uncertain,
            WriteLimits {
                concurrency: ctx.options.write_concurrency,
                budget: ctx.options.write_budget,
            },
            |result| {
                metrics
                    .with_label_values(&[&namespace, &name, result.label()])
                    .inc();
            },
        )
        .await;
        tracing::debug!(
            total,
            written = delivery.written,
            already_set = delivery.already_set,
            gone = delivery.gone,
            failed = delivery.failed,
            left = delivery.not_attempted,
            "notifications delivered"
        );
        ctx.tracked.update(&uid, |t| {
            for id in &delivery.resolved {
                t.uncertain.remove(id);
            }
            t.uncertain.extend(delivery.uncertain.iter().cloned());
        });
        if delivery.written + delivery.already_set < total {
            // The status must count only what was written: decide again on the updated index
            // (same input and time, so the same events), deciding no notification, so the
            // devices not written count as pending; they are due at the next pass.
            decision = run_engine(Some(0)).map_err(engine_error)?;
            more_due = delivery.not_attempted > 0;
        }
        if let Some(e) = &delivery.error {
            // Said where people look (Ready, a Warning event), not only in the log; the next
            // pass that writes sets Ready from the engine again.
            let message = format!(
                "config_otau writes fail: {e}; {} of {total} written in this pass, the rest are \
                 written when the platform accepts them",
                delivery.written + delivery.already_set
            );
            conditions::set_condition(
                &mut decision.status.conditions,
                new_condition(
                    READY,
                    UNKNOWN,
                    reason::PLATFORM_UNAVAILABLE,
                    message.as_str(),
                    rollout.metadata.generation,
                    super::status::now(),
                ),
            );
            conditions::set_reconciling(
                &mut decision.status.conditions,
                rollout.metadata.generation,
                super::status::now(),
            );
            publish(
                ctx,
                rollout,
                EventType::Warning,
                reason::PLATFORM_UNAVAILABLE,
                &message,
            )
            .await;
        }
        write_error = delivery.error;
        // A full batch: more devices may be due now; come back at once, not a poll later.
        more_due |= total >= notification_batch(ctx.options.write_concurrency);
    }

    let poll = decision.requeue.poll;
    let at = decision.requeue.at;
    sub.set_active(poll == PollHint::Active);
    let deferred = report(ctx, rollout, &uid, decision, Some(&sub)).await?;
    if let Some(e) = write_error {
        return Err(Error::Platform { source: e });
    }
    let mut next = match poll {
        PollHint::Active => intervals.active,
        PollHint::Idle | PollHint::None => intervals.idle,
    };
    if let Some(at) = at {
        let until = Duration::from_micros(u64::try_from(at.saturating_sub(now)).unwrap_or(0));
        next = next.min(until.max(Duration::from_millis(200)));
    }
    if let Some(d) = deferred {
        next = next.min(d);
    }
    if more_due {
        next = Duration::from_millis(10);
    }
    Ok(Action::requeue(next))
}

/// How many notifications one reconcile takes from the engine: enough to keep every write
/// slot busy for a while (128 rounds of `--write-concurrency`), few enough that a wave of
/// hundreds of thousands of devices does not become one list of owned identities (about
/// 80 bytes each) in memory. The rest are due at the next pass, 10 ms later.
fn notification_batch(write_concurrency: usize) -> usize {
    write_concurrency.saturating_mul(128).max(1_024)
}

fn engine_error(e: EngineError) -> Error {
    Error::Malformed {
        message: e.to_string(),
    }
}

async fn publish(
    ctx: &RolloutContext,
    rollout: &Rollout,
    type_: EventType,
    reason: &str,
    message: &str,
) {
    ctx.base
        .event(&rollout.object_ref(&()), type_, reason, "Rollout", message)
        .await;
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
    ctx.metrics
        .observe(&namespace, &name, &decision.status, &tally);
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

    #[test]
    fn event_actions_name_the_wave_the_engine_names() {
        let started = EngineEvent::normal(engine::reason::WAVE_STARTED, "wave 2/4 started".into());
        assert_eq!(event_action(&started.clone().about_wave(2)), "Wave2");
        assert_eq!(event_action(&started.about_wave(12)), "Wave12");
        let complete = EngineEvent::normal(engine::reason::ROLLOUT_COMPLETE, "all 4 waves".into());
        assert_eq!(event_action(&complete), "Rollout");
    }
}
