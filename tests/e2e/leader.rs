//! Two operator replicas with `--leader-elect`: exactly one holds the Lease
//! and writes; SIGKILL of the leader mid-rollout hands the rollout to the other with one write
//! per device and attempt; SIGTERM releases the Lease so the other takes over at once; the
//! follower forwards pushes to the push URL the leader advertises in the Lease, so a webhook
//! aimed at the follower still completes a push-only rollout.

use std::time::{Duration, Instant};

use kube::api::Api;
use otau_operator::api::Rollout;

use crate::harness::{
    DEADLINE, Emu, FAST_LEASE, Operator, WEBHOOK_KEY, apply, base_yaml, has, lease_holder,
    lease_json, metric_value, profile, rollout_yaml, wait_rollout,
};
use crate::support::{ControlPlane, wait_for};

const A: &str = "otau-e2e-lead-a";
const B: &str = "otau-e2e-lead-b";

/// Waits until the Lease in `ns` names `holder`; the time it took.
async fn wait_holder(cp: &ControlPlane, ns: &str, holder: &str) -> Duration {
    let started = Instant::now();
    wait_for(DEADLINE, &format!("{holder} to hold the Lease"), || {
        let now = lease_holder(cp, ns);
        async move { now.as_deref() == Some(holder) }
    })
    .await;
    started.elapsed()
}

/// The push URL the Lease `otau-operator` in `ns` advertises, read with kubectl.
fn lease_push_url(cp: &ControlPlane, ns: &str) -> Option<String> {
    lease_json(cp, ns)?["metadata"]["annotations"]["otau.dev/push-url"]
        .as_str()
        .map(str::to_string)
}

/// Status, `Retry-After` and body of `POST http://<addr><path>` with body `{}` and, when
/// given, an `x-otau-forwarded-by` header.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    forwarded_by: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(by) = forwarded_by {
        request = request.header("x-otau-forwarded-by", by);
    }
    let answer = request.send().await.expect("POST to a push receiver");
    let status = answer.status().as_u16();
    let retry = answer
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, retry, answer.text().await.unwrap_or_default())
}

/// Once A advertises its push URL in the Lease, B forwards pushes there and answers what A
/// answers (path and query included); a request already forwarded once gets 503.
async fn the_follower_forwards_pushes(cp: &ControlPlane, ns: &str, a: &Operator, b: &Operator) {
    let advertised = format!("http://{}", a.push_addr);
    wait_for(DEADLINE, "A to advertise its push URL in the Lease", || {
        let now = lease_push_url(cp, ns);
        let advertised = &advertised;
        async move { now.as_deref() == Some(advertised.as_str()) }
    })
    .await;
    // Unsigned: without a connector the leader answers 400, for an unknown one 401.
    let no_connector = "/hooks/device2";
    let unknown = "/hooks/device2?connector=nosuchcid";
    let from_a = post(a.push_addr, no_connector, None).await;
    let from_a_unknown = post(a.push_addr, unknown, None).await;
    assert_eq!(from_a.0, 400, "{from_a:?}");
    assert_eq!(from_a_unknown.0, 401, "{from_a_unknown:?}");
    // B learns the URL at its next Lease read (a retry period).
    wait_for(DEADLINE, "B to forward to A", || {
        let expected = &from_a;
        async move { post(b.push_addr, no_connector, None).await == *expected }
    })
    .await;
    assert_eq!(
        post(b.push_addr, unknown, None).await,
        from_a_unknown,
        "the query is forwarded too"
    );
    let looped = post(b.push_addr, no_connector, Some("x")).await;
    assert_eq!(
        (looped.0, looped.1.as_deref()),
        (503, Some("1")),
        "never forwarded twice: {looped:?}"
    );
    let metrics = b.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"otau_push_forwarded_total{outcome="forwarded"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, r#"otau_push_forwarded_total{outcome="failed"}"#),
        Some(0.0)
    );
}

