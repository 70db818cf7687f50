//! One reconcile of one Rollout, as the pipeline of docs/architecture.md §9.1:
//! [`observe`] (the package, the connector, the device listing, older Rollouts over the same
//! devices) → [`decide`] (the engine) → [`act`] (the `config_otau` writes) → report (Events,
//! metrics, the status: `super::report`). What holds the Rollout before it can decide is
//! rendered by the engine too ([`engine::reconcile_blocked`]), so its conditions are computed
//! in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use prometheus::IntCounterVec;

use super::state::Tracked;
use super::writes::{Delivery, WriteLimits, deliver, now_micros, record_successes};
use super::{RolloutContext, conflict, content, report};
use crate::api::conditions::{self, COMPLETE, READY};
use crate::api::rollout::RolloutStatus;
use crate::api::{IoTConnector, Rollout, SoftwarePackage};
use crate::controller::error::Error;
use crate::controller::package::{self, listing};
use crate::controller::poller::{PollIntervals, SubscribeRequest, Subscription, WebhookKey};
use crate::engine::{
    self, Blocker, Decision, EngineError, EngineInput, IndexConfig, Micros, Notification, PollHint,
    WriteShortfall, order_seed, rollout_marker,
};
use crate::otau::Manifest;
use crate::platform::{Platform, PlatformError, Tag};

/// Reconciles one Rollout: observe → decide → act → report.
#[tracing::instrument(skip_all, fields(kind = "Rollout", namespace = %rollout.namespace().unwrap_or_default(), name = %rollout.name_any(), generation = rollout.metadata.generation))]
pub(super) async fn reconcile_rollout(
    rollout: &Rollout,
    ctx: &Arc<RolloutContext>,
) -> Result<Action, Error> {
    if rollout.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pass = Pass::begin(rollout, ctx);
    match observe(&pass, ctx).await? {
        Observed::Ready(ready, subscription) => {
            let batch = notification_batch(ctx.options.write_concurrency);
            let decision = decide(&pass, &subscription, Some(batch))?;
            if let Some(held) = content_gate(&pass, ctx, &ready, &subscription, &decision).await? {
                return hold(&pass, ctx, held).await;
            }
            let acted = act(&pass, ctx, &ready, &subscription, decision).await?;
            refresh_listing(&pass, ctx, &ready, &subscription, &acted).await;
            finish(&pass, ctx, acted, &subscription).await
        }
        Observed::Held(held) => hold(&pass, ctx, held).await,
        Observed::Listing => Ok(Action::requeue(ctx.options.intervals.active)),
    }
}

/// What one pass knows before it looks at anything: who the Rollout is, what was computed
/// last, and the time the whole pass decides at.
struct Pass<'r> {
    rollout: &'r Rollout,
    namespace: String,
    name: String,
    uid: String,
    tracked: Tracked,
    previous: RolloutStatus,
    annotations: BTreeMap<String, String>,
    now: Micros,
}

impl<'r> Pass<'r> {
    fn begin(rollout: &'r Rollout, ctx: &RolloutContext) -> Self {
        let uid = rollout.uid().unwrap_or_default();
        if let Some(sub) = ctx.pollers.subscription(&uid) {
            // Before the index is read: events pushed from now on trigger the next reconcile.
            sub.take_push_trigger();
        }
        let tracked = ctx.tracked.get(rollout, &uid);
        Pass {
            rollout,
            namespace: rollout.namespace().unwrap_or_default(),
            name: rollout.name_any(),
            previous: tracked.computed.clone().unwrap_or_default(),
            annotations: rollout.metadata.annotations.clone().unwrap_or_default(),
            tracked,
            uid,
            now: now_micros(),
        }
    }

    /// Counts one result (its label) of this Rollout in a `{namespace, rollout, result}`
    /// counter.
    fn counter<'m>(&'m self, metric: &'m IntCounterVec) -> impl Fn(&str) + 'm {
        move |result| {
            metric
                .with_label_values(&[&self.namespace, &self.name, result])
                .inc();
        }
    }

