//! Simulated fleets (issue 4 item 6, exosite-platform.md §9 "Simulated devices"): in-process
//! against the real model in virtual time, over real loopback HTTP against the emulator, and a
//! Python device client against the emulator binary.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use otau_operator::emulator::clock::{Clock, ManualClock};
use otau_operator::emulator::fleet::{FleetCore, FleetSummary, InProcessFleet, Profile};
use otau_operator::emulator::model::{Connector, ContentItem, Model, ModelConfig};
use otau_operator::otau::{
    CONFIG_OTAU, Classification, Manifest, OTAU_IN, Report, Status, classify, same_json,
};

const CONNECTOR: &str = "t41hp23nod8s00000";
const START: i64 = 1_700_000_000_000_000;
const FIRMWARE: &[u8] = b"firmware image 2.0.0\n";

/// A model on a manual clock with one connector holding `fw-2.0.0.bin`.
fn platform() -> (Arc<Model>, Arc<Connector>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(START));
    let model = Model::new(ModelConfig::default(), clock.clone());
    let connector = model.add_connector(CONNECTOR).unwrap();
    connector
        .content()
        .put(ContentItem {
            id: "fw-2.0.0.bin".into(),
            content_type: "application/octet-stream".into(),
            data: Bytes::from_static(FIRMWARE),
            tags: BTreeMap::new(),
            last_modified: START,
        })
        .unwrap();
    (model, connector, clock)
}

fn manifest(version: &str) -> Manifest {
    Manifest::url_list(
        version,
        "Firmware update",
        "",
        vec![
            "fw-2.0.0.bin".into(),
            "https://cdn.example.com/release-notes.txt".into(),
        ],
    )
}

fn fleet(yaml: &str, connector: &Arc<Connector>, clock: &Arc<ManualClock>) -> InProcessFleet {
    let profile = Profile::from_yaml(yaml).unwrap();
    let core = FleetCore::new(&profile, None, None).unwrap();
    let clock: Arc<dyn Clock> = clock.clone();
    InProcessFleet::new(core, connector.clone(), clock).unwrap()
}

/// Writes `value` to every device's `config_otau` as the cloud (management API semantics).
fn cloud_write_all(fleet: &InProcessFleet, value: &str) {
    for i in 0..fleet.core().len() as u32 {
        let id = fleet.core().identity(i);
        fleet
            .connector()
            .set_state(
                id,
                &[(CONFIG_OTAU.to_string(), value.to_string())],
                "fleet-test",
            )
            .unwrap();
    }
}

/// (otau_in reported, config_otau set, config_otau reported) of one device.
type DeviceValues = (Option<String>, Option<String>, Option<String>);

/// Every device's values, the run's counters and the virtual time at the end.
type Snapshot = (BTreeMap<String, DeviceValues>, FleetSummary, i64);

/// The values of one device.
fn device_state(connector: &Connector, identity: &str) -> DeviceValues {
    let state = connector.state(identity).unwrap();
    let otau_in = state.get(OTAU_IN).and_then(|s| s.reported.clone());
    let config = state.get(CONFIG_OTAU);
    (
        otau_in,
        config.and_then(|c| c.set.clone()),
        config.and_then(|c| c.reported.clone()),
    )
}

