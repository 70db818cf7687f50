//! One simulated device as a pure, event-driven state machine (exosite-platform.md §2.2, §9
//! "Simulated devices"). It does no I/O: each input returns actions that a driver carries out
//! (in process against the model, or over HTTP), and timers that the driver's queue fires.
//!
//! A device's state is [`DeviceState`]: 32 bytes, no strings (versions and manifests are
//! indexes into the fleet's [`Catalog`]), so a million devices fit in 32 MB plus identities.
//!
//! Sequence of one full run (durations drawn from the group's distributions):
//!
//! ```text
//! config_otau → [ack] INIT → TEST → TEST_SUCCESS → DOWNLOAD → (download, DOWNLOAD_STEP)* →
//!   DOWNLOAD_SUCCESS → INSTALL → INSTALL_SUCCESS → (reboot) → INSTALLED_VERSION [ack after install]
//! boot → INSTALLED_VERSION <current version>, then read config_otau
//! ```
//!
//! Short-sequence devices send only `INIT`, failures, unknown statuses and `INSTALLED_VERSION`.

use std::sync::Arc;

use rand::Rng;

use crate::otau::{Report, Status};

use super::catalog::{Catalog, Item, NONE};
use super::profile::Behaviour;
use super::seed::{self, Purpose};

/// The outcome drawn for one update run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Outcome {
    /// Ends with `INSTALLED_VERSION` of the target.
    Success = 0,
    /// Ends with `TEST_ERROR`.
    TestError,
    /// Ends with `DOWNLOAD_ERROR`.
    DownloadError,
    /// Ends with `INSTALL_ERROR`.
    InstallError,
    /// Ends with `INSTALL_ABORTED`.
    InstallAborted,
    /// Never reports nor acks.
    Silence,
    /// Ends with `INSTALLED_VERSION` of the old version.
    RebootOldVersion,
    /// Reports are not valid `otau_in` values.
    MalformedReports,
    /// Sends an undocumented status, then succeeds.
    UnknownStatus,
}

impl Outcome {
    /// All outcomes, in the order of [`crate::emulator::fleet::profile::Outcomes::named`] after
    /// `Success`.
    pub const ALL: [Outcome; 9] = [
        Outcome::Success,
        Outcome::TestError,
        Outcome::DownloadError,
        Outcome::InstallError,
        Outcome::InstallAborted,
        Outcome::Silence,
        Outcome::RebootOldVersion,
        Outcome::MalformedReports,
        Outcome::UnknownStatus,
    ];

    /// The profile's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::TestError => "test_error",
            Outcome::DownloadError => "download_error",
            Outcome::InstallError => "install_error",
            Outcome::InstallAborted => "install_aborted",
            Outcome::Silence => "silence",
            Outcome::RebootOldVersion => "reboot_old_version",
            Outcome::MalformedReports => "malformed_reports",
            Outcome::UnknownStatus => "unknown_status",
        }
    }

    /// Draws an outcome for one run.
    pub fn draw<R: Rng + ?Sized>(behaviour: &Behaviour, rng: &mut R) -> Outcome {
        let r: f64 = rng.random();
        let mut acc = 0.0;
        for (i, (_, p)) in behaviour.outcomes.named().iter().enumerate() {
            acc += p;
            if r < acc {
                return Outcome::ALL[i + 1];
            }
        }
        Outcome::Success
    }
}

/// How a device acknowledges a `config_otau` value (§1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AckStyle {
    /// Writes the value back as soon as it sees it.
    EchoImmediately = 0,
    /// Writes the value back after `INSTALLED_VERSION`.
    EchoAfterInstall,
    /// Writes the literal `ACK`.
    LiteralAck,
    /// Never writes `config_otau`.
    Never,
}

impl AckStyle {
    const ALL: [AckStyle; 4] = [
        AckStyle::EchoImmediately,
        AckStyle::EchoAfterInstall,
        AckStyle::LiteralAck,
        AckStyle::Never,
    ];

