//! Tests of the device index: folding, scope, upserts, listings and memory.

use crate::api::DeviceTag;
use crate::api::rollout::{Exclusions, Targets};
use crate::engine::observation::{DeviceObservation, ResourceState};
use crate::engine::order::order_key;
use crate::otau::{Manifest, Report, Status};

use super::*;

fn manifest() -> Manifest {
    Manifest::url_list("2.0", "fw", "", vec!["fw-2.0.bin".into()])
}

fn config(targets: Targets) -> IndexConfig {
    IndexConfig {
        seed: "ns/ro".into(),
        targets,
        manifest: manifest(),
        connector_manifests: Vec::new(),
        newer_rollout_manifests: Vec::new(),
    }
}

fn tag_targets() -> Targets {
    Targets {
        tags: vec![DeviceTag::new("fleet", "a")],
        ..Targets::default()
    }
}

fn device(identity: &str) -> DeviceObservation {
    DeviceObservation {
        identity: identity.into(),
        tags: vec![DeviceTag::new("fleet", "a")],
        ..DeviceObservation::default()
    }
}

fn with_set(mut d: DeviceObservation, value: &str, at: i64) -> DeviceObservation {
    d.config_otau = Some(ResourceState::set(value, at));
    d
}

fn with_report(
    mut d: DeviceObservation,
    version: &str,
    status: &str,
    at: i64,
) -> DeviceObservation {
    let raw = Report::new(version, Status::parse(status), "disk full").to_json();
    d.otau_in = Some(ResourceState::written_by_device(raw, at));
    d
}

#[test]
fn entry_is_forty_bytes() {
    assert_eq!(std::mem::size_of::<DeviceEntry>(), 40);
}

#[test]
fn set_values_fold_to_their_kind_and_attempt() {
    let m = manifest();
    let reordered =
        r#"{"payload":["fw-2.0.bin"],"type":"URL_LIST","name":"fw","version":"2.0","attempt":3}"#;
    let cases = [
        (Some(m.to_json()), SetKind::Ours, 1),
        (Some(m.with_attempt(2).to_json()), SetKind::Ours, 2),
        (Some(reordered.to_owned()), SetKind::Ours, 3),
        (
            Some(Manifest::url_list("1.0", "fw", "", vec!["x".into()]).to_json()),
            SetKind::OtherManifest,
            0,
        ),
        (Some("ACK".to_owned()), SetKind::Foreign, 0),
        (Some(String::new()), SetKind::Absent, 0),
        (None, SetKind::Absent, 0),
    ];
    for (value, kind, attempt) in cases {
        let mut d = device("d1");
        if let Some(v) = &value {
            d = with_set(d, v, 5_000_000);
        }
        let index = DeviceIndex::build(config(tag_targets()), [d]);
        let e = index.get("d1").expect("in scope");
        assert_eq!((e.set_kind, e.attempt), (kind, attempt), "{value:?}");
    }
}

#[test]
fn reports_fold_to_codes() {
    let cases = [
        ("2.0", "INSTALLED_VERSION", ReportCode::Succeeded),
        ("1.0", "INSTALLED_VERSION", ReportCode::CurrentVersion),
        ("2.0", "DOWNLOAD_STEP", ReportCode::InProgress),
        ("2.0", "WARMING_UP", ReportCode::InProgressUnknown),
        ("2.0", "TEST_ERROR", ReportCode::TestError),
        ("2.0", "DOWNLOAD_ERROR", ReportCode::DownloadError),
        ("2.0", "INSTALL_ERROR", ReportCode::InstallError),
        ("2.0", "INSTALL_ABORTED", ReportCode::Aborted),
        ("1.0", "INSTALL_ERROR", ReportCode::OtherVersion),
    ];
    for (version, status, code) in cases {
        let index = DeviceIndex::build(
            config(tag_targets()),
            [with_report(device("d"), version, status, 7)],
        );
        let e = index.get("d").unwrap();
        assert_eq!(e.report, code, "{version} {status}");
        assert_eq!(e.report_at, 7_000_000, "seconds are normalised to µs");
    }
    let mut d = device("d");
    d.otau_in = Some(ResourceState::written_by_device("not json", 1));
    let index = DeviceIndex::build(config(tag_targets()), [d]);
    assert_eq!(index.get("d").unwrap().report, ReportCode::Malformed);
    assert!(
        index
            .note("d", 1_000_000)
            .unwrap()
            .contains("not valid JSON")
    );
}

