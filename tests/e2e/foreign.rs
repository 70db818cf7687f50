//! Foreign devices end to end (docs/rollouts.md "Busy and foreign devices"): a device whose
//! `config_otau` holds a manifest no SoftwarePackage of the connector produced (written out of
//! band, as from the ExoSense UI) is never written under `policy.foreignManifests: Skip` and
//! counts as finished, shown `foreign` in status and by `kubectl otau`; under the default
//! `Notify` it is written once when its wave comes. Checked per device against the emulator's
//! ground truth (every `config_otau` cloud write, and the value the device holds).

use std::collections::BTreeSet;

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::emulator::model::CloudWriteRecord;
use otau_operator::otau::{CONFIG_OTAU, Manifest, Report};

use crate::harness::{
    DEADLINE, Emu, Group, Operator, apply, base_yaml, has, identities, metric_value, profile_of,
    rollout_for, wait_rollout,
};
use crate::policies::{STRICT_PACKAGE, strict_rollout_for};
use crate::support::process::{kubectl_otau_stdout, listed_identities};
use crate::support::{ControlPlane, wait_for};

/// The client name the out-of-band writes carry in the ground truth.
const EXOSENSE: &str = "exosense-ui";
/// The version of the out-of-band package.
const TOOL: &str = "7.7.0";
/// The version of [`STRICT_PACKAGE`], which the `Notify` Rollout rolls out.
const STRICT_VERSION: &str = "2.0.1";
/// Devices per fleet.
const N: u64 = 8;

/// What the emulator holds for one device's `config_otau`: the value set, the time of the
/// last write of either side, and every cloud write (time, client, attempt).
#[derive(Debug, PartialEq)]
struct Held {
    set: Option<String>,
    timestamp: i64,
    writes: Vec<(i64, String, Option<u64>)>,
}

fn held(emu: &Emu, id: &str) -> Held {
    let conn = emu.conn();
    let state = conn.state(id).expect("state");
    let config = state.get(CONFIG_OTAU).expect("config_otau");
    Held {
        set: config.set.clone(),
        timestamp: config.timestamp,
        writes: conn
            .ground_truth(id)
            .into_iter()
            .map(
                |CloudWriteRecord {
                     at,
                     client,
                     attempt,
                     ..
                 }| (at, client, attempt),
            )
            .collect(),
    }
}

/// Writes the tool's manifest to `ids` as ExoSense would and waits until each device has run
/// that update to its end (so it is foreign, not busy).
async fn install_out_of_band(emu: &Emu, ids: &BTreeSet<String>) {
    let conn = emu.conn();
    let tool = Manifest::url_list(
        TOOL,
        "Vendor tool",
        "",
        vec![format!("https://vendor.example.com/tool/{TOOL}.img")],
    );
    for id in ids {
        conn.set_state(id, &[(CONFIG_OTAU.into(), tool.to_json())], EXOSENSE)
            .expect("out-of-band write");
    }
    for id in ids {
        wait_for(DEADLINE, "the out-of-band update to end", || {
            let done = emu
                .reported(id, "otau_in")
                .and_then(|r| Report::parse(&r).ok())
                .is_some_and(|r| r.version == TOOL && r.status.as_str() == "INSTALLED_VERSION");
            async move { done }
        })
        .await;
    }
}

/// The operator's writes (not ExoSense's) to `id`, as attempts.
fn operator_writes(emu: &Emu, id: &str) -> Vec<Option<u64>> {
    emu.conn()
        .ground_truth(id)
        .iter()
        .filter(|w| w.client != EXOSENSE)
        .map(|w| w.attempt)
        .collect()
}

