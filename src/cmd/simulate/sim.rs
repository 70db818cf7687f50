//! The simulation loop: the emulator's model on a [`ManualClock`], a simulated fleet in process,
//! and the rollout engine driven through the in-process [`EmulatorPlatform`], the way the
//! controller drives it through the Exosite client:
//!
//! ```text
//!  list identities (pages) ─► DeviceIndex ─► reconcile(now) ─► config_otau writes
//!        ▲                                        │
//!        └── fleet runs to the next poll or engine deadline (virtual time) ◄──┘
//! ```
//!
//! Nothing here reads the real clock or sleeps: time moves only when the loop moves the
//! manual clock, to the next moment something can change (the next poll after a device's
//! next step, or the engine's own deadline: a device timeout, the end of a soak).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use otau_operator::api::conditions::reason as condition;
use otau_operator::api::rollout::{RolloutPhase, RolloutSpec, RolloutStatus};
use otau_operator::api::{Rollout, SoftwarePackage};
use otau_operator::controller::package::naming;
use otau_operator::emulator::clock::{Clock, ManualClock};
use otau_operator::emulator::fleet::{FleetCore, InProcessFleet, Profile};
use otau_operator::emulator::model::{Model, ModelConfig};
use otau_operator::emulator::platform_adapter::EmulatorPlatform;
use otau_operator::engine::{
    DeviceIndex, DeviceObservation, EngineInput, EngineMemory, EventType, IndexConfig, Micros,
    PollHint, order_seed, reconcile, rollout_marker,
};
use otau_operator::otau::Manifest;
use otau_operator::platform::{ContentUpload, ListIdentities, PackageRegistration, Platform};

/// Where virtual time starts: 2025-01-01T00:00:00Z (µs). Fixed, so two runs print the same.
pub const START_MICROS: Micros = 1_735_689_600_000_000;

/// The name `config_otau` writes are recorded under in the model's ground truth.
pub const CLIENT: &str = "otau-operator simulate";

/// Identities per listing page (the most the platform gives).
const PAGE_SIZE: u32 = 1000;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The Rollout (its namespace set).
    pub rollout: Rollout,
    /// Its SoftwarePackage (its namespace set).
    pub package: SoftwarePackage,
    /// The fleet profile.
    pub profile: Profile,
    /// `--devices`.
    pub devices: Option<u64>,
    /// `--seed` (the fleet's; the device order comes from the Rollout).
    pub seed: Option<u64>,
    /// The simulated connector's id.
    pub connector_id: String,
    /// Poll interval while devices are in flight (µs).
    pub poll_active: Micros,
    /// Poll interval while waiting (µs).
    pub poll_idle: Micros,
    /// Approve gated waves as they come.
    pub auto_approve: bool,
    /// Stop after this much virtual time (µs).
    pub max_virtual: Micros,
    /// Stop after this many engine steps.
    pub max_steps: u64,
    /// Fold every device at every poll, not only the ones whose resources changed.
    pub full_polls: bool,
    /// After the run stops, delete the Rollout and apply it again (`--reapply`), and run it
    /// once more on the platform state the first run left.
    pub reapply: bool,
}

/// Told about every step, to draw progress.
pub trait Progress {
    /// The status after a step, `elapsed` µs of virtual time after the start.
    fn update(&mut self, status: &RolloutStatus, elapsed: Micros);
    /// The run ended.
    fn finish(&mut self, status: &RolloutStatus);
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Every wave completed.
    Complete,
    /// The failure threshold paused the rollout.
    AutoPaused,
    /// `spec.paused` or the pause annotation holds it.
    PausedByUser,
    /// Wave `k` (from 1) waits for approval.
    WaitingForApproval(usize),
    /// Aborted; the run went on until no device was in flight.
    Aborted,
    /// Nothing can change any more; the text says why.
    Stalled(String),
    /// A bound (`--max-virtual-time`, `--max-steps`) was hit; the text says which.
    Bound(String),
}