#[test]
fn scope_follows_the_targets_only() {
    let targets = Targets {
        identities: vec!["by-id".into()],
        tags: vec![DeviceTag::new("fleet", "a")],
        exclude: Some(Exclusions {
            identities: vec!["excluded".into()],
            tags: vec![DeviceTag::new("lab", "yes")],
        }),
    };
    let mut lab = device("lab-device");
    lab.tags.push(DeviceTag::new("lab", "yes"));
    let observations = vec![
        DeviceObservation::new("by-id"),
        device("by-tag"),
        device("excluded"),
        lab,
        DeviceObservation::new("other"),
        with_set(
            DeviceObservation::new("notified-other"),
            &manifest().to_json(),
            1,
        ),
        with_set(DeviceObservation::new("acked-other"), "ACK", 1),
    ];
    let index = DeviceIndex::build(config(targets), &observations);
    // `notified-other` holds this package's manifest (another Rollout of the same package to
    // other targets wrote it, or an edit left it out): it is not this Rollout's device.
    let mut kept: Vec<&str> = ["by-id", "by-tag", "notified-other"]
        .into_iter()
        .filter(|id| index.get(id).is_some())
        .collect();
    kept.sort();
    assert_eq!(kept, ["by-id", "by-tag"]);
    assert_eq!(index.len(), 2);
    // `excluded` (by identity) and `lab-device` (by tag): selected, then excluded.
    assert_eq!(index.excluded(), 2);
}

#[test]
fn excluded_devices_are_counted_until_they_leave_or_lose_the_exclusion() {
    let targets = Targets {
        exclude: Some(Exclusions {
            tags: vec![DeviceTag::new("lab", "yes")],
            ..Exclusions::default()
        }),
        ..tag_targets()
    };
    let lab = |id: &str| {
        let mut d = device(id);
        d.tags.push(DeviceTag::new("lab", "yes"));
        d
    };
    let mut index = DeviceIndex::new(config(targets));
    index.upsert([
        lab("l1"),
        lab("l2"),
        lab("l1"),
        DeviceObservation::new("other"),
    ]);
    assert_eq!((index.len(), index.excluded()), (0, 2));
    // l2 loses the lab tag: it is the rollout's now, no longer excluded.
    index.upsert([device("l2")]);
    assert_eq!((index.len(), index.excluded()), (1, 1));
    // A full listing without l1 (it left the connector) forgets it.
    index.begin_full_listing();
    index.upsert([device("l2"), lab("l3")]);
    assert_eq!(
        index.excluded(),
        2,
        "l1 still counts until the listing ends"
    );
    index.finish_full_listing();
    assert_eq!((index.len(), index.excluded()), (1, 1));
}

#[test]
fn later_observations_win_and_leaving_scope_removes() {
    let mut index = DeviceIndex::new(config(tag_targets()));
    index.upsert([
        with_report(device("a"), "2.0", "INIT", 10),
        with_report(device("a"), "2.0", "INSTALL_ERROR", 20),
        device("b"),
        device("c"),
    ]);
    index.prepare();
    assert_eq!(index.get("a").unwrap().report, ReportCode::InstallError);
    assert_eq!(index.len(), 3);
    // b loses its tag: out of scope (never notified).
    index.upsert([DeviceObservation::new("b")]);
    assert!(index.get("b").is_none());
    assert_eq!(index.identity(index.get("c").unwrap()), "c");
    assert_eq!(index.len(), 2);
    // A full listing without c removes it.
    index.begin_full_listing();
    index.upsert([device("a")]);
    index.finish_full_listing();
    assert_eq!(index.len(), 1);
    assert_eq!(index.identity(index.get("a").unwrap()), "a");
    assert_eq!(index.get("a").unwrap().report, ReportCode::None);
}

