//! Control end to end: the failure threshold pauses at the expected wave with the numbers,
//! both ways of resuming continue, abort is terminal, and an approval gate waits until the
//! wave is approved.

use kube::api::Api;
use otau_operator::api::Rollout;

use crate::harness::{
    DEADLINE, Emu, Operator, apply, base_yaml, condition, event_reasons, has, kubectl, profile,
    rollout_yaml, wait_rollout,
};
use crate::support::{ControlPlane, wait_for};

/// Waves of 10 %, 40 %, 70 % and 100 %; a third of the fleet fails to install.
const FAILING_WAVES: &str = "  waves:\n    - percent: 10\n    - percent: 40\n    - percent: 70\n    - percent: 100\n  policy:\n    failureThreshold:\n      percent: 10\n      minFinished: 10\n";

fn written(emu: &Emu) -> usize {
    emu.writes().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_pause_resume_both_ways_and_abort_stops_every_write() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-failures").await;
    let emu = Emu::start(&profile(
        21,
        &[("ok-", 700, ""), ("bad-", 300, "install_error: 1")],
    ))
    .await;
    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &rollout_yaml("fw-bad", FAILING_WAVES));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    // Wave 1 (100 devices, about 30 failing) trips the threshold.
    let r = wait_rollout(&api, "fw-bad", "an automatic pause", |r| {
        has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    let s = r.status.clone().expect("status");
    assert_eq!(s.current_wave, 1);
    assert!(has(&r, "Stalled", "True", "FailureThresholdExceeded"));
    // Flux (kstatus) and Argo CD (our health check in its runtime) on what the operator wrote.
    assert_eq!(
        cp.gitops_verdicts(&ns, "rollout.otau.dev", "fw-bad"),
        ("Failed".to_owned(), "Degraded".to_owned())
    );
    let message = condition(&r, "Paused").expect("Paused").message;
    assert!(
        message.starts_with("wave 1: ")
            && message.contains("finished devices failed")
            && message.contains("over 10%"),
        "{message}"
    );
    // Nothing outside wave 1 was written, even while its devices kept finishing.
    let listings = op.two_more_listings(0.0).await;
    assert_eq!(written(&emu), 100, "only wave 1 is written");
    assert!(
        event_reasons(cp, &ns, "fw-bad")
            .iter()
            .any(|r| r == "AutoPaused"),
        "an AutoPaused event"
    );

    // Resume from Git: a new resumeToken. Wave 2 starts and trips again.
    let spec_with_token = format!("{FAILING_WAVES}  resumeToken: r1\n");
    apply(cp, &ns, &rollout_yaml("fw-bad", &spec_with_token));
    let r = wait_rollout(&api, "fw-bad", "paused again in wave 2", |r| {
        r.status.as_ref().is_some_and(|s| s.current_wave == 2)
            && has(r, "Paused", "True", "FailureThresholdExceeded")
    })
    .await;
    assert_eq!(
        r.status
            .as_ref()
            .and_then(|s| s.acted_on.resume_token.clone()),
        Some("r1".into())
    );
    let listings = op.two_more_listings(listings).await;
    assert_eq!(
        written(&emu),
        400,
        "waves 1 and 2 are written, nothing beyond"
    );

    // Resume with the one-shot annotation: wave 3 starts.
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "rollout.otau.dev/fw-bad",
            "otau.dev/resume=n1",
        ],
    );
    let r = wait_rollout(&api, "fw-bad", "wave 3", |r| {
        r.status.as_ref().is_some_and(|s| s.current_wave >= 3)
    })
    .await;
    assert_eq!(
        r.status.as_ref().and_then(|s| s.acted_on.resume.clone()),
        Some("n1".into())
    );

    // Abort: terminal, and nothing more is written.
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "rollout.otau.dev/fw-bad",
            "otau.dev/abort=a1",
        ],
    );
    let r = wait_rollout(&api, "fw-bad", "aborted", |r| {
        has(r, "Stalled", "True", "Aborted")
    })
    .await;
    assert_eq!(
        r.status.as_ref().and_then(|s| s.phase),
        Some(otau_operator::api::RolloutPhase::Aborted)
    );
    assert_eq!(
        cp.gitops_verdicts(&ns, "rollout.otau.dev", "fw-bad"),
        ("Failed".to_owned(), "Degraded".to_owned())
    );
    let at_abort = emu.writes();
    let listings = op.two_more_listings(listings).await;
    op.two_more_listings(listings).await;
    assert_eq!(emu.writes(), at_abort, "a write after the abort");
    assert!(at_abort.len() <= 700, "{} devices written", at_abort.len());
    // Never the same device twice for one attempt.
    assert!(
        at_abort.values().all(|w| w.len() == 1),
        "a device written twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_gate_waits_until_the_wave_is_approved() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-approval").await;
    let emu = Emu::start(&profile(31, &[("dev-", 200, "")])).await;
    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let gated = "  waves:\n    - percent: 50\n    - percent: 100\n      requireApproval: true\n";
    apply(cp, &ns, &rollout_yaml("fw-gate", gated));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let r = wait_rollout(&api, "fw-gate", "waiting for approval", |r| {
        has(r, "Paused", "True", "WaitingForApproval")
    })
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.current_wave), Some(1));
    // Waiting for a person: in progress for Flux, Suspended for Argo CD (docs/gitops.md).
    assert_eq!(
        cp.gitops_verdicts(&ns, "rollout.otau.dev", "fw-gate"),
        ("InProgress".to_owned(), "Suspended".to_owned())
    );
    let listings = op.two_more_listings(0.0).await;
    op.two_more_listings(listings).await;
    assert_eq!(emu.writes().len(), 100, "the gated wave waits");

    apply(
        cp,
        &ns,
        &rollout_yaml("fw-gate", &format!("{gated}  approvedWaves: 2\n")),
    );
    let r = wait_rollout(&api, "fw-gate", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.totals.succeeded), Some(200));
    assert_eq!(
        cp.gitops_verdicts(&ns, "rollout.otau.dev", "fw-gate"),
        ("Current".to_owned(), "Healthy".to_owned())
    );
    wait_for(DEADLINE, "every device written once", || {
        let w = emu.writes();
        async move { w.len() == 200 && w.values().all(|w| w.len() == 1) }
    })
    .await;
}