    /// The engine's input for this pass, deciding at most `max_notifications`.
    fn input(&self, max_notifications: Option<usize>) -> EngineInput<'_> {
        EngineInput {
            namespace: &self.namespace,
            name: &self.name,
            generation: self.rollout.metadata.generation,
            created_at: self
                .rollout
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_microsecond()),
            spec: &self.rollout.spec,
            annotations: &self.annotations,
            status: &self.previous,
            memory: &self.tracked.memory,
            max_notifications,
        }
    }
}

/// What the cluster and the platform say before anything is decided.
enum Observed {
    /// Everything a decision needs: the prerequisites and the Rollout's listed devices.
    Ready(Box<Prerequisites>, Arc<Subscription>),
    /// Something holds the Rollout; the engine says what.
    Held(Held),
    /// The first listing runs and the Rollout already shows a status: nothing to add.
    Listing,
}

/// Why a Rollout cannot decide now, and how to wait.
struct Held {
    blocker: Blocker,
    subscription: Option<Arc<Subscription>>,
    /// Whether the connector's poller should poll at its active interval meanwhile.
    poll_actively: bool,
    /// When to look again.
    again: Duration,
}

/// What a Rollout needs before it can deliver.
struct Prerequisites {
    /// The manifest this Rollout writes: the package's, carrying the Rollout's marker (the
    /// `rollout` key, exosite-platform.md §2.3).
    manifest: Manifest,
    /// The manifests of the SoftwarePackages of the connector (which other manifests in
    /// `config_otau` are not foreign), and those of them newer Rollouts roll out.
    others: OtherManifests,
    package: SoftwarePackage,
    connector: IoTConnector,
    platform: Arc<dyn Platform>,
}

/// Observes the package and connector, subscribes to the connector's device listing, and
/// says whether the Rollout can decide: not before one complete listing, not while the
/// listing fails (the wave holds), not while an older Rollout holds the same devices.
async fn observe(pass: &Pass<'_>, ctx: &RolloutContext) -> Result<Observed, Error> {
    let intervals = ctx.options.intervals;
    let ready = match prerequisites(pass.rollout, ctx).await? {
        Ok(ready) => ready,
        Err(blocker) => {
            return Ok(Observed::Held(Held {
                blocker,
                subscription: ctx.pollers.subscription(&pass.uid),
                poll_actively: false,
                again: intervals.idle,
            }));
        }
    };
    let (sub, connector_key) = subscribe(pass, ctx, &ready);
    let (listed, last_error) = {
        let held = sub.lock();
        (held.ready, held.last_error.clone())
    };
    let held = |blocker, poll_actively| {
        Ok(Observed::Held(Held {
            blocker,
            subscription: Some(sub.clone()),
            poll_actively,
            again: intervals.active,
        }))
    };
    if let Some(message) = last_error {
        return held(Blocker::PlatformUnavailable(message), true);
    }
    if !listed {
        if pass.rollout.status.is_none() && pass.tracked.written.is_none() {
            let first = "reading the devices of the connector (first listing)";
            return held(Blocker::FirstListing(first.to_owned()), true);
        }
        return Ok(Observed::Listing);
    }
    if let Some(message) = older_rollout_over_the_same_devices(pass, ctx, &sub, &connector_key) {
        return held(Blocker::TargetConflict(message), false);
    }
    Ok(Observed::Ready(Box::new(ready), sub))
}

/// The Rollout's subscription to its connector's device listing, and the connector's key.
fn subscribe(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    ready: &Prerequisites,
) -> (Arc<Subscription>, String) {
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
        uid: &pass.uid,
        trigger: ObjectRef::new(&pass.name).within(&pass.namespace),
        config: IndexConfig {
            seed: order_seed(&pass.rollout.spec, &pass.namespace, &pass.name),
            targets: pass.rollout.spec.targets.clone(),
            manifest: ready.manifest.clone(),
            connector_manifests: ready.others.connector.clone(),
            newer_rollout_manifests: ready.others.newer_rollouts.clone(),
        },
    });
    (sub, connector_key)
}

