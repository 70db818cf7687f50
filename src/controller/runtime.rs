//! Starts the operator as one unit (docs/architecture.md §9.9): waits for the CRDs, serves
//! `/metrics`, `/livez` and `/readyz`, runs the IoTConnector and SoftwarePackage controllers
//! for the watched namespaces, and stops all of them together on the shutdown signal. If a
//! controller or the HTTP server ends on its own, the whole run ends with an error.
//!
//! With leader election ([`RunOptions::leader`]), the HTTP server runs at once but the
//! controllers, pollers and push receiver start only once this replica holds the Lease; a
//! follower forwards pushes to the leader's receiver, whose URL the leader advertises in the
//! Lease once its receiver listens (503 while none is known). Losing the Lease ends the run with an error at once (the
//! write gate is already closed); on the shutdown signal the controllers drain first and the
//! Lease is released after them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, join_all};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use prometheus::IntCounterVec;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::follower::{Forwarding, forwarded_counter, serve_follower_push};
use super::http::{Health, router};
use super::leader::{LeaderElection, LeaseConfig, Role, advertise_url};
use super::metrics::{CONNECTOR_CONTROLLER, PACKAGE_CONTROLLER};
use super::write_gate::WriteGate;
use super::{
    CONCURRENCY, Context, Metrics, Settings, api, connector, crds, error_policy, package,
    report_results,
};
use crate::api::{IoTConnector, Rollout, SoftwarePackage};
use crate::net::server::{self, DEFAULT_MAX_BODY_BYTES, Limits, ListenerMetrics, Setup};

/// Where and how to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Namespaces to watch; empty = all.
    pub namespaces: Vec<String>,
    /// Address of the metrics and health server.
    pub metrics_addr: SocketAddr,
    /// How long to wait for the CRDs to be Established.
    pub crd_timeout: Duration,
    /// The Rollout controller, its pollers and the push receiver.
    pub rollouts: super::rollout::RolloutOptions,
    /// Leader election on a Lease; `None`: this replica always runs the controllers.
    pub leader: Option<LeaseConfig>,
    /// `--push-advertise-url`: the push URL the leader advertises (checked); `None`: derived
    /// from the bound address or [`pod_ip`](Self::pod_ip).
    pub push_advertise_url: Option<String>,
    /// `$POD_IP`, for the advertised push URL when the receiver binds to 0.0.0.0 or ::.
    pub pod_ip: Option<String>,
    /// The limits of every listener (metrics and health, push); each listener sets its own
    /// largest body.
    pub listeners: Limits,
}

type Stop = Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>>;

fn stop_signal(rx: &watch::Receiver<bool>) -> Stop {
    let mut rx = rx.clone();
    Box::pin(async move {
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// The metrics and health server, run until the stop signal (then it shuts down gracefully).
type Server = BoxFuture<'static, std::io::Result<()>>;

/// Runs until `shutdown` completes (then stops gracefully and returns `Ok`) or something
/// fails (returns a message for humans).
pub async fn run(
    client: Client,
    mut settings: Settings,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    crds::wait_established(&client, options.crd_timeout).await?;
    let metrics = Metrics::new().map_err(|e| format!("metrics: {e}"))?;
    let listener = bind_metrics(options.metrics_addr).await?;
    let health = Arc::new(Health::default());
    // The URL the leader advertises in the Lease, known once its push receiver listens.
    let (advertise_tx, advertise_rx) = watch::channel(None);
    let mut election = options.leader.clone().map(|config| {
        start_election(
            &client,
            config,
            &mut settings,
            &health,
            &metrics,
            advertise_rx,
        )
    });
    let forwarded = match (&election, options.rollouts.push_addr) {
        (Some(_), Some(_)) => {
            Some(forwarded_counter(metrics.registry()).map_err(|e| format!("metrics: {e}"))?)
        }
        _ => None,
    };
    let ctx = Context::new(client.clone(), settings, metrics.clone());
    let rollouts = super::rollout::RolloutContext::new(ctx.clone(), options.rollouts.clone())?;
    let (stop_rx, stop_requested) = stop_on(shutdown);
    let mut server = serve_http(listener, options.listeners, &metrics, &health, &stop_rx);

    if let Some(leading) = election.as_mut() {
        let waited = wait_to_lead(
            leading,
            &options,
            forwarded.map(|f| (f, metrics.listeners.clone())),
            &stop_rx,
            &mut server,
            &stop_requested,
        )
        .await?;
        match waited {
            Leadership::Leading => tracing::info!("leading: starting the controllers"),
            Leadership::Stopped { server_done } => {
                if let Some(follower) = election.take() {
                    follower.release().await?;
                }
                // A future that has completed must not be polled again.
                if !server_done {
                    let _ = server.await;
                }
                tracing::info!("stopped (follower)");
                return Ok(());
            }
        }
    }

    let (mut controllers, stores_ready) =
        start_controllers(&client, &options.namespaces, &ctx, &rollouts, &stop_rx);
    if let Some(addr) = options.rollouts.push_addr {
        let advertise = election.is_some().then_some(&advertise_tx);
        controllers.push(start_push(&rollouts, addr, &options, advertise, &stop_rx).await?);
    }
    {
        let health = health.clone();
        tokio::spawn(async move {
            join_all(stores_ready).await;
            tracing::info!("caches synced; ready");
            health.set_ready();
        });
    }
    let outcome = supervise(controllers, &mut server, &mut election, &stop_requested).await;
    tracing::info!("stopped");
    outcome
}

/// Binds the metrics and health server's address (`--metrics-addr`).
async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (--metrics-addr): {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("metrics listener: {e}"))?;
    tracing::info!(addr = %local, "metrics and health server listening");
    Ok(listener)
}

/// The stop signal every part of the run watches, turned on when `shutdown` completes, and
/// whether a stop was asked for (a part that ends after that did not fail).
fn stop_on(
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (watch::Receiver<bool>, Arc<AtomicBool>) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_requested = Arc::new(AtomicBool::new(false));
    {
        let stop_requested = stop_requested.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining the controllers");
            stop_requested.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        });
    }
    (stop_rx, stop_requested)
}