#[test]
fn order_is_by_key_then_identity_and_survives_removals() {
    let ids: Vec<String> = (0..500).map(|i| format!("dev-{i:04}")).collect();
    let mut index = DeviceIndex::build(config(tag_targets()), ids.iter().map(|i| device(i)));
    // Two of three devices leave the scope: more than half the arena is garbage, so it is
    // compacted.
    index.upsert(
        ids.iter()
            .enumerate()
            .filter(|(n, _)| n % 3 != 0)
            .map(|(_, i)| DeviceObservation::new(i.as_str())),
    );
    assert_eq!(index.garbage_bytes, 0, "compacted");
    index.prepare();
    let ordered: Vec<String> = index
        .ordered()
        .iter()
        .map(|&i| index.identity(index.entry(i)).to_owned())
        .collect();
    let mut expected: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| n % 3 == 0)
        .map(|(_, i)| i.clone())
        .collect();
    expected.sort_by_key(|i| (order_key("ns/ro", i), i.clone()));
    assert_eq!(ordered, expected);
    for id in &expected {
        assert_eq!(index.identity(index.get(id).unwrap()), id);
    }
}

#[test]
fn bad_identities_are_refused_not_fatal() {
    let index = DeviceIndex::build(
        config(tag_targets()),
        [device(""), device(&"x".repeat(70_000)), device("ok")],
    );
    assert_eq!(index.len(), 1);
    assert_eq!(index.rejected(), 2);
}

#[test]
fn failure_notes_are_bounded_and_keep_the_newest() {
    let observations: Vec<_> = (0..200)
        .map(|i| with_report(device(&format!("d{i}")), "2.0", "INSTALL_ERROR", 1_000 + i))
        .collect();
    let index = DeviceIndex::build(config(tag_targets()), &observations);
    assert_eq!(index.notes.len(), MAX_NOTES);
    assert!(index.note("d199", 1_199_000_000).is_some());
    assert!(index.note("d0", 1_000_000_000).is_none());
}

#[test]
fn memory_per_device_at_100k_stays_under_200_bytes() {
    let n = 100_000;
    let m = manifest().to_json();
    let observations = (0..n).map(|i| {
        let d = device(&format!("SN-{i:08}"));
        if i % 2 == 0 {
            with_report(with_set(d, &m, 1_000), "2.0", "DOWNLOAD_STEP", 1_001)
        } else {
            d
        }
    });
    let index = DeviceIndex::build(config(tag_targets()), observations);
    assert_eq!(index.len(), n);
    let per_device = index.heap_bytes() / n;
    assert!(per_device < 200, "{per_device} bytes per device");
    assert!(per_device >= 40, "the estimate counts the entries at least");
}

#[test]
fn a_full_listing_gives_back_what_a_shrunken_fleet_no_longer_needs() {
    let all: Vec<DeviceObservation> = (0..20_000).map(|i| device(&format!("SN-{i:08}"))).collect();
    let mut index = DeviceIndex::new(config(tag_targets()));
    index.begin_full_listing();
    index.upsert(all.iter());
    index.finish_full_listing();
    let full = index.heap_bytes();
    // Most devices leave the connector: the next listing sees a tenth of them.
    index.begin_full_listing();
    index.upsert(all.iter().take(2_000));
    index.finish_full_listing();
    assert_eq!(index.len(), 2_000);
    let after = index.heap_bytes();
    assert!(
        after * 4 < full,
        "{after} bytes after the fleet shrank tenfold, {full} before"
    );
}

#[test]
fn partial_updates_apply_only_newer_values_to_known_devices() {
    let mut idx = DeviceIndex::new(config(tag_targets()));
    idx.upsert([device("a")]);
    let report = r#"{"version":"2.0","status":"INSTALLED_VERSION"}"#.to_owned();
    let update = PartialUpdate {
        otau_in: Some((report, 1_700_000_000_000_500)),
        ..PartialUpdate::default()
    };
    assert!(!idx.apply_partial("unknown", &update));
    assert!(
        idx.get("unknown").is_none(),
        "an unknown device is not added"
    );
    assert!(idx.apply_partial("a", &update));
    assert_eq!(idx.get("a").unwrap().report, ReportCode::Succeeded);
    // An older report does not win.
    let older = PartialUpdate {
        otau_in: Some((
            r#"{"version":"2.0","status":"INIT"}"#.to_owned(),
            1_700_000_000_000_100,
        )),
        ..PartialUpdate::default()
    };
    assert!(!idx.apply_partial("a", &older));
    assert_eq!(idx.get("a").unwrap().report, ReportCode::Succeeded);
    // Our own write marks the device notified with its attempt and keeps the report.
    let write = PartialUpdate {
        config_otau: Some((idx.manifest_value(1).to_owned(), 1_700_000_000_001_000)),
        ..PartialUpdate::default()
    };
    assert!(idx.apply_partial("a", &write));
    let e = idx.get("a").unwrap();
    assert_eq!((e.set_kind, e.attempt), (SetKind::Ours, 1));
    assert_eq!(e.set_at, 1_700_000_000_001_000);
    assert_eq!(e.report, ReportCode::Succeeded, "the report is kept");
}