/// A Rollout that has not started waits for an older active Rollout over the same devices:
/// the sentence saying which, or `None`. One that started (or is aborted) never waits.
fn older_rollout_over_the_same_devices(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    sub: &Subscription,
    connector_key: &str,
) -> Option<String> {
    let aborted = pass.rollout.spec.abort || pass.tracked.memory.aborted.is_some();
    if pass.previous.current_wave != 0 || aborted {
        return None;
    }
    let rollouts = ctx.rollouts();
    let others: Vec<(Rollout, Arc<Subscription>)> = ctx
        .pollers
        .subscriptions_of(connector_key)
        .into_iter()
        .filter(|s| s.uid != pass.uid)
        .filter_map(|s| {
            let other = rollouts.iter().find_map(|r| {
                r.0.as_ref()
                    .ok()
                    .filter(|r| r.uid().as_deref() == Some(s.uid.as_str()))
                    .cloned()
            })?;
            Some((other, s))
        })
        .collect();
    conflict::find(pass.rollout, sub, &others)
}

/// What holds the Rollout, rendered by the engine and reported; looks again after the wait
/// (sooner when a status write was deferred).
async fn hold(pass: &Pass<'_>, ctx: &RolloutContext, held: Held) -> Result<Action, Error> {
    if let Some(sub) = &held.subscription {
        sub.set_active(held.poll_actively);
    }
    let decision = engine::reconcile_blocked(&pass.input(None), &held.blocker, pass.now);
    let deferred = report(
        ctx,
        pass.rollout,
        &pass.uid,
        decision,
        held.subscription.as_ref(),
    )
    .await?;
    Ok(Action::requeue(
        deferred.map_or(held.again, |d| d.min(held.again)),
    ))
}

/// Before a decision that writes devices is acted on, the package's content is checked to be
/// on the platform (once per wave start, and at most once per package and
/// `--content-check-interval` for other writes: [`content`]); what holds the Rollout when it is
/// not.
async fn content_gate(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    ready: &Prerequisites,
    sub: &Arc<Subscription>,
    decision: &Decision,
) -> Result<Option<Held>, Error> {
    let package = ready.package.uid().unwrap_or_default();
    let Some(point) = content_check_due(pass, ctx, &package, decision) else {
        return Ok(None);
    };
    let platform = ready.platform.as_ref();
    match content::check_content(&ctx.base, platform, &ready.package, point).await? {
        content::Verdict::Go => {
            if let content::CheckPoint::WaveStart(wave) = point {
                ctx.tracked.update(&pass.uid, |t| {
                    t.content_verified = t.content_verified.max(wave)
                });
            }
            Ok(None)
        }
        content::Verdict::Hold(blocker) => {
            if matches!(blocker, Blocker::PlatformUnavailable(_)) {
                ctx.content_checks.release(&package);
            }
            Ok(Some(Held {
                blocker,
                subscription: Some(sub.clone()),
                poll_actively: false,
                again: ctx.options.intervals.idle,
            }))
        }
    }
}

/// Whether the decision's writes wait for a content check, and before what: a wave start not
/// verified yet always; other writes when the package was not checked within
/// `--content-check-interval` (taking that check for the package).
fn content_check_due(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    package: &str,
    decision: &Decision,
) -> Option<content::CheckPoint> {
    let now = std::time::Instant::now();
    let checks = &ctx.content_checks;
    if let Some(wave) = content::wave_started(&pass.previous, decision)
        && pass.tracked.content_verified < wave
    {
        checks.checked(package, now);
        return Some(content::CheckPoint::WaveStart(wave));
    }
    let interval = ctx.options.content_check_interval;
    (!decision.notifications.is_empty() && checks.claim(package, now, interval))
        .then_some(content::CheckPoint::Writes(decision.status.current_wave))
}

/// The engine's decision on the Rollout's index as it is now.
fn decide(
    pass: &Pass<'_>,
    sub: &Subscription,
    max_notifications: Option<usize>,
) -> Result<Decision, Error> {
    let held = sub.lock();
    engine::reconcile(&pass.input(max_notifications), &held.index, pass.now).map_err(engine_error)
}