/// The failure-threshold judgement that tripped, with its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    /// The wave (from 1).
    pub wave: usize,
    /// Failed devices judged.
    pub failed: i64,
    /// Finished devices judged.
    pub finished: i64,
    /// Virtual time of the trip (µs).
    pub at: Micros,
}

/// One line of the timeline: an engine Event or a note of the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// Virtual time (µs).
    pub at: Micros,
    /// `Normal`, `Warning` (engine Events) or `Simulate` (the simulator's own notes).
    pub kind: &'static str,
    /// The reason.
    pub reason: String,
    /// The message.
    pub message: String,
}

/// Wall time spent in each part of the loop, for `--timings` (stderr only: the report never
/// holds wall-clock figures).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Listing the devices and folding them into the index.
    pub observe: std::time::Duration,
    /// The engine's reconcile.
    pub reconcile: std::time::Duration,
    /// `config_otau` writes.
    pub write: std::time::Duration,
    /// The simulated fleet.
    pub fleet: std::time::Duration,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// How it ended.
    pub end: End,
    /// The last status.
    pub status: RolloutStatus,
    /// The spec as it ended (approvals given by `--auto-approve` included).
    pub spec: RolloutSpec,
    /// The threshold trip, if one paused or aborted the rollout.
    pub trip: Option<Trip>,
    /// Engine Events and simulator notes, in order.
    pub timeline: Vec<TimelineEntry>,
    /// Virtual start (µs).
    pub start: Micros,
    /// Virtual end (µs).
    pub end_at: Micros,
    /// Engine steps (observe + reconcile + write).
    pub steps: u64,
    /// `config_otau` writes made.
    pub writes: u64,
    /// `config_otau` writes the platform refused, with the first message.
    pub write_errors: (u64, Option<String>),
    /// Devices in the fleet.
    pub fleet_devices: u64,
    /// The fleet's seed.
    pub fleet_seed: u64,
    /// The manifest written (attempt 1).
    pub manifest: Manifest,
    /// Wall time per part of the loop.
    pub timings: Timings,
    /// Distinct devices this run wrote `config_otau` to.
    pub devices_written: u64,
    /// Success records (the `otau-installed` identity tag) this run wrote.
    pub success_records: u64,
    /// The runs before this one (`--reapply`), oldest first.
    pub earlier: Vec<Outcome>,
}

/// Folds the device listing into the index, one poll.
///
/// The first poll lists every device. Later polls ask the model for the devices changed since
/// the previous poll (every write to a device is a change), so a poll costs what changed, not
/// the fleet's size. Should devices be removed, the poll lists every device again and drops the
/// ones gone, like a controller's full poll. `always_full` lists every device at every poll
/// (`--full-polls`), which must give the same report.
struct Poller {
    /// The model's change cursor as of the previous poll.
    cursor: Option<u64>,
    /// List every device at every poll.
    always_full: bool,
}

impl Poller {
    async fn observe(
        &mut self,
        platform: &EmulatorPlatform,
        index: &mut DeviceIndex,
    ) -> Result<(), String> {
        if let Some(cursor) = self.cursor.filter(|_| !self.always_full) {
            let changed = platform.changed_since(cursor);
            let mut removed = false;
            for page in changed.ids.chunks(PAGE_SIZE as usize) {
                let (identities, gone) = platform.identities_of(page);
                removed |= !gone.is_empty();
                index.upsert(identities.into_iter().map(DeviceObservation::from));
            }
            if !removed {
                index.prepare();
                self.cursor = Some(changed.cursor);
                return Ok(());
            }
        }
        // The cursor is read before the listing: a change made while it runs is seen again
        // by the next poll (folding a device twice changes nothing), never missed.
        self.cursor = Some(platform.change_cursor());
        full_listing(platform, index).await
    }
}

/// Lists every device into the index, dropping the ones no longer listed.
async fn full_listing(platform: &dyn Platform, index: &mut DeviceIndex) -> Result<(), String> {
    index.begin_full_listing();
    let mut pages = platform.list_identities(ListIdentities {
        page_size: PAGE_SIZE,
    });
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| format!("listing the simulated devices failed: {e}"))?;
        index.upsert(page.identities.into_iter().map(DeviceObservation::from));
    }
    index.finish_full_listing();
    Ok(())
}

