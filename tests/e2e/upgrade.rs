//! A fleet this operator rolled to one version, upgraded to the next (docs/rollouts.md, "Busy
//! and foreign devices"): the previous package's manifest is still in every `config_otau`, the
//! previous update finished, and the new Rollout writes every device exactly once, none of them
//! counted busy or foreign. Checked per device against the emulator's ground truth.

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::otau::{CONFIG_OTAU, Manifest, Report};

use crate::harness::{
    Emu, Group, Operator, VERSION, apply, base_yaml, has, identities, profile_of, rollout_for,
    wait_rollout,
};
use crate::support::ControlPlane;

/// The next version, a second package of the same connector.
const NEXT: &str = "2.1.0";
const NEXT_PACKAGE: &str = "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw-next\nspec:\n  connectorRef:\n    name: emulator\n  version: 2.1.0\n  links:\n    - https://vendor.example.com/fw/2.1.0/fw.img\n";
const DEVICES: u64 = 60;

/// The version of a device's last report, when it is `INSTALLED_VERSION`.
fn installed(emu: &Emu, id: &str) -> Option<String> {
    let r = Report::parse(&emu.reported(id, "otau_in")?).ok()?;
    (r.status.as_str() == "INSTALLED_VERSION").then_some(r.version)
}

/// The version of the manifest a device's `config_otau` holds.
fn holds(emu: &Emu, id: &str) -> Option<String> {
    let state = emu.conn().state(id).ok()?;
    let set = state.get(CONFIG_OTAU)?.set.clone()?;
    Manifest::parse(&set).ok().map(|m| m.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_of_a_fleet_this_operator_rolled_writes_every_device_once() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-upgrade").await;
    let group = Group {
        prefix: "dev-",
        count: DEVICES,
        version: "1.0.0",
        fleet: "e2e",
        outcomes: "",
    };
    let emu = Emu::start(&profile_of(71, &[group])).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    let waves = "  waves:\n    - percent: 20\n    - percent: 100\n";
    apply(cp, &ns, &rollout_for("fw-first", "e2e", waves));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    wait_rollout(&api, "fw-first", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let ids = identities("dev-", DEVICES);
    for id in &ids {
        assert_eq!(installed(&emu, id).as_deref(), Some(VERSION), "{id}");
        assert_eq!(holds(&emu, id).as_deref(), Some(VERSION), "{id}");
    }

    apply(cp, &ns, NEXT_PACKAGE);
    let next = rollout_for("fw-second", "e2e", waves).replace("name: fw\n", "name: fw-next\n");
    apply(cp, &ns, &next);
    let r = wait_rollout(&api, "fw-second", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let t = r.status.expect("status").totals;
    assert_eq!(
        (t.targeted, t.succeeded, t.busy, t.foreign, t.skipped),
        (DEVICES as i64, DEVICES as i64, 0, 0, 0),
        "{t:?}"
    );
    let records = emu.write_records();
    for id in &ids {
        let writes = records.get(id).expect("written");
        let attempts: Vec<Option<u64>> = writes.iter().map(|w| w.attempt).collect();
        assert_eq!(
            attempts,
            vec![Some(1), Some(1)],
            "{id}: one write per Rollout"
        );
        assert_eq!(installed(&emu, id).as_deref(), Some(NEXT), "{id}");
        assert_eq!(holds(&emu, id).as_deref(), Some(NEXT), "{id}");
    }
}
