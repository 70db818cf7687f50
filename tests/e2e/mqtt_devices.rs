//! A Rollout to a mixed fleet over both device protocols, end to end: the operator as a
//! process, the apiserver, the emulator with its device MQTT server on a plain listener, a
//! socket fleet whose devices on MQTT provision on `$provision/<identity>`, report and ack by
//! publish, receive `config_otau` as a push and drop or close their connections now and then,
//! half of them reading `config_otau` (and any content) over HTTP on the MQTT TLS port (ALPN),
//! HTTP devices beside them with the same behaviours, and stock paho-mqtt devices
//! (tests/python/otau_device.py --mqtt). Per-device checks against the emulator's ground truth;
//! the expected ends are those of the HTTP behaviours (tests/e2e/devices.rs says why).

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::emulator::fleet::{MqttFaults, Profile};
use otau_operator::emulator::mqtt::MQTT_LISTENER;

use crate::devices::{acked, python_device_output, status_of};
use crate::harness::{
    Emu, Operator, VERSION, WEBHOOK_KEY, apply, base_yaml, rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

/// The behaviours of both halves of the fleet: (name, behaviour, devices on MQTT, on HTTP).
/// 110 devices on MQTT, 45 on HTTP.
const GROUPS: [(&str, &str, u64, u64); 8] = [
    ("ok", "", 40, 10),
    ("guide", "guide_loop: 1", 10, 5),
    (
        "ackfail",
        "ack: {echo_immediately: 0, echo_after_outcome: 1}, outcomes: {install_error: 1}",
        10,
        5,
    ),
    (
        "drop",
        "outcomes: {offline_mid_download: 1}, offline: {mid_download_for: 500ms}",
        10,
        5,
    ),
    ("order", "outcomes: {out_of_order: 1}", 10, 5),
    ("unkerr", "outcomes: {unknown_error: 1}", 10, 5),
    ("other", "outcomes: {other_version: 1}", 10, 5),
    (
        "oob",
        "out_of_band: {fraction: 1, version: 1.5.0-oob, duration: 1s}",
        10,
        5,
    ),
];

/// The paho-mqtt devices.
const PAHO: [&str; 2] = ["py-mqtt-0", "py-mqtt-1"];

/// Every device of the socket fleet: (identity, behaviour name, on MQTT).
fn fleet_devices() -> Vec<(String, &'static str, bool)> {
    let mut out = Vec::new();
    for (name, _, on_mqtt, on_http) in GROUPS {
        for i in 0..on_mqtt {
            out.push((format!("m-{name}-{i:06}"), name, true));
        }
        for i in 0..on_http {
            out.push((format!("h-{name}-{i:06}"), name, false));
        }
    }
    out
}

fn profile() -> Profile {
    let durations =
        "durations: {step: 20ms, test: 50ms, download: 50ms, install: 100ms, reboot: 50ms}";
    let mut yaml = "seed: 80\ngroups:\n".to_string();
    for (name, behaviour, on_mqtt, on_http) in GROUPS {
        let sep = if behaviour.is_empty() { "" } else { ", " };
        // Half the MQTT devices send their HTTP to the MQTT TLS port (ALPN http/1.1).
        for (prefix, count, share) in [
            ("m", on_mqtt, "1, http_on_mqtt_port: 0.5"),
            ("h", on_http, "0"),
        ] {
            yaml.push_str(&format!(
                "  - {{name: {prefix}-{name}, count: {count}, identity_prefix: {prefix}-{name}-, version: '1.0.0', tags: [{{name: fleet, value: e2e}}], transport: {{mqtt: {share}}}, behaviour: {{{behaviour}{sep}{durations}}}}}\n"
            ));
        }
    }
    Profile::from_yaml(&yaml).unwrap_or_else(|e| panic!("profile: {e}\n{yaml}"))
}

/// Starts a paho-mqtt device that runs one update and exits.
fn paho_device(emu: &Emu, identity: &str) -> tokio::process::Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otau_device.py");
    tokio::process::Command::new(crate::support::test_python())
        .args([script, "--url", &emu.base, "--identity", identity])
        .args(["--mqtt", &emu.mqtt_address().to_string()])
        .args(["--version", "1.0.0", "--updates", "1", "--deadline", "120"])
        .args(["--poll-ms", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the tools venv's python3 runs")
}

/// The last report a device of `behaviour` ends with (guide loops: anywhere in a run).
fn expected_end(behaviour: &str) -> Option<(String, String)> {
    let target = |status: &str, version: &str| Some((status.to_string(), version.to_string()));
    match behaviour {
        "ok" | "drop" | "oob" => target("INSTALLED_VERSION", VERSION),
        "ackfail" => target("INSTALL_ERROR", VERSION),
        "order" => target("INSTALL_SUCCESS", VERSION),
        "unkerr" => target("VERIFY_ERROR", VERSION),
        "other" => target("INSTALLED_VERSION", &format!("{VERSION}-other")),
        _ => None,
    }
}

/// 110 simulated devices on MQTT (a tenth of their writes first lose or close the
/// connection), 45 on HTTP, with every field behaviour on both protocols, and two paho-mqtt
/// devices: one Rollout to its end, every device write pushed to the operator. The guide loops
/// count succeeded at their first install (as over HTTP); once every other device finished, the
/// fleet stops and the Rollout completes. Each
/// device is written once; each ends where its behaviour leads, per device against the
/// emulator's state, whatever its protocol; the MQTT devices provisioned and wrote over MQTT
/// and got the operator's write as a push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_a_fleet_on_mqtt_and_http_with_paho_devices_runs_to_its_end() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-mqtt-mixed").await;
    let faults = MqttFaults {
        drop_rate: 0.05,
        disconnect_rate: 0.05,
        seed: 8,
    };
    let mut emu = Emu::start_sockets(&profile(), Some(faults)).await;
    let devices = fleet_devices();
    let on_mqtt = devices.iter().filter(|d| d.2).count() as u64;
    assert!(on_mqtt >= 100);
    let tags = vec![otau_operator::emulator::model::Tag::new("fleet", "e2e")];
    emu.conn()
        .add_identities_bulk(PAHO.iter().map(|id| (id.to_string(), tags.clone())))
        .expect("whitelist");
    let pahos: Vec<_> = PAHO.iter().map(|id| paho_device(&emu, id)).collect();
    let op = Operator::start(cp, &ns, &[]).await;
    // Every device write (over either protocol) is pushed to the operator, so it sees each
    // report, not only those a listing catches (an out-of-order device's INSTALLED_VERSION is
    // overwritten by a later progress report within milliseconds).
    emu.push_to(op.push_addr, WEBHOOK_KEY);
    apply(cp, &ns, &base_yaml(&emu));
    let spec = "  waves:\n    - percent: 100\n  policy:\n    deviceTimeout: 3s\n    failureThreshold:\n      percent: 100\n";
    apply(cp, &ns, &rollout_yaml("fw", spec));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let all = devices.len() as u64 + PAHO.len() as u64;
    let guides = devices.iter().filter(|d| d.1 == "guide").count() as i64;

    // Every device but the looping ones ends its run, in the emulator and in the status.
    let others: Vec<&(String, &str, bool)> = devices.iter().filter(|d| d.1 != "guide").collect();
    crate::support::wait_for(
        crate::harness::DEADLINE,
        "every other device's last report",
        || {
            let done = others
                .iter()
                .all(|(id, behaviour, _)| status_of(&emu, id) == expected_end(behaviour));
            async move { done }
        },
    )
    .await;
    wait_rollout(
        &api,
        "fw",
        "every device but the guide loops finished",
        |r| {
            r.status.as_ref().is_some_and(|s| {
                s.totals.succeeded + s.totals.timed_out + s.totals.failed >= all as i64 - guides
            })
        },
    )
    .await;
    let summary = emu.stop_http().await;
    let r = wait_rollout(&api, "fw", "Complete", |r| {
        crate::harness::condition(r, "Complete").is_some_and(|c| c.status == "True")
    })
    .await;
    let t = r.status.expect("status").totals;
    assert_eq!(t.targeted, all as i64, "{t:?}");

    // The paho-mqtt devices installed the update over MQTT and exited.
    for (id, child) in PAHO.iter().zip(pahos) {
        let stdout = python_device_output(id, child).await;
        assert!(stdout.contains("\"transport\": \"mqtt\""), "{id}: {stdout}");
        assert!(stdout.contains("\"updates\": 1"), "{id}: {stdout}");
        assert_eq!(
            status_of(&emu, id),
            Some(("INSTALLED_VERSION".into(), VERSION.into())),
            "{id}"
        );
        assert!(acked(&emu, id), "{id}");
    }

    // Over MQTT: every simulated MQTT device and paho device provisioned on an anonymous
    // session, the devices wrote by publish (and reconnected after their faults), and the
    // operator's write reached them as a push.
    let text = summary.to_string();
    assert_eq!(summary.actions.mqtt_devices, on_mqtt, "{text}");
    assert_eq!(summary.actions.errors, 0, "{text}");
    assert!(summary.actions.mqtt_reconnects > 0, "{text}");
    assert!(
        summary.actions.mqtt_pushes >= on_mqtt - GROUPS[1].2,
        "{text}"
    );
    let metrics = emu.mqtt().metrics();
    assert_eq!(
        metrics.connects(MQTT_LISTENER, "anonymous"),
        on_mqtt + PAHO.len() as u64
    );
    assert!(metrics.messages("out", "set") >= on_mqtt);
    assert!(metrics.http_connections() > 0, "HTTP on the MQTT TLS port");

    // Per device, against the emulator: one write each, and the end its behaviour leads to.
    let writes = emu.writes();
    assert_eq!(writes.len() as u64, all, "devices written");
    assert!(
        writes.values().all(|w| w == &vec![Some(1)]),
        "one write of attempt 1 each"
    );
    // Counted as the HTTP behaviours are (tests/e2e/devices.rs): a failure acked late and an
    // undocumented *_ERROR status fail, an out-of-order device and a guide loop stay
    // succeeded (re-runs), reports about another version time out.
    let mut expected = (PAHO.len() as i64, 0, 0);
    for (id, behaviour, _) in &devices {
        let last = status_of(&emu, id);
        match expected_end(behaviour) {
            Some(end) => assert_eq!(last, Some(end), "{id}"),
            None => assert_eq!(last.map(|l| l.1), Some(VERSION.to_string()), "{id}"),
        }
        if !matches!(*behaviour, "order" | "unkerr" | "other") {
            assert!(acked(&emu, id), "{id}");
        }
        match *behaviour {
            "ok" | "drop" | "oob" | "guide" | "order" => expected.0 += 1,
            "ackfail" | "unkerr" => expected.1 += 1,
            _ => expected.2 += 1,
        }
    }
    assert_eq!((t.succeeded, t.failed, t.timed_out), expected, "{t:?}");
    let order = devices.iter().filter(|d| d.1 == "order").count() as i64;
    assert!(t.reruns >= order, "{t:?}");
    assert_eq!(
        (t.pending, t.in_progress, t.notified, t.aborted, t.invalid),
        (0, 0, 0, 0, 0),
        "{t:?}"
    );
}
