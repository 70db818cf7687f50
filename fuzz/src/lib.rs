//! The fuzz targets: one function per parser of untrusted input, each taking the bytes an
//! attacker controls and asserting what must hold for every input (no panic, overflow checks
//! on, and the properties each names). The AFL++ binaries in `src/bin/` call them, and
//! `replay` runs files through them (the corpora, crashes found, regression inputs).
//!
//! | Target | Untrusted input | Parser |
//! |---|---|---|
//! | `otau_in` | a device's `otau_in` value | `otau::Report::parse`, `otau::classify` |
//! | `manifest` | a `config_otau` value another writer left | `otau::Manifest::parse` |
//! | `push_body` | a pushed device2 event body | `controller::push::DeviceEvent` (serde), folded into the engine's index and a reconcile |
//! | `push_signature` | `X-Otau-Signature` and the body it signs | `controller::push::verify` |
//! | `emulator_device` | a device's HTTP request | the emulator's device API router |
//! | `emulator_management` | a management API request | the emulator's management router |
//! | `emulator_mqtt` | the bytes a device sends on an MQTT connection | the emulator's MQTT session (rumqttc's codec, our semantics) |
//! | `simulate_yaml` | the files and fleet profile given to `simulate` | `simulate`'s document reader, `Profile::from_yaml`, the memory estimate |
//! | `safe_text` | any device text | `otau::safe_text` |

#![forbid(unsafe_code)]

pub mod emulator;
pub mod mqtt;
pub mod simulate;

use std::collections::BTreeMap;
use std::path::Path;

use otau_operator::api::rollout::RolloutSpec;
use otau_operator::controller::push::{DeviceEvent, signature, verify};
use otau_operator::engine::{
    DeviceIndex, DeviceObservation, EngineInput, EngineMemory, IndexConfig,
    MAX_CONDITION_MESSAGE_BYTES, MAX_FAILURE_IDENTITY_BYTES, MAX_FAILURE_MESSAGE_BYTES,
    ResourceState, reconcile,
};
use otau_operator::otau::{Manifest, Report, classify, is_safe_text, safe_text};

/// A target: its name and the function that takes one input.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("otau_in", otau_in),
    ("manifest", manifest),
    ("push_body", push_body),
    ("push_signature", push_signature),
    ("emulator_device", emulator_device),
    ("emulator_management", emulator_management),
    ("emulator_mqtt", emulator_mqtt),
    ("simulate_yaml", simulate_yaml),
    ("safe_text", safe_text_target),
];

/// The target of this name.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The version every target's rollout delivers.
const VERSION: &str = "2.0.0";

/// An `otau_in` value: parsed, classified, shown. A report parses back from its own JSON to
/// the same report, and its message shown is safe and bounded.
pub fn otau_in(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(report) = Report::parse(&text) {
        let again = Report::parse(&report.to_json()).expect("a report's own JSON parses");
        assert_eq!(again, report, "a report round-trips through its JSON");
        let shown = safe_text(&report.message, MAX_FAILURE_MESSAGE_BYTES);
        assert!(is_safe_text(&shown) && shown.len() <= MAX_FAILURE_MESSAGE_BYTES);
    }
    let _ = classify(Some(&text), VERSION);
}

/// A `config_otau` value: a manifest parses back from the operator's own serialisation to
/// the same manifest, and its payload items classify.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(m) = Manifest::parse(&text) {
        let again = Manifest::parse(&m.to_json()).expect("a manifest's own JSON parses");
        assert_eq!(again, m, "a manifest round-trips through its JSON");
        let _ = m.payload.items();
        let _ = m.to_json_checked();
    }
}

