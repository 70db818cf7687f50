//! Leader election on a `coordination.k8s.io/v1` Lease (docs/architecture.md §9.8), which keeps
//! the write token (`super::write_gate`) open only while this replica may write.
//!
//! - [`LeaseConfig`] holds the flags (`--lease-name`, `--lease-namespace`, `--lease-duration`,
//!   `--lease-renew-deadline`) and refuses a renew deadline that is not shorter than the lease
//!   duration.
//! - [`LeaderElection`] runs the campaign in a task: it reads the Lease, takes it when it is
//!   free or expired, and, once held, renews it every retry period with updates conditional on
//!   the `resourceVersion` it read (a 409 means someone else wrote in between: nothing is
//!   overwritten). Expiry of another holder is judged by this replica's own clock: the Lease
//!   is expired once it has not changed for `leaseDurationSeconds` since this replica first saw
//!   its current version, so clock skew between nodes does not matter.
//! - The [`WriteGate`] (`super::write_gate`) is the "still leader" token. Each successful
//!   acquire or renew extends it to *the time the request was sent + the renew deadline*; every
//!   platform write checks it just before it is sent ([`WriteGate::guard`]). Another replica
//!   can take the Lease only after it saw no change for a whole lease duration, counted from
//!   after that request, so the token always runs out at least `lease duration - renew
//!   deadline` before anyone else may write.
//!
//! - The leader advertises where its push receiver listens in the Lease's
//!   [`PUSH_URL_ANNOTATION`] (written at each renewal, removed on release); followers read it
//!   at each attempt ([`LeaderElection::leader_push_url`]) and forward pushes there
//!   (`super::follower`).
//!
//! The Lease logic is written here rather than taken from `kube-lease-manager`: that crate
//! reports only "leader or not" changes, never when a renewal succeeded, and the token needs
//! exactly that time.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::{oneshot, watch};

use super::write_gate::WriteGate;

/// The Lease annotation in which the leader advertises the URL of its push receiver.
pub const PUSH_URL_ANNOTATION: &str = "otau.dev/push-url";