/// Starts A, waits until it leads, then starts B as a follower, and checks their roles.
async fn two_replicas(cp: &ControlPlane, ns: &str, extra: &[&str]) -> (Operator, Operator) {
    let a = Operator::start_replica(cp, ns, A, extra).await;
    wait_holder(cp, ns, A).await;
    let b = Operator::start_replica(cp, ns, B, extra).await;
    // B is ready (it answered /readyz) and knows it follows.
    wait_for(DEADLINE, "B to report otau_leader 0", || {
        let b = &b;
        async move { b.leader_gauge().await == Some(0.0) }
    })
    .await;
    assert_eq!(a.leader_gauge().await, Some(1.0), "A leads");
    assert_eq!(
        lease_holder(cp, ns).as_deref(),
        Some(A),
        "exactly one holder"
    );
    the_follower_forwards_pushes(cp, ns, &a, &b).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_finishes_a_rollout_after_the_leader_is_killed_with_one_write_per_device() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-leader-kill").await;
    let emu = Emu::start(&profile(71, &[("lead-", 300, "")])).await;
    let (mut a, b) = two_replicas(cp, &ns, FAST_LEASE).await;

    // A low rate limit keeps the rollout running long enough to kill the leader mid-way.
    let base = base_yaml(&emu).replace(
        "requestsPerSecond: 5000\n    burst: 5000",
        "requestsPerSecond: 25\n    burst: 10",
    );
    assert_ne!(base, base_yaml(&emu), "the rate limit was lowered");
    apply(cp, &ns, &base);
    apply(
        cp,
        &ns,
        &rollout_yaml(
            "fw-lead",
            "  waves:\n    - percent: 10\n    - percent: 40\n    - percent: 100\n",
        ),
    );

    wait_for(DEADLINE, "the leader to write to 45 devices", || {
        let n = emu.writes().len();
        async move { n >= 45 }
    })
    .await;
    a.signal("KILL");
    let killed = Instant::now();
    let status = a.wait_exit(DEADLINE).await;
    assert!(!status.success(), "SIGKILL ends the process: {status:?}");
    let written_by_a = emu.writes().len();
    assert!(written_by_a < 300, "the leader was killed mid-rollout");

    wait_holder(cp, &ns, B).await;
    eprintln!(
        "takeover after SIGKILL: {:?} (lease 4s, renew deadline 3s)",
        killed.elapsed()
    );
    wait_for(DEADLINE, "B to report otau_leader 1", || {
        let b = &b;
        async move { b.leader_gauge().await == Some(1.0) }
    })
    .await;

    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, "fw-lead", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let totals = r.status.expect("status").totals;
    assert_eq!((totals.targeted, totals.succeeded), (300, 300));

    // Ground truth: each device got exactly one write, for attempt 1, from one replica.
    let records = emu.conn().ground_truth_all();
    assert_eq!(records.len(), 300, "devices written");
    let repeated: Vec<_> = records.iter().filter(|(_, w)| w.len() != 1).collect();
    assert!(repeated.is_empty(), "written more than once: {repeated:?}");
    assert!(records.values().flatten().all(|w| w.attempt == Some(1)));
    let by = |instance: &str| {
        records
            .values()
            .flatten()
            .filter(|w| w.client.contains(&format!("({instance})")))
            .count()
    };
    let (from_a, from_b) = (by(A), by(B));
    assert_eq!(from_a + from_b, 300, "every write came from A or B");
    assert!(
        from_a >= 45 && from_b > 0,
        "both replicas wrote: A {from_a}, B {from_b}"
    );
    eprintln!("writes: A {from_a}, B {from_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lease_and_the_follower_takes_over() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-leader-term").await;
    // The default lease (15s): without the release, B would wait at least 15s.
    let (mut a, b) = two_replicas(cp, &ns, &[]).await;

    a.signal("TERM");
    let asked = Instant::now();
    let status = a.wait_exit(DEADLINE).await;
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    assert!(
        a.logs().contains("released the leader lease"),
        "A released the Lease:\n{}",
        a.logs()
    );
    wait_holder(cp, &ns, B).await;
    eprintln!(
        "takeover after SIGTERM: {:?} (lease 15s, retry period 2s)",
        asked.elapsed()
    );
    wait_for(DEADLINE, "B to report otau_leader 1 and be ready", || {
        let b = &b;
        async move {
            let ready = reqwest::get(format!("http://{}/readyz", b.metrics_addr))
                .await
                .is_ok_and(|r| r.status().is_success());
            ready && b.leader_gauge().await == Some(1.0)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_exits_non_zero() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-leader-lost").await;
    let mut a = Operator::start_replica(cp, &ns, A, FAST_LEASE).await;
    wait_holder(cp, &ns, A).await;
    assert_eq!(a.leader_gauge().await, Some(1.0));

    // Someone else writes themselves into the Lease: A sees it at its next renewal.
    cp.kubectl_output(
        &[
            "patch",
            "leases.coordination.k8s.io",
            "otau-operator",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"holderIdentity":"intruder"}}"#,
        ],
        "",
    );
    let status = a.wait_exit(DEADLINE).await;
    assert_eq!(status.code(), Some(1), "exit status after losing the Lease");
    let logs = a.logs();
    assert!(
        logs.contains("lost the leader lease") && logs.contains("intruder"),
        "{logs}"
    );
    assert_eq!(lease_holder(cp, &ns).as_deref(), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_aimed_at_the_follower_completes_a_push_only_rollout() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-leader-push").await;
    let mut emu = Emu::start(&profile(73, &[("fwd-", 20, "")])).await;
    // One listing at the start (to learn the devices), then none within the test: only pushes
    // can bring the final reports.
    let slow = [
        "--poll-interval-active",
        "1h",
        "--poll-interval-idle",
        "1h",
        "--lease-duration",
        "4s",
        "--lease-renew-deadline",
        "3s",
    ];
    let (a, b) = two_replicas(cp, &ns, &slow).await;
    emu.push_to(b.push_addr, WEBHOOK_KEY);
    apply(cp, &ns, &base_yaml(&emu));
    apply(
        cp,
        &ns,
        &rollout_yaml("fw-fwd", "  waves:\n    - percent: 100\n"),
    );
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, "fw-fwd", "Complete by forwarded push", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    assert_eq!(r.status.expect("status").totals.succeeded, 20);
    let leader = a.metrics().await;
    assert_eq!(
        metric_value(&leader, r#"otau_device_listings_total{outcome="success"}"#),
        Some(1.0),
        "only the first listing ran"
    );
    let forwarded = metric_value(
        &b.metrics().await,
        r#"otau_push_forwarded_total{outcome="forwarded"}"#,
    )
    .unwrap_or(0.0);
    assert!(forwarded >= 20.0, "{forwarded} pushes forwarded by B");
}