    fn draw<R: Rng + ?Sized>(behaviour: &Behaviour, rng: &mut R) -> AckStyle {
        let weights = behaviour.ack.named();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let mut r = rng.random::<f64>() * total;
        for (i, (_, w)) in weights.iter().enumerate() {
            if r < *w {
                return AckStyle::ALL[i];
            }
            r -= w;
        }
        // Rounding left r at the very top: the last style with weight.
        weights
            .iter()
            .rposition(|(_, w)| *w > 0.0)
            .map(|i| AckStyle::ALL[i])
            .unwrap_or(AckStyle::EchoImmediately)
    }
}

/// The literal value a `LiteralAck` device writes.
pub const LITERAL_ACK: &str = "ACK";

/// The undocumented status an `unknown_status` device sends before installing.
pub const UNKNOWN_STATUS: &str = "VERIFYING_SIGNATURE";

/// What happened to a device.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// The fleet starts: the device boots now, or goes offline for a while.
    Start,
    /// The device saw this `config_otau` value (long poll, notification or read at boot).
    Config(&'a str),
    /// A timer the device scheduled fired; `seq` is the one it was scheduled with.
    Timer(u32),
    /// The download the device asked for finished: `ok` when the content exists and its size
    /// matched its info.
    Downloaded(bool),
}

/// What the driver must do for the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this value to `otau_in` (a device write).
    Report(String),
    /// Write this value to `config_otau` (an acknowledgement).
    Ack(Arc<str>),
    /// Fetch content info and the file by content id, verify it, then give
    /// [`Input::Downloaded`].
    Download(Arc<str>),
    /// An external link of the manifest: recorded, not fetched.
    FetchLink(Arc<str>),
    /// Read `config_otau` and give it as [`Input::Config`] (at boot).
    ReadConfig,
    /// Fire [`Input::Timer`] with `seq` after `after_micros`.
    Schedule {
        /// Delay in µs.
        after_micros: i64,
        /// Sequence number to give back.
        seq: u32,
    },
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Not started yet.
    Unstarted = 0,
    /// Offline: comes back when its timer fires.
    Offline,
    /// Online, no update running.
    Idle,
    /// `INIT` sent; next: tests.
    Init,
    /// Testing.
    Testing,
    /// Tests done; next: start the download.
    Tested,
    /// Between downloads of payload items.
    Downloading,
    /// Waiting for the driver's download result.
    AwaitDownload,
    /// Downloads done; next: install.
    Downloaded,
    /// Installing.
    Installing,
    /// Rebooting after the install.
    Rebooting,
}

/// The compact state of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceState {
    key: u64,
    seq: u32,
    handled: u32,
    version: u32,
    item: u16,
    group: u16,
    phase: Phase,
    outcome: Outcome,
    ack: AckStyle,
    short: bool,
}

/// Counters a fleet keeps about its devices' runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Runs started, by outcome (index = `Outcome as usize`).
    pub started: [u64; 9],
    /// Runs finished (final report or silence), by outcome.
    pub finished: [u64; 9],
    /// Manifests skipped because they equal the last one handled.
    pub skipped: u64,
    /// `config_otau` values that are not manifests (e.g. `ACK`), ignored.
    pub ignored: u64,
    /// Runs interrupted by a newer manifest.
    pub interrupted: u64,
    /// Downloads that failed (missing content, size mismatch).
    pub failed_downloads: u64,
}

/// What a device needs from its fleet to take a step.
pub struct Ctx<'a> {
    /// Behaviour of each group, by group index.
    pub behaviours: &'a [Behaviour],
    /// Interned versions and manifests.
    pub catalog: &'a mut Catalog,
    /// Counters.
    pub stats: &'a mut RunStats,
}