/// Two fleets of [`N`], three devices of each holding an out-of-band manifest. The Rollout with
/// `foreignManifests: Skip` completes without writing its three (the value, its time and the
/// writes on the platform are exactly what ExoSense left), counting them `foreign` in status,
/// in `kubectl otau status` and `devices --state foreign`, and in the metrics as finished
/// (`foreign_skipped`); its other devices succeed. The one with the default `Notify` writes
/// its three once each, like every other device, and they succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_foreign_devices_are_never_written_and_notified_ones_are_written_once() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-foreign").await;
    let emu = Emu::start(&profile_of(
        50,
        &[
            Group {
                prefix: "sk-",
                count: N,
                version: "1.0.0",
                fleet: "skip",
                outcomes: "",
            },
            Group {
                prefix: "nt-",
                count: N,
                version: "1.0.0",
                fleet: "notify",
                outcomes: "",
            },
        ],
    ))
    .await;
    let pick = |prefix: &str| -> BTreeSet<String> {
        [1, 4, 6]
            .into_iter()
            .map(|i| format!("{prefix}{i:06}"))
            .collect()
    };
    assert!(STRICT_PACKAGE.contains(&format!("version: {STRICT_VERSION}\n")));
    let (skip_foreign, notify_foreign) = (pick("sk-"), pick("nt-"));
    install_out_of_band(
        &emu,
        &skip_foreign.union(&notify_foreign).cloned().collect(),
    )
    .await;
    let before: Vec<(String, Held)> = skip_foreign
        .iter()
        .map(|id| (id.clone(), held(&emu, id)))
        .collect();

    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, STRICT_PACKAGE);
    let one_wave = "  waves:\n    - percent: 100\n";
    apply(
        cp,
        &ns,
        &rollout_for(
            "skipper",
            "skip",
            &format!("{one_wave}  policy:\n    foreignManifests: Skip\n"),
        ),
    );
    apply(cp, &ns, &strict_rollout_for("notifier", "notify", one_wave));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    let r = wait_rollout(&api, "skipper", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let t = r.status.clone().expect("status").totals;
    let others = N as i64 - skip_foreign.len() as i64;
    assert_eq!(
        (t.targeted, t.succeeded, t.foreign, t.pending, t.skipped),
        (N as i64, others, skip_foreign.len() as i64, 0, 0),
        "{t:?}"
    );
    // Ground truth: nothing of what ExoSense left changed, and the others were written once.
    for (id, was) in &before {
        assert_eq!(&held(&emu, id), was, "{id} was written");
    }
    for id in identities("sk-", N) {
        let want: Vec<Option<u64>> = if skip_foreign.contains(&id) {
            Vec::new()
        } else {
            vec![Some(1)]
        };
        assert_eq!(operator_writes(&emu, &id), want, "{id}");
    }

    // kubectl otau shows them foreign.
    let otau = |args: &[&str]| kubectl_otau_stdout(cp.kubeconfig(), &ns, args);
    let text = otau(&["status", "skipper"]);
    let line = format!("{others} succeeded, {} foreign\n", skip_foreign.len());
    assert!(text.contains(&line), "{line:?} not in:\n{text}");
    let listed = listed_identities(&otau(&[
        "devices", "skipper", "--state", "foreign", "-o", "json",
    ]));
    assert_eq!(listed, skip_foreign);

    // The metrics count them finished for the fleet-progress panel: as foreign_skipped.
    let metrics = op.metrics().await;
    assert_eq!(
        metric_value(&metrics, &devices_series(&ns, "skipper", "foreign_skipped")),
        Some(skip_foreign.len() as f64),
        "{metrics}"
    );

    // Notify: the foreign devices are written once when their wave comes, and succeed.
    let r = wait_rollout(&api, "notifier", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let t = r.status.clone().expect("status").totals;
    assert_eq!(
        (t.targeted, t.succeeded, t.foreign),
        (N as i64, N as i64, 0),
        "{t:?}"
    );
    for id in identities("nt-", N) {
        assert_eq!(operator_writes(&emu, &id), vec![Some(1)], "{id}");
        let report = emu
            .reported(&id, "otau_in")
            .and_then(|r| Report::parse(&r).ok())
            .map(|r| (r.status.as_str().to_owned(), r.version));
        assert_eq!(
            report,
            Some(("INSTALLED_VERSION".to_owned(), STRICT_VERSION.to_owned())),
            "{id}"
        );
    }
    let metrics = op.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            &devices_series(&ns, "notifier", "foreign_skipped")
        ),
        Some(0.0),
        "{metrics}"
    );
}

/// `otau_rollout_devices` of wave 1 of one Rollout in one state.
fn devices_series(namespace: &str, rollout: &str, state: &str) -> String {
    format!(
        r#"otau_rollout_devices{{namespace="{namespace}",rollout="{rollout}",state="{state}",wave="1"}}"#
    )
}