/// A partial update folds into the same entry as a full observation holding the same values:
/// every kind of set value and report, over a device that held something else before.
#[test]
fn a_partial_update_folds_like_the_full_observation() {
    let reports = [
        r#"{"version":"2.0","status":"DOWNLOAD_ERROR","message":"disk"}"#,
        r#"{"version":"2.0","status":"TEST_ERROR","message":"self test"}"#,
        r#"{"version":"2.0","status":"INSTALL_ERROR"}"#,
        r#"{"version":"2.0","status":"INSTALLED_VERSION"}"#,
        r#"{"version":"1.0","status":"INSTALLED_VERSION"}"#,
        r#"{"version":"1.0","status":"INIT"}"#,
        r#"{"version":"2.0","status":"INIT"}"#,
        r#"{"version":"2.0","status":"WHATEVER"}"#,
        r#"{"version":"2.0","status":"INSTALL_ABORTED","message":"user"}"#,
        "junk",
        "",
    ];
    let base = DeviceIndex::new(config(tag_targets()));
    let sets = [
        base.manifest_value(1).to_owned(),
        base.manifest_value(3).to_owned(),
        "ACK".to_owned(),
        r#"{"version":"9","name":"n","type":"URL_LIST","payload":[]}"#.to_owned(),
        "  ".to_owned(),
    ];
    // Not one of `sets`: each update is a new value, not an ack of the one held.
    let before = with_report(
        with_set(device("d"), "", 1_000_000_000_000_000),
        "1.0",
        "INIT",
        1_000_000_000_000_000,
    );
    let at = 1_700_000_000_000_000;
    for report in reports {
        for set in &sets {
            let mut partial = DeviceIndex::new(config(tag_targets()));
            partial.upsert([before.clone()]);
            let update = PartialUpdate {
                config_otau: Some((set.clone(), at)),
                otau_in: Some((report.to_owned(), at + 1)),
            };
            assert!(partial.apply_partial("d", &update));
            let mut full = DeviceIndex::new(config(tag_targets()));
            let mut observation = device("d");
            observation.config_otau = Some(ResourceState::set(set.clone(), at));
            observation.otau_in = Some(ResourceState::written_by_device(report, at + 1));
            full.upsert([observation]);
            assert_eq!(partial.get("d"), full.get("d"), "{set:?} {report:?}");
            assert_eq!(
                partial.note("d", at + 1),
                full.note("d", at + 1),
                "{set:?} {report:?}"
            );
        }
    }
}

#[test]
fn a_device_kept_as_held_survives_the_full_listing_unchanged() {
    let mut idx = DeviceIndex::new(config(tag_targets()));
    let held = with_report(
        device("a"),
        "2.0",
        "INSTALLED_VERSION",
        1_700_000_000_000_000,
    );
    idx.upsert([held, device("b")]);
    let before = *idx.get("a").unwrap();
    idx.begin_full_listing();
    assert!(idx.keep_as_held("a"));
    assert!(!idx.keep_as_held("never-listed"));
    idx.finish_full_listing();
    assert_eq!(idx.get("a"), Some(&before));
    assert!(idx.get("b").is_none(), "not listed, not kept: gone");
}

#[test]
fn notified_counts_our_manifest_at_any_attempt_and_keeps_identities_up_to_the_bound() {
    let ours = manifest().with_attempt(1).to_json();
    let retry = manifest().with_attempt(2).to_json();
    let other = Manifest::url_list("1.0", "fw", "", vec!["fw-1.0.bin".into()]).to_json();
    let index = DeviceIndex::build(
        config(tag_targets()),
        [
            with_set(device("d3"), &ours, 1),
            with_set(device("d1"), &retry, 2),
            with_set(device("d2"), &other, 3),
            device("d4"),
            with_set(device("d5"), "ACK", 4),
        ],
    );
    let both = vec!["d1".to_string(), "d3".to_string()];
    let found = index.notified(2);
    assert_eq!((found.count, &found.identities), (2, &both));
    assert_eq!(index.notified(5).identities, both);
    // The fingerprint names the set: the order keys of d1 and d3.
    let key = |id: &str| order_key("ns/ro", id);
    assert_eq!(found.fingerprint, key("d1").wrapping_add(key("d3")));
    // Above the bound: the count only.
    let above = index.notified(1);
    assert_eq!((above.count, above.identities), (2, Vec::new()));
    assert_eq!(index.notified(0).identities, Vec::<String>::new());
}