/// Puts the package on the simulated connector the way the package controller would: each
/// file as a small placeholder item under its content id (the real file is not fetched), then
/// the registration item.
async fn publish_package(
    platform: &dyn Platform,
    package: &SoftwarePackage,
    manifest: &Manifest,
) -> Result<(), String> {
    let owner = naming::owner(package);
    for (file, id) in package.spec.files.iter().zip(naming::content_ids(package)) {
        let body = format!("simulated content of {owner} file {}\n", file.name).into_bytes();
        let sha256 = hex::encode(Sha256::digest(&body));
        let upload = ContentUpload {
            id,
            content_type: file
                .content_type
                .clone()
                .unwrap_or_else(|| naming::DEFAULT_CONTENT_TYPE.to_string()),
            length: body.len() as u64,
            tags: naming::file_tags(&owner, &sha256),
            sha256,
            body: Box::pin(std::io::Cursor::new(body)),
        };
        platform.upload_content(upload).await.map_err(|e| {
            format!("cannot place the package's files on the simulated connector: {e}")
        })?;
    }
    let registration = PackageRegistration {
        slug: naming::slug(package),
        author: naming::author(package),
        product: platform.connector_id().to_string(),
        manifest: manifest.clone(),
        total_devices: 0,
        device_tags: Vec::new(),
    };
    platform
        .register_package(&registration)
        .await
        .map_err(|e| format!("cannot register the package on the simulated connector: {e}"))?;
    Ok(())
}