fn classification_counts(fleet: &InProcessFleet, target: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..fleet.core().len() as u32 {
        let (otau_in, _, _) = device_state(fleet.connector(), fleet.core().identity(i));
        let key = match classify(otau_in.as_deref(), target) {
            Classification::Malformed(_) => "Malformed".to_string(),
            Classification::CurrentVersion(v) => format!("CurrentVersion({v})"),
            other => format!("{other:?}"),
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

const HEALTHY: &str = "
seed: 1
groups:
  - name: eu
    count: 6000
    identity_prefix: eu-
    version: '1.0.0'
    tags: [{name: region, value: eu}]
    behaviour:
      durations: {step: {uniform: {min: 100ms, max: 1s}}, test: 2s, download: {exponential: {mean: 10s, cap: 1m}}, install: 20s, reboot: 5s}
  - name: us
    count: 4000
    identity_prefix: us-
    version: '1.0.0'
    tags: [{name: region, value: us}]
    behaviour: {short_sequence: 0.5, ack: {echo_immediately: 1, echo_after_install: 1}}
";

/// §9 Must: simulated devices follow §2.2 in process: 10,000 devices see a cloud write of
/// `config_otau`, ack it by echo, download the content, report, and finish with
/// `INSTALLED_VERSION`.
#[test]
fn in_process_ten_thousand_devices_complete_a_flow() {
    let (_model, connector, clock) = platform();
    let mut fleet = fleet(HEALTHY, &connector, &clock);
    assert_eq!(connector.identity_count(), 10_000);
    let tags = connector.identity("us-000042").unwrap().tags;
    assert!(
        serde_json::to_string(&tags).unwrap().contains("\"us\""),
        "devices carry their group's tags: {tags:?}"
    );

    // Boot: every device reports its current version.
    fleet.run_virtual(&clock, None);
    assert_eq!(
        classification_counts(&fleet, "2.0.0"),
        BTreeMap::from([("CurrentVersion(1.0.0)".to_string(), 10_000)])
    );

    let m = manifest("2.0.0").to_json();
    cloud_write_all(&fleet, &m);
    let summary = fleet.run_virtual(&clock, None);
    assert_eq!(
        classification_counts(&fleet, "2.0.0"),
        BTreeMap::from([("Succeeded".to_string(), 10_000)])
    );
    for i in (0..10_000).step_by(997) {
        let (_, set, reported) = device_state(&connector, fleet.core().identity(i));
        assert!(
            same_json(set.as_deref().unwrap(), reported.as_deref().unwrap()),
            "acked: set == reported"
        );
    }
    assert_eq!(summary.finished.success, 10_000);
    assert_eq!(summary.busy, 0);
    assert_eq!(summary.actions.downloads, 10_000);
    assert_eq!(summary.actions.bytes, 10_000 * FIRMWARE.len() as u64);
    assert_eq!(summary.actions.links, 10_000);
    assert_eq!(summary.actions.acks, 10_000);
    assert_eq!(summary.actions.errors, 0);
    assert!(
        clock.now_micros() > START + 20_000_000,
        "virtual time moved through the steps"
    );
}

/// §9 Must: behaviour profiles and fault injection: each failure group of the example failure
/// profile ends in the status class it names.
#[test]
fn each_failure_profile_produces_its_statuses() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/fleet-profile-failures.yaml"
    ))
    .unwrap();
    let (_model, connector, clock) = platform();
    let mut fleet = fleet(&yaml, &connector, &clock);
    fleet.run_virtual(&clock, Some(START + 1_000_000));
    cloud_write_all(&fleet, &manifest("2.0.0").to_json());
    fleet.run_virtual(&clock, None);

    let last_status = |identity: &str| {
        let (otau_in, _, _) = device_state(&connector, identity);
        otau_in
            .and_then(|v| Report::parse(&v).ok())
            .map(|r| (r.status, r.version))
    };
    let expect = [
        (
            "ok-000000",
            Classification::Succeeded,
            Some((Status::InstalledVersion, "2.0.0")),
        ),
        (
            "test-error-000003",
            Classification::Failed,
            Some((Status::TestError, "2.0.0")),
        ),
        (
            "download-error-000003",
            Classification::Failed,
            Some((Status::DownloadError, "2.0.0")),
        ),
        (
            "install-error-000003",
            Classification::Failed,
            Some((Status::InstallError, "2.0.0")),
        ),
        (
            "aborted-000003",
            Classification::Aborted,
            Some((Status::InstallAborted, "2.0.0")),
        ),
        // Silence: only the boot report, never a word about 2.0.0.
        (
            "silent-000003",
            Classification::CurrentVersion("1.0.0".into()),
            Some((Status::InstalledVersion, "1.0.0")),
        ),
        (
            "reboot-old-000003",
            Classification::CurrentVersion("1.0.0".into()),
            Some((Status::InstalledVersion, "1.0.0")),
        ),
        (
            "unknown-status-000003",
            Classification::Succeeded,
            Some((Status::InstalledVersion, "2.0.0")),
        ),
        // Offline at the write, back 10 minutes later: picks the manifest up at boot.
        (
            "late-000003",
            Classification::Succeeded,
            Some((Status::InstalledVersion, "2.0.0")),
        ),
    ];
    for (identity, class, last) in expect {
        let (otau_in, _, _) = device_state(&connector, identity);
        assert_eq!(classify(otau_in.as_deref(), "2.0.0"), class, "{identity}");
        let got = last_status(identity);
        assert_eq!(
            got.as_ref().map(|(s, v)| (s.clone(), v.as_str())),
            last,
            "{identity}"
        );
    }
    let (otau_in, _, _) = device_state(&connector, "malformed-000003");
    assert!(
        matches!(
            classify(otau_in.as_deref(), "2.0.0"),
            Classification::Malformed(_)
        ),
        "{otau_in:?}"
    );
    // Silent devices never ack: set stays the manifest, reported is absent.
    let (_, set, reported) = device_state(&connector, "silent-000001");
    assert!(set.is_some() && reported.is_none());

    let counts = classification_counts(&fleet, "2.0.0");
    assert_eq!(counts["Succeeded"], 70, "{counts:?}");
    assert_eq!(counts["Failed"], 30, "{counts:?}");
    assert_eq!(counts["Aborted"], 10, "{counts:?}");
    assert_eq!(counts["Malformed"], 10, "{counts:?}");
    assert_eq!(counts["CurrentVersion(1.0.0)"], 20, "{counts:?}");
}