/// A platform time (µs).
const T: i64 = 1_700_000_000_000_000;

/// `config_otau` as the platform lists it after the device echoed `value` at `at`.
fn with_ack(mut d: DeviceObservation, value: &str, at: i64) -> DeviceObservation {
    d.config_otau = Some(ResourceState::written_by_device(value, at));
    d
}

#[test]
fn an_ack_keeps_the_write_time_the_index_saw_and_a_first_seen_ack_says_it_is_unknown() {
    let ours = manifest().to_json();
    let mut index = DeviceIndex::new(config(tag_targets()));
    // Listed unacknowledged at 100: the timestamp is the write's.
    index.upsert([with_set(device("d"), &ours, T + 100)]);
    let e = *index.get("d").unwrap();
    assert_eq!(
        (e.set_at, e.acked(), e.write_time_known()),
        (T + 100, false, true)
    );
    // The ack at 300 moves the platform timestamp; the index keeps 100.
    index.upsert([with_ack(device("d"), &ours, T + 300)]);
    let e = *index.get("d").unwrap();
    assert_eq!(
        (e.set_at, e.acked(), e.write_time_known()),
        (T + 100, true, true)
    );
    // A re-serialised echo is an ack too (compared as the same manifest and attempt).
    let mut reserialised = with_set(device("d"), &ours, T + 400);
    reserialised.config_otau.as_mut().unwrap().reported = Some(
        serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&ours).unwrap())
            .unwrap(),
    );
    index.upsert([reserialised]);
    assert_eq!(index.get("d").unwrap().set_at, T + 100);
    // A new value (a retry) starts again from its own timestamp.
    index.upsert([with_set(
        device("d"),
        index.manifest_value(2).to_owned().as_str(),
        T + 500,
    )]);
    let e = *index.get("d").unwrap();
    assert_eq!(
        (e.set_at, e.attempt, e.write_time_known()),
        (T + 500, 2, true)
    );
    // A fresh index (a restarted operator) first sees the ack: the write time is unknown.
    let fresh = DeviceIndex::build(
        config(tag_targets()),
        [with_ack(device("d"), &ours, T + 300)],
    );
    let e = *fresh.get("d").unwrap();
    assert_eq!(
        (e.set_at, e.acked(), e.write_time_known()),
        (T + 300, true, false)
    );
}

#[test]
fn a_pushed_ack_of_the_value_held_keeps_the_write_time() {
    let ours = manifest().to_json();
    let mut index = DeviceIndex::new(config(tag_targets()));
    index.upsert([device("d")]);
    // Our own write, then the device's echo.
    let write = PartialUpdate {
        config_otau: Some((ours.clone(), T + 100)),
        otau_in: None,
    };
    assert!(index.apply_partial("d", &write));
    let echo = PartialUpdate {
        config_otau: Some((ours.clone(), T + 300)),
        otau_in: None,
    };
    assert!(index.apply_partial("d", &echo));
    let e = *index.get("d").unwrap();
    assert_eq!(
        (e.set_at, e.acked(), e.write_time_known()),
        (T + 100, true, true)
    );
}

#[test]
fn installing_the_target_while_notified_is_remembered_through_later_reports() {
    let ours = manifest().to_json();
    let mut index = DeviceIndex::new(config(tag_targets()));
    // At the target before any notification: not remembered (that device is skipped).
    index.upsert([with_report(
        device("early"),
        "2.0",
        "INSTALLED_VERSION",
        T + 50,
    )]);
    index.upsert([with_report(device("early"), "2.0", "INIT", T + 60)]);
    assert!(!index.get("early").unwrap().installed_target());
    let notified = |status: &str, at: i64| {
        with_report(with_ack(device("d"), &ours, T + 100), "2.0", status, at)
    };
    index.upsert([notified("INIT", T + 200)]);
    assert!(!index.get("d").unwrap().installed_target());
    index.upsert([notified("INSTALLED_VERSION", T + 300)]);
    assert!(index.get("d").unwrap().installed_target());
    // The guide's loop runs it again: INIT, then a failure; it stays installed.
    index.upsert([notified("INIT", T + 400)]);
    index.apply_partial(
        "d",
        &PartialUpdate {
            config_otau: None,
            otau_in: Some((
                Report::new("2.0", Status::parse("INSTALL_ERROR"), "").to_json(),
                T + 500,
            )),
        },
    );
    let e = *index.get("d").unwrap();
    assert!(e.installed_target());
    assert_eq!(e.report, ReportCode::InstallError);
}