/// Checks `--push-advertise-url`: an `http` or `https` URL with a host and nothing after the
/// path (no credentials, query or fragment: it is written into the Lease, and the forwarded
/// request's path and query are appended to it). Returns it without a trailing `/`.
pub fn parse_advertise_url(text: &str) -> Result<String, String> {
    let example = "such as http://10.1.2.3:8081";
    let url = url::Url::parse(text.trim())
        .map_err(|e| format!("--push-advertise-url {text:?} is not a URL {example}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "--push-advertise-url {text:?} must use http or https, {example}"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "--push-advertise-url {text:?} has no host: use a URL {example}"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "--push-advertise-url must not carry a user name or password: it is written into \
             the Lease, which others can read"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "--push-advertise-url {text:?} must not have a query or fragment: the pushed \
             request's path and query are appended to it"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// The URL the leader advertises for its push receiver bound to `bound`: `explicit`
/// (`--push-advertise-url`, already checked) when given; else `http://<bound>` when it is bound
/// to a specific IP; else, bound to 0.0.0.0 or ::, `http://<pod_ip>:<port>` when `pod_ip`
/// (`$POD_IP`) is an IP address; else none (followers then answer pushes with 503).
pub fn advertise_url(
    explicit: Option<&str>,
    bound: SocketAddr,
    pod_ip: Option<&str>,
) -> Option<String> {
    if let Some(url) = explicit {
        return Some(url.to_string());
    }
    if !bound.ip().is_unspecified() {
        return Some(format!("http://{bound}"));
    }
    let ip: IpAddr = pod_ip?.trim().parse().ok()?;
    (!ip.is_unspecified()).then(|| format!("http://{}", SocketAddr::new(ip, bound.port())))
}

/// How this replica takes part in leader election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity in `holderIdentity` (the instance / pod name).
    pub identity: String,
    /// How long others wait after the last change before they take the Lease.
    pub lease_duration: Duration,
    /// How long after the start of its last successful renewal the holder may still write.
    pub renew_deadline: Duration,
}

impl LeaseConfig {
    /// Checks the values: names not empty, lease duration at least one second, renew deadline
    /// positive and shorter than the lease duration.
    pub fn new(
        name: &str,
        namespace: &str,
        identity: &str,
        lease_duration: Duration,
        renew_deadline: Duration,
    ) -> Result<Self, String> {
        if name.trim().is_empty() {
            return Err("--lease-name must not be empty".to_string());
        }
        if namespace.trim().is_empty() {
            return Err("--lease-namespace must not be empty".to_string());
        }
        if identity.trim().is_empty() {
            return Err("the leader election identity (--instance) must not be empty".to_string());
        }
        if lease_duration < Duration::from_secs(1) {
            return Err(format!(
                "--lease-duration {lease_duration:?} is too short: use at least 1s"
            ));
        }
        if renew_deadline.is_zero() {
            return Err("--lease-renew-deadline must be longer than 0s".to_string());
        }
        if renew_deadline >= lease_duration {
            return Err(format!(
                "--lease-renew-deadline ({renew_deadline:?}) must be shorter than --lease-duration \
                 ({lease_duration:?}): the leader stops writing at the renew deadline, and the gap \
                 up to the lease duration is what keeps two replicas from writing at the same time"
            ));
        }
        Ok(LeaseConfig {
            name: name.trim().to_string(),
            namespace: namespace.trim().to_string(),
            identity: identity.trim().to_string(),
            lease_duration,
            renew_deadline,
        })
    }

    /// Time between two attempts to take or renew the Lease: a fifth of the renew deadline,
    /// between 100 ms and 2 s (2 s with the defaults, as client-go).
    pub fn retry_period(&self) -> Duration {
        (self.renew_deadline / 5).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// `leaseDurationSeconds`: the lease duration rounded up to whole seconds.
    pub fn lease_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// What this replica knows about the Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not known yet (no attempt finished).
    Unknown,
    /// Another replica holds the Lease (its identity, when the Lease names one).
    Follower(Option<String>),
    /// This replica holds the Lease.
    Leader,
}

/// What the campaign should do with the Lease as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// No Lease: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    TakeOver,
    /// Someone else holds it and it is current.
    Wait,
}

/// Decides from the Lease as read, this replica's identity, and whether the current version
/// has been unchanged (in this replica's view) for longer than its lease duration.
fn decide(lease: Option<&Lease>, me: &str, unchanged_too_long: bool) -> Step {
    let Some(lease) = lease else {
        return Step::Create;
    };
    let holder = holder_of(lease);
    match holder {
        Some(h) if h == me => Step::Renew,
        None => Step::TakeOver,
        Some(_) if unchanged_too_long => Step::TakeOver,
        Some(_) => Step::Wait,
    }
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn lease_seconds_of(lease: &Lease) -> Duration {
    let secs = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(1)
        .max(1);
    Duration::from_secs(u64::try_from(secs).unwrap_or(1))
}

/// The push URL a Lease advertises ([`PUSH_URL_ANNOTATION`]), if any.
fn push_url_of(lease: &Lease) -> Option<String> {
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(PUSH_URL_ANNOTATION)
        .filter(|u| !u.trim().is_empty())
        .cloned()
}

/// Sets (or, with `None`, removes) the [`PUSH_URL_ANNOTATION`]; other annotations stay.
fn set_push_url(metadata: &mut ObjectMeta, url: Option<&str>) {
    match url {
        Some(url) => {
            metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(PUSH_URL_ANNOTATION.to_string(), url.to_string());
        }
        None => {
            if let Some(annotations) = metadata.annotations.as_mut() {
                annotations.remove(PUSH_URL_ANNOTATION);
            }
        }
    }
}

/// The Lease after this replica acquires or renews it, advertising `push_url` (a previous
/// holder's URL is removed when this replica has none).
fn held(config: &LeaseConfig, current: Option<&Lease>, push_url: Option<&str>) -> Lease {
    let now = MicroTime(Timestamp::now());
    let previous = current.and_then(|l| l.spec.clone()).unwrap_or_default();
    let ours = previous.holder_identity.as_deref() == Some(config.identity.as_str());
    let mut metadata = ObjectMeta {
        name: Some(config.name.clone()),
        namespace: Some(config.namespace.clone()),
        resource_version: current.and_then(|l| l.metadata.resource_version.clone()),
        ..current.map(|l| l.metadata.clone()).unwrap_or_default()
    };
    set_push_url(&mut metadata, push_url);
    Lease {
        metadata,
        spec: Some(LeaseSpec {
            holder_identity: Some(config.identity.clone()),
            lease_duration_seconds: Some(config.lease_seconds()),
            acquire_time: if ours {
                previous.acquire_time.clone().or_else(|| Some(now.clone()))
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: match (ours, current) {
                (true, _) | (false, None) => previous.lease_transitions.or(Some(0)),
                (false, Some(_)) => Some(previous.lease_transitions.unwrap_or(0) + 1),
            },
            ..previous
        }),
    }
}

/// The Lease after its holder gives it up: no holder, a one-second duration (so nobody waits
/// for it), and no push URL.
fn released(lease: &Lease) -> Lease {
    let mut released = lease.clone();
    set_push_url(&mut released.metadata, None);
    if let Some(spec) = released.spec.as_mut() {
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
    }
    released
}

/// The outcome of one attempt.
#[derive(Debug)]
enum Attempt {
    /// We hold the Lease.
    Leading,
    /// Someone else does.
    Following(Option<String>),
}

/// The campaign's state between attempts.
struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    gate: WriteGate,
    /// The last version seen and when (by this replica's clock) it was first seen.
    observed: Option<(String, Instant)>,
    /// The URL this replica advertises while it leads (known once its receiver listens).
    advertise: watch::Receiver<Option<String>>,
    /// The URL the current leader advertises, as last read (`None` while leading).
    leader_push: watch::Sender<Option<String>>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    /// Reads the Lease and takes, renews or leaves it. On success as holder, the gate is
    /// extended to the time the read was sent plus the renew deadline.
    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let sent = Instant::now();
        let current = self.api.get_opt(&self.config.name).await?;
        let unchanged_too_long = match &current {
            Some(lease) => {
                let version = lease.metadata.resource_version.clone().unwrap_or_default();
                let since = match &self.observed {
                    Some((seen, at)) if *seen == version => *at,
                    _ => {
                        self.observed = Some((version, sent));
                        sent
                    }
                };
                sent.saturating_duration_since(since) > lease_seconds_of(lease)
            }
            None => false,
        };
        let step = decide(current.as_ref(), &self.config.identity, unchanged_too_long);
        let advertise = self.advertise.borrow().clone();
        let result = match step {
            Step::Wait => {
                self.leader_push
                    .send_replace(current.as_ref().and_then(push_url_of));
                return Ok(Attempt::Following(
                    current.as_ref().and_then(holder_of).map(str::to_string),
                ));
            }
            Step::Create => {
                self.api
                    .create(
                        &PostParams::default(),
                        &held(&self.config, None, advertise.as_deref()),
                    )
                    .await
            }
            Step::Renew | Step::TakeOver => {
                self.api
                    .replace(
                        &self.config.name,
                        &PostParams::default(),
                        &held(&self.config, current.as_ref(), advertise.as_deref()),
                    )
                    .await
            }
        };
        match result {
            Ok(lease) => {
                self.gate.extend_to(sent + self.config.renew_deadline);
                self.observed = lease.metadata.resource_version.map(|v| (v, Instant::now()));
                self.leader_push.send_replace(None);
                if step != Step::Renew {
                    tracing::info!(lease = %self.config.name, namespace = %self.config.namespace, identity = %self.config.identity, "acquired the leader lease");
                }
                Ok(Attempt::Leading)
            }
            // Someone else wrote the Lease between our read and our write: theirs stands. Read
            // it once more to name the holder (for the log and the exit message); if that read
            // fails too, the holder is simply unknown.
            Err(e) if is_conflict(&e) => {
                let now = self.api.get_opt(&self.config.name).await.ok().flatten();
                self.leader_push
                    .send_replace(now.as_ref().and_then(push_url_of));
                Ok(Attempt::Following(
                    now.as_ref().and_then(holder_of).map(str::to_string),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it (holder cleared, so a follower takes it at its next
    /// attempt). The gate is closed first.
    async fn release(&mut self) -> Result<(), kube::Error> {
        self.gate.revoke();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        if holder_of(&lease) != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        self.api
            .replace(&self.config.name, &PostParams::default(), &released(&lease))
            .await?;
        tracing::info!(lease = %self.config.name, "released the leader lease");
        Ok(())
    }
}

/// The running campaign.
pub struct LeaderElection {
    role: watch::Receiver<Role>,
    leader_push: watch::Receiver<Option<String>>,
    release: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl LeaderElection {
    /// Starts campaigning for the Lease. `on_role` is called at each change of role (for
    /// readiness and the `otau_leader` gauge). The gate opens while the Lease is held. While
    /// leading, each renewal advertises the latest value of `advertise` in the Lease.
    pub fn start(
        client: kube::Client,
        config: LeaseConfig,
        gate: WriteGate,
        advertise: watch::Receiver<Option<String>>,
        on_role: impl Fn(&Role) + Send + Sync + 'static,
    ) -> LeaderElection {
        let (role_tx, role) = watch::channel(Role::Unknown);
        let (leader_push_tx, leader_push) = watch::channel(None);
        let (release, release_rx) = oneshot::channel();
        let elector = Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            gate,
            observed: None,
            advertise,
            leader_push: leader_push_tx,
        };
        let publish = move |new: Role| {
            role_tx.send_if_modified(|current| {
                if *current == new {
                    false
                } else {
                    on_role(&new);
                    *current = new;
                    true
                }
            });
        };
        let task = tokio::spawn(campaign(elector, publish, release_rx));
        LeaderElection {
            role,
            leader_push,
            release: Some(release),
            task,
        }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// The push URL the current leader advertises, as read at this replica's last attempt
    /// (`None` when it advertises none, or while this replica leads).
    pub fn leader_push_url(&self) -> watch::Receiver<Option<String>> {
        self.leader_push.clone()
    }

    /// Completes once this replica holds the Lease; an error when the campaign ended.
    pub async fn leading(&mut self) -> Result<(), String> {
        loop {
            if *self.role.borrow_and_update() == Role::Leader {
                return Ok(());
            }
            if self.role.changed().await.is_err() {
                return Err(self.ended().await);
            }
        }
    }

    /// Completes when the campaign ends before [`release`](Self::release) was asked (the
    /// Lease was lost): why.
    pub async fn ended(&mut self) -> String {
        match (&mut self.task).await {
            Ok(Ok(())) => "leader election stopped unexpectedly".to_string(),
            Ok(Err(message)) => message,
            Err(e) => format!("the leader election task failed: {e}"),
        }
    }

    /// Closes the gate and gives the Lease up (after the controllers drained).
    pub async fn release(mut self) -> Result<(), String> {
        if let Some(release) = self.release.take() {
            let _ = release.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(format!("the leader election task failed: {e}")),
        }
    }
}

/// Campaigns until told to release (then releases and returns `Ok`) or the Lease is lost
/// (returns why).
async fn campaign(
    mut elector: Elector,
    publish: impl Fn(Role),
    mut release: oneshot::Receiver<()>,
) -> Result<(), String> {
    let retry = elector.config.retry_period();
    let mut leading = false;
    loop {
        let limit = if leading {
            elector.gate.remaining().unwrap_or_default()
        } else {
            elector.config.renew_deadline
        };
        let attempt = tokio::select! {
            _ = &mut release => return release_at_exit(&mut elector).await,
            attempt = tokio::time::timeout(limit, elector.attempt()) => attempt,
        };
        match attempt {
            Ok(Ok(Attempt::Leading)) => {
                leading = true;
                publish(Role::Leader);
            }
            Ok(Ok(Attempt::Following(holder))) if leading => {
                elector.gate.revoke();
                publish(Role::Follower(holder.clone()));
                return Err(format!(
                    "lost the leader lease {}/{} to {}; exiting so that this replica restarts as a follower",
                    elector.config.namespace,
                    elector.config.name,
                    holder.as_deref().unwrap_or("another replica")
                ));
            }
            Ok(Ok(Attempt::Following(holder))) => publish(Role::Follower(holder)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, lease = %elector.config.name, "leader lease attempt failed");
            }
            Err(_) => {
                tracing::warn!(lease = %elector.config.name, "leader lease attempt timed out");
            }
        }
        if leading && !elector.gate.may_write() {
            elector.gate.revoke();
            publish(Role::Follower(None));
            return Err(format!(
                "could not renew the leader lease {}/{} within --lease-renew-deadline ({:?}); \
                 stopped writing and exiting",
                elector.config.namespace, elector.config.name, elector.config.renew_deadline
            ));
        }
        tokio::select! {
            _ = &mut release => return release_at_exit(&mut elector).await,
            () = tokio::time::sleep(retry) => {}
        }
    }
}

/// Releases at shutdown; a failure only delays the successor by one lease duration.
async fn release_at_exit(elector: &mut Elector) -> Result<(), String> {
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "could not release the leader lease; it expires on its own");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(duration: u64, deadline: u64) -> Result<LeaseConfig, String> {
        LeaseConfig::new(
            "otau-operator",
            "default",
            "pod-a",
            Duration::from_secs(duration),
            Duration::from_secs(deadline),
        )
    }

    fn lease(holder: Option<&str>, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("otau-operator".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(15),
                acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_renew_deadline_not_shorter_than_the_lease_is_refused() {
        let equal = config(15, 15).unwrap_err();
        assert!(
            equal.contains("--lease-renew-deadline")
                && equal.contains("shorter than --lease-duration"),
            "{equal}"
        );
        assert!(config(10, 15).is_err());
        assert!(config(0, 0).unwrap_err().contains("at least 1s"));
        let ok = config(15, 10).expect("the defaults are valid");
        assert_eq!(ok.retry_period(), Duration::from_secs(2));
        assert_eq!(ok.lease_seconds(), 15);
        let short = LeaseConfig::new(
            "l",
            "ns",
            "a",
            Duration::from_millis(1500),
            Duration::from_millis(300),
        )
        .expect("valid");
        assert_eq!(short.lease_seconds(), 2, "rounded up");
        assert_eq!(short.retry_period(), Duration::from_millis(100));
        assert!(
            LeaseConfig::new(
                "l",
                "ns",
                " ",
                Duration::from_secs(2),
                Duration::from_secs(1)
            )
            .unwrap_err()
            .contains("--instance")
        );
    }

    #[test]
    fn the_campaign_takes_only_a_free_expired_or_own_lease() {
        assert_eq!(decide(None, "pod-a", false), Step::Create);
        assert_eq!(
            decide(Some(&lease(Some("pod-a"), 0)), "pod-a", false),
            Step::Renew
        );
        assert_eq!(
            decide(Some(&lease(None, 0)), "pod-a", false),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some(""), 0)), "pod-a", false),
            Step::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(Some("pod-b"), 0)), "pod-a", false),
            Step::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("pod-b"), 0)), "pod-a", true),
            Step::TakeOver
        );
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let c = config(15, 10).expect("config");
        let taken = held(&c, Some(&lease(Some("pod-b"), 3)), None);
        let spec = taken.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_ne!(spec.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(
            taken.metadata.resource_version.as_deref(),
            Some("7"),
            "conditional"
        );
        let renewed = held(&c, Some(&lease(Some("pod-a"), 3)), None)
            .spec
            .expect("spec");
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert!(renewed.renew_time.is_some());
        let created = held(&c, None, None);
        assert_eq!(created.metadata.resource_version, None);
        assert_eq!(created.spec.expect("spec").lease_transitions, Some(0));
    }

    #[test]
    fn the_holder_advertises_its_push_url_and_removes_it_on_release() {
        let c = config(15, 10).expect("config");
        let mut theirs = lease(Some("pod-b"), 1);
        theirs.metadata.annotations = Some(
            [
                ("team".to_string(), "iot".to_string()),
                (
                    PUSH_URL_ANNOTATION.to_string(),
                    "http://10.0.0.2:8081".to_string(),
                ),
            ]
            .into(),
        );
        assert_eq!(
            push_url_of(&theirs).as_deref(),
            Some("http://10.0.0.2:8081")
        );

        let ours = held(&c, Some(&theirs), Some("http://10.0.0.1:8081"));
        let annotations = ours.metadata.annotations.clone().expect("annotations");
        assert_eq!(
            annotations.get(PUSH_URL_ANNOTATION).map(String::as_str),
            Some("http://10.0.0.1:8081"),
            "our URL replaces the previous holder's"
        );
        assert_eq!(
            annotations.get("team").map(String::as_str),
            Some("iot"),
            "other annotations stay"
        );

        let without = held(&c, Some(&theirs), None);
        assert_eq!(
            push_url_of(&without),
            None,
            "no URL of ours: the previous holder's is not left behind"
        );
        assert!(
            without
                .metadata
                .annotations
                .expect("kept")
                .contains_key("team")
        );

        let created = held(&c, None, Some("http://10.0.0.1:8081"));
        assert_eq!(
            push_url_of(&created).as_deref(),
            Some("http://10.0.0.1:8081")
        );

        let given_up = released(&ours);
        assert_eq!(push_url_of(&given_up), None, "release removes the URL");
        assert!(
            given_up
                .metadata
                .annotations
                .expect("kept")
                .contains_key("team")
        );
        let spec = given_up.spec.expect("spec");
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_duration_seconds, Some(1));
    }

    #[test]
    fn the_advertised_push_url_follows_the_flag_the_bound_address_or_pod_ip() {
        let any: SocketAddr = "0.0.0.0:8081".parse().expect("addr");
        let any6: SocketAddr = "[::]:8081".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:40123".parse().expect("addr");
        assert_eq!(
            advertise_url(Some("https://push.example:443"), local, Some("10.1.2.3")).as_deref(),
            Some("https://push.example:443"),
            "the flag wins"
        );
        assert_eq!(
            advertise_url(None, local, Some("10.1.2.3")).as_deref(),
            Some("http://127.0.0.1:40123"),
            "a specific bound IP"
        );
        assert_eq!(
            advertise_url(None, any, Some(" 10.1.2.3 ")).as_deref(),
            Some("http://10.1.2.3:8081")
        );
        assert_eq!(
            advertise_url(None, any6, Some("fd00::7")).as_deref(),
            Some("http://[fd00::7]:8081")
        );
        assert_eq!(advertise_url(None, any, None), None);
        assert_eq!(advertise_url(None, any, Some("not-an-ip")), None);
        assert_eq!(advertise_url(None, any, Some("0.0.0.0")), None);
    }

    #[test]
    fn the_advertise_url_flag_is_checked() {
        assert_eq!(
            parse_advertise_url(" http://10.1.2.3:8081/ ").as_deref(),
            Ok("http://10.1.2.3:8081")
        );
        assert_eq!(
            parse_advertise_url("https://push.example/otau").as_deref(),
            Ok("https://push.example/otau")
        );
        for bad in [
            "10.1.2.3:8081",
            "ftp://10.1.2.3",
            "http://",
            "http://user:pw@10.1.2.3",
            "http://10.1.2.3/?a=b",
            "",
        ] {
            let message = parse_advertise_url(bad).expect_err(bad);
            assert!(message.contains("--push-advertise-url"), "{bad}: {message}");
            assert!(!message.contains("pw"), "no secret echoed: {message}");
        }
    }
}
