//! Device status by poll (docs/architecture.md §3): one poller per IoTConnector, shared by every
//! Rollout on it. Each cycle lists the connector's identities page by page and folds every page
//! into the in-memory [`DeviceIndex`] of each subscribed Rollout, then asks those Rollouts to
//! reconcile. The interval adapts: [`PollIntervals::active`] while any subscriber has devices in
//! flight (or waits for its first listing), [`PollIntervals::idle`] otherwise.
//!
//! A subscriber's index is *ready* once one complete listing that started after it was
//! (re)built has been folded into it; the Rollout controller decides nothing before that.
//! Pushed events and the controller's own writes are folded into the same indexes at once
//! ([`DeviceIndex::apply_partial`]), so the index always holds the newest thing known.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::{Notify, mpsc};

use crate::api::Rollout;
use crate::engine::{
    DeviceIndex, DeviceObservation, IndexConfig, Micros, PartialUpdate, ReportCode,
};
use crate::platform::{ListIdentities, Platform};

/// Poll intervals and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollIntervals {
    /// Between listings while a wave is in flight.
    pub active: Duration,
    /// Between listings when every subscriber waits (approval, soak, late joiners).
    pub idle: Duration,
    /// Identities per page.
    pub page_size: u32,
}

impl Default for PollIntervals {
    fn default() -> Self {
        PollIntervals {
            active: Duration::from_secs(10),
            idle: Duration::from_secs(300),
            page_size: 1000,
        }
    }
}

/// A request to reconcile one Rollout.
pub type Trigger = ObjectRef<kube::core::DeserializeGuard<Rollout>>;

/// What one Rollout's index holds, under one lock.
pub struct Held {
    /// The index.
    pub index: DeviceIndex,
    /// Bumped whenever the index is rebuilt; a listing folds into an index only when its
    /// epoch did not change while the listing ran.
    epoch: u64,
    /// A complete listing was folded into this epoch's index.
    pub ready: bool,
    /// The last listing failed with this message (cleared by the next good one).
    pub last_error: Option<String>,
    /// When the last complete listing finished.
    pub listed_at: Option<Instant>,
    /// Devices per report kind at the last complete listing (for the failure metrics).
    pub reports: HashMap<&'static str, i64>,
    /// Devices folded from a write or a pushed event during the current listing, and when
    /// (µs): a page requested before that time is older than what the index holds for them.
    /// Keyed by [`identity_key`] (8 bytes, not a copy of the identity: a whole wave of a
    /// million-device rollout can be written during one listing).
    recent: HashMap<u64, Micros>,
}

/// The key of an identity in [`Held::recent`]: a fixed 64-bit hash. Two identities sharing a
/// key (about one chance in 10^8 with a million folded devices) only make the listing keep the
/// index's value for the other one until the next listing.
fn identity_key(identity: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same key for the same identity in every run.
    let mut hasher = std::hash::DefaultHasher::new();
    identity.hash(&mut hasher);
    hasher.finish()
}

impl Held {
    /// Folds a partial update (our write, a pushed event) into the index and remembers it, so
    /// that a listing page read from the platform before it cannot undo it. Returns whether
    /// the index changed.
    pub fn fold(&mut self, identity: &str, update: &PartialUpdate) -> bool {
        let changed = self.index.apply_partial(identity, update);
        if changed {
            self.recent.insert(identity_key(identity), now_micros());
        }
        changed
    }