/// The metrics listener's name in `otau_listener_*` metrics.
pub const METRICS_LISTENER: &str = "metrics";

/// Serves `/metrics`, `/livez` and `/readyz` on `listener` until the stop signal, with the
/// listener `limits` (its requests carry no body of their own).
fn serve_http(
    listener: TcpListener,
    limits: Limits,
    metrics: &Metrics,
    health: &Arc<Health>,
    stop_rx: &watch::Receiver<bool>,
) -> Server {
    let app = router(metrics.clone(), health.clone());
    let stop = stop_signal(stop_rx);
    let setup = Setup {
        name: METRICS_LISTENER,
        limits: limits.with_max_body_bytes(DEFAULT_MAX_BODY_BYTES),
        metrics: metrics.listeners.clone(),
    };
    async move {
        server::serve_router(listener, setup, app, stop).await;
        Ok(())
    }
    .boxed()
}

/// What the end of the HTTP server means for the run: nothing after a stop was asked for,
/// a failure otherwise.
fn server_ended(served: std::io::Result<()>, stop_requested: &AtomicBool) -> Result<(), String> {
    match served {
        Ok(()) if stop_requested.load(Ordering::SeqCst) => Ok(()),
        Ok(()) => Err("the metrics server stopped unexpectedly".to_string()),
        Err(e) => Err(format!("the metrics server failed: {e}")),
    }
}

/// How a follower's wait for the Lease ended.
enum Leadership {
    /// This replica holds the Lease: start the controllers.
    Leading,
    /// The stop signal came before the Lease was ours; `server_done`: the HTTP server has
    /// already shut down (it ends only after the stop signal, and may win the race to be seen).
    Stopped {
        /// The server's future has completed.
        server_done: bool,
    },
}

/// A follower runs only the HTTP server (and a push receiver forwarding to the leader) until
/// the Lease is ours, the stop signal comes, or something fails (the error); the forwarding
/// receiver is stopped before this returns.
async fn wait_to_lead(
    leading: &mut LeaderElection,
    options: &RunOptions,
    forwarded: Option<(IntCounterVec, ListenerMetrics)>,
    stop_rx: &watch::Receiver<bool>,
    server: &mut Server,
    stop_requested: &AtomicBool,
) -> Result<Leadership, String> {
    let (push_stop_tx, push_stop_rx) = watch::channel(false);
    let follower_push = match (options.rollouts.push_addr, forwarded) {
        (Some(addr), Some((forwarded, leading_listeners))) => {
            let forwarding = Forwarding {
                identity: options
                    .leader
                    .as_ref()
                    .map(|c| c.identity.clone())
                    .unwrap_or_default(),
                leader_url: leading.leader_push_url(),
                forwarded,
            };
            let setup = super::push::listener_setup(options.listeners, &leading_listeners);
            Some(serve_follower_push(addr, forwarding, setup, stop_signal(&push_stop_rx)).await?)
        }
        _ => None,
    };
    let waited = tokio::select! {
        led = leading.leading() => led.map(|()| Leadership::Leading),
        () = stop_signal(stop_rx) => Ok(Leadership::Stopped { server_done: false }),
        served = server => server_ended(served, stop_requested)
            .and(Ok(Leadership::Stopped { server_done: true })),
    };
    let _ = push_stop_tx.send(true);
    if let Some(push) = follower_push {
        let _ = push.await;
    }
    waited
}

