//! The package's content is checked to exist on the platform before devices are written
//! (docs/rollouts.md "Content checked before devices are written"): a content item deleted on
//! the platform between two waves holds the next wave, with the Rollout saying so, until the
//! package has uploaded it again, one content listing per wave start; a late joiner of a wave
//! that started before the deletion is not written either, with at most one listing per
//! `--content-check-interval`.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use kube::api::Api;
use otau_operator::api::{Rollout, SoftwarePackage};

use crate::harness::{
    CID, DEADLINE, Emu, Group, MTOKEN, Operator, apply, base_yaml, condition, event_reasons, has,
    identities, kubectl, profile_of, rollout_for, rollout_order, wait_rollout,
};
use crate::support::process::PACKAGE_SOURCE_OPT_IN;
use crate::support::{ControlPlane, wait_for};

/// The package of this test: one file from a ConfigMap, uploaded to the connector's content.
fn package_yaml() -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fw-bin\n{PACKAGE_SOURCE_OPT_IN}data:\n  fw.bin: firmware 2.0.0\n---\napiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw-files\nspec:\n  connectorRef:\n    name: emulator\n  version: 2.0.0\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: fw-bin\n        key: fw.bin\n"
    )
}

/// Whether a request is a content listing (`GET …/content/item`): only the content check
/// lists content.
fn is_content_listing(method: &str, path: &str) -> bool {
    method == "GET" && path.ends_with(&format!("/service/{CID}/content/item"))
}

/// The emulator's content listings so far.
fn content_listings(emu: &Emu) -> usize {
    received(emu, is_content_listing).len()
}

/// When the item `item` was last uploaded (the emulator's clock); panics when it is missing.
fn uploaded_again(emu: &Emu, item: &str) -> i64 {
    emu.conn()
        .content()
        .get(item)
        .expect("the item was uploaded again")
        .last_modified
}

/// Deletes the connector's content item `item` through the management API (as a user or a
/// platform reset would).
async fn delete_item(emu: &Emu, item: &str) {
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
    assert!(!content_ids(emu).contains(&item.to_owned()));
}