    /// Folds one listing page requested at `requested_at` (µs): devices folded since then keep
    /// what the index holds (it is newer than the page), the others take the page's values.
    fn fold_page(&mut self, page: &[DeviceObservation], requested_at: Micros) {
        if self.recent.is_empty() {
            self.index.upsert(page.iter());
            return;
        }
        let recent = &self.recent;
        let index = &mut self.index;
        // A device folded since the page was requested keeps what the index holds.
        let listed: Vec<&DeviceObservation> = page
            .iter()
            .filter(|o| {
                let newer_here = recent
                    .get(&identity_key(&o.identity))
                    .is_some_and(|&at| at >= requested_at);
                !(newer_here && index.keep_as_held(&o.identity))
            })
            .collect();
        self.index.upsert(listed);
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// One Rollout subscribed to a poller.
pub struct Subscription {
    /// The Rollout's UID.
    pub uid: String,
    /// What triggers its reconcile.
    pub trigger: Trigger,
    held: Mutex<Held>,
    /// Whether the Rollout has devices in flight (short poll interval).
    active: std::sync::atomic::AtomicBool,
    /// A pushed event asked for a reconcile that has not started yet. Pushed events send one
    /// trigger until the reconcile takes it ([`Subscription::take_push_trigger`]): the
    /// controller's debounce delays a Rollout's reconcile at every new trigger, so one trigger
    /// per event would hold the status back for as long as events keep coming.
    push_trigger_pending: std::sync::atomic::AtomicBool,
}

impl Subscription {
    /// Locks the index. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets whether the Rollout has devices in flight.
    pub fn set_active(&self, active: bool) {
        self.active
            .store(active, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Called by the reconcile before it reads the index: pushed events folded from now on
    /// trigger a new reconcile; those folded before are seen by this one.
    pub fn take_push_trigger(&self) {
        self.push_trigger_pending
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether a pushed event should send a trigger (none is pending), marking one pending.
    fn needs_push_trigger(&self) -> bool {
        !self
            .push_trigger_pending
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

/// The poller of one IoTConnector.
pub struct Poller {
    /// `namespace/name` of the IoTConnector.
    pub key: String,
    platform: Mutex<Arc<dyn Platform>>,
    product_id: Mutex<String>,
    webhook: Mutex<Option<WebhookKey>>,
    subscribers: Mutex<HashMap<String, Arc<Subscription>>>,
    poke: Notify,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Poller {
    fn subs(&self) -> Vec<Arc<Subscription>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The connector's product id.
    pub fn product_id(&self) -> String {
        self.product_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks for a listing now.
    pub fn poke(&self) {
        self.poke.notify_one();
    }
}

/// Every poller, by connector.
pub struct Pollers {
    pollers: Mutex<HashMap<String, Arc<Poller>>>,
    intervals: PollIntervals,
    triggers: TriggerRouter,
    /// Listings completed and failed, per outcome.
    listings: prometheus::IntCounterVec,
}

impl std::fmt::Debug for Pollers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pollers")
            .field("intervals", &self.intervals)
            .finish_non_exhaustive()
    }
}

/// Sends reconcile requests to the stream of each controller whose scope holds the Rollout.
#[derive(Default)]
struct TriggerRouter {
    routes: Mutex<Vec<(Option<String>, mpsc::UnboundedSender<Trigger>)>>,
}

impl TriggerRouter {
    fn stream(&self, namespace: Option<&str>) -> futures::stream::BoxStream<'static, Trigger> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((namespace.map(str::to_owned), tx));
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
            .boxed()
    }

    fn send(&self, trigger: &Trigger) {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        for (scope, tx) in routes.iter() {
            if scope.is_none() || scope.as_deref() == trigger.namespace.as_deref() {
                let _ = tx.send(trigger.clone());
            }
        }
    }
}

/// Where a connector's webhook key lives (a Secret key in the connector's namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WebhookKey {
    /// Namespace of the IoTConnector and the Secret.
    pub namespace: String,
    /// Secret name.
    pub secret: String,
    /// Key in the Secret.
    pub key: String,
}

/// What [`Pollers::subscribe`] needs to know about a Rollout.
pub struct SubscribeRequest<'a> {
    /// `namespace/name` of the IoTConnector.
    pub connector_key: &'a str,
    /// The connector's product id (for pushed events).
    pub product_id: &'a str,
    /// The connector's webhook key, when push is configured.
    pub webhook: Option<WebhookKey>,
    /// The connector's platform client (replaced when the connector's spec changed).
    pub platform: Arc<dyn Platform>,
    /// The Rollout's UID.
    pub uid: &'a str,
    /// Its reconcile trigger.
    pub trigger: Trigger,
    /// What its index is built for.
    pub config: IndexConfig,
}

impl Pollers {
    /// No pollers yet; finished listings and pushed events trigger the affected Rollouts
    /// through the streams of [`Pollers::triggers`].
    pub fn new(
        intervals: PollIntervals,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Pollers>, prometheus::Error> {
        let listings = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "otau_device_listings_total",
                "Complete device listings of a connector (all pages), by outcome (success, error).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(listings.clone()))?;
        Ok(Arc::new(Pollers {
            pollers: Mutex::new(HashMap::new()),
            intervals,
            triggers: TriggerRouter::default(),
            listings,
        }))
    }

    /// A stream of reconcile requests for the Rollouts in `namespace` (all when `None`), for
    /// `Controller::reconcile_on`.
    pub fn triggers(
        &self,
        namespace: Option<&str>,
    ) -> futures::stream::BoxStream<'static, Trigger> {
        self.triggers.stream(namespace)
    }

    /// Asks for a reconcile of one Rollout.
    pub fn trigger(&self, trigger: &Trigger) {
        self.triggers.send(trigger);
    }

    /// The poll settings.
    pub fn intervals(&self) -> PollIntervals {
        self.intervals
    }

    /// Subscribes a Rollout (or refreshes its subscription) and returns it. The index is
    /// rebuilt, and a listing asked for, when it was built for another configuration or the
    /// Rollout moved to another connector.
    pub fn subscribe(self: &Arc<Self>, request: SubscribeRequest<'_>) -> Arc<Subscription> {
        // Leaving another connector's poller (a new package on another connector cannot
        // happen: packageRef is immutable, but the package could be recreated).
        let others: Vec<Arc<Poller>> = self
            .lock()
            .values()
            .filter(|p| p.key != request.connector_key)
            .cloned()
            .collect();
        for other in others {
            other
                .subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(request.uid);
        }
        let poller = self.poller(request.connector_key, &request.platform);
        *poller.platform.lock().unwrap_or_else(|e| e.into_inner()) = request.platform;
        *poller.product_id.lock().unwrap_or_else(|e| e.into_inner()) =
            request.product_id.to_owned();
        *poller.webhook.lock().unwrap_or_else(|e| e.into_inner()) = request.webhook.clone();
        let mut subs = poller.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = subs.get(request.uid) {
            let mut held = existing.lock();
            if !held.index.same_devices(&request.config) {
                held.index = DeviceIndex::new(request.config);
                held.epoch += 1;
                held.ready = false;
                drop(held);
                poller.poke();
            } else if *held.index.config() != request.config {
                // Another package or Rollout on the connector: the devices stay; the next
                // listing refreshes what each entry knows of the manifest it holds.
                let config = request.config;
                held.index.set_other_manifests(
                    config.connector_manifests,
                    config.newer_rollout_manifests,
                );
                drop(held);
                poller.poke();
            }
            return existing.clone();
        }
        let sub = Arc::new(Subscription {
            uid: request.uid.to_owned(),
            trigger: request.trigger,
            held: Mutex::new(Held {
                index: DeviceIndex::new(request.config),
                epoch: 0,
                ready: false,
                last_error: None,
                listed_at: None,
                reports: HashMap::new(),
                recent: HashMap::new(),
            }),
            active: std::sync::atomic::AtomicBool::new(true),
            push_trigger_pending: std::sync::atomic::AtomicBool::new(false),
        });
        subs.insert(request.uid.to_owned(), sub.clone());
        drop(subs);
        poller.poke();
        sub
    }

    /// Removes a Rollout's subscription (deleted); a poller left without subscribers stops.
    pub fn unsubscribe(&self, uid: &str) {
        let mut pollers = self.lock();
        pollers.retain(|_, p| {
            let mut subs = p.subscribers.lock().unwrap_or_else(|e| e.into_inner());
            subs.remove(uid);
            if subs.is_empty() {
                if let Some(task) = p.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    task.abort();
                }
                false
            } else {
                true
            }
        });
    }

    /// The subscription of a Rollout, if any.
    pub fn subscription(&self, uid: &str) -> Option<Arc<Subscription>> {
        self.lock().values().find_map(|p| {
            p.subscribers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(uid)
                .cloned()
        })
    }

    /// The connectors (`namespace/name` and webhook key) with the product id `product_id` that
    /// have a poller and a webhook key, for pushed events.
    pub fn push_targets(&self, product_id: &str) -> Vec<(String, WebhookKey)> {
        self.lock()
            .values()
            .filter(|p| p.product_id() == product_id)
            .filter_map(|p| {
                let key = p
                    .webhook
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()?;
                Some((p.key.clone(), key))
            })
            .collect()
    }

    /// Every subscription on the connector `connector_key` (for target conflicts).
    pub fn subscriptions_of(&self, connector_key: &str) -> Vec<Arc<Subscription>> {
        self.lock()
            .get(connector_key)
            .map(|p| p.subs())
            .unwrap_or_default()
    }

    /// Every subscribed Rollout UID.
    pub fn subscribed_uids(&self) -> Vec<String> {
        self.lock()
            .values()
            .flat_map(|p| {
                p.subscribers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Folds one device update into every index of the given connectors that holds the
    /// device, and triggers those Rollouts (at most one trigger waiting per Rollout, see
    /// [`Subscription::take_push_trigger`]). Returns the Rollouts whose index changed.
    pub fn apply(
        &self,
        connector_keys: &[String],
        identity: &str,
        update: &PartialUpdate,
    ) -> Vec<Trigger> {
        let pollers: Vec<Arc<Poller>> = {
            let all = self.lock();
            connector_keys
                .iter()
                .filter_map(|k| all.get(k).cloned())
                .collect()
        };
        let mut changed = Vec::new();
        for poller in pollers {
            for sub in poller.subs() {
                let applied = {
                    let mut held = sub.lock();
                    let ok = held.fold(identity, update);
                    if ok {
                        held.index.prepare();
                    }
                    ok
                };
                if applied {
                    if sub.needs_push_trigger() {
                        self.triggers.send(&sub.trigger);
                    }
                    changed.push(sub.trigger.clone());
                }
            }
        }
        changed
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Poller>>> {
        self.pollers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poller(self: &Arc<Self>, key: &str, platform: &Arc<dyn Platform>) -> Arc<Poller> {
        let mut pollers = self.lock();
        if let Some(p) = pollers.get(key) {
            return p.clone();
        }
        let poller = Arc::new(Poller {
            key: key.to_owned(),
            platform: Mutex::new(platform.clone()),
            product_id: Mutex::new(String::new()),
            webhook: Mutex::new(None),
            subscribers: Mutex::new(HashMap::new()),
            poke: Notify::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(run_poller(self.clone(), poller.clone()));
        *poller.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        pollers.insert(key.to_owned(), poller.clone());
        poller
    }
}

/// The loop of one poller: list, fold, trigger, wait (short or long), repeat; a poke cuts
/// the wait short (a poke while listing is kept for after it). Ends when aborted
/// ([`Pollers::unsubscribe`] of the last subscriber) or with the runtime.
async fn run_poller(pollers: Arc<Pollers>, poller: Arc<Poller>) {
    let intervals = pollers.intervals;
    // The first listing comes from the subscriber's poke.
    let mut wait = intervals.idle;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = poller.poke.notified() => {}
        }
        let subs = poller.subs();
        if subs.is_empty() {
            wait = intervals.idle;
            continue;
        }
        let platform = poller
            .platform
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ok = list_once(&platform, &subs, intervals.page_size).await;
        pollers
            .listings
            .with_label_values(&[if ok { "success" } else { "error" }])
            .inc();
        for sub in &subs {
            pollers.triggers.send(&sub.trigger);
        }
        let busy = subs.iter().any(|s| s.is_active() || !s.lock().ready);
        wait = if busy || !ok {
            intervals.active
        } else {
            intervals.idle
        };
    }
}

/// One complete listing folded into every subscriber; false when it failed part way (the
/// indexes keep what they had, plus the pages read).
async fn list_once(
    platform: &Arc<dyn Platform>,
    subs: &[Arc<Subscription>],
    page_size: u32,
) -> bool {
    let epochs: Vec<u64> = subs
        .iter()
        .map(|s| {
            let mut held = s.lock();
            held.index.begin_full_listing();
            held.recent.clear();
            held.recent.shrink_to(1024);
            held.epoch
        })
        .collect();
    let mut pages = platform.list_identities(ListIdentities { page_size });
    let mut failure = None;
    let mut observations: Vec<DeviceObservation> = Vec::with_capacity(page_size as usize);
    loop {
        let requested_at = now_micros();
        let Some(page) = pages.next().await else {
            break;
        };
        match page {
            Ok(page) => {
                observations.clear();
                observations.extend(page.identities.iter().map(DeviceObservation::from));
                for (sub, epoch) in subs.iter().zip(&epochs) {
                    let mut held = sub.lock();
                    if held.epoch == *epoch {
                        held.fold_page(&observations, requested_at);
                    }
                }
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    for (sub, epoch) in subs.iter().zip(&epochs) {
        let mut held = sub.lock();
        if held.epoch != *epoch {
            continue;
        }
        match &failure {
            None => {
                held.index.finish_full_listing();
                held.ready = true;
                held.last_error = None;
                held.listed_at = Some(Instant::now());
                held.reports = report_tally(&held.index);
            }
            Some(message) => {
                held.index.prepare();
                held.last_error = Some(message.clone());
                tracing::warn!(error = %message, "device listing failed; the next poll starts over");
            }
        }
    }
    failure.is_none()
}

/// Devices per report kind (failure statuses only), for `otau_rollout_device_reports`.
fn report_tally(index: &DeviceIndex) -> HashMap<&'static str, i64> {
    let mut tally = HashMap::new();
    for &i in index.ordered().iter() {
        let label = match index.entry(i).report {
            ReportCode::TestError => "TEST_ERROR",
            ReportCode::DownloadError => "DOWNLOAD_ERROR",
            ReportCode::InstallError => "INSTALL_ERROR",
            ReportCode::Aborted => "INSTALL_ABORTED",
            _ => continue,
        };
        *tally.entry(label).or_insert(0) += 1;
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DeviceTag;
    use crate::api::rollout::Targets;
    use crate::engine::{ResourceState, SetKind};
    use crate::otau::Manifest;

    fn held() -> Held {
        Held {
            index: DeviceIndex::new(IndexConfig {
                seed: "ns/r".into(),
                targets: Targets {
                    tags: vec![DeviceTag::new("fleet", "a")],
                    ..Targets::default()
                },
                manifest: Manifest::url_list("2.0", "fw", "", vec![]),
                connector_manifests: Vec::new(),
                newer_rollout_manifests: Vec::new(),
            }),
            epoch: 0,
            ready: true,
            last_error: None,
            listed_at: None,
            reports: HashMap::new(),
            recent: HashMap::new(),
        }
    }

    fn listed(id: &str, config: Option<ResourceState>) -> DeviceObservation {
        DeviceObservation {
            identity: id.into(),
            tags: vec![DeviceTag::new("fleet", "a")],
            config_otau: config,
            otau_in: None,
        }
    }

    #[test]
    fn pushed_events_send_one_trigger_until_the_reconcile_takes_it() {
        let sub = Subscription {
            uid: "u".into(),
            trigger: ObjectRef::new("r").within("ns"),
            held: Mutex::new(held()),
            active: std::sync::atomic::AtomicBool::new(true),
            push_trigger_pending: std::sync::atomic::AtomicBool::new(false),
        };
        assert!(sub.needs_push_trigger(), "the first event triggers");
        assert!(
            !sub.needs_push_trigger(),
            "later events wait for the reconcile"
        );
        sub.take_push_trigger();
        assert!(
            sub.needs_push_trigger(),
            "after the reconcile took it, events trigger again"
        );
    }

    #[test]
    fn recent_keys_are_stable_and_tell_identities_apart() {
        assert_eq!(identity_key("dev-1"), identity_key("dev-1"));
        assert_ne!(identity_key("dev-1"), identity_key("dev-2"));
    }

    #[test]
    fn a_page_read_before_a_write_does_not_undo_it() {
        let mut h = held();
        h.index.upsert([listed("a", None), listed("b", None)]);
        let before_write = now_micros();
        let value = h.index.manifest_value(1).to_owned();
        let update = PartialUpdate {
            config_otau: Some((value.clone(), before_write + 1)),
            otau_in: None,
        };
        assert!(h.fold("a", &update));
        // A page requested before the write still shows no value for "a".
        h.index.begin_full_listing();
        h.fold_page(&[listed("a", None), listed("b", None)], before_write);
        h.index.finish_full_listing();
        assert_eq!(h.index.get("a").map(|e| e.set_kind), Some(SetKind::Ours));
        // A page requested after the write wins (it may hold newer values).
        let later = now_micros() + 1_000;
        let acked = ResourceState::written_by_device("ACK", later);
        h.index.begin_full_listing();
        h.fold_page(&[listed("a", Some(acked)), listed("b", None)], later);
        h.index.finish_full_listing();
        assert_eq!(h.index.get("a").map(|e| e.set_kind), Some(SetKind::Foreign));
        assert_eq!(h.index.len(), 2, "nothing dropped");
    }
}