fn platform_snapshot(yaml: &str, seed: Option<u64>) -> Snapshot {
    let (_model, connector, clock) = platform();
    let profile = Profile::from_yaml(yaml).unwrap();
    let core = FleetCore::new(&profile, Some(3000), seed).unwrap();
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let mut fleet = InProcessFleet::new(core, connector.clone(), dyn_clock).unwrap();
    fleet.run_virtual(&clock, None);
    cloud_write_all(&fleet, &manifest("2.0.0").to_json());
    let summary = fleet.run_virtual(&clock, None);
    let snapshot = (0..fleet.core().len() as u32)
        .map(|i| {
            let id = fleet.core().identity(i).to_string();
            let s = device_state(&connector, &id);
            (id, s)
        })
        .collect();
    (snapshot, summary, clock.now_micros())
}

/// Seeded randomness: the same seed gives exactly the same run (every device's final state,
/// the counters and the virtual end time); another seed gives another run.
#[test]
fn same_seed_gives_an_identical_outcome() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/fleet-profile.yaml"
    ))
    .unwrap();
    let a = platform_snapshot(&yaml, None);
    let b = platform_snapshot(&yaml, None);
    assert_eq!(a, b);
    let c = platform_snapshot(&yaml, Some(99));
    assert_ne!(a.0, c.0);
    // The realistic profile: most devices succeed, some do not.
    let ok = a.1.finished.success + a.1.finished.unknown_status;
    assert!(ok > 2600 && ok < 3000, "{:?}", a.1);
}

const SMALL: &str = "
seed: 4
groups:
  - {name: a, count: 20, identity_prefix: a-, version: '1.0.0', behaviour: {durations: {step: 1s}}}
";

