//! A platform that refuses every `config_otau` write: the Rollout says so where people look
//! (Ready `Unknown` with reason `PlatformUnavailable`, a Warning event), counts no device as
//! notified, and once the platform accepts writes again it completes with one write per device.

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::api::rollout::RolloutPhase;
use otau_operator::emulator::faults::{FaultConfig, FaultRule};

use crate::harness::{
    Emu, Operator, apply, base_yaml, condition, event_reasons, profile, rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_are_reported_count_nothing_and_the_rollout_completes_once_they_pass() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-outage").await;
    let emu = Emu::start(&profile(61, &[("out-", 20, "")])).await;
    // Every request to a device's state (the config_otau write) answers 503; listings pass.
    let mut refuse = FaultRule::new("device2.state");
    refuse.error_rate = 1.0;
    emu.set_faults(FaultConfig {
        seed: 61,
        rules: vec![refuse],
        rate_limit: None,
    });
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(
        cp,
        &ns,
        &rollout_yaml(
            "fw-outage",
            "  waves:\n    - percent: 50\n    - percent: 100\n",
        ),
    );
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let refused = wait_rollout(
        &api,
        "fw-outage",
        "Ready=Unknown (PlatformUnavailable)",
        |r| {
            condition(r, "Ready").is_some_and(|c| {
                c.status == "Unknown"
                    && c.reason == "PlatformUnavailable"
                    && c.message.starts_with("config_otau writes fail: ")
            })
        },
    )
    .await;
    let status = refused.status.expect("status");
    assert_eq!(status.phase, Some(RolloutPhase::Progressing));
    assert_eq!(
        (status.totals.notified, status.totals.pending),
        (0, 20),
        "no device counts as notified while no write got through: {:?}",
        status.totals
    );
    assert!(emu.writes().is_empty(), "{:?}", emu.writes());
    assert!(
        event_reasons(cp, &ns, "fw-outage")
            .iter()
            .any(|r| r == "PlatformUnavailable"),
        "{:?}",
        event_reasons(cp, &ns, "fw-outage")
    );

    // The platform accepts writes again: both waves go out, each device written once.
    emu.set_faults(FaultConfig::default());
    let done = wait_rollout(&api, "fw-outage", "Complete", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(RolloutPhase::Complete))
    })
    .await;
    let ready = condition(&done, "Ready").expect("Ready");
    assert_eq!(ready.status, "True", "{ready:?}");
    let writes = emu.writes();
    assert_eq!(writes.len(), 20, "{writes:?}");
    assert!(writes.values().all(|w| w == &vec![Some(1)]), "{writes:?}");
}