/// What acting on a decision left to report.
struct Acted {
    /// The decision to report: decided again when some writes did not land, so the status
    /// counts only what the platform holds.
    decision: Decision,
    /// More devices are due now (a full batch, or writes left for lack of time).
    more_due: bool,
    /// The error that stopped the writes.
    write_error: Option<PlatformError>,
}

/// Writes the decision's notifications; when some did not land, decides again on the updated
/// index (same input and time, so the same events) deciding no notification, so the devices
/// not written count as pending and are due at the next pass; a write error shows in the
/// decision (the engine's `writes_failed`).
async fn act(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    ready: &Prerequisites,
    sub: &Subscription,
    mut decision: Decision,
) -> Result<Acted, Error> {
    let records = std::mem::take(&mut decision.success_records);
    let records_more_due = records.len() >= notification_batch(ctx.options.write_concurrency);
    record(pass, ctx, ready, sub, records).await;
    let notifications = std::mem::take(&mut decision.notifications);
    let decided = notifications.len();
    if decided == 0 {
        return Ok(Acted {
            decision,
            more_due: records_more_due,
            write_error: None,
        });
    }
    let delivery = write(pass, ctx, ready, sub, notifications).await;
    let written = delivery.written + delivery.already_set;
    let mut more_due =
        records_more_due || decided >= notification_batch(ctx.options.write_concurrency);
    if written < decided {
        decision = decide(pass, sub, Some(0))?;
        more_due |= delivery.not_attempted > 0;
    }
    if let Some(e) = &delivery.error {
        let shortfall = WriteShortfall {
            error: &e.to_string(),
            decided,
            written,
        };
        let generation = pass.rollout.metadata.generation;
        engine::writes_failed(&mut decision, shortfall, generation, pass.now);
    }
    Ok(Acted {
        decision,
        more_due,
        write_error: delivery.error,
    })
}

/// Writes the decision's success records (bounded like the notifications) and counts each
/// result; one that fails is chosen again at the next pass, so it never fails this one.
async fn record(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    ready: &Prerequisites,
    sub: &Subscription,
    identities: Vec<String>,
) {
    if identities.is_empty() {
        return;
    }
    let tag = {
        let record = sub.lock().index.success_record().clone();
        Tag::new(record.name, record.value)
    };
    let count = pass.counter(&ctx.metrics.success_records);
    let missed = record_successes(
        &ready.platform,
        sub,
        &tag,
        identities,
        write_limits(ctx),
        |result| count(result.label()),
    )
    .await;
    tracing::debug!(missed, "success records written");
}

/// How many platform writes at once, and for how long, in one pass.
fn write_limits(ctx: &RolloutContext) -> WriteLimits {
    WriteLimits {
        concurrency: ctx.options.write_concurrency,
        budget: ctx.options.write_budget,
    }
}