impl DeviceState {
    /// A device of group `group` with key `key` (see [`seed::device_key`]) running `version`
    /// (an index of the catalog). Its firmware traits (ack style, short sequence) are drawn here.
    pub fn new(key: u64, group: u16, version: u32, behaviour: &Behaviour) -> DeviceState {
        let mut rng = seed::rng(key, Purpose::Traits, 0);
        let ack = AckStyle::draw(behaviour, &mut rng);
        let short = rng.random::<f64>() < behaviour.short_sequence;
        DeviceState {
            key,
            seq: 0,
            handled: NONE,
            version,
            item: 0,
            group,
            phase: Phase::Unstarted,
            outcome: Outcome::Success,
            ack,
            short,
        }
    }

    /// The device's group index.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The version it runs (a catalog index).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where it is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Its ack style.
    pub fn ack_style(&self) -> AckStyle {
        self.ack
    }

    /// Whether it sends short sequences.
    pub fn short_sequence(&self) -> bool {
        self.short
    }

    /// The outcome of its current or last run.
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The manifest it handled last (a catalog index), if any.
    pub fn handled(&self) -> Option<u32> {
        (self.handled != NONE).then_some(self.handled)
    }

    /// Whether an update run is in progress.
    pub fn busy(&self) -> bool {
        !matches!(self.phase, Phase::Unstarted | Phase::Offline | Phase::Idle)
    }