#[test]
fn an_exclusion_keeps_a_notified_device_counting_and_drops_the_others() {
    let ours = manifest().to_json();
    let targets = Targets {
        exclude: Some(Exclusions {
            identities: vec!["n".into(), "p".into()],
            ..Exclusions::default()
        }),
        ..tag_targets()
    };
    let index = DeviceIndex::build(
        config(targets),
        [
            with_report(
                with_ack(device("n"), &ours, T + 100),
                "2.0",
                "INSTALL_ERROR",
                T + 200,
            ),
            device("p"),
            device("in"),
        ],
    );
    let n = index.get("n").expect("the notified device keeps counting");
    assert!(n.excluded_after_notification());
    assert!(index.get("p").is_none(), "never notified: dropped");
    assert!(!index.get("in").unwrap().excluded_after_notification());
    assert_eq!(index.excluded(), 2);
}

#[test]
fn undocumented_error_statuses_fold_to_a_failure_code_with_their_message() {
    let mut index = DeviceIndex::new(config(tag_targets()));
    index.upsert([with_report(device("d"), "2.0", "VERIFY_ERROR", T + 10)]);
    let e = *index.get("d").unwrap();
    assert_eq!(e.report, ReportCode::OtherError);
    assert!(e.report.is_failure());
    assert_eq!(index.note("d", T + 10), Some("disk full"));
}

#[test]
fn a_pushed_install_overtaken_by_a_later_report_is_still_remembered() {
    let ours = manifest().to_json();
    let mut index = DeviceIndex::new(config(tag_targets()));
    index.upsert([with_ack(device("d"), &ours, T + 100)]);
    let report = |status: &str, at: i64| PartialUpdate {
        config_otau: None,
        otau_in: Some((Report::new("2.0", Status::parse(status), "").to_json(), at)),
    };
    // INSTALL_SUCCESS (written last) arrives first, then INSTALLED_VERSION.
    assert!(index.apply_partial("d", &report("INSTALL_SUCCESS", T + 300)));
    assert!(index.apply_partial("d", &report("INSTALLED_VERSION", T + 200)));
    let e = *index.get("d").unwrap();
    assert_eq!((e.report, e.report_at), (ReportCode::InProgress, T + 300));
    assert!(e.installed_target());
    // An older report of anything else changes nothing.
    assert!(!index.apply_partial("d", &report("INSTALL_ERROR", T + 250)));
    // Nor does an install older than the write of the value held.
    let mut other = DeviceIndex::new(config(tag_targets()));
    other.upsert([with_report(
        with_set(device("d"), &ours, T + 100),
        "2.0",
        "INIT",
        T + 150,
    )]);
    assert!(!other.apply_partial("d", &report("INSTALLED_VERSION", T + 50)));
    assert!(!other.get("d").unwrap().installed_target());
}

fn other_package(version: &str) -> Manifest {
    Manifest::url_list(version, "other", "", vec![format!("other-{version}.bin")])
}

#[test]
fn another_manifest_is_the_connectors_or_foreign_and_busy_while_its_version_installs() {
    let produced = other_package("1.5");
    let foreign = other_package("9.9");
    let mut cfg = config(tag_targets());
    cfg.connector_manifests = vec![manifest(), produced.clone()];
    let idx = DeviceIndex::build(
        cfg,
        [
            // The connector's package 1.5 at attempt 2, installing it now.
            with_report(
                with_set(device("busy"), &produced.with_attempt(2).to_json(), 10),
                "1.5",
                "DOWNLOADING",
                20,
            ),
            // The same manifest, its update over.
            with_report(
                with_set(device("done"), &produced.to_json(), 10),
                "1.5",
                "INSTALLED_VERSION",
                20,
            ),
            // A manifest no package of the connector made, installing it now.
            with_report(
                with_set(device("foreign"), &foreign.to_json(), 10),
                "9.9",
                "INSTALLING",
                20,
            ),
            // Progress for another version than the manifest it holds.
            with_report(
                with_set(device("mismatch"), &produced.to_json(), 10),
                "1.6",
                "INSTALLING",
                20,
            ),
            // Our own manifest, in progress: not another manifest at all.
            with_report(
                with_set(device("ours"), &manifest().to_json(), 10),
                "2.0",
                "INSTALLING",
                20,
            ),
        ],
    );
    let facts = |id: &str| {
        let e = idx.get(id).expect(id);
        (e.installs_other_manifest(), e.holds_foreign_manifest())
    };
    assert_eq!(facts("busy"), (true, false));
    assert_eq!(facts("done"), (false, false));
    assert_eq!(facts("foreign"), (true, true));
    assert_eq!(facts("mismatch"), (false, false));
    assert_eq!(facts("ours"), (false, false));
}

