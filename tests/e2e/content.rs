//! The package's content is checked to exist on the platform before each wave starts
//! (docs/rollouts.md "Content checked before each wave"): a content item deleted on the
//! platform between two waves holds the next wave, with the Rollout saying so, until the
//! package has uploaded it again; one content listing per wave start.

use std::collections::BTreeSet;

use tokio::time::Instant;

use kube::api::Api;
use otau_operator::api::{Rollout, SoftwarePackage};

use crate::harness::{
    CID, Emu, Group, MTOKEN, Operator, apply, base_yaml, condition, event_reasons, has, kubectl,
    profile_of, rollout_for, wait_rollout,
};
use crate::support::ControlPlane;
use crate::support::process::PACKAGE_SOURCE_OPT_IN;

/// The package of this test: one file from a ConfigMap, uploaded to the connector's content.
fn package_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fw-bin\n{PACKAGE_SOURCE_OPT_IN}data:\n  fw.bin: firmware 2.0.0\n---\napiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw-files\nspec:\n  connectorRef:\n    name: emulator\n  version: 2.0.0\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: fw-bin\n        key: fw.bin\n"
    )
}

/// The emulator's content listings (`GET …/content/item`) so far; only the check before a
/// wave lists content.
fn content_listings(emu: &Emu) -> usize {
    emu.log()
        .iter()
        .filter(|l| l.method == "GET" && l.path.ends_with(&format!("/service/{CID}/content/item")))
        .count()
}

/// The connector's content ids, from the emulator's model (ground truth).
fn content_ids(emu: &Emu) -> Vec<String> {
    emu.conn()
        .content()
        .list()
        .iter()
        .map(|i| i.id.clone())
        .collect()
}

/// When the emulator received the requests matching `keep`.
fn received(emu: &Emu, keep: impl Fn(&str, &str) -> bool) -> Vec<Instant> {
    emu.log()
        .iter()
        .filter(|l| keep(&l.method, &l.path))
        .map(|l| l.received)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_item_deleted_between_waves_holds_the_next_wave_until_it_is_back() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-content").await;
    let group = Group {
        prefix: "dev-",
        count: 40,
        version: "1.0.0",
        fleet: "e2e",
        outcomes: "",
    };
    let emu = Emu::start(&profile_of(47, &[group])).await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &package_yaml());
    let waves = "  waves:\n    - percent: 25\n    - percent: 100\n      requireApproval: true\n";
    let rollout = rollout_for("fw-content", "e2e", waves).replace(
        "packageRef:\n    name: fw\n",
        "packageRef:\n    name: fw-files\n",
    );
    assert!(rollout.contains("fw-files"));
    apply(cp, &ns, &rollout);
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    // Wave 1 runs and completes; wave 2 waits for approval. Its start listed content once.
    wait_rollout(&api, "fw-content", "wave 2 waiting for approval", |r| {
        has(r, "Paused", "True", "WaitingForApproval")
    })
    .await;
    assert_eq!(emu.writes().len(), 10, "wave 1 only");
    assert_eq!(content_listings(&emu), 1, "one content listing for wave 1");

    // The file's content item is deleted on the platform (management API).
    let item = format!("{ns}_fw-files_fw.bin");
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/api:1/service/{CID}/content/item/{item}",
            emu.base
        ))
        .header("Authorization", format!("token {MTOKEN}"))
        .send()
        .await
        .expect("delete the content item");
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert!(!content_ids(&emu).contains(&item));
    let deleted_at = Instant::now();

    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "rollout.otau.dev/fw-content",
            "otau.dev/approve=2:content",
        ],
    );
    let r = wait_rollout(&api, "fw-content", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.totals.succeeded), Some(40));

    // The Rollout said why it held, naming the item.
    let reasons = event_reasons(cp, &ns, "fw-content");
    assert!(reasons.iter().any(|r| r == "ContentMissing"), "{reasons:?}");
    let events = kubectl(
        cp,
        &[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "reason=ContentMissing",
            "-o",
            "json",
        ],
    );
    assert!(events.contains(&item), "the event names the item: {events}");
    // The item is back, uploaded again by the package, and every wave 2 write came after
    // that upload (both times on the emulator's clock): no device of wave 2 was sent to a
    // missing file.
    let uploaded_again = emu
        .conn()
        .content()
        .get(&item)
        .expect("the item was uploaded again")
        .last_modified;
    let records = emu.write_records();
    let wave1: BTreeSet<&String> = records
        .iter()
        .filter(|(_, w)| w[0].at < uploaded_again)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        wave1.len(),
        10,
        "only wave 1 was written before the item was back"
    );
    let wave2: Vec<i64> = records
        .iter()
        .filter(|(id, _)| !wave1.contains(id))
        .map(|(_, w)| {
            assert_eq!(w.len(), 1, "written once");
            w[0].at
        })
        .collect();
    assert_eq!(wave2.len(), 30);
    let first_wave2 = wave2.iter().min().copied().unwrap_or_default();
    assert!(
        first_wave2 >= uploaded_again,
        "{first_wave2} < {uploaded_again}"
    );
    assert!(
        received(&emu, |m, p| m != "GET" && p.ends_with("/state"))
            .into_iter()
            .filter(|at| *at > deleted_at)
            .count()
            == 30,
        "only wave 2 was written after the deletion"
    );
    // One listing found the item missing, one found it back: two for wave 2, three in all.
    assert_eq!(content_listings(&emu), 3);
    let packages: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = packages.get("fw-files").await.expect("package");
    let ready = package
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Registered")
    );
    assert!(condition(&r, "Ready").is_some_and(|c| c.status == "True"));
}