    /// Takes one input; appends the resulting actions to `out`.
    pub fn handle(&mut self, input: Input<'_>, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        match input {
            Input::Start => self.start(ctx, out),
            Input::Config(raw) => self.on_config(raw, ctx, out),
            Input::Timer(seq) => {
                if seq == self.seq {
                    self.on_timer(ctx, out);
                }
            }
            Input::Downloaded(ok) => {
                if self.phase == Phase::AwaitDownload {
                    self.on_downloaded(ok, ctx, out);
                }
            }
        }
    }

    fn behaviour<'b>(&self, ctx: &'b Ctx<'_>) -> &'b Behaviour {
        &ctx.behaviours[usize::from(self.group)]
    }

    fn start(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        if self.phase != Phase::Unstarted {
            return;
        }
        let offline = &self.behaviour(ctx).offline;
        let mut rng = seed::rng(self.key, Purpose::Offline, 0);
        if rng.random::<f64>() < offline.fraction {
            let after = offline.back_after.sample(&mut rng);
            self.phase = Phase::Offline;
            self.seq = self.seq.wrapping_add(1);
            out.push(Action::Schedule {
                after_micros: after,
                seq: self.seq,
            });
        } else {
            self.boot(ctx, out);
        }
    }

    /// Boot: report the running version, then look at `config_otau`.
    fn boot(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        self.phase = Phase::Idle;
        let version = ctx.catalog.version(self.version).to_string();
        out.push(Action::Report(
            Report::new(version, Status::InstalledVersion, "boot").to_json(),
        ));
        out.push(Action::ReadConfig);
    }

    fn on_config(&mut self, raw: &str, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Unstarted | Phase::Offline) {
            return; // not connected: it reads config_otau when it boots
        }
        let id = match ctx.catalog.intern_manifest(raw) {
            Ok(id) => id,
            Err(_) => {
                ctx.stats.ignored += 1;
                return;
            }
        };
        if self.handled != NONE && ctx.catalog.same_update(self.handled, id) {
            ctx.stats.skipped += 1;
            return;
        }
        if self.busy() {
            ctx.stats.interrupted += 1;
            ctx.stats.finished[self.outcome as usize] += 1;
        }
        let Some(entry) = ctx.catalog.manifest(id) else {
            return;
        };
        let (salt, raw) = (entry.salt, entry.raw.clone());
        self.handled = id;
        self.seq = self.seq.wrapping_add(1);
        self.item = 0;
        let mut rng = seed::rng(self.key, Purpose::Outcome, salt);
        self.outcome = Outcome::draw(self.behaviour(ctx), &mut rng);
        ctx.stats.started[self.outcome as usize] += 1;
        if self.outcome == Outcome::Silence {
            self.phase = Phase::Idle;
            ctx.stats.finished[Outcome::Silence as usize] += 1;
            return;
        }
        match self.ack {
            AckStyle::EchoImmediately => out.push(Action::Ack(raw)),
            AckStyle::LiteralAck => out.push(Action::Ack(Arc::from(LITERAL_ACK))),
            AckStyle::EchoAfterInstall | AckStyle::Never => {}
        }
        self.phase = Phase::Init;
        self.report(Status::Init, "new OTAU received", ctx, out);
        self.schedule_step(0, |d| &d.step, ctx, out);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Offline => self.boot(ctx, out),
            Phase::Init => match (self.short, self.outcome) {
                (true, Outcome::TestError) => {
                    self.finish(Status::TestError, "tests failed", ctx, out)
                }
                (true, Outcome::InstallAborted) => {
                    self.finish(Status::InstallAborted, "aborted by the device", ctx, out)
                }
                (true, _) => {
                    self.phase = Phase::Downloading;
                    self.schedule_step(1, |d| &d.test, ctx, out);
                }
                (false, _) => {
                    self.progress(Status::Test, "running tests", ctx, out);
                    self.phase = Phase::Testing;
                    self.schedule_step(1, |d| &d.test, ctx, out);
                }
            },
            Phase::Testing => match self.outcome {
                Outcome::TestError => self.finish(
                    Status::TestError,
                    "not enough space for the update",
                    ctx,
                    out,
                ),
                Outcome::InstallAborted => self.finish(
                    Status::InstallAborted,
                    "aborted by the device: wrong hardware revision",
                    ctx,
                    out,
                ),
                _ => {
                    self.progress(Status::TestSuccess, "", ctx, out);
                    self.phase = Phase::Tested;
                    self.schedule_step(2, |d| &d.step, ctx, out);
                }
            },
            Phase::Tested => {
                self.progress(Status::Download, "", ctx, out);
                self.phase = Phase::Downloading;
                self.schedule_step(3, |d| &d.step, ctx, out);
            }
            Phase::Downloading => self.next_download(ctx, out),
            Phase::Downloaded => {
                if self.outcome == Outcome::UnknownStatus {
                    self.report(
                        Status::Unknown(UNKNOWN_STATUS.into()),
                        "checking the package signature",
                        ctx,
                        out,
                    );
                }
                self.progress(Status::Install, "", ctx, out);
                self.phase = Phase::Installing;
                self.schedule_step(5, |d| &d.install, ctx, out);
            }
            Phase::Installing => {
                if self.outcome == Outcome::InstallError {
                    self.finish(
                        Status::InstallError,
                        "installer exited with code 1",
                        ctx,
                        out,
                    );
                } else {
                    self.progress(Status::InstallSuccess, "", ctx, out);
                    self.phase = Phase::Rebooting;
                    self.schedule_step(6, |d| &d.reboot, ctx, out);
                }
            }
            Phase::Rebooting => {
                if self.outcome != Outcome::RebootOldVersion
                    && let Some(entry) = ctx.catalog.manifest(self.handled)
                {
                    self.version = entry.version;
                }
                let version = ctx.catalog.version(self.version).to_string();
                let message = if self.outcome == Outcome::RebootOldVersion {
                    "rebooted into the old image"
                } else {
                    ""
                };
                self.report_as(&version, Status::InstalledVersion, message, ctx, out);
                if self.ack == AckStyle::EchoAfterInstall
                    && let Some(entry) = ctx.catalog.manifest(self.handled)
                {
                    out.push(Action::Ack(entry.raw.clone()));
                }
                self.done(ctx);
            }
            Phase::Unstarted | Phase::Idle | Phase::AwaitDownload => {}
        }
    }

    fn next_download(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let item = ctx
            .catalog
            .manifest(self.handled)
            .and_then(|m| m.items.get(usize::from(self.item)).cloned());
        match item {
            Some(Item::Content(id)) => {
                self.phase = Phase::AwaitDownload;
                out.push(Action::Download(id));
            }
            Some(Item::Link(url)) => {
                out.push(Action::FetchLink(url));
                self.downloaded_one(ctx, out);
            }
            None => {
                if self.outcome == Outcome::DownloadError {
                    self.finish(Status::DownloadError, "checksum mismatch", ctx, out);
                } else {
                    self.progress(Status::DownloadSuccess, "", ctx, out);
                    self.phase = Phase::Downloaded;
                    self.schedule_step(4, |d| &d.step, ctx, out);
                }
            }
        }
    }

    fn on_downloaded(&mut self, ok: bool, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        if ok {
            self.downloaded_one(ctx, out);
        } else {
            ctx.stats.failed_downloads += 1;
            let id = match ctx
                .catalog
                .manifest(self.handled)
                .and_then(|m| m.items.get(usize::from(self.item)))
            {
                Some(Item::Content(id)) | Some(Item::Link(id)) => id.to_string(),
                None => String::new(),
            };
            self.finish(
                Status::DownloadError,
                &format!("cannot download content `{id}`"),
                ctx,
                out,
            );
        }
    }

    fn downloaded_one(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let total = ctx
            .catalog
            .manifest(self.handled)
            .map_or(0, |m| m.items.len());
        self.item = self.item.saturating_add(1);
        let message = format!("Downloaded file {} of {total}", self.item);
        self.progress(Status::DownloadStep, &message, ctx, out);
        self.phase = Phase::Downloading;
        self.schedule_step(100 + u64::from(self.item), |d| &d.download, ctx, out);
    }

    /// A final report for the run, then idle.
    fn finish(&mut self, status: Status, message: &str, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        self.report(status, message, ctx, out);
        self.done(ctx);
    }

    fn done(&mut self, ctx: &mut Ctx<'_>) {
        self.phase = Phase::Idle;
        ctx.stats.finished[self.outcome as usize] += 1;
    }

    /// A progress report that short-sequence devices leave out.
    fn progress(
        &mut self,
        status: Status,
        message: &str,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        if !self.short {
            self.report(status, message, ctx, out);
        }
    }

    /// A report about the version being installed.
    fn report(&mut self, status: Status, message: &str, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let version = ctx
            .catalog
            .manifest(self.handled)
            .map(|m| ctx.catalog.version(m.version).to_string())
            .unwrap_or_default();
        self.report_as(&version, status, message, ctx, out);
    }

    fn report_as(
        &mut self,
        version: &str,
        status: Status,
        message: &str,
        _ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        // Malformed devices garble the reports of their runs, never their boot reports.
        let value = if self.outcome == Outcome::MalformedReports && self.busy() {
            malformed_report(version, &status)
        } else {
            Report::new(version, status, message).to_json()
        };
        out.push(Action::Report(value));
    }

    fn schedule_step(
        &mut self,
        step: u64,
        pick: impl Fn(&super::profile::Durations) -> &super::profile::Distribution,
        ctx: &mut Ctx<'_>,
        out: &mut Vec<Action>,
    ) {
        let salt = ctx.catalog.manifest(self.handled).map_or(0, |m| m.salt);
        let mut rng = seed::rng(self.key, Purpose::Duration, seed::combine(salt, step));
        let after = pick(&self.behaviour(ctx).durations).sample(&mut rng);
        out.push(Action::Schedule {
            after_micros: after,
            seq: self.seq,
        });
    }
}

/// A value that is not a valid `otau_in` report, chosen by the status it replaces so a
/// malformed device shows several kinds (not JSON, no `status`, `status` not a string).
fn malformed_report(version: &str, status: &Status) -> String {
    match status.as_str().len() % 3 {
        0 => format!("{status} {version}"),
        1 => serde_json::json!({ "version": version, "state": status.as_str() }).to_string(),
        _ => serde_json::json!({ "version": version, "status": 7 }).to_string(),
    }
}

#[cfg(test)]
mod tests;
