//! The canary holds across a delete and re-apply: a Rollout paused by its failing canary is
//! deleted and applied again (as a GitOps re-create does). The new object gets the same device
//! order (`<namespace>/<name>`), so its canary already holds failure reports for the same
//! manifest; it pauses on them before any other wave starts. The emulator's ground truth shows
//! that no device beyond the canary was ever written.

use std::collections::BTreeSet;

use kube::api::Api;
use otau_operator::api::Rollout;

use crate::harness::{
    Emu, Group, Operator, apply, base_yaml, has, identities, kubectl, profile_of, rollout_for,
    rollout_order, wait_rollout,
};
use crate::support::ControlPlane;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reapplied_rollout_pauses_on_its_failed_canary_without_writing_beyond_it() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-canary").await;
    let emu = Emu::start(&profile_of(
        43,
        &[Group {
            prefix: "bad-",
            count: 100,
            version: "1.0.0",
            fleet: "e2e",
            outcomes: "install_error: 1",
        }],
    ))
    .await;
    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let name = "canary";
    let spec = "  waves:\n    - count: 5\n    - percent: 50\n    - percent: 100\n  policy:\n    deviceTimeout: 2m\n    failureThreshold:\n      percent: 10\n      minFinished: 3\n";
    let yaml = rollout_for(name, "e2e", spec);
    let canary: BTreeSet<String> = rollout_order(&format!("{ns}/{name}"), &identities("bad-", 100))
        [..5]
        .iter()
        .cloned()
        .collect();
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let canary_all_failed = |r: &Rollout| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
            && r.status
                .as_ref()
                .is_some_and(|s| s.waves.first().is_some_and(|w| w.counts.failed == 5))
    };

    // The first object pauses on its canary once every canary device failed.
    apply(cp, &ns, &yaml);
    let first = wait_rollout(&api, name, "paused on the canary", canary_all_failed).await;
    let first_uid = first.metadata.uid.clone().expect("uid");
    let written = |emu: &Emu| emu.writes().into_keys().collect::<BTreeSet<String>>();
    assert_eq!(written(&emu), canary, "the first object wrote its canary");

    // Delete it and apply the same YAML again: a new object, the same canary.
    kubectl(
        cp,
        &[
            "delete",
            "-n",
            &ns,
            &format!("rollouts.otau.dev/{name}"),
            "--wait=true",
        ],
    );
    apply(cp, &ns, &yaml);
    let second = wait_rollout(
        &api,
        name,
        "the new object paused on the same canary",
        |r| r.metadata.uid.as_deref() != Some(first_uid.as_str()) && canary_all_failed(r),
    )
    .await;
    let s = second.status.clone().expect("status");
    assert_eq!(s.current_wave, 1, "wave 2 never started: {s:?}");
    let held = &s.plan.as_ref().expect("plan").held;
    assert_eq!(
        held[0].failed, 5,
        "the plan shows the canary's earlier failures"
    );
    assert_eq!(s.waves[0].counts.failed, 5);
    let message = crate::harness::condition(&second, "Paused")
        .expect("Paused")
        .message;
    assert!(
        message.starts_with("wave 1: 5 of 5 finished devices failed (100.0%)"),
        "{message}"
    );

    // The operator reads the whole fleet twice more and still writes nothing: no device
    // beyond the canary was ever written, and the canary only once (no retries configured).
    let listings = op.listings().await;
    op.two_more_listings(listings).await;
    let writes = emu.writes();
    assert_eq!(
        writes.keys().cloned().collect::<BTreeSet<_>>(),
        canary,
        "only the canary was ever written"
    );
    assert!(
        writes.values().all(|w| w == &vec![Some(1)]),
        "each canary device once, attempt 1: {writes:?}"
    );
}
