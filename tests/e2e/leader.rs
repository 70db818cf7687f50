//! Two operator replicas with `--leader-elect` (issue 7 item 4): exactly one holds the Lease
//! and writes; SIGKILL of the leader mid-rollout hands the rollout to the other with one write
//! per device and attempt; SIGTERM releases the Lease so the other takes over at once.

use std::time::{Duration, Instant};

use kube::api::Api;
use otau_operator::api::Rollout;

use crate::harness::{
    DEADLINE, Emu, FAST_LEASE, Operator, apply, base_yaml, has, lease_holder, profile,
    rollout_yaml, wait_rollout,
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
    // A follower's push receiver asks the sender to retry.
    let answer = reqwest::Client::new()
        .post(format!("http://{}/hooks/device2", b.push_addr))
        .body("{}")
        .send()
        .await
        .expect("POST to the follower");
    assert_eq!(answer.status().as_u16(), 503);
    assert_eq!(
        answer
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
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
