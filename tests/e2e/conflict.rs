//! Two active Rollouts never fight over a device: the newer one waits with `TargetConflict`
//! naming the older, and runs once the older is aborted.

use kube::api::Api;
use otau_operator::api::Rollout;

use crate::harness::{
    Emu, Operator, apply, base_yaml, condition, has, profile, rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

const PACKAGE_2: &str = r#"apiVersion: otau.dev/v1alpha1
kind: SoftwarePackage
metadata:
  name: fw2
spec:
  connectorRef:
    name: emulator
  version: 2.1.0
  links:
    - https://vendor.example.com/fw/2.1.0/fw.img
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newer_of_two_overlapping_rollouts_waits_for_the_older() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-conflict").await;
    let emu = Emu::start(&profile(51, &[("dev-", 100, "")])).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, PACKAGE_2);
    let gated = "  waves:\n    - percent: 50\n    - percent: 100\n      requireApproval: true\n";
    apply(cp, &ns, &rollout_yaml("fw-a", gated));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    wait_rollout(&api, "fw-a", "waiting for approval", |r| {
        has(r, "Paused", "True", "WaitingForApproval")
    })
    .await;

    let newer =
        rollout_yaml("fw-b", "  waves:\n    - percent: 100\n").replace("name: fw\n", "name: fw2\n");
    apply(cp, &ns, &newer);
    let r = wait_rollout(&api, "fw-b", "TargetConflict", |r| {
        has(r, "Ready", "False", "TargetConflict")
    })
    .await;
    let message = condition(&r, "Ready").expect("Ready").message;
    assert!(
        message.contains("fw-a") && message.contains("100 targeted devices"),
        "{message}"
    );
    assert_eq!(r.status.as_ref().map(|s| s.current_wave), Some(0));
    assert_eq!(emu.writes().len(), 50, "only the older rollout wrote");

    // Abort the older one: the newer runs to the end.
    apply(
        cp,
        &ns,
        &rollout_yaml("fw-a", &format!("{gated}  abort: true\n")),
    );
    let r = wait_rollout(&api, "fw-b", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.totals.succeeded), Some(100));
    let writes = emu.writes();
    assert_eq!(writes.len(), 100);
    let twice = writes.values().filter(|w| w.len() == 2).count();
    assert_eq!(twice, 50, "fw-a's 50 devices then got fw-b's manifest once");
    assert!(writes.values().all(|w| w.len() <= 2));
}