/// Delivers the notifications (bounded in flight and in time), counts each result in the
/// metrics and keeps which devices' writes ended without a clear answer.
async fn write(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    ready: &Prerequisites,
    sub: &Subscription,
    notifications: Vec<Notification>,
) -> Delivery {
    let total = notifications.len();
    let count = pass.counter(&ctx.metrics.notifications);
    let delivery = deliver(
        &ready.platform,
        sub,
        &ready.manifest,
        notifications,
        &pass.tracked.uncertain,
        write_limits(ctx),
        |result| count(result.label()),
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
    ctx.tracked.update(&pass.uid, |t| {
        for id in &delivery.resolved {
            t.uncertain.remove(id);
        }
        t.uncertain.extend(delivery.uncertain.iter().cloned());
    });
    delivery
}

/// Brings the package's ExoSense listing up to the devices this Rollout notified when a look
/// is due (src/controller/package/listing.rs): at most once per `--exosense-listing-interval`
/// while it runs, once more when it completes. A failed look is logged and tried again after
/// the interval; it never fails the pass (the listing is what ExoSense shows, not delivery).
async fn refresh_listing(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    ready: &Prerequisites,
    sub: &Subscription,
    acted: &Acted,
) {
    let settings = &ctx.base.settings;
    let complete = conditions::is_true(&acted.decision.status.conditions, COMPLETE);
    let mark = pass.tracked.listing;
    let now = std::time::Instant::now();
    if !listing::look_due(&mark, complete, now, settings.listing_interval) {
        return;
    }
    let bound = package::device_tag_bound(&ready.package, settings.max_device_tags);
    let notified = sub.lock().index.notified(bound as usize);
    let seen = (notified.count, notified.fingerprint);
    let mut next = listing::ListingMark {
        looked_at: Some(now),
        notified: mark.notified,
        final_look: false,
    };
    if seen == mark.notified {
        next.final_look = complete;
    } else {
        let looked = listing::bring_up_to_date(
            ready.platform.as_ref(),
            &ready.package,
            &ready.connector,
            &notified,
            bound,
        )
        .await;
        match looked {
            Ok(looked) => {
                tracing::debug!(
                    notified = notified.count,
                    complete,
                    ?looked,
                    "package listing looked at"
                );
                next.notified = seen;
                next.final_look = complete;
            }
            Err(e) => {
                tracing::warn!(error = %e, notified = notified.count, "could not update the package's ExoSense listing; trying again later");
            }
        }
    }
    ctx.tracked.update(&pass.uid, |t| t.listing = next);
}

/// Reports the decision and chooses when to look again; a write error fails the reconcile
/// after the report (the controller backs off).
async fn finish(
    pass: &Pass<'_>,
    ctx: &RolloutContext,
    acted: Acted,
    sub: &Arc<Subscription>,
) -> Result<Action, Error> {
    let requeue = acted.decision.requeue;
    sub.set_active(requeue.poll == PollHint::Active);
    let deferred = report(ctx, pass.rollout, &pass.uid, acted.decision, Some(sub)).await?;
    if let Some(e) = acted.write_error {
        return Err(Error::Platform { source: e });
    }
    let next = NextPass {
        poll: requeue.poll,
        at: requeue.at,
        now: pass.now,
        deferred,
        more_due: acted.more_due,
    };
    Ok(Action::requeue(next.after(&ctx.options.intervals)))
}

/// What chooses when the next pass runs.
#[derive(Clone, Copy, Debug)]
struct NextPass {
    poll: PollHint,
    /// When the engine wants to look again (a soak ends, a device times out), µs.
    at: Option<Micros>,
    now: Micros,
    /// How long a deferred status write waits.
    deferred: Option<Duration>,
    more_due: bool,
}

impl NextPass {
    /// The poll interval the engine asks for, sooner when the engine names a time (at least
    /// 200 ms away) or a status write waits, at once (10 ms) when more devices are due.
    fn after(self, intervals: &PollIntervals) -> Duration {
        if self.more_due {
            return Duration::from_millis(10);
        }
        let mut next = match self.poll {
            PollHint::Active => intervals.active,
            PollHint::Idle | PollHint::None => intervals.idle,
        };
        if let Some(at) = self.at {
            let wait = u64::try_from(at.saturating_sub(self.now)).unwrap_or(0);
            next = next.min(Duration::from_micros(wait).max(Duration::from_millis(200)));
        }
        if let Some(d) = self.deferred {
            next = next.min(d);
        }
        next
    }
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

/// The package (Ready, with its manifest) and its connector (Ready, with a platform client),
/// or what is missing.
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
    if let Some(missing) = content_missing(&status.conditions) {
        return Ok(Err(Blocker::ContentMissing(missing)));
    }
    if !conditions::is_true(&status.conditions, READY) {
        return Ok(Err(Blocker::PackageNotReady(not_ready_text(
            "SoftwarePackage",
            package_name,
            &status.conditions,
        ))));
    }
    let manifest = match status.manifest.as_deref().map(Manifest::parse) {
        Some(Ok(m)) => m.with_rollout(Some(&rollout_marker(&namespace, &rollout.name_any()))),
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
    let others = other_manifests(rollout, ctx, &packages, connector_name).await?;
    Ok(Ok(Prerequisites {
        manifest,
        others,
        package,
        connector,
        platform: client.platform.clone(),
    }))
}

/// The other manifests a device of the Rollout may hold that the engine tells apart.
struct OtherManifests {
    /// Of every SoftwarePackage of the connector.
    connector: Vec<Manifest>,
    /// Of the packages of the Rollouts created after this one (the cached Rollouts of the
    /// namespace).
    newer_rollouts: Vec<Manifest>,
}

/// The manifests of the SoftwarePackages of the connector `connector` (one list of the
/// namespace's packages per pass, like the get of the Rollout's own package), and of those
/// that newer Rollouts roll out.
async fn other_manifests(
    rollout: &Rollout,
    ctx: &RolloutContext,
    packages: &Api<SoftwarePackage>,
    connector: &str,
) -> Result<OtherManifests, Error> {
    let namespace = rollout.namespace().unwrap_or_default();
    let listed = packages
        .list(&kube::api::ListParams::default())
        .await
        .map_err(Error::kube("list SoftwarePackages"))?;
    let cached = ctx.rollouts();
    let newer =
        engine::newer_rollout_packages(rollout, cached.iter().filter_map(|r| r.0.as_ref().ok()));
    Ok(OtherManifests {
        connector: engine::connector_manifests(&listed.items, &namespace, connector),
        newer_rollouts: engine::newer_rollout_manifests(
            &listed.items,
            &namespace,
            connector,
            &rollout.spec.package_ref.name,
            &newer,
        ),
    })
}

/// The package's `ContentMissing` message, while its `Ready` says so.
fn content_missing(conds: &[Condition]) -> Option<String> {
    conditions::find_condition(conds, READY)
        .filter(|c| c.status != conditions::TRUE && c.reason == conditions::reason::CONTENT_MISSING)
        .map(|c| crate::otau::safe_text(&c.message, 600))
}

fn not_ready_text(kind: &str, name: &str, conds: &[Condition]) -> String {
    match conditions::find_condition(conds, READY) {
        Some(c) => format!(
            "{kind} {name} is not Ready ({}): {}",
            c.reason,
            crate::otau::safe_text(&c.message, 300)
        ),
        None => format!("{kind} {name} is not Ready yet"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Micros = 1_000_000;

    fn next(poll: PollHint, at: Option<Micros>, deferred: Option<u64>, more: bool) -> Duration {
        let intervals = PollIntervals {
            active: Duration::from_secs(5),
            idle: Duration::from_secs(60),
            ..PollIntervals::default()
        };
        NextPass {
            poll,
            at,
            now: 100 * SECOND,
            deferred: deferred.map(Duration::from_millis),
            more_due: more,
        }
        .after(&intervals)
    }

    #[test]
    fn the_next_pass_follows_the_poll_the_engine_asks_for() {
        assert_eq!(
            next(PollHint::Active, None, None, false),
            Duration::from_secs(5)
        );
        assert_eq!(
            next(PollHint::Idle, None, None, false),
            Duration::from_secs(60)
        );
        assert_eq!(
            next(PollHint::None, None, None, false),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_deadline_or_a_deferred_write_comes_sooner_but_not_at_once() {
        let soak_ends = Some(102 * SECOND);
        assert_eq!(
            next(PollHint::Idle, soak_ends, None, false),
            Duration::from_secs(2)
        );
        let past = Some(99 * SECOND);
        assert_eq!(
            next(PollHint::Idle, past, None, false),
            Duration::from_millis(200)
        );
        let far = Some(1_000 * SECOND);
        assert_eq!(
            next(PollHint::Active, far, None, false),
            Duration::from_secs(5)
        );
        assert_eq!(
            next(PollHint::Active, None, Some(700), false),
            Duration::from_millis(700)
        );
    }

    #[test]
    fn more_due_writes_come_back_at_once() {
        assert_eq!(
            next(PollHint::Idle, None, Some(700), true),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn a_batch_keeps_every_write_slot_busy_and_is_never_tiny() {
        assert_eq!(notification_batch(32), 4_096);
        assert_eq!(notification_batch(1), 1_024);
        assert_eq!(notification_batch(usize::MAX), usize::MAX);
    }
}