/// Starts the IoTConnector, SoftwarePackage and Rollout controllers for each watched
/// namespace (all namespaces when `namespaces` is empty) and the Rollout garbage collector.
/// Returns the running parts and, for readiness, one future per cache that completes once the
/// cache has synced.
fn start_controllers(
    client: &Client,
    namespaces: &[String],
    ctx: &Arc<Context>,
    rollouts: &Arc<super::rollout::RolloutContext>,
    stop_rx: &watch::Receiver<bool>,
) -> (Vec<BoxFuture<'static, ()>>, Vec<BoxFuture<'static, ()>>) {
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    let mut controllers: Vec<BoxFuture<'static, ()>> = Vec::new();
    let mut stores_ready: Vec<BoxFuture<'static, ()>> = Vec::new();
    for scope in scopes {
        tracing::info!(namespace = scope.as_deref().unwrap_or("<all>"), "watching");
        let (run, connectors) =
            connector_controller(client, scope.as_deref(), ctx.clone(), stop_signal(stop_rx));
        controllers.push(run);
        stores_ready.push(ready(connectors));
        let (run, packages) =
            package_controller(client, scope.as_deref(), ctx.clone(), stop_signal(stop_rx));
        controllers.push(run);
        stores_ready.push(ready(packages));
        let (run, rollout_store) =
            super::rollout::controller(rollouts, scope.as_deref(), stop_signal(stop_rx));
        controllers.push(run);
        stores_ready.push(ready(rollout_store));
    }
    controllers
        .push(super::rollout::garbage_collect(rollouts.clone(), stop_signal(stop_rx)).boxed());
    (controllers, stores_ready)
}

/// Starts the push receiver on `addr` and, when `advertise` is given (leader election on),
/// advertises its URL in the Lease. Returns the running receiver.
async fn start_push(
    rollouts: &Arc<super::rollout::RolloutContext>,
    addr: SocketAddr,
    options: &RunOptions,
    advertise: Option<&watch::Sender<Option<String>>>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<BoxFuture<'static, ()>, String> {
    let (bound, push) = super::push::serve(
        rollouts.clone(),
        addr,
        options.listeners,
        stop_signal(stop_rx),
    )
    .await?;
    if let Some(advertise) = advertise {
        let url = advertise_url(
            options.push_advertise_url.as_deref(),
            bound,
            options.pod_ip.as_deref(),
        );
        match &url {
            Some(url) => {
                tracing::info!(url = %url, "advertising the push receiver in the leader Lease")
            }
            None => tracing::info!(
                "no push URL to advertise (bound to an unspecified address, no $POD_IP nor --push-advertise-url): followers answer pushes with 503"
            ),
        }
        advertise.send_replace(url);
    }
    Ok(async move {
        if let Err(e) = push.await {
            tracing::error!(error = %e, "the push receiver failed");
        }
    }
    .boxed())
}

/// Runs the controllers until the run ends: `Ok` after the stop signal, once the controllers
/// have drained and the Lease is released (so a follower takes over at once); an error when
/// the HTTP server or a controller ends on its own or the Lease is lost (the write gate is
/// already closed then, and nothing waits).
async fn supervise(
    controllers: Vec<BoxFuture<'static, ()>>,
    server: &mut Server,
    election: &mut Option<LeaderElection>,
    stop_requested: &AtomicBool,
) -> Result<(), String> {
    let mut controllers = join_all(controllers);
    let mut drained = false;
    let lost = async {
        match election.as_mut() {
            Some(leading) => leading.ended().await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        served = server => server_ended(served, stop_requested),
        _ = &mut controllers => {
            drained = true;
            if stop_requested.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("a controller stopped unexpectedly".to_string())
            }
        }
        message = lost => Err(message),
    };
    if outcome.is_ok() {
        // Shutting down: let the controllers finish what they started, then give the Lease up
        // so a follower takes over at once.
        if !drained {
            controllers.await;
        }
        if let Some(leading) = election.take() {
            leading.release().await?;
        }
    }
    outcome
}

