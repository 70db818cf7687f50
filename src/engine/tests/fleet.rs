//! A tiny fake fleet for engine tests: devices that take a notification, acknowledge it,
//! report `INIT`, then their scripted outcome after a delay, all as platform state.

use std::collections::{BTreeMap, HashMap};

use crate::api::DeviceTag;
use crate::api::rollout::{RolloutSpec, RolloutStatus};
use crate::engine::{
    Blocker, Decision, DeviceIndex, DeviceObservation, EngineInput, EngineMemory, IndexConfig,
    Micros, Notification, ResourceState, order_key, order_seed, reconcile, reconcile_blocked,
    rollout_marker,
};
use crate::otau::{Manifest, Report, Status};

/// The target version of every test.
pub const VERSION: &str = "2.0";
/// The start of every test's clock (µs).
pub const T0: Micros = 1_700_000_000_000_000;
/// One minute in µs.
pub const MINUTE: Micros = 60_000_000;

/// What a device does with one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `INIT`, then `INSTALLED_VERSION` of the target.
    Succeed,
    /// `INIT`, then `INSTALL_ERROR`.
    Fail,
    /// Nothing at all.
    Silent,
    /// `INIT`, then `INSTALL_ABORTED`.
    Abort,
    /// `INIT`, then a value that is not a report.
    Malformed,
}

/// One fake device.
#[derive(Clone, Debug)]
pub struct SimDevice {
    pub identity: String,
    pub tags: Vec<DeviceTag>,
    pub config: Option<ResourceState>,
    pub report: Option<ResourceState>,
    /// Outcome per attempt (the last one repeats).
    pub outcomes: Vec<Outcome>,
    /// Time from notification to the final report.
    pub delay: Micros,
    /// Acknowledges with the literal `ACK` instead of echoing the value.
    pub literal_ack: bool,
    /// The final report due: (time, attempt).
    pub due: Option<(Micros, u32)>,
    /// The attempts the engine wrote to this device, in order.
    pub writes: Vec<u32>,
    /// An update of another manifest this device runs, until our write replaces it.
    pub other: Option<OtherInstall>,
}

/// An update of another manifest (written out of band) that a device is running.
#[derive(Clone, Debug)]
pub struct OtherInstall {
    /// Its version.
    pub version: String,
    /// When the device reports `INSTALLED_VERSION` of it (never, if it is later than any
    /// step).
    pub ends_at: Micros,
}

fn report(status: &str) -> String {
    Report::new(VERSION, Status::parse(status), "").to_json()
}

impl SimDevice {
    /// A device tagged `fleet=a` that succeeds after one minute.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            tags: vec![DeviceTag::new("fleet", "a")],
            config: None,
            report: None,
            outcomes: vec![Outcome::Succeed],
            delay: MINUTE,
            literal_ack: false,
            due: None,
            writes: Vec::new(),
            other: None,
        }
    }

    /// The device runs an update of `other` (written to `config_otau` out of band at
    /// `started`, reported `INSTALLING` a second later) until `ends_at`.
    pub fn installing_other(mut self, other: &Manifest, started: Micros, ends_at: Micros) -> Self {
        self.config = Some(ResourceState::set(other.to_json(), started));
        let progress = Report::new(&other.version, Status::parse("INSTALLING"), "");
        self.report = Some(ResourceState::written_by_device(
            progress.to_json(),
            started + 1,
        ));
        self.other = Some(OtherInstall {
            version: other.version.clone(),
            ends_at,
        });
        self
    }

    /// The device already runs the target version.
    pub fn at_target(mut self) -> Self {
        self.report = Some(ResourceState::written_by_device(
            report("INSTALLED_VERSION"),
            T0 - MINUTE,
        ));
        self
    }

    fn outcome(&self, attempt: u32) -> Outcome {
        let i = (attempt as usize)
            .saturating_sub(1)
            .min(self.outcomes.len() - 1);
        self.outcomes[i]
    }

    fn observation(&self) -> DeviceObservation {
        DeviceObservation {
            identity: self.identity.clone(),
            tags: self.tags.clone(),
            config_otau: self.config.clone(),
            otau_in: self.report.clone(),
        }
    }
}

/// The fake fleet and its clock.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub devices: Vec<SimDevice>,
    pub now: Micros,
    by_identity: HashMap<String, usize>,
}