/// §9 Must: skip a manifest equal to the last one handled, act on a new `attempt` (a retry)
/// and on an older version written later (a rollback), against the model.
#[test]
fn retries_and_rollbacks_run_again_and_equal_manifests_are_skipped() {
    let (_model, connector, clock) = platform();
    let mut fleet = fleet(SMALL, &connector, &clock);
    fleet.run_virtual(&clock, None);
    let v2 = manifest("2.0.0");
    cloud_write_all(&fleet, &v2.to_json());
    fleet.run_virtual(&clock, None);
    let reports_after_first = fleet.summary().actions.reports;

    // The same manifest again (re-serialised with other key order): skipped.
    let reordered =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&v2.to_json()).unwrap())
            .unwrap();
    cloud_write_all(&fleet, &reordered);
    let s = fleet.run_virtual(&clock, None);
    assert_eq!(s.skipped, 20);
    assert_eq!(s.actions.reports, reports_after_first);

    // A retry: attempt 2 of the same version runs again.
    cloud_write_all(&fleet, &v2.with_attempt(2).to_json());
    let s = fleet.run_virtual(&clock, None);
    assert_eq!(s.finished.success, 40);

    // Upgrade to 3.0.0, then a rollback to 2.0.0 written later: runs.
    cloud_write_all(&fleet, &manifest("3.0.0").to_json());
    fleet.run_virtual(&clock, None);
    assert_eq!(classification_counts(&fleet, "3.0.0")["Succeeded"], 20);
    cloud_write_all(&fleet, &v2.to_json());
    fleet.run_virtual(&clock, None);
    assert_eq!(classification_counts(&fleet, "2.0.0")["Succeeded"], 20);
}

/// §9 Must: ack with `ACK`, and ack after install, as the model stores them.
#[test]
fn ack_styles_as_the_platform_sees_them() {
    let yaml = "
groups:
  - {name: lit, count: 3, identity_prefix: lit-, version: '1', behaviour: {ack: {echo_immediately: 0, literal_ack: 1}}}
  - {name: late, count: 3, identity_prefix: late-, version: '1', behaviour: {ack: {echo_immediately: 0, echo_after_install: 1}}}
  - {name: never, count: 3, identity_prefix: never-, version: '1', behaviour: {ack: {echo_immediately: 0, never: 1}}}
";
    let (_model, connector, clock) = platform();
    let mut fleet = fleet(yaml, &connector, &clock);
    fleet.run_virtual(&clock, None);
    let m = manifest("2.0.0").to_json();
    cloud_write_all(&fleet, &m);
    // Before the install finishes, the after-install device has not acked yet.
    fleet.run_virtual(&clock, Some(START + 5_000_000));
    assert_eq!(device_state(&connector, "late-000000").2, None);
    fleet.run_virtual(&clock, None);
    let (_, set, reported) = device_state(&connector, "lit-000000");
    assert_eq!(
        (set.as_deref(), reported.as_deref()),
        (Some("ACK"), Some("ACK"))
    );
    let (otau_in, set, reported) = device_state(&connector, "late-000000");
    assert_eq!(set, reported);
    assert_eq!(set.as_deref(), Some(m.as_str()));
    assert_eq!(
        classify(otau_in.as_deref(), "2.0.0"),
        Classification::Succeeded
    );
    let (otau_in, set, reported) = device_state(&connector, "never-000002");
    assert_eq!((set.as_deref(), reported), (Some(m.as_str()), None));
    assert_eq!(
        classify(otau_in.as_deref(), "2.0.0"),
        Classification::Succeeded
    );
}

/// §9 Must: offline periods: offline devices say nothing until they come back, then boot and
/// run the pending manifest.
#[test]
fn offline_devices_come_back_after_their_duration() {
    let yaml = "
seed: 9
groups:
  - {name: a, count: 100, identity_prefix: a-, version: '1.0.0', behaviour: {offline: {fraction: 0.3, back_after: {uniform: {min: 1h, max: 2h}}}}}
";
    let (_model, connector, clock) = platform();
    let mut fleet = fleet(yaml, &connector, &clock);
    fleet.run_virtual(&clock, Some(START));
    cloud_write_all(&fleet, &manifest("2.0.0").to_json());
    fleet.run_virtual(&clock, Some(START + 3_000_000_000));
    let counts = classification_counts(&fleet, "2.0.0");
    let offline = counts.get("NoReport").copied().unwrap_or(0);
    assert!((15..=45).contains(&offline), "{counts:?}");
    assert_eq!(counts["Succeeded"], 100 - offline);
    fleet.run_virtual(&clock, None);
    assert_eq!(classification_counts(&fleet, "2.0.0")["Succeeded"], 100);
    assert!(clock.now_micros() >= START + 3_600_000_000);
}
