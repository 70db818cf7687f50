//! Simulated fleets (exosite-platform.md §9 "Simulated devices"): in-process
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

/// The quick example profile (README walkthrough): every device of 3,000 finishes an update
/// within a few seconds of virtual time, and about 1 in 100 fails (two outcomes of 0.5 %).
#[test]
fn the_quick_example_profile_finishes_every_update_in_seconds() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/fleet-profile-quick.yaml"
    ))
    .unwrap();
    let (_, summary, end) = platform_snapshot(&yaml, None);
    let finished =
        summary.finished.success + summary.finished.download_error + summary.finished.install_error;
    assert_eq!(finished, 3000, "{summary:?}");
    let failed = summary.finished.download_error + summary.finished.install_error;
    assert!(
        failed > 5 && failed < 70,
        "about 30 of 3,000 fail: {summary:?}"
    );
    // Worst case per device: a few steps + test + download + install + reboot, all at their
    // max (about 0.5 s each + 1 + 4 + 3 + 2 s), so the whole fleet is done within a minute of
    // virtual time (the first boot and the update both start at START).
    let elapsed = end - START;
    assert!(elapsed < 60_000_000, "virtual time used: {elapsed} us");
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

/// `Fleet::start` (what `otau-operator emulator --devices N --profile F` runs): the fleet runs
/// in real time on its own thread and reacts to cloud writes as they happen.
#[test]
fn fleet_start_runs_in_real_time_until_stopped() {
    use otau_operator::emulator::clock::SystemClock;
    use otau_operator::emulator::fleet::{Fleet, FleetOptions};

    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let model = Model::new(ModelConfig::default(), clock);
    let connector = model.add_connector(CONNECTOR).unwrap();
    let profile = Profile::from_yaml(
        "groups:\n  - {name: rt, fraction: 1, identity_prefix: rt-, version: '1.0.0', behaviour: {durations: {step: 5ms, test: 5ms, download: 5ms, install: 5ms, reboot: 5ms}}}\n",
    )
    .unwrap();
    let options = FleetOptions {
        devices: Some(50),
        seed: Some(1),
    };
    let fleet = Fleet::start(&model, CONNECTOR, &profile, &options).unwrap();
    assert_eq!(fleet.identities(), &[("rt-000000".to_string(), 50)]);
    assert_eq!(connector.identity_count(), 50);
    let m = Manifest::url_list("2.0.0", "fw", "", vec![]).to_json();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let all = |target: &str| {
        (0..50).all(|i| {
            let id = format!("rt-{i:06}");
            let (otau_in, _, _) = device_state(&connector, &id);
            // A boot report of `target` or the final report of an update to it.
            classify(otau_in.as_deref(), target) == Classification::Succeeded
        })
    };
    while !all("1.0.0") {
        assert!(std::time::Instant::now() < deadline, "boot reports");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 0..50 {
        connector
            .set_state(
                &format!("rt-{i:06}"),
                &[(CONFIG_OTAU.to_string(), m.clone())],
                "fleet-test",
            )
            .unwrap();
    }
    while !all("2.0.0") {
        assert!(
            std::time::Instant::now() < deadline,
            "every device installs 2.0.0"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let summary = fleet.stop();
    assert_eq!(summary.finished.success, 50, "{summary:?}");
}

// ----- over real loopback HTTP -----

mod http {
    use std::sync::Arc;
    use std::time::Duration;

    use otau_operator::emulator::clock::{Clock, SystemClock};
    use otau_operator::emulator::fleet::{
        FleetCore, HttpFleet, HttpFleetConfig, Profile, Registration,
    };
    use otau_operator::emulator::model::{ContentItem, Model, ModelConfig};
    use otau_operator::emulator::server::{self, AppState, ServerOptions};
    use otau_operator::otau::{CONFIG_OTAU, Classification, OTAU_IN, classify, same_json};

    use super::{CONNECTOR, FIRMWARE, manifest};

    const TOKEN: &str = "fleet-test-management-token-0123456789ab";

    /// Polls `check` every 50 ms until it returns `Some`, or panics with `what` at the deadline.
    pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET …/state` through the management API: alias → {set, reported, timestamp}.
    pub async fn state(
        client: &reqwest::Client,
        management_url: &str,
        identity: &str,
    ) -> serde_json::Value {
        client
            .get(format!(
                "{management_url}service/{CONNECTOR}/device2/identity/{identity}/state"
            ))
            .header("authorization", format!("token {TOKEN}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn value(state: &serde_json::Value, alias: &str, which: &str) -> Option<String> {
        state.get(alias)?.get(which)?.as_str().map(str::to_string)
    }

    const PROFILE: &str = "
seed: 21
groups:
  - name: ok
    count: 4
    identity_prefix: http-ok-
    version: '1.0.0'
    tags: [{name: ring, value: http}]
    behaviour:
      durations: {step: 10ms, test: {uniform: {min: 10ms, max: 50ms}}, download: 20ms, install: 30ms, reboot: 20ms}
  - name: short-literal
    count: 2
    identity_prefix: http-short-
    version: '1.0.0'
    behaviour:
      short_sequence: 1
      ack: {echo_immediately: 0, literal_ack: 1}
      durations: {step: 10ms, test: 10ms, download: 10ms, install: 10ms, reboot: 10ms}
  - name: failing
    count: 2
    identity_prefix: http-fail-
    version: '1.0.0'
    behaviour:
      outcomes: {install_error: 1}
      durations: {step: 10ms, test: 10ms, download: 10ms, install: 10ms, reboot: 10ms}
";

    /// §9 Must: follow §2.2 over HTTP: register and activate, long poll with `Last-Modified`,
    /// ack by echo, download bare ids from `/provision/download`, report statuses, finish with
    /// `INSTALLED_VERSION`; failures and the literal `ACK` show on the platform too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_fleet_completes_a_flow_against_the_emulator() {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let model = Model::new(
            ModelConfig {
                management_tokens: vec![TOKEN.into()],
                ..ModelConfig::default()
            },
            clock.clone(),
        );
        let connector = model.add_connector(CONNECTOR).unwrap();
        connector
            .content()
            .put(ContentItem {
                id: "fw-2.0.0.bin".into(),
                content_type: "application/octet-stream".into(),
                data: axum::body::Bytes::from_static(FIRMWARE),
                tags: Default::default(),
                last_modified: clock.now_micros(),
            })
            .unwrap();
        let app = AppState {
            model: model.clone(),
            options: Arc::new(ServerOptions {
                default_connector: Some(CONNECTOR.into()),
                ..ServerOptions::default()
            }),
        };
        let running = server::start("127.0.0.1:0".parse().unwrap(), app)
            .await
            .unwrap();
        let management_url = format!("{}/api:1/", running.base_url);

        let profile = Profile::from_yaml(PROFILE).unwrap();
        let core = FleetCore::new(&profile, None, None).unwrap();
        let mut config = HttpFleetConfig::new(&running.base_url);
        config.poll_timeout_ms = 2_000;
        config.concurrency = 4;
        config.register = Some(Registration {
            management_url: format!("{}/api:1", running.base_url),
            token: TOKEN.into(),
            connector: CONNECTOR.into(),
        });
        let fleet = HttpFleet::start(core, config).unwrap();
        let identities = fleet.identities().to_vec();
        let client = reqwest::Client::new();

        // Every device registers, activates and reports its version at boot.
        for id in &identities {
            eventually(
                &format!("boot report of {id}"),
                Duration::from_secs(30),
                || async {
                    let s = state(&client, &management_url, id).await;
                    (classify(value(&s, OTAU_IN, "reported").as_deref(), "2.0.0")
                        == Classification::CurrentVersion("1.0.0".into()))
                    .then_some(())
                },
            )
            .await;
        }
        let listed = connector.identity("http-ok-000001").unwrap();
        assert!(
            serde_json::to_string(&listed.tags)
                .unwrap()
                .contains("http"),
            "tags registered"
        );

        // Wait until the long polls are waiting, so the write below wakes them.
        eventually("long polls", Duration::from_secs(30), || async {
            (connector.waiting_polls() >= identities.len()).then_some(())
        })
        .await;
        let m = manifest("2.0.0").to_json();
        for id in &identities {
            let r = client
                .patch(format!(
                    "{management_url}service/{CONNECTOR}/device2/identity/{id}/state"
                ))
                .header("authorization", format!("token {TOKEN}"))
                .json(&serde_json::json!({ CONFIG_OTAU: m }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "set state: {}", r.status());
        }

        for id in &identities {
            let want = if id.starts_with("http-fail-") {
                Classification::Failed
            } else {
                Classification::Succeeded
            };
            let s = eventually(
                &format!("final report of {id}"),
                Duration::from_secs(30),
                || async {
                    let s = state(&client, &management_url, id).await;
                    (classify(value(&s, OTAU_IN, "reported").as_deref(), "2.0.0") == want)
                        .then_some(s)
                },
            )
            .await;
            let (set, reported) = (
                value(&s, CONFIG_OTAU, "set"),
                value(&s, CONFIG_OTAU, "reported"),
            );
            if id.starts_with("http-short-") {
                assert_eq!(
                    (set.as_deref(), reported.as_deref()),
                    (Some("ACK"), Some("ACK")),
                    "{id}"
                );
            } else {
                assert!(
                    same_json(set.as_deref().unwrap(), reported.as_deref().unwrap()),
                    "{id}: acked by echo"
                );
            }
        }
        let summary = fleet.stop().await;
        assert_eq!(summary.finished.success, 6, "{summary:?}");
        assert_eq!(summary.finished.install_error, 2, "{summary:?}");
        assert_eq!(summary.actions.downloads, 8, "{summary:?}");
        assert_eq!(
            summary.actions.bytes,
            8 * FIRMWARE.len() as u64,
            "{summary:?}"
        );
        running.shutdown().await;
    }

    /// An emulator with the firmware on its default connector, served on loopback.
    async fn emulator() -> (
        Arc<otau_operator::emulator::model::Connector>,
        server::RunningServer,
    ) {
        let (_, connector, running) = emulator_with_model().await;
        (connector, running)
    }

    /// As [`emulator`], with the model.
    pub(super) async fn emulator_with_model() -> (
        Arc<Model>,
        Arc<otau_operator::emulator::model::Connector>,
        server::RunningServer,
    ) {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let model = Model::new(
            ModelConfig {
                management_tokens: vec![TOKEN.into()],
                ..ModelConfig::default()
            },
            clock.clone(),
        );
        let connector = model.add_connector(CONNECTOR).unwrap();
        connector
            .content()
            .put(ContentItem {
                id: "fw-2.0.0.bin".into(),
                content_type: "application/octet-stream".into(),
                data: axum::body::Bytes::from_static(FIRMWARE),
                tags: Default::default(),
                last_modified: clock.now_micros(),
            })
            .unwrap();
        let app = AppState {
            model: model.clone(),
            options: Arc::new(ServerOptions {
                default_connector: Some(CONNECTOR.into()),
                ..ServerOptions::default()
            }),
        };
        let running = server::start("127.0.0.1:0".parse().unwrap(), app)
            .await
            .unwrap();
        (model, connector, running)
    }

    /// Whitelists the fleet's identities in the model (no registration over HTTP) and starts
    /// the HTTP fleet against `base_url`.
    fn start_fleet(
        connector: &otau_operator::emulator::model::Connector,
        base_url: &str,
        profile: &str,
        concurrency: usize,
    ) -> otau_operator::emulator::fleet::HttpFleetHandle {
        let core = FleetCore::new(&Profile::from_yaml(profile).unwrap(), None, None).unwrap();
        let ids = (0..core.len() as u32).map(|i| (core.identity(i).to_string(), Vec::new()));
        connector.add_identities_bulk(ids).unwrap();
        let mut config = HttpFleetConfig::new(base_url);
        config.poll_timeout_ms = 20_000;
        config.concurrency = concurrency;
        HttpFleet::start(core, config).unwrap()
    }

    pub(super) fn reported(
        connector: &otau_operator::emulator::model::Connector,
        id: &str,
        alias: &str,
    ) -> (Option<String>, Option<String>) {
        let state = connector.state(id).unwrap();
        let v = state.get(alias);
        (
            v.and_then(|v| v.reported.clone()),
            v.and_then(|v| v.set.clone()),
        )
    }

    /// The HTTP fleet holds a long poll per device for a thousand devices on loopback (the
    /// bench goes to 5,000), then each of them takes one cloud write through its poll to
    /// `INSTALLED_VERSION` of the target, without a request failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_fleet_holds_a_thousand_long_polls_and_completes() {
        const N: usize = 1000;
        let limit = otau_operator::emulator::fleet::raise_open_files_limit().unwrap();
        assert!(
            limit >= 3 * N as u64,
            "open files limit {limit}: raise the hard limit"
        );
        let (connector, running) = emulator().await;
        let profile = format!(
            "seed: 4\ngroups:\n  - name: many\n    count: {N}\n    identity_prefix: k-\n    version: '1.0.0'\n    behaviour:\n      durations: {{step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}}\n"
        );
        let mut fleet = start_fleet(&connector, &running.base_url, &profile, 64);
        let ids = fleet.identities().to_vec();
        eventually(
            "a long poll per device",
            Duration::from_secs(120),
            || async { (connector.waiting_polls() >= N).then_some(()) },
        )
        .await;
        let m = manifest("2.0.0").to_json();
        for id in &ids {
            connector
                .set_state(id, &[(CONFIG_OTAU.into(), m.clone())], "test")
                .unwrap();
        }
        let summary = fleet
            .wait_for(|s| s.finished.success >= N as u64, Duration::from_secs(120))
            .await
            .unwrap_or_else(|s| panic!("not every device finished: {s}"));
        assert_eq!(summary.actions.errors, 0, "{summary}");
        // The summary counts writes handed to the devices' I/O: wait for the last ones to land.
        eventually("every final report", Duration::from_secs(60), || async {
            ids.iter()
                .all(|id| {
                    classify(reported(&connector, id, OTAU_IN).0.as_deref(), "2.0.0")
                        == Classification::Succeeded
                })
                .then_some(())
        })
        .await;
        for id in &ids {
            let (report, _) = reported(&connector, id, OTAU_IN);
            assert_eq!(
                classify(report.as_deref(), "2.0.0"),
                Classification::Succeeded,
                "{id}"
            );
            let (ack, set) = reported(&connector, id, CONFIG_OTAU);
            assert_eq!(ack, set, "{id}: acked by echo");
        }
        // They poll again: the emulator holds a poll for every device once more.
        eventually("the polls again", Duration::from_secs(60), || async {
            (connector.waiting_polls() >= N).then_some(())
        })
        .await;
        fleet.stop().await;
        running.shutdown().await;
    }

    pub(super) const BEHAVIOURS: &str = "
seed: 9
groups:
  - {name: guide, count: 2, identity_prefix: b-guide-, version: '1.0.0', behaviour: {guide_loop: 1, durations: &fast {step: 20ms, test: 20ms, download: 20ms, install: 20ms, reboot: 20ms}}}
  - {name: ack-fail, count: 2, identity_prefix: b-ackfail-, version: '1.0.0', behaviour: {ack: {echo_immediately: 0, echo_after_outcome: 1}, outcomes: {install_error: 1}, durations: *fast}}
  - {name: drop, count: 2, identity_prefix: b-drop-, version: '1.0.0', behaviour: {outcomes: {offline_mid_download: 1}, offline: {mid_download_for: 300ms}, durations: *fast}}
  - {name: order, count: 2, identity_prefix: b-order-, version: '1.0.0', behaviour: {outcomes: {out_of_order: 1}, durations: *fast}}
  - {name: unknown-error, count: 2, identity_prefix: b-unkerr-, version: '1.0.0', behaviour: {outcomes: {unknown_error: 1}, durations: *fast}}
  - {name: other-version, count: 2, identity_prefix: b-other-, version: '1.0.0', behaviour: {outcomes: {other_version: 1}, durations: *fast}}
  - {name: out-of-band, count: 2, identity_prefix: b-oob-, version: '1.0.0', behaviour: {out_of_band: {fraction: 1, version: 1.5.0-oob, duration: 5s}, durations: *fast}}
";

    /// Every new behaviour over real HTTP, per device against the emulator's state: the guide
    /// loop installs the same manifest again and again; an ack after a failed install; a drop
    /// mid-download that ends on the target; out-of-order statuses leave `INSTALL_SUCCESS`
    /// last; `VERIFY_ERROR`; reports naming `2.0.0-other`; an out-of-band install that holds
    /// our manifest (no ack) until it is over, then runs it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_fleet_runs_every_field_behaviour() {
        let (connector, running) = emulator().await;
        let mut fleet = start_fleet(&connector, &running.base_url, BEHAVIOURS, 8);
        let ids = fleet.identities().to_vec();
        // Everyone booted (the out-of-band devices are installing their other package).
        eventually("boot reports", Duration::from_secs(30), || async {
            ids.iter()
                .all(|id| {
                    let report = reported(&connector, id, OTAU_IN).0.unwrap_or_default();
                    !report.is_empty() && (!id.starts_with("b-oob-") || report.contains("oob"))
                })
                .then_some(())
        })
        .await;
        let m = manifest("2.0.0").to_json();
        for id in &ids {
            connector
                .set_state(id, &[(CONFIG_OTAU.into(), m.clone())], "test")
                .unwrap();
        }
        // Out of band: the manifest waits while the other package installs.
        for id in ids.iter().filter(|i| i.starts_with("b-oob-")) {
            let (report, _) = reported(&connector, id, OTAU_IN);
            assert!(report.unwrap().contains("1.5.0-oob"), "{id}");
            assert_eq!(
                reported(&connector, id, CONFIG_OTAU).0,
                None,
                "{id}: no ack yet"
            );
        }
        let status_of = |id: &str| {
            let raw = reported(&connector, id, OTAU_IN).0?;
            let r = otau_operator::otau::Report::parse(&raw).ok()?;
            Some((r.status.as_str().to_string(), r.version))
        };
        let expect = |prefix: &str| -> (&str, &str) {
            match prefix {
                "b-ackfail-" => ("INSTALL_ERROR", "2.0.0"),
                "b-order-" => ("INSTALL_SUCCESS", "2.0.0"),
                "b-unkerr-" => ("VERIFY_ERROR", "2.0.0"),
                "b-other-" => ("INSTALLED_VERSION", "2.0.0-other"),
                _ => ("INSTALLED_VERSION", "2.0.0"),
            }
        };
        for id in &ids {
            let prefix = &id[..id.rfind('-').unwrap() + 1];
            let (status, version) = expect(prefix);
            eventually(
                &format!("last report of {id}"),
                Duration::from_secs(30),
                || async {
                    (status_of(id) == Some((status.to_string(), version.to_string()))).then_some(())
                },
            )
            .await;
            let (ack, set) = reported(&connector, id, CONFIG_OTAU);
            assert_eq!(ack.as_deref(), set.as_deref(), "{id}: acked by echo");
        }
        // The guide loop: more runs than devices, every one a success of the same manifest.
        // Successes besides the guide devices': 2 runs again after the drop, 2 after out of
        // band; so more than that plus two per guide device means a guide device ran again.
        const GUIDE_RUNS_AT_LEAST: u64 = 2 + 2 + 2 * 2;
        let summary = fleet
            .wait_for(
                |s| s.started.success > GUIDE_RUNS_AT_LEAST,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|s| panic!("the guide loop did not run again: {s}"));
        assert_eq!(summary.finished.offline_mid_download, 2, "{summary}");
        assert_eq!(summary.finished.install_error, 2, "{summary}");
        assert_eq!(summary.finished.unknown_error, 2, "{summary}");
        assert_eq!(summary.actions.errors, 0, "{summary}");
        fleet.stop().await;
        running.shutdown().await;
    }
}

// ----- over real loopback MQTT -----

mod mqtt {
    use std::sync::Arc;
    use std::time::Duration;

    use otau_operator::emulator::faults::{FaultConfig, FaultRule, Faults};
    use otau_operator::emulator::fleet::mqtt::{MqttError, MqttLink};
    use otau_operator::emulator::fleet::{
        FleetCore, HttpFleet, HttpFleetConfig, HttpFleetHandle, MqttDeviceConfig, MqttFaults,
        MqttTlsPort, Profile,
    };
    use otau_operator::emulator::model::{Connector, Model};
    use otau_operator::emulator::mqtt::{
        Close, MQTT_LISTENER, MqttListener, MqttMetrics, MqttOptions, MqttService,
    };
    use otau_operator::emulator::server::{self, AppState, ServerOptions};
    use otau_operator::emulator::tls::self_signed;
    use otau_operator::otau::{CONFIG_OTAU, OTAU_IN, Report};

    use super::http::{BEHAVIOURS, emulator_with_model, eventually, reported};
    use super::{CONNECTOR, manifest};

    /// The behaviours' profile with every group on MQTT (their HTTP to the MQTT TLS port with
    /// `one_port`), and two plain HTTP devices beside.
    fn profile(one_port: bool) -> String {
        let transport = if one_port {
            "transport: {mqtt: 1, http_on_mqtt_port: 1}, behaviour: {"
        } else {
            "transport: {mqtt: 1}, behaviour: {"
        };
        let mqtt = BEHAVIOURS.replace("behaviour: {", transport);
        format!(
            "{mqtt}  - {{name: http, count: 2, identity_prefix: b-http-, version: '1.0.0', behaviour: {{durations: *fast}}}}\n"
        )
    }

    /// The emulator's plain MQTT listener on `model`, with server-side fault `rules`.
    async fn listener(
        model: &Arc<Model>,
        rules: Vec<FaultRule>,
    ) -> (Arc<MqttService>, MqttListener) {
        let mut options = MqttOptions::defaults(model, Some(CONNECTOR.to_string()));
        options.faults = Arc::new(
            Faults::new(FaultConfig {
                seed: 3,
                rules,
                rate_limit: None,
            })
            .unwrap(),
        );
        let service = MqttService::new(model.clone(), options, MqttMetrics::new());
        let plain = MqttListener::start_plain("127.0.0.1:0".parse().unwrap(), service.clone())
            .await
            .unwrap();
        (service, plain)
    }

    fn start(
        connector: &Connector,
        base_url: &str,
        mqtt: std::net::SocketAddr,
        faults: MqttFaults,
        http_port: Option<MqttTlsPort>,
    ) -> HttpFleetHandle {
        let profile = profile(http_port.is_some());
        let core = FleetCore::new(&Profile::from_yaml(&profile).unwrap(), None, None).unwrap();
        let ids = (0..core.len() as u32).map(|i| (core.identity(i).to_string(), Vec::new()));
        connector.add_identities_bulk(ids).unwrap();
        let mut config = HttpFleetConfig::new(base_url);
        config.poll_timeout_ms = 20_000;
        config.concurrency = 8;
        let mut m = MqttDeviceConfig::new(mqtt);
        m.faults = faults;
        m.http_port = http_port;
        config.mqtt = Some(m);
        HttpFleet::start(core, config).unwrap()
    }

    /// The MQTT TLS listener of `service`, serving the emulator's HTTP router by ALPN.
    async fn tls_listener(
        model: &Arc<Model>,
        service: &Arc<MqttService>,
    ) -> (MqttListener, MqttTlsPort) {
        let cert = self_signed(&[]).unwrap();
        let app = server::router(AppState {
            model: model.clone(),
            options: Arc::new(ServerOptions {
                default_connector: Some(CONNECTOR.into()),
                ..ServerOptions::default()
            }),
        });
        let tls =
            MqttListener::start_tls("127.0.0.1:0".parse().unwrap(), service.clone(), &cert, app)
                .await
                .unwrap();
        let port = MqttTlsPort {
            address: tls.local_addr,
            host: format!("{CONNECTOR}.m2.localhost"),
            certificate_pem: cert.certificate_pem(),
        };
        (tls, port)
    }

    /// Runs the behaviours' fleet on MQTT (with `faults`; with `one_port`, the MQTT devices'
    /// HTTP goes to the MQTT TLS port) through one cloud write each; checks per device that
    /// each ends where its behaviour leads, as over HTTP; returns the summary, the sessions
    /// the server saw end before the stop (DISCONNECT, closed, taken over) and the HTTP
    /// connections served on the MQTT TLS port.
    async fn run(
        faults: MqttFaults,
        one_port: bool,
        server_rules: Vec<FaultRule>,
    ) -> (otau_operator::emulator::fleet::FleetSummary, [u64; 3], u64) {
        let (model, connector, running) = emulator_with_model().await;
        // A fault that drops a `$provision` publish makes the device provision again.
        let provisioned_once = server_rules.is_empty();
        let (service, plain) = listener(&model, server_rules).await;
        let tls = match one_port {
            true => Some(tls_listener(&model, &service).await),
            false => None,
        };
        let port = tls.as_ref().map(|t| t.1.clone());
        let mut fleet = start(
            &connector,
            &running.base_url,
            plain.local_addr,
            faults,
            port,
        );
        let ids = fleet.identities().to_vec();
        let mqtt_ids: Vec<&String> = ids.iter().filter(|i| !i.starts_with("b-http-")).collect();
        eventually("boot reports", Duration::from_secs(30), || async {
            ids.iter()
                .all(|id| {
                    let report = reported(&connector, id, OTAU_IN).0.unwrap_or_default();
                    !report.is_empty() && (!id.starts_with("b-oob-") || report.contains("oob"))
                })
                .then_some(())
        })
        .await;
        // Every MQTT device holds its session: the cloud write below reaches it as a push.
        eventually(
            "a session per MQTT device",
            Duration::from_secs(30),
            || async { (service.connected_devices() >= mqtt_ids.len()).then_some(()) },
        )
        .await;
        let m = manifest("2.0.0").to_json();
        for id in &ids {
            connector
                .set_state(id, &[(CONFIG_OTAU.into(), m.clone())], "test")
                .unwrap();
        }
        let status_of = |id: &str| {
            let raw = reported(&connector, id, OTAU_IN).0?;
            let r = Report::parse(&raw).ok()?;
            Some((r.status.as_str().to_string(), r.version))
        };
        for id in &ids {
            let prefix = &id[..id.rfind('-').unwrap() + 1];
            let (status, version) = match prefix {
                "b-ackfail-" => ("INSTALL_ERROR", "2.0.0"),
                "b-order-" => ("INSTALL_SUCCESS", "2.0.0"),
                "b-unkerr-" => ("VERIFY_ERROR", "2.0.0"),
                "b-other-" => ("INSTALLED_VERSION", "2.0.0-other"),
                _ => ("INSTALLED_VERSION", "2.0.0"),
            };
            eventually(
                &format!("last report of {id}"),
                Duration::from_secs(30),
                || async {
                    (status_of(id) == Some((status.to_string(), version.to_string()))).then_some(())
                },
            )
            .await;
            let (ack, set) = reported(&connector, id, CONFIG_OTAU);
            assert_eq!(ack.as_deref(), set.as_deref(), "{id}: acked by echo");
        }
        // The guide loop over MQTT: its poll is one HTTP read of the same manifest, so it
        // runs again (see the HTTP test for the count).
        let summary = fleet
            .wait_for(
                |s| s.started.success > 2 + 2 + 2 + 2 * 2,
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|s| panic!("the guide loop did not run again: {s}"));
        let summary_text = summary.to_string();
        assert_eq!(summary.finished.offline_mid_download, 2, "{summary_text}");
        assert_eq!(summary.finished.install_error, 2, "{summary_text}");
        assert_eq!(summary.actions.errors, 0, "{summary_text}");
        assert_eq!(
            summary.actions.mqtt_devices,
            mqtt_ids.len() as u64,
            "{summary_text}"
        );
        // Pushes reached every MQTT device but the guide loops' (they read; a push may come
        // while they run and is then ignored, as the guide's script does).
        assert!(
            summary.actions.mqtt_pushes >= mqtt_ids.len() as u64 - 2,
            "{summary_text}"
        );
        let metrics = service.metrics().clone();
        // Each MQTT device provisioned over an anonymous session (once, without server
        // faults), then held its own.
        let anonymous = metrics.connects(MQTT_LISTENER, "anonymous");
        let provisions = metrics.messages("in", "provision");
        if provisioned_once {
            assert_eq!(anonymous, mqtt_ids.len() as u64);
        } else {
            assert!(anonymous >= mqtt_ids.len() as u64, "{anonymous}");
        }
        assert_eq!(provisions, mqtt_ids.len() as u64);
        assert!(metrics.connects(MQTT_LISTENER, "accepted") >= mqtt_ids.len() as u64);
        assert!(metrics.messages("in", "resource") >= summary.actions.mqtt_writes);
        // Their reports and acks went over MQTT: a boot report, ten or so per run, an ack.
        assert!(
            summary.actions.mqtt_writes >= 5 * mqtt_ids.len() as u64,
            "{summary_text}"
        );
        // Sessions the server saw end before the fleet stops (then every socket closes).
        let closed = [Close::Disconnect, Close::PeerClosed, Close::Fault]
            .map(|c| metrics.closed_count(MQTT_LISTENER, c));
        eprintln!("closed before the stop (disconnect, peer closed, fault): {closed:?}");
        let http_on_port = metrics.http_connections();
        fleet.stop().await;
        plain.shutdown().await;
        if let Some((tls, _)) = tls {
            tls.shutdown().await;
        }
        service.stop();
        running.shutdown().await;
        (summary, closed, http_on_port)
    }

    /// Every field behaviour over MQTT, per device against the emulator's state, as over HTTP
    /// (exosite-platform.md §4.4): provisioning on `$provision/<identity>`, reports and acks
    /// by publish, `config_otau` as a push, content over HTTP.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_fleet_runs_every_field_behaviour() {
        let (summary, closed, _) = run(MqttFaults::default(), false, Vec::new()).await;
        assert_eq!(summary.actions.mqtt_reconnects, 0, "{summary}");
        // Only the provisioning sessions ended, each with DISCONNECT.
        assert_eq!(closed, [14, 0, 0]);
    }

    /// Devices with one port (exosite-platform.md §3.1, "Content over the MQTT port"): the
    /// MQTT devices read `config_otau` and download their content with HTTP on the MQTT TLS
    /// port, selected by ALPN `http/1.1`, trusting that port's certificate only; every
    /// behaviour ends as over the HTTP port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_fleet_downloads_content_over_the_mqtt_tls_port_by_alpn() {
        let (summary, _, http_on_port) = run(MqttFaults::default(), true, Vec::new()).await;
        assert!(http_on_port >= 1, "HTTP connections on the MQTT TLS port");
        assert_eq!(summary.failed_downloads, 0, "{summary}");
        assert!(summary.actions.downloads >= 12, "{summary}");
    }

    /// The same with faults on the devices' side: a fifth of the writes first lose the
    /// connection (no DISCONNECT: the server sees the socket close) and a tenth disconnect
    /// cleanly; every device reconnects, writes again and still ends where its behaviour
    /// leads, the pushes it missed meanwhile replayed on reconnect (§4.4 step 5).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_fleet_survives_dropped_and_closed_connections() {
        let faults = MqttFaults {
            drop_rate: 0.2,
            disconnect_rate: 0.1,
            seed: 5,
        };
        let (summary, [disconnect, peer_closed, _], _) = run(faults, false, Vec::new()).await;
        assert!(summary.actions.mqtt_reconnects >= 10, "{summary}");
        assert!(disconnect >= 14 + 3, "{disconnect} DISCONNECTs");
        assert!(peer_closed >= 5, "{peer_closed} lost");
    }

    /// A profile that puts devices on MQTT needs the MQTT listener, and one that sends their
    /// HTTP to the MQTT TLS port needs that port: the fleet refuses to start without, naming
    /// how many devices need it; the same profile with both starts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fleet_with_devices_on_mqtt_needs_the_listeners_they_use() {
        let core = |one_port| {
            FleetCore::new(&Profile::from_yaml(&profile(one_port)).unwrap(), None, None).unwrap()
        };
        let base = "http://127.0.0.1:9";
        let e = HttpFleet::start(core(false), HttpFleetConfig::new(base)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the profile puts 14 devices on MQTT (transport.mqtt) but the fleet has no MQTT listener to reach"
        );
        let mut config = HttpFleetConfig::new(base);
        config.mqtt = Some(MqttDeviceConfig::new("127.0.0.1:9".parse().unwrap()));
        let e = HttpFleet::start(core(true), config.clone()).unwrap_err();
        assert!(e.to_string().contains("14 devices' HTTP"), "{e}");
        let cert = self_signed(&[]).unwrap();
        config.mqtt.as_mut().unwrap().http_port = Some(MqttTlsPort {
            address: "127.0.0.1:9".parse().unwrap(),
            host: format!("{CONNECTOR}.m2.localhost"),
            certificate_pem: cert.certificate_pem(),
        });
        let fleet = HttpFleet::start(core(true), config).unwrap();
        assert_eq!(fleet.summary().actions.mqtt_devices, 14);
        fleet.stop().await;
    }

    /// The emulator command's `--fault` rules reach its MQTT listener: with every CONNECT
    /// refused, a device's session gets CONNACK 3 (server unavailable), which the fleet's
    /// devices retry rather than take as bad credentials.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_emulator_commands_fault_flags_reach_mqtt() {
        let (_emulator, ready) = crate::harness::start_binary(&[
            "--mqtt-listen",
            "127.0.0.1:0",
            "--fault",
            "mqtt.connect:error_rate=1",
        ]);
        let url = ready["mqtt_url"].as_str().expect("mqtt_url");
        let address = url.trim_start_matches("mqtt://").parse().unwrap();
        let config = MqttDeviceConfig::new(address);
        let token = "0123456789012345678901234567890123456789";
        let refused = MqttLink::connect(&config, token, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(
                refused,
                MqttError::Refused(rumqttc::ConnectReturnCode::ServiceUnavailable)
            ),
            "{refused}"
        );
        assert!(!refused.is_final(), "a device tries again");
    }

    /// Faults on the server's side, from the emulator's fault rules: a tenth of the device
    /// publishes are dropped (connection closed, nothing written, no PUBACK), a fifth of the
    /// CONNECTs are refused with CONNACK 3, and pushes come 50 ms late. The devices reconnect,
    /// write again and every one still ends where its behaviour leads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mqtt_fleet_survives_the_servers_injected_faults() {
        let mut publish = FaultRule::new("mqtt.publish");
        publish.drop_rate = 0.1;
        let mut connect = FaultRule::new("mqtt.connect");
        connect.error_rate = 0.2;
        let mut deliver = FaultRule::new("mqtt.deliver");
        deliver.latency_ms = 50;
        let (summary, [_, _, fault], _) = run(
            MqttFaults::default(),
            false,
            vec![publish, connect, deliver],
        )
        .await;
        assert!(summary.actions.mqtt_reconnects >= 5, "{summary}");
        assert!(fault >= 10, "{fault} sessions closed by a fault");
    }
}

// ----- a device client not written in Rust -----

mod python {
    use std::process::Stdio;
    use std::time::Duration;

    use otau_operator::otau::{CONFIG_OTAU, Classification, OTAU_IN, classify, same_json};
    use sha2::{Digest, Sha256};

    use super::{FIRMWARE, http::eventually, manifest};

    fn field(v: &serde_json::Value, key: &str) -> String {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("no `{key}` in {v}"))
            .to_string()
    }

    /// Uploads a content item through the management API's two-step presigned POST.
    pub(super) async fn upload(
        client: &reqwest::Client,
        mgmt: &str,
        cid: &str,
        token: &str,
        id: &str,
        data: &'static [u8],
    ) {
        let sha = hex::encode(Sha256::digest(data));
        let form: serde_json::Value = client
            .get(format!("{mgmt}service/{cid}/content/item/{id}/upload"))
            .query(&[
                ("sha256", sha.as_str()),
                ("expires_in", "60"),
                ("type", "application/octet-stream"),
            ])
            .header("authorization", format!("token {token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut multipart = reqwest::multipart::Form::new();
        for (k, v) in form["inputs"].as_object().expect("inputs") {
            multipart = multipart.text(k.clone(), v.as_str().unwrap_or_default().to_string());
        }
        let part = reqwest::multipart::Part::bytes(data).file_name(id.to_string());
        multipart = multipart.part(field(&form, "field"), part);
        let r = client
            .post(field(&form, "url"))
            .multipart(multipart)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "object store upload: {}",
            r.status()
        );
    }

    /// A device client written in Python with the standard library only runs the OTAU flow
    /// against the emulator binary: a check that the wire format works for a client not
    /// written in Rust.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn python_device_client_completes_the_flow() {
        let (_emulator, ready) = crate::harness::start_binary(&[]);
        let (device_url, mgmt, cid, token) = (
            field(&ready, "device_url"),
            field(&ready, "management_url"),
            field(&ready, "connector"),
            field(&ready, "management_token"),
        );
        let client = reqwest::Client::new();
        upload(&client, &mgmt, &cid, &token, "fw-2.0.0.bin", FIRMWARE).await;
        let identity = "py-device-1";
        let r = client
            .put(format!("{mgmt}service/{cid}/device2/identity/{identity}"))
            .header("authorization", format!("token {token}"))
            .json(&serde_json::json!({"auth": {"type": "token"}, "locked": false}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "whitelist: {}", r.status());

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otau_device.py");
        let python = tokio::process::Command::new("python3")
            .args([
                script,
                "--url",
                &device_url,
                "--identity",
                identity,
                "--version",
                "1.0.0",
            ])
            .args(["--deadline", "60", "--poll-ms", "2000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");

        let state_url = format!("{mgmt}service/{cid}/device2/identity/{identity}/state");
        let get_state = || async {
            let s: serde_json::Value = client
                .get(&state_url)
                .header("authorization", format!("token {token}"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            Some(s)
        };
        // The device booted: it reported its current version.
        eventually(
            "the Python device's boot report",
            Duration::from_secs(60),
            || async {
                let s = get_state().await?;
                let reported = s[OTAU_IN]["reported"].as_str().map(str::to_string);
                (classify(reported.as_deref(), "2.0.0")
                    == Classification::CurrentVersion("1.0.0".into()))
                .then_some(())
            },
        )
        .await;

        let m = manifest("2.0.0").to_json();
        let r = client
            .patch(&state_url)
            .header("authorization", format!("token {token}"))
            .json(&serde_json::json!({ CONFIG_OTAU: m }))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "set state: {}", r.status());

        let out = tokio::time::timeout(Duration::from_secs(90), python.wait_with_output())
            .await
            .expect("the Python device finishes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "python: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value =
            serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(summary["downloaded"]["fw-2.0.0.bin"], FIRMWARE.len());
        assert_eq!(
            summary["links"][0],
            "https://cdn.example.com/release-notes.txt"
        );

        let s = get_state().await.unwrap();
        let reported = s[OTAU_IN]["reported"].as_str();
        assert_eq!(
            classify(reported, "2.0.0"),
            Classification::Succeeded,
            "{s}"
        );
        let (set, acked) = (
            s[CONFIG_OTAU]["set"].as_str().unwrap(),
            s[CONFIG_OTAU]["reported"].as_str().unwrap(),
        );
        assert!(same_json(set, acked), "ack: set == reported: {s}");
        assert_eq!(set, m);
    }
}

// ----- the Python client as the OTA guide's example script -----

mod python_guide {
    use std::process::Stdio;
    use std::time::Duration;

    use otau_operator::otau::{CONFIG_OTAU, Classification, OTAU_IN, classify};

    use super::{FIRMWARE, manifest};

    fn field(v: &serde_json::Value, key: &str) -> String {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("no `{key}` in {v}"))
            .to_string()
    }

    /// Runs the Python client to its end; returns (exit success, its JSON summary line).
    async fn run_python(
        device_url: &str,
        identity: &str,
        extra: &[&str],
    ) -> (bool, serde_json::Value) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otau_device.py");
        let out = tokio::process::Command::new("python3")
            .args([
                script,
                "--url",
                device_url,
                "--identity",
                identity,
                "--version",
                "1.0.0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(90), out)
            .await
            .expect("the Python device ends within its deadline")
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary = serde_json::from_str(stdout.lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), summary)
    }

    fn count(summary: &serde_json::Value, status: &str) -> usize {
        summary["statuses"]
            .as_array()
            .expect("statuses")
            .iter()
            .filter(|s| *s == status)
            .count()
    }

    /// The guide-faithful Python device (If-Modified-Since: 0, no memory, ack before install)
    /// gets the same manifest again at once after each update and installs it again: three
    /// runs of one manifest written once. A device that remembers what it handled, on the same
    /// emulator with the same manifest, runs it once and then waits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guide_faithful_python_device_reinstalls_the_same_update() {
        let (_emulator, ready) = crate::harness::start_binary(&[]);
        let (device_url, mgmt, cid, token) = (
            field(&ready, "device_url"),
            field(&ready, "management_url"),
            field(&ready, "connector"),
            field(&ready, "management_token"),
        );
        let client = reqwest::Client::new();
        super::python::upload(&client, &mgmt, &cid, &token, "fw-2.0.0.bin", FIRMWARE).await;
        let m = manifest("2.0.0").to_json();
        for identity in ["py-guide", "py-memory"] {
            let base = format!("{mgmt}service/{cid}/device2/identity/{identity}");
            let r = client
                .put(&base)
                .header("authorization", format!("token {token}"))
                .json(&serde_json::json!({"auth": {"type": "token"}, "locked": false}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "whitelist: {}", r.status());
            // The manifest is there before the device boots: written once, never again.
            let r = client
                .patch(format!("{base}/state"))
                .header("authorization", format!("token {token}"))
                .json(&serde_json::json!({ CONFIG_OTAU: m }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "set state: {}", r.status());
        }
        let guide = [
            "--guide",
            "--updates",
            "3",
            "--deadline",
            "60",
            "--poll-ms",
            "2000",
        ];
        let memory = ["--updates", "2", "--deadline", "4", "--poll-ms", "1000"];
        let ((guide_ok, g), (memory_ok, n)) = tokio::join!(
            run_python(&device_url, "py-guide", &guide),
            run_python(&device_url, "py-memory", &memory),
        );
        assert!(guide_ok, "{g}");
        assert_eq!(g["updates"], 3, "{g}");
        assert_eq!(count(&g, "INIT"), 3, "{g}");
        assert_eq!(
            count(&g, "INSTALLED_VERSION"),
            4,
            "boot + three installs: {g}"
        );
        assert_eq!(g["downloaded"]["fw-2.0.0.bin"], FIRMWARE.len());
        assert!(
            !memory_ok,
            "a device with memory never sees a second update: {n}"
        );
        assert_eq!(count(&n, "INIT"), 1, "{n}");
        // The emulator's ground truth: the guide device ends on the target and its ack left
        // set == reported.
        let s: serde_json::Value = client
            .get(format!(
                "{mgmt}service/{cid}/device2/identity/py-guide/state"
            ))
            .header("authorization", format!("token {token}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            classify(s[OTAU_IN]["reported"].as_str(), "2.0.0"),
            Classification::Succeeded,
            "{s}"
        );
        assert_eq!(s[CONFIG_OTAU]["reported"].as_str(), Some(m.as_str()), "{s}");
    }
}