impl Fleet {
    /// A fleet of these devices at [`T0`].
    pub fn new(devices: Vec<SimDevice>) -> Self {
        let by_identity = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.identity.clone(), i))
            .collect();
        Self {
            devices,
            now: T0,
            by_identity,
        }
    }

    /// `n` devices named `dev-NN`, ordered as the engine orders them for `seed`, with
    /// `configure(position, device)` applied in that order (so tests know which devices fall
    /// into which wave).
    pub fn ordered(n: usize, seed: &str, configure: impl Fn(usize, &mut SimDevice)) -> Self {
        let mut devices: Vec<SimDevice> = (0..n)
            .map(|i| SimDevice::new(format!("dev-{i:03}")))
            .collect();
        devices.sort_by_key(|d| (order_key(seed, &d.identity), d.identity.clone()));
        for (p, d) in devices.iter_mut().enumerate() {
            configure(p, d);
        }
        Self::new(devices)
    }

    /// Adds a device (a late joiner).
    pub fn add(&mut self, device: SimDevice) {
        self.by_identity
            .insert(device.identity.clone(), self.devices.len());
        self.devices.push(device);
    }

    /// A device by identity.
    pub fn device(&self, identity: &str) -> &SimDevice {
        &self.devices[self.by_identity[identity]]
    }

    /// Every device as the platform lists it.
    pub fn observations(&self) -> Vec<DeviceObservation> {
        self.devices.iter().map(SimDevice::observation).collect()
    }

    /// Carries out the writes of a decision at the current time: the device sees the value,
    /// acknowledges it and reports `INIT` (unless silent).
    pub fn apply(&mut self, notifications: &[Notification]) {
        let now = self.now;
        for n in notifications {
            let Some(&i) = self.by_identity.get(&n.identity) else {
                panic!("notified a device that does not exist: {}", n.identity);
            };
            let d = &mut self.devices[i];
            d.writes.push(n.attempt);
            d.other = None;
            let ack = if d.literal_ack {
                "ACK".to_owned()
            } else {
                n.manifest.to_string()
            };
            d.config = Some(ResourceState::written_by_device(ack, now));
            if d.outcome(n.attempt) != Outcome::Silent {
                d.report = Some(ResourceState::written_by_device(report("INIT"), now + 1));
                d.due = Some((now + d.delay, n.attempt));
            } else {
                d.due = None;
            }
        }
    }

    /// Carries out a decision's success records: each device gets the tag (once).
    pub fn record(&mut self, identities: &[String], tag: &DeviceTag) {
        for identity in identities {
            let d = &mut self.devices[self.by_identity[identity]];
            if !d.tags.contains(tag) {
                d.tags.push(tag.clone());
            }
        }
    }

    /// The device starts the update of the target again (a re-run): `INIT` now.
    pub fn rerun(&mut self, identity: &str) {
        let now = self.now;
        let d = &mut self.devices[self.by_identity[identity]];
        d.report = Some(ResourceState::written_by_device(report("INIT"), now));
    }

    /// Moves the clock to `to`, delivering final reports that fell due.
    pub fn advance_to(&mut self, to: Micros) {
        self.now = to;
        for d in &mut self.devices {
            if let Some(o) = d.other.take_if(|o| o.ends_at <= to) {
                let done = Report::new(&o.version, Status::parse("INSTALLED_VERSION"), "");
                d.report = Some(ResourceState::written_by_device(done.to_json(), o.ends_at));
            }
            let Some((at, attempt)) = d.due else { continue };
            if at > to {
                continue;
            }
            d.due = None;
            let value = match d.outcome(attempt) {
                Outcome::Succeed => report("INSTALLED_VERSION"),
                Outcome::Fail => report("INSTALL_ERROR"),
                Outcome::Abort => report("INSTALL_ABORTED"),
                Outcome::Malformed => "{not a report".to_owned(),
                Outcome::Silent => continue,
            };
            d.report = Some(ResourceState::written_by_device(value, at));
        }
    }
}

/// The package manifest of every test.
pub fn manifest() -> Manifest {
    Manifest::url_list(VERSION, "Firmware", "", vec!["fw-2.0.bin".into()])
}

/// The manifest the test Rollout (`tests/ro`) writes: [`manifest`] with its marker.
pub fn rollout_manifest() -> Manifest {
    manifest().with_rollout(Some(&rollout_marker("tests", "ro")))
}

/// A spec with tag targets `fleet=a`, the given cumulative percents, and defaults otherwise.
pub fn spec(percents: &[i32]) -> RolloutSpec {
    let waves: Vec<_> = percents
        .iter()
        .map(|p| serde_json::json!({"percent": p}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "packageRef": {"name": "fw-2-0"},
        "targets": {"tags": [{"name": "fleet", "value": "a"}]},
        "waves": waves,
        "policy": {"deviceTimeout": "10m"}
    }))
    .expect("a valid test spec")
}

