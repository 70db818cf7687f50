//! A 1,000-device rollout in four waves runs to `Complete`, and the status agrees with the
//! emulator's ground truth.

use kube::api::Api;
use otau_operator::api::Rollout;

use crate::harness::{
    DEADLINE, Emu, INSTANCE, MTOKEN, Operator, WEBHOOK_KEY, apply, base_yaml, event_reasons, has,
    kubectl, metric_value, profile, rollout_yaml, wait_rollout,
};
use crate::support::{ControlPlane, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_in_four_waves_complete_with_one_write_each() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-complete").await;
    let emu = Emu::start(&profile(11, &[("dev-", 1000, "")])).await;
    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(
        cp,
        &ns,
        &rollout_yaml(
            "fw-all",
            "  waves:\n    - percent: 10\n    - percent: 25\n    - percent: 50\n    - percent: 100\n",
        ),
    );
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    // The plan is in status before the first wave completes.
    let r = wait_rollout(&api, "fw-all", "a wave plan", |r| {
        r.status.as_ref().is_some_and(|s| s.plan.is_some())
    })
    .await;
    let plan = r
        .status
        .as_ref()
        .and_then(|s| s.plan.clone())
        .expect("plan");
    assert_eq!(plan.targets, 1000);
    assert_eq!(plan.cumulative, vec![100, 250, 500, 1000]);

    // `kubectl wait` returns once the rollout completes.
    let out = kubectl(
        cp,
        &[
            "wait",
            "-n",
            &ns,
            "--for=condition=Complete",
            "--timeout=180s",
            "rollout.otau.dev/fw-all",
        ],
    );
    assert!(out.contains("condition met"), "{out}");
    let r = wait_rollout(&api, "fw-all", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let status = r.status.clone().expect("status");

    // Ground truth: every device written exactly once, attempt 1, by this operator.
    let writes = emu.writes();
    assert_eq!(writes.len(), 1000, "devices written");
    let repeated: Vec<_> = writes.iter().filter(|(_, w)| w.len() != 1).collect();
    assert!(repeated.is_empty(), "written more than once: {repeated:?}");
    assert!(writes.values().all(|w| w == &vec![Some(1)]));
    let writers = emu.writers();
    assert_eq!(writers.len(), 1, "{writers:?}");
    assert!(writers[0].contains(INSTANCE), "{writers:?}");

    // Counts and success rate equal what the devices report.
    let ids: Vec<String> = writes.keys().cloned().collect();
    let classes = emu.report_classes(&ids);
    assert_eq!(classes.get("succeeded").copied(), Some(1000), "{classes:?}");
    // The fleet's own summary is refreshed about once a second.
    wait_for(
        DEADLINE,
        "the fleet summary to count 1000 successes",
        || {
            let n = emu.fleet_successes();
            async move { n == 1000 }
        },
    )
    .await;
    let t = &status.totals;
    assert_eq!(
        (t.targeted, t.succeeded, t.failed, t.pending),
        (1000, 1000, 0, 0)
    );
    assert_eq!(status.success_rate.as_deref(), Some("100.0%"));
    assert_eq!(status.current_wave, 4);
    assert_eq!(status.waves.len(), 4);
    let per_wave: Vec<i64> = status.waves.iter().map(|w| w.counts.targeted).collect();
    assert_eq!(per_wave, vec![100, 150, 250, 500]);
    assert!(status.waves.iter().all(|w| w.completed_at.is_some()));
    let ready = crate::harness::condition(&r, "Ready").expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.observed_generation),
        ("True", r.metadata.generation)
    );

    // Events tell the story; metrics carry the counts.
    let reasons = event_reasons(cp, &ns, "fw-all");
    assert_eq!(
        reasons.iter().filter(|r| *r == "WaveStarted").count(),
        4,
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r == "RolloutComplete"),
        "{reasons:?}"
    );
    let metrics = op.metrics().await;
    let series = format!(
        r#"otau_rollout_devices{{namespace="{ns}",rollout="fw-all",state="succeeded",wave="4"}}"#
    );
    assert_eq!(metric_value(&metrics, &series), Some(500.0), "{series}");
    let written = format!(
        r#"otau_rollout_notifications_total{{namespace="{ns}",result="written",rollout="fw-all"}}"#
    );
    assert_eq!(metric_value(&metrics, &written), Some(1000.0));
    assert!(!metrics.contains("dev-0"), "a device id is a metric label");

    // No secret in the logs.
    let logs = op.logs();
    assert!(
        logs.contains("rollout event"),
        "the operator logged no rollout event"
    );
    assert!(
        !logs.contains(MTOKEN) && !logs.contains(WEBHOOK_KEY),
        "a secret in the logs"
    );
}