#[test]
fn partial_updates_keep_the_busy_and_foreign_facts_current() {
    let other = other_package("1.5");
    let mut idx = DeviceIndex::build(config(tag_targets()), [device("a")]);
    let facts = |idx: &DeviceIndex| {
        let e = idx.get("a").expect("a");
        (e.installs_other_manifest(), e.holds_foreign_manifest())
    };
    assert_eq!(facts(&idx), (false, false));
    // An out-of-band write of another manifest, then the device's progress for it.
    let set = PartialUpdate {
        config_otau: Some((other.to_json(), 10)),
        otau_in: None,
    };
    assert!(idx.apply_partial("a", &set));
    assert_eq!(facts(&idx), (false, true));
    let progress = Report::new("1.5", Status::parse("INSTALLING"), "").to_json();
    let report = PartialUpdate {
        config_otau: None,
        otau_in: Some((progress, 20)),
    };
    assert!(idx.apply_partial("a", &report));
    assert_eq!(facts(&idx), (true, true));
    // The update ends.
    let done = Report::new("1.5", Status::parse("INSTALLED_VERSION"), "").to_json();
    let report = PartialUpdate {
        config_otau: None,
        otau_in: Some((done, 30)),
    };
    assert!(idx.apply_partial("a", &report));
    assert_eq!(facts(&idx), (false, true));
    // Our write replaces the other manifest.
    let ours = PartialUpdate {
        config_otau: Some((manifest().to_json(), 40)),
        otau_in: None,
    };
    assert!(idx.apply_partial("a", &ours));
    assert_eq!(facts(&idx), (false, false));
}

#[test]
fn new_other_manifests_keep_the_devices_and_apply_at_the_next_observation() {
    let next = other_package("3.0");
    let holding = with_set(device("a"), &next.to_json(), 10);
    let mut idx = DeviceIndex::build(config(tag_targets()), [holding.clone(), device("b")]);
    assert!(idx.get("a").expect("a").holds_foreign_manifest());
    let mut config = config(tag_targets());
    config.connector_manifests = vec![next.clone()];
    config.newer_rollout_manifests = vec![next];
    assert!(idx.same_devices(&config));
    idx.set_other_manifests(
        config.connector_manifests.clone(),
        config.newer_rollout_manifests.clone(),
    );
    assert_eq!(idx.config(), &config);
    assert_eq!(idx.len(), 2, "no device dropped");
    idx.upsert([holding]);
    let e = idx.get("a").expect("a");
    assert!(!e.holds_foreign_manifest());
    assert!(e.holds_newer_rollouts_manifest());
}

/// The marker of the test Rollout `ns/ro`, and an index config carrying it.
fn marked_config(targets: Targets) -> IndexConfig {
    let marker = crate::engine::order::rollout_marker("ns", "ro");
    IndexConfig {
        manifest: manifest().with_rollout(Some(&marker)),
        ..config(targets)
    }
}