/// A pushed event body, as the receiver reads it once the signature matched: parsed, its
/// newest values folded into the index of a rollout that targets the device, and the
/// rollout reconciled. Whatever the device wrote, the status holds only safe, bounded text.
pub fn push_body(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<DeviceEvent>(data) else {
        return;
    };
    let update = event.update();
    let spec: RolloutSpec = serde_yaml::from_str(
        "packageRef: {name: fw}\ntargets: {tags: [{name: fleet, value: f}]}\nwaves: [{percent: 100}]\npolicy: {deviceTimeout: 1m}\n",
    )
    .expect("spec");
    let manifest = Manifest::url_list(VERSION, "fw", "", vec!["fw.bin".into()]);
    let mut device = DeviceObservation::new(event.identity.clone());
    device.tags = spec.targets.tags.clone();
    // Notified long ago, so any report the event carries counts for this attempt.
    device.config_otau = Some(ResourceState::set(manifest.to_json(), 1));
    let mut index = DeviceIndex::build(
        IndexConfig {
            seed: "fuzz/rollout".into(),
            targets: spec.targets.clone(),
            manifest,
        },
        [device],
    );
    index.apply_partial(&event.identity, &update);
    let annotations = BTreeMap::new();
    let status = Default::default();
    let memory = EngineMemory::default();
    let input = EngineInput {
        namespace: "fuzz",
        name: "rollout",
        generation: Some(1),
        spec: &spec,
        annotations: &annotations,
        status: &status,
        memory: &memory,
        max_notifications: None,
    };
    let now = 1_900_000_000_000_000;
    let decision = reconcile(&input, &index, now).expect("the index is the rollout's");
    for f in &decision.status.recent_failures {
        assert!(is_safe_text(&f.identity) && f.identity.len() <= MAX_FAILURE_IDENTITY_BYTES);
        let message = f.message.as_deref().unwrap_or_default();
        assert!(is_safe_text(message) && message.len() <= MAX_FAILURE_MESSAGE_BYTES);
        assert!(is_safe_text(&f.status));
    }
    for c in &decision.status.conditions {
        assert!(is_safe_text(&c.message) && c.message.len() <= MAX_CONDITION_MESSAGE_BYTES);
    }
    for e in &decision.events {
        assert!(is_safe_text(&e.message), "{:?}", e.message);
    }
}

/// `X-Otau-Signature` (the first line) and the body it signs (the rest): the receiver
/// accepts exactly the HMAC-SHA256 of the body under its key, whatever the header holds.
pub fn push_signature(data: &[u8]) {
    const KEY: &[u8] = b"fuzz-webhook-key";
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let header = String::from_utf8_lossy(header);
    let expected = signature(KEY, body);
    assert!(
        verify(KEY, body, &expected),
        "the body's own signature verifies"
    );
    if verify(KEY, body, &header) {
        let given = header
            .trim()
            .strip_prefix("sha256=")
            .and_then(|h| hex::decode(h).ok());
        let real = hex::decode(&expected["sha256=".len()..]).ok();
        assert_eq!(given, real, "accepted a header that is not the body's MAC");
    }
}

/// A device API request (see [`emulator::device_request`]).
pub fn emulator_device(data: &[u8]) {
    emulator::device_request(data);
}

/// A management API request (see [`emulator::management_request`]).
pub fn emulator_management(data: &[u8]) {
    emulator::management_request(data);
}

/// The bytes a device sends on an MQTT connection (see [`mqtt::session`]).
pub fn emulator_mqtt(data: &[u8]) {
    mqtt::session(data);
}

/// The YAML given to `simulate` (see [`simulate::read`]).
pub fn simulate_yaml(data: &[u8]) {
    simulate::read(Path::new("fuzz.yaml"), data);
}

/// Any text a device wrote: shown safe, within the bound, and unchanged when already safe
/// and short enough.
pub fn safe_text_target(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let max = data.first().map_or(0, |&b| usize::from(b));
    let shown = safe_text(&text, max);
    assert!(is_safe_text(&shown), "{shown:?}");
    assert!(shown.len() <= max);
    if is_safe_text(&text) && text.len() <= max {
        assert_eq!(shown, text);
    }
}