/// A stable 64-bit hash of an identity, to count distinct devices without keeping names.
fn identity_hash(identity: &str) -> u64 {
    let digest = Sha256::digest(identity.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

/// The next poll at or after `due`, on the grid of `interval` from `now` (a controller polling
/// every `interval` sees a change at the first poll after it).
fn next_poll_after(now: Micros, due: Micros, interval: Micros) -> Micros {
    let interval = interval.max(1);
    let wait = (due - now).max(1);
    now + interval * ((wait + interval - 1) / interval)
}

/// Runs one scenario to its end.
pub async fn run(s: &Scenario, progress: &mut dyn Progress) -> Result<Outcome, String> {
    let clock = Arc::new(ManualClock::new(START_MICROS));
    let manifest = naming::manifest(&s.package);
    let (platform, mut fleet) = start_fleet(s, &clock, &manifest).await?;
    let fleet_devices = fleet.core().len() as u64;
    let fleet_seed = s.seed.unwrap_or(s.profile.seed);
    let outcome = |run: Run, earlier: Vec<Outcome>| Outcome {
        end: run.end,
        status: run.status,
        spec: run.spec,
        trip: run.trip,
        timeline: run.timeline,
        start: START_MICROS,
        end_at: run.end_at,
        steps: run.steps,
        writes: run.writes.made,
        write_errors: run.writes.refused,
        fleet_devices,
        fleet_seed,
        manifest: manifest.clone(),
        timings: run.timings,
        devices_written: run.writes.devices.len() as u64,
        success_records: run.writes.records,
        earlier,
    };

    let mut earlier = Vec::new();
    let mut last = run_once(s, &clock, &platform, &mut fleet, &manifest, false, progress).await?;
    if s.reapply {
        earlier.push(outcome(last, Vec::new()));
        last = run_once(s, &clock, &platform, &mut fleet, &manifest, true, progress).await?;
    }
    progress.finish(&last.status);
    Ok(outcome(last, earlier))
}

/// The emulator's model on `clock` with the scenario's connector, the package published on it
/// and the fleet's devices added and started.
async fn start_fleet(
    s: &Scenario,
    clock: &Arc<ManualClock>,
    manifest: &Manifest,
) -> Result<(EmulatorPlatform, InProcessFleet), String> {
    let model = Model::new(ModelConfig::default(), clock.clone());
    model
        .add_connector(&s.connector_id)
        .map_err(|e| format!("--connector-id: {e}"))?;
    let core = FleetCore::new(&s.profile, s.devices, s.seed).map_err(|e| e.to_string())?;
    let platform = EmulatorPlatform::new(model.clone(), &s.connector_id)
        .map_err(|e| e.to_string())?
        .with_client(CLIENT);
    let mut fleet = InProcessFleet::new(core, platform.connector().clone(), clock.clone())
        .map_err(|e| format!("cannot add the fleet's devices: {e}"))?;
    publish_package(&platform, &s.package, manifest).await?;
    fleet.start();
    fleet.fire_due(clock.now_micros());
    fleet.drain_notices();
    Ok((platform, fleet))
}

/// What one run of the Rollout produced (the run's part of an [`Outcome`]).
struct Run {
    end: End,
    status: RolloutStatus,
    spec: RolloutSpec,
    trip: Option<Trip>,
    timeline: Vec<TimelineEntry>,
    end_at: Micros,
    steps: u64,
    writes: Writes,
    timings: Timings,
}

/// Runs the Rollout from an empty status on the platform as it stands, step by step, until it
/// ends or a bound is hit. `reapplied`: the second run of `--reapply` (a note in the timeline
/// says so).
async fn run_once(
    s: &Scenario,
    clock: &ManualClock,
    platform: &EmulatorPlatform,
    fleet: &mut InProcessFleet,
    manifest: &Manifest,
    reapplied: bool,
    progress: &mut dyn Progress,
) -> Result<Run, String> {
    let namespace = s.rollout.metadata.namespace.clone().unwrap_or_default();
    let name = s.rollout.metadata.name.clone().unwrap_or_default();
    let mut spec = s.rollout.spec.clone();
    let annotations: BTreeMap<String, String> =
        s.rollout.metadata.annotations.clone().unwrap_or_default();
    let mut generation = s.rollout.metadata.generation.unwrap_or(1);
    let (written, mut index) = rollout_index(&spec, &namespace, &name, manifest);
    let mut status = RolloutStatus::default();
    let mut memory = EngineMemory::default();
    let mut timeline = Vec::new();
    if reapplied {
        timeline.push(simulator_note(
            clock.now_micros(),
            "Reapplied",
            "the Rollout was deleted and applied again (--reapply): its status starts empty, the device order is the same, and the platform keeps what the run before wrote".into(),
        ));
    }
    let mut writes = Writes::default();
    let mut trip = None;
    let mut steps = 0u64;
    let mut timings = Timings::default();
    let mut poller = Poller {
        cursor: None,
        always_full: s.full_polls,
    };

    // The Rollout is applied (created) as the run starts.
    let created_at = clock.now_micros();
    let end = loop {
        let now = clock.now_micros();
        let mut lap = Lap::start();
        poller.observe(platform, &mut index).await?;
        timings.observe += lap.split();
        let input = EngineInput {
            namespace: &namespace,
            name: &name,
            generation: Some(generation),
            created_at: Some(created_at),
            spec: &spec,
            annotations: &annotations,
            status: &status,
            memory: &memory,
            max_notifications: None,
        };
        let decision = reconcile(&input, &index, now).map_err(|e| e.to_string())?;
        timings.reconcile += lap.split();
        steps += 1;
        if let Some(tripped) = record_events(&decision.events, now, &mut timeline) {
            trip = Some(tripped);
        }
        writes
            .record(platform, &mut index, &decision.success_records)
            .await;
        writes
            .deliver(platform, &written, &decision.notifications)
            .await;
        timings.write += lap.split();
        status = decision.status;
        memory = decision.memory;
        fleet.drain_notices();
        timings.fleet += lap.split();
        progress.update(&status, now - START_MICROS);

        match after_step(&status, decision.requeue.poll, s.auto_approve) {
            AfterStep::End(end) => break end,
            AfterStep::Approve(k) => {
                spec.approved_waves = k as i32;
                generation += 1;
                timeline.push(simulator_note(
                    now,
                    "Approved",
                    format!("spec.approvedWaves set to {k} (--auto-approve)"),
                ));
                continue;
            }
            AfterStep::GoOn => {}
        }
        if steps >= s.max_steps {
            break End::Bound(format!("stopped after {steps} steps (--max-steps)"));
        }
        let Some(next) = next_step_at(s, now, &decision.requeue, fleet.core().next_due()) else {
            break End::Stalled(stalled_reason(&index));
        };
        if let Some(end) = beyond_virtual_limit(next, s.max_virtual) {
            break end;
        }
        let lap = std::time::Instant::now();
        fleet.run_virtual(clock, Some(next));
        clock.advance_to(next);
        timings.fleet += lap.elapsed();
    };
    Ok(Run {
        end,
        status,
        spec,
        trip,
        timeline,
        end_at: clock.now_micros(),
        steps,
        writes,
        timings,
    })
}

/// What the Rollout writes (the package's manifest with the Rollout's marker), and the empty
/// device index the simulated operator keeps for it.
fn rollout_index(
    spec: &RolloutSpec,
    namespace: &str,
    name: &str,
    manifest: &Manifest,
) -> (Manifest, DeviceIndex) {
    let written = manifest.with_rollout(Some(&rollout_marker(namespace, name)));
    let index = DeviceIndex::new(IndexConfig {
        seed: order_seed(spec, namespace, name),
        targets: spec.targets.clone(),
        manifest: written.clone(),
        // The simulated connector holds this package only.
        connector_manifests: vec![manifest.clone()],
        newer_rollout_manifests: Vec::new(),
    });
    (written, index)
}

/// A timeline entry of the simulator itself (not an engine Event).
fn simulator_note(at: Micros, reason: &str, message: String) -> TimelineEntry {
    TimelineEntry {
        at,
        kind: "Simulate",
        reason: reason.into(),
        message,
    }
}

/// Wall time between the moments a step's parts end.
struct Lap(std::time::Instant);

impl Lap {
    /// Starts timing now.
    fn start() -> Lap {
        Lap(std::time::Instant::now())
    }

    /// The time since the previous split (or the start); the next split counts from now.
    fn split(&mut self) -> std::time::Duration {
        let t = std::time::Instant::now();
        let elapsed = t - self.0;
        self.0 = t;
        elapsed
    }
}

/// Adds a step's engine Events to the timeline at `now`; returns the threshold trip one of
/// them carries (the engine's own judgement behind an automatic pause or an abort by the
/// threshold), the last when several do.
fn record_events(
    events: &[otau_operator::engine::EngineEvent],
    now: Micros,
    timeline: &mut Vec<TimelineEntry>,
) -> Option<Trip> {
    let mut trip = None;
    for event in events {
        let kind = match event.type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        if let Some(judged) = event.threshold {
            trip = Some(Trip {
                wave: judged.started_waves as usize,
                failed: judged.failed,
                finished: judged.finished,
                at: now,
            });
        }
        timeline.push(TimelineEntry {
            at: now,
            kind,
            reason: event.reason.to_string(),
            message: event.message.clone(),
        });
    }
    trip
}

/// The `config_otau` writes of one run.
#[derive(Default)]
struct Writes {
    /// Writes made.
    made: u64,
    /// Writes the platform refused, with the first message.
    refused: (u64, Option<String>),
    /// Distinct devices written (identity hashes: 8 bytes a device).
    devices: HashSet<u64>,
    /// The manifest of each attempt, built once.
    attempts: BTreeMap<u32, Manifest>,
    /// Success records written.
    records: u64,
}

impl Writes {
    /// Writes the success record on each device (as the controller does) and folds it into
    /// the index; a refused one counts as a refused write.
    async fn record(
        &mut self,
        platform: &EmulatorPlatform,
        index: &mut DeviceIndex,
        identities: &[String],
    ) {
        let record = index.success_record().clone();
        let tag = otau_operator::platform::Tag::new(record.name, record.value);
        for identity in identities {
            match platform.add_identity_tag(identity, &tag).await {
                Ok(added) => {
                    self.records += u64::from(added);
                    index.mark_success_recorded(identity);
                }
                Err(e) => {
                    self.refused.0 += 1;
                    self.refused.1.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }

    /// Writes each notification's attempt of `manifest` to its device and counts the outcome.
    async fn deliver(
        &mut self,
        platform: &EmulatorPlatform,
        manifest: &Manifest,
        notifications: &[otau_operator::engine::Notification],
    ) {
        for n in notifications {
            let m = self
                .attempts
                .entry(n.attempt)
                .or_insert_with(|| manifest.with_attempt(n.attempt));
            match platform.set_config_otau(&n.identity, m).await {
                Ok(()) => {
                    self.made += 1;
                    self.devices.insert(identity_hash(&n.identity));
                }
                Err(e) => {
                    self.refused.0 += 1;
                    self.refused.1.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// What the status after a step says about the run.
enum AfterStep {
    /// The run ends here.
    End(End),
    /// Wave `k` (from 1) waits for approval and `--auto-approve` gives it.
    Approve(usize),
    /// Nothing ends the run: on to the next step.
    GoOn,
}

/// Whether the run ends after a step with `status`: complete, auto-paused, paused by the user,
/// waiting for an approval (given at once with `auto_approve`), or aborted with no device left
/// in flight (the engine asks for no poll).
fn after_step(status: &RolloutStatus, poll: PollHint, auto_approve: bool) -> AfterStep {
    let pause = status.pause.as_ref().map(|p| p.reason.as_str());
    match (status.phase, pause) {
        (Some(RolloutPhase::Complete), _) => AfterStep::End(End::Complete),
        (Some(RolloutPhase::Aborted), _) if poll == PollHint::None => AfterStep::End(End::Aborted),
        (_, Some(condition::FAILURE_THRESHOLD_EXCEEDED)) => AfterStep::End(End::AutoPaused),
        (_, Some(condition::PAUSED_BY_USER)) => AfterStep::End(End::PausedByUser),
        (_, Some(condition::WAITING_FOR_APPROVAL)) => {
            let k = status.current_wave.max(0) as usize + 1;
            if auto_approve {
                AfterStep::Approve(k)
            } else {
                AfterStep::End(End::WaitingForApproval(k))
            }
        }
        _ => AfterStep::GoOn,
    }
}

/// When the next step is due: the first poll (at the interval the engine asks for) after the
/// fleet's next change, or the engine's own deadline, whichever comes first; `None` when
/// neither will come.
fn next_step_at(
    s: &Scenario,
    now: Micros,
    requeue: &otau_operator::engine::Requeue,
    fleet_due: Option<Micros>,
) -> Option<Micros> {
    let poll = match requeue.poll {
        PollHint::Active => Some(s.poll_active),
        PollHint::Idle => Some(s.poll_idle),
        PollHint::None => None,
    };
    let by_fleet = poll
        .zip(fleet_due)
        .map(|(interval, due)| next_poll_after(now, due, interval));
    let by_engine = requeue.at.map(|at| at.max(now + 1));
    match (by_fleet, by_engine) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Why nothing can change the rollout any more.
fn stalled_reason(index: &DeviceIndex) -> String {
    if index.is_empty() {
        "no device of the fleet matches the Rollout's targets".to_owned()
    } else {
        "nothing is left that could change the rollout (no device in flight, no deadline)"
            .to_owned()
    }
}

/// The end of the run when the next step, due at `next`, is past `--max-virtual-time`.
fn beyond_virtual_limit(next: Micros, max_virtual: Micros) -> Option<End> {
    (next - START_MICROS > max_virtual).then(|| {
        End::Bound(format!(
            "stopped before the virtual time limit (--max-virtual-time) was passed; the next step was due {} after the start",
            super::report::duration_text(next - START_MICROS)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_land_on_the_interval_grid_after_the_change() {
        assert_eq!(next_poll_after(100, 101, 30), 130);
        assert_eq!(next_poll_after(100, 130, 30), 130);
        assert_eq!(next_poll_after(100, 131, 30), 160);
        assert_eq!(next_poll_after(100, 50, 30), 130, "a change already due");
    }
}