#[test]
fn a_device_no_longer_selected_counts_only_when_it_holds_this_rollouts_marker() {
    let cfg = marked_config(Targets {
        identities: vec!["in".into(), "in-unmarked".into()],
        ..Targets::default()
    });
    let ours = cfg.manifest.to_json();
    let marker = cfg.manifest.rollout.clone().expect("marked");
    assert!(
        ours.ends_with(&format!(r#","rollout":"{marker}"}}"#)),
        "{ours}"
    );
    let reordered_retry = format!(
        r#"{{"rollout":"{marker}","payload":["fw-2.0.bin"],"type":"URL_LIST","name":"fw","version":"2.0","attempt":2}}"#
    );
    let another_rollouts = manifest().with_rollout(Some("0123456789abcdef")).to_json();
    let unmarked = manifest().to_json();
    let failed = |d: DeviceObservation| with_report(d, "2.0", "INSTALL_ERROR", T + 200);
    let index = DeviceIndex::build(
        cfg,
        [
            failed(with_ack(DeviceObservation::new("former"), &ours, T + 100)),
            failed(with_ack(
                DeviceObservation::new("former-retry"),
                &reordered_retry,
                T + 100,
            )),
            failed(with_ack(
                DeviceObservation::new("unmarked"),
                &unmarked,
                T + 100,
            )),
            failed(with_ack(
                DeviceObservation::new("other-rollout"),
                &another_rollouts,
                T + 100,
            )),
            with_ack(DeviceObservation::new("acked-literally"), "ACK", T + 100),
            DeviceObservation::new("never-notified"),
            DeviceObservation::new("in"),
            // Written by a previous release (no marker) and still selected: this Rollout's
            // notified device, with nothing to write again.
            with_ack(DeviceObservation::new("in-unmarked"), &unmarked, T + 100),
        ],
    );
    let former = index.get("former").expect("a former target keeps counting");
    assert!(former.former_target() && former.writes_stopped());
    assert_eq!(former.report, ReportCode::InstallError);
    let retry = index
        .get("former-retry")
        .expect("any attempt, any key order");
    assert_eq!((retry.former_target(), retry.attempt), (true, 2));
    for gone in [
        "unmarked",
        "other-rollout",
        "acked-literally",
        "never-notified",
    ] {
        assert!(index.get(gone).is_none(), "{gone} does not count here");
    }
    for selected in ["in", "in-unmarked"] {
        let e = index.get(selected).expect("selected");
        assert!(!e.former_target() && !e.writes_stopped(), "{selected}");
    }
    assert_eq!(
        index.get("in-unmarked").map(|e| (e.set_kind, e.attempt)),
        Some((SetKind::Ours, 1))
    );
    assert_eq!((index.len(), index.excluded()), (4, 0));
}

#[test]
fn a_device_that_loses_its_tag_is_a_former_target_until_it_is_selected_again() {
    let cfg = marked_config(tag_targets());
    let ours = cfg.manifest.to_json();
    let mut index = DeviceIndex::new(cfg);
    let tagged = |tagged: bool| {
        let d = if tagged {
            device("d")
        } else {
            DeviceObservation::new("d")
        };
        with_ack(d, &ours, T + 100)
    };
    index.upsert([tagged(true)]);
    assert!(!index.get("d").unwrap().former_target());
    index.upsert([tagged(false)]);
    assert!(index.get("d").unwrap().former_target());
    index.upsert([tagged(true)]);
    assert!(!index.get("d").unwrap().former_target());
}

#[test]
fn pushed_reports_fold_into_a_former_target_and_a_pushed_other_value_drops_it() {
    let cfg = marked_config(Targets {
        identities: vec!["in".into()],
        ..Targets::default()
    });
    let ours = cfg.manifest.to_json();
    let mut index = DeviceIndex::new(cfg);
    index.upsert([with_ack(DeviceObservation::new("d"), &ours, T + 100)]);
    assert!(index.get("d").unwrap().former_target());
    let pushed = |config: Option<&str>, report: Option<&str>, at: i64| PartialUpdate {
        config_otau: config.map(|c| (c.to_owned(), at)),
        otau_in: report.map(|s| (Report::new("2.0", Status::parse(s), "").to_json(), at)),
    };
    assert!(index.apply_partial("d", &pushed(None, Some("INSTALL_ERROR"), T + 200)));
    let e = *index.get("d").unwrap();
    assert_eq!(
        (e.report, e.former_target()),
        (ReportCode::InstallError, true)
    );
    // An ack re-serialised without the marker is still an ack of the value held.
    let bare = manifest().to_json();
    assert!(index.apply_partial("d", &pushed(Some(&bare), None, T + 300)));
    assert!(index.get("d").unwrap().former_target());
    // A value that is not this package's manifest: the targets no longer take the device.
    assert!(index.apply_partial("d", &pushed(Some("ACK"), None, T + 400)));
    assert!(index.get("d").is_none());
}