/// The notes of the Events with `reason` about the `kind` object `name`.
fn event_notes(
    cp: &ControlPlane,
    namespace: &str,
    kind: &str,
    name: &str,
    reason: &str,
) -> Vec<String> {
    let text = kubectl(
        cp,
        &["get", "events.events.k8s.io", "-n", namespace, "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("events JSON");
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["regarding"]["kind"] == kind
                && e["regarding"]["name"] == name
                && e["reason"] == reason
        })
        .map(|e| e["note"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The Rollout of the [`package_yaml`] package to the devices tagged `fleet=e2e`.
fn files_rollout(name: &str, rest: &str) -> String {
    let rollout = rollout_for(name, "e2e", rest).replace(
        "packageRef:\n    name: fw\n",
        "packageRef:\n    name: fw-files\n",
    );
    assert!(rollout.contains("fw-files"));
    rollout
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

/// Applies the base objects, the [`package_yaml`] package and the Rollout `name` of it with
/// `waves` (wave 2 gated by approval); returns once wave 1 completed and wave 2 waits.
async fn wave_2_waits(
    cp: &ControlPlane,
    ns: &str,
    emu: &Emu,
    name: &str,
    waves: &str,
) -> Api<Rollout> {
    apply(cp, ns, &base_yaml(emu));
    apply(cp, ns, &package_yaml());
    apply(cp, ns, &files_rollout(name, waves));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, ns);
    wait_rollout(&api, name, "wave 2 waiting for approval", |r| {
        has(r, "Paused", "True", "WaitingForApproval")
    })
    .await;
    api
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
    let waves = "  waves:\n    - percent: 25\n    - percent: 100\n      requireApproval: true\n";
    // Wave 1 runs and completes; wave 2 waits for approval. Its start listed content once.
    let api = wave_2_waits(cp, &ns, &emu, "fw-content", waves).await;
    assert_eq!(emu.writes().len(), 10, "wave 1 only");
    assert_eq!(content_listings(&emu), 1, "one content listing for wave 1");

    // The file's content item is deleted on the platform (management API).
    let item = format!("{ns}_fw-files_fw.bin");
    delete_item(&emu, &item).await;
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
    let uploaded_again = uploaded_again(&emu, &item);
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

/// Wave 1 started (its content checked) and waits for the approval of wave 2; then the file's
/// content item is deleted and devices join, some of them in wave 1's places. The late joiners
/// are not written while the item is missing: the check before their writes finds it gone (the
/// Rollout and the package each get a `ContentMissing` Warning naming the item and saying the
/// check came before wave 1's writes), the package uploads it again, and only then are they
/// written, each once. The checks outside the wave start are at least the interval apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_is_not_sent_to_content_deleted_after_its_wave_started() {
    const INTERVAL: Duration = Duration::from_secs(1);
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-content-late").await;
    let group = |prefix, count| Group {
        prefix,
        count,
        version: "1.0.0",
        fleet: "e2e",
        outcomes: "",
    };
    let emu = Emu::start(&profile_of(48, &[group("dev-", 20)])).await;
    let _op = Operator::start(cp, &ns, &["--content-check-interval", "1s"]).await;
    let waves = "  orderSeed: joiner\n  waves:\n    - percent: 50\n    - percent: 100\n      requireApproval: true\n";
    let api = wave_2_waits(cp, &ns, &emu, "fw-late", waves).await;
    let first = identities("dev-", 20);
    let wave1_before: BTreeSet<String> = rollout_order("joiner", &first)[..10]
        .iter()
        .cloned()
        .collect();
    let written = |emu: &Emu| emu.writes().into_keys().collect::<BTreeSet<String>>();
    assert_eq!(written(&emu), wave1_before);
    let listed = received(&emu, is_content_listing);
    assert_eq!(listed.len(), 1, "one content listing, for wave 1's start");
    // The writes the join brings are checked only once the interval since that listing has
    // passed: a precondition of this test (a join within the interval would be written
    // unchecked, as documented), so it waits for that moment, not for the operator.
    tokio::time::sleep_until(listed[0] + INTERVAL).await;

    let item = format!("{ns}_fw-files_fw.bin");
    delete_item(&emu, &item).await;
    // 10 devices join: wave 1 now covers the first ⌈30 · 50 %⌉ = 15 of the new order.
    let _joined = emu.join(&profile_of(49, &[group("late-", 10)]));
    let all: Vec<String> = [first, identities("late-", 10)].concat();
    let mut wave1_after = wave1_before.clone();
    wave1_after.extend(rollout_order("joiner", &all)[..15].iter().cloned());
    let late: BTreeSet<String> = wave1_after
        .iter()
        .filter(|id| id.starts_with("late-"))
        .cloned()
        .collect();
    assert!(
        !late.is_empty(),
        "no late joiner in wave 1; pick another seed"
    );
    wait_for(DEADLINE, "wave 1's late joiners written", || {
        let done = written(&emu).is_superset(&wave1_after);
        async move { done }
    })
    .await;

    // Not written while the item was missing: every write to a late joiner came after the
    // package uploaded the item again (both times on the emulator's clock), each once.
    let uploaded_again = uploaded_again(&emu, &item);
    let records = emu.write_records();
    for id in &late {
        let w = &records[id];
        assert_eq!(w.len(), 1, "{id}: {w:?}");
        assert!(
            w[0].at >= uploaded_again,
            "{id} written at {} before the item was back at {uploaded_again}",
            w[0].at
        );
    }
    // The Rollout and the package said why, naming the item and what the check came before.
    let why = "checked before devices of wave 1 are written";
    for kind_name in [("Rollout", "fw-late"), ("SoftwarePackage", "fw-files")] {
        let notes = event_notes(cp, &ns, kind_name.0, kind_name.1, "ContentMissing");
        assert!(
            notes.iter().any(|n| n.contains(&item) && n.contains(why)),
            "{kind_name:?}: {notes:?}"
        );
    }
    // Still waiting for approval: wave 2 was not written, and no wave started (so the
    // listings after the first were the checks before writes, at least the interval apart).
    let r = api.get("fw-late").await.expect("get");
    assert!(has(&r, "Paused", "True", "WaitingForApproval"));
    assert_eq!(written(&emu), wave1_after);
    let listed = received(&emu, is_content_listing);
    assert!(
        listed.len() >= 2,
        "a check before the late joiners: {listed:?}"
    );
    // Both times are the emulator's receipt of a request the operator sends just after it
    // decided to check; 100 ms of room for that delay.
    for pair in listed.windows(2) {
        let apart = pair[1] - pair[0];
        assert!(
            apart + Duration::from_millis(100) >= INTERVAL,
            "listings {apart:?} apart"
        );
    }
}