/// Starts the campaign for the Lease: the write gate follows it, readiness and `otau_leader`
/// follow this replica's role.
fn start_election(
    client: &Client,
    config: LeaseConfig,
    settings: &mut Settings,
    health: &Arc<Health>,
    metrics: &Metrics,
    advertise: watch::Receiver<Option<String>>,
) -> LeaderElection {
    let gate = WriteGate::leased();
    settings.write_gate = gate.clone();
    health.elect();
    metrics.leader.set(0);
    tracing::info!(
        lease = %config.name,
        namespace = %config.namespace,
        identity = %config.identity,
        duration = ?config.lease_duration,
        renew_deadline = ?config.renew_deadline,
        "leader election on"
    );
    let health = health.clone();
    let gauge = metrics.leader.clone();
    LeaderElection::start(client.clone(), config, gate, advertise, move |role| {
        health.set_role(role);
        gauge.set(i64::from(*role == Role::Leader));
        match role {
            Role::Leader => tracing::info!("this replica is the leader"),
            Role::Follower(holder) => tracing::info!(
                holder = holder.as_deref().unwrap_or("<unknown>"),
                "this replica is a follower"
            ),
            Role::Unknown => {}
        }
    })
}

fn ready<K>(store: Store<K>) -> BoxFuture<'static, ()>
where
    K: kube::Resource + Clone + 'static + Send + Sync,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
{
    // The store's readiness wakes only its most recent waiter (the controller's own runner
    // usually), so look again now and then instead of waiting once.
    async move {
        loop {
            let attempt =
                tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready());
            if attempt.await.is_ok() {
                return;
            }
        }
    }
    .boxed()
}

fn connector_controller(
    client: &Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    stop: Stop,
) -> (
    BoxFuture<'static, ()>,
    Store<DeserializeGuard<IoTConnector>>,
) {
    // The connector's own watch, with deletions (and re-lists) removing the deleted
    // connectors' metric series; Controller::new would hide deletions from us.
    let (store, writer) = reflector::store();
    let objects = {
        let (ctx, store, scope) = (ctx.clone(), store.clone(), namespace.map(str::to_string));
        reflector(
            writer,
            watcher::watcher(
                api::<DeserializeGuard<IoTConnector>>(client, namespace),
                watcher::Config::default(),
            ),
        )
        .inspect(move |event| {
            if matches!(
                event,
                Ok(watcher::Event::Delete(_) | watcher::Event::InitDone)
            ) {
                connector::prune_deleted(&ctx, &store, scope.as_deref());
            }
        })
        .applied_objects()
    };
    let controller = Controller::for_stream(objects, store)
        .with_config(ControllerConfig::default().concurrency(CONCURRENCY));
    let store = controller.store();
    let results =
        controller
            .graceful_shutdown_on(stop)
            .run(connector::reconcile, error_policy, ctx.clone());
    (
        report_results(results, ctx, CONNECTOR_CONTROLLER).boxed(),
        store,
    )
}

fn package_controller(
    client: &Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    stop: Stop,
) -> (
    BoxFuture<'static, ()>,
    Store<DeserializeGuard<SoftwarePackage>>,
) {
    let controller = Controller::new(
        api::<DeserializeGuard<SoftwarePackage>>(client, namespace),
        watcher::Config::default(),
    )
    .with_config(ControllerConfig::default().concurrency(CONCURRENCY));
    let store = controller.store();
    let by_connector = store.clone();
    let by_config_map = store.clone();
    let config_map_ctx = ctx.clone();
    let results = controller
        // A connector's change (Ready turning on or off) re-queues its packages.
        .watches(
            api::<DeserializeGuard<IoTConnector>>(client, namespace),
            watcher::Config::default(),
            move |connector| {
                let namespace = connector.namespace();
                let name = connector.name_any();
                by_connector
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == namespace
                            && p.0
                                .as_ref()
                                .is_ok_and(|p| p.spec.connector_ref.name == name)
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        // An edited ConfigMap file source re-reads the packages that use it (Secrets are
        // get-only: the periodic resync covers them, see package::sources). Only ConfigMaps
        // that opted in as package sources are watched (and cached); labelling one re-reads
        // the packages waiting for it.
        .watches(
            api::<k8s_openapi::api::core::v1::ConfigMap>(client, namespace),
            watcher::Config::default().labels(package::sources::WATCH_SELECTOR),
            move |config_map| {
                package::sources::packages_using_config_map(
                    &by_config_map,
                    &config_map_ctx,
                    &config_map,
                )
            },
        )
        // A Rollout's change (finishing, or being deleted) re-queues the package it uses, so
        // a deletion waiting for it goes on at once.
        .watches(
            api::<DeserializeGuard<Rollout>>(client, namespace),
            watcher::Config::default(),
            |rollout| {
                let namespace = rollout.namespace();
                rollout.0.ok().map(|r| {
                    let reference = ObjectRef::new(&r.spec.package_ref.name);
                    match namespace {
                        Some(ns) => reference.within(&ns),
                        None => reference,
                    }
                })
            },
        )
        .graceful_shutdown_on(stop)
        .run(package::reconcile, error_policy, ctx.clone());
    (
        report_results(results, ctx, PACKAGE_CONTROLLER).boxed(),
        store,
    )
}