/// The order seed of every test Rollout (`tests/ro`).
pub const SEED: &str = "tests/ro";

/// A Rollout being driven step by step against a fleet, persisting status and memory through
/// JSON like the controller does.
pub struct Run {
    pub spec: RolloutSpec,
    pub annotations: BTreeMap<String, String>,
    pub generation: i64,
    pub status: RolloutStatus,
    pub memory: EngineMemory,
    pub fleet: Fleet,
    /// The caller's write batch (`EngineInput::max_notifications`).
    pub max_notifications: Option<usize>,
    /// `metadata.creationTimestamp` (`EngineInput::created_at`; unknown by default).
    pub created_at: Option<Micros>,
    /// The manifests of the connector's packages (this package's by default).
    pub connector_manifests: Vec<Manifest>,
    /// The manifests of the packages of newer Rollouts on the connector (none by default).
    pub newer_rollout_manifests: Vec<Manifest>,
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    serde_json::from_str(&serde_json::to_string(value).unwrap()).unwrap()
}

impl Run {
    /// A new Rollout with `spec` over `fleet`.
    pub fn new(spec: RolloutSpec, fleet: Fleet) -> Self {
        Self {
            spec,
            annotations: BTreeMap::new(),
            generation: 1,
            status: RolloutStatus::default(),
            memory: EngineMemory::default(),
            fleet,
            max_notifications: None,
            created_at: None,
            connector_manifests: vec![manifest()],
            newer_rollout_manifests: Vec::new(),
        }
    }

    /// Changes the spec (a new generation).
    pub fn edit(&mut self, change: impl FnOnce(&mut RolloutSpec)) {
        change(&mut self.spec);
        self.generation += 1;
    }

    /// The index a controller would build from the fleet right now.
    pub fn index(&self) -> DeviceIndex {
        DeviceIndex::build(
            IndexConfig {
                seed: order_seed(&self.spec, "tests", "ro"),
                targets: self.spec.targets.clone(),
                manifest: rollout_manifest(),
                connector_manifests: self.connector_manifests.clone(),
                newer_rollout_manifests: self.newer_rollout_manifests.clone(),
            },
            self.fleet.observations(),
        )
    }

    /// The input of a step.
    pub fn input(&self) -> EngineInput<'_> {
        EngineInput {
            namespace: "tests",
            name: "ro",
            generation: Some(self.generation),
            created_at: self.created_at,
            spec: &self.spec,
            annotations: &self.annotations,
            status: &self.status,
            memory: &self.memory,
            max_notifications: self.max_notifications,
        }
    }

    /// The decision of a step now, without applying it.
    pub fn decide(&self) -> Decision {
        reconcile(&self.input(), &self.index(), self.fleet.now).expect("reconcile")
    }

    /// One step: decide, apply the writes, persist status and memory.
    pub fn step(&mut self) -> Decision {
        let mut index = self.index();
        self.step_on(&mut index)
    }

    /// One step on an index the caller keeps between steps (as a running controller does:
    /// it remembers what it saw), brought up to date with the fleet first; the success
    /// records written are folded into it.
    pub fn step_on(&mut self, index: &mut DeviceIndex) -> Decision {
        index.upsert(self.fleet.observations());
        index.prepare();
        let d = reconcile(&self.input(), index, self.fleet.now).expect("reconcile");
        self.fleet.apply(&d.notifications);
        self.fleet
            .record(&d.success_records, index.success_record());
        for identity in &d.success_records {
            index.mark_success_recorded(identity);
        }
        self.status = round_trip(&d.status);
        self.memory = round_trip(&d.memory);
        d
    }

    /// One step while a prerequisite is missing.
    pub fn step_blocked(&mut self, blocker: Blocker) -> Decision {
        let d = reconcile_blocked(&self.input(), &blocker, self.fleet.now);
        self.status = round_trip(&d.status);
        self.memory = round_trip(&d.memory);
        d
    }

    /// Moves the clock forward.
    pub fn wait(&mut self, by: Micros) {
        let to = self.fleet.now + by;
        self.fleet.advance_to(to);
    }
}

/// The reasons of a decision's events.
pub fn reasons(d: &Decision) -> Vec<&'static str> {
    d.events.iter().map(|e| e.reason).collect()
}
