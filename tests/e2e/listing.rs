//! The ExoSense listing of a package follows the devices its Rollout notifies
//! (src/controller/package/listing.rs), over real HTTP to the emulator's management API and
//! GraphQL: the package item's per-device tags end equal to the devices written, rewritten at
//! the first look and once at the end (the interval is longer than the rollout), and above the
//! bound the item carries `total-devices` only. The platform calls of each rewrite are counted
//! from the emulator's request log.

use std::collections::BTreeSet;

use kube::api::Api;
use otau_operator::api::{Rollout, SoftwarePackage};

use crate::harness::{
    CID, DEADLINE, Emu, MTOKEN, Operator, apply, base_yaml, has, profile, rollout_yaml,
    wait_rollout,
};
use crate::support::emulator::Logged;
use crate::support::{ControlPlane, wait_for};

/// [`base_yaml`] with ExoSense configured (the emulator's GraphQL takes the management token).
fn base_with_exosense(emu: &Emu) -> String {
    let exosense = format!(
        "  exosense:\n    graphqlUrl: {}/api/graphql\n    tokenSecretRef:\n      name: exosense\n  rateLimit:\n",
        emu.base
    );
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: exosense\n  labels:\n    otau.dev/connector-credential: \"true\"\n  annotations:\n    otau.dev/allowed-hosts: 127.0.0.1\ntype: Opaque\nstringData:\n  token: {MTOKEN}\n",
        base_yaml(emu).replacen("  rateLimit:\n", &exosense, 1)
    )
}

/// Waits until the package `fw` is Registered; returns how many requests the emulator had
/// seen by then (the requests after it are the Rollout's).
async fn registered(cp: &ControlPlane, ns: &str, emu: &Emu) -> usize {
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, ns);
    wait_for(DEADLINE, "package fw Registered", || {
        let api = api.clone();
        async move {
            api.get("fw").await.is_ok_and(|p| {
                p.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
        }
    })
    .await;
    emu.log().len()
}

/// The package item's per-device identities and `total-devices`.
fn listing(emu: &Emu, ns: &str) -> (BTreeSet<String>, Option<String>) {
    let Some(item) = emu.conn().content().get(&format!("package_{ns}_fw.json")) else {
        return (BTreeSet::new(), None);
    };
    let prefix = format!("{CID}.");
    let tagged = item
        .tags
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect();
    (tagged, item.tags.get("total-devices").cloned())
}

/// Platform calls about the package item after `from`: (reads of the item, GraphQL calls,
/// object-store POSTs). The package has links only, so every object-store POST and
/// `createContent` is the item's.
fn item_calls(log: &[Logged], from: usize, ns: &str) -> (usize, usize, usize) {
    let item = format!("/content/item/package_{ns}_fw.json");
    let after = &log[from..];
    let reads = after
        .iter()
        .filter(|l| l.method == "GET" && l.path.ends_with(&item))
        .count();
    let graphql = after
        .iter()
        .filter(|l| l.method == "POST" && l.path == "/api/graphql")
        .count();
    let store = after
        .iter()
        .filter(|l| l.method == "POST" && l.path.starts_with("/objectstore/"))
        .count();
    (reads, graphql, store)
}

/// Runs `fw` to `Complete` over the fleet in `waves` and waits until the listing shows
/// `total` devices; returns the devices written and the item calls after registration.
async fn roll_out(
    cp: &ControlPlane,
    ns: &str,
    emu: &Emu,
    waves: &str,
    total: usize,
) -> (BTreeSet<String>, (usize, usize, usize)) {
    let from = registered(cp, ns, emu).await;
    // Registered for no device: none was notified yet.
    assert_eq!(listing(emu, ns), (BTreeSet::new(), Some("0".to_string())));
    apply(cp, ns, &rollout_yaml("fw-all", waves));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, ns);
    wait_rollout(&api, "fw-all", "Complete", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let want = total.to_string();
    wait_for(DEADLINE, "the listing to count every device", || {
        let seen = listing(emu, ns).1;
        let want = want.clone();
        async move { seen.as_deref() == Some(want.as_str()) }
    })
    .await;
    let written: BTreeSet<String> = emu.writes().keys().cloned().collect();
    assert_eq!(written.len(), total, "every device notified once");
    (written, item_calls(&emu.log(), from, ns))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_follows_the_notified_devices_and_is_rewritten_once_at_the_end() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-listing").await;
    let devices = 8;
    let emu = Emu::start(&profile(21, &[("dev-", devices, "")])).await;
    // An interval longer than the rollout: the first look, then only the one at the end.
    let _op = Operator::start(cp, &ns, &["--exosense-listing-interval", "1h"]).await;
    apply(cp, &ns, &base_with_exosense(&emu));
    let waves = "  waves:\n    - percent: 25\n    - percent: 50\n    - percent: 100\n";
    let (written, (reads, graphql, store)) = roll_out(cp, &ns, &emu, waves, devices as usize).await;
    let (tagged, _) = listing(&emu, &ns);
    assert_eq!(
        tagged, written,
        "the item lists exactly the notified devices"
    );
    // Each rewrite: one read of the item, one createContent, one object-store POST. Three
    // waves notified devices in at least three passes, yet at most two rewrites: the first
    // look (if it saw a notified device) and the one at the end.
    assert!((1..=2).contains(&graphql), "GraphQL calls {graphql}");
    assert_eq!(store, graphql, "one object-store POST per createContent");
    assert_eq!(reads, graphql, "one read per rewrite");
    println!(
        "listing: {graphql} rewrite(s); per rewrite 1 item read + 1 GraphQL createContent + 1 object-store POST"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_bound_the_listing_carries_total_devices_only() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-listing-bound").await;
    let devices = 6;
    let emu = Emu::start(&profile(22, &[("dev-", devices, "")])).await;
    let bound = (devices - 2).to_string();
    let _op = Operator::start(cp, &ns, &["--exosense-max-device-tags", &bound]).await;
    apply(cp, &ns, &base_with_exosense(&emu));
    let waves = "  waves:\n    - percent: 100\n";
    let (_, (_, graphql, _)) = roll_out(cp, &ns, &emu, waves, devices as usize).await;
    let (tagged, total) = listing(&emu, &ns);
    assert_eq!(tagged, BTreeSet::new(), "no per-device tag above the bound");
    assert_eq!(total, Some(devices.to_string()));
    assert!((1..=2).contains(&graphql), "GraphQL calls {graphql}");
}
