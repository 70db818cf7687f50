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
//! Field behaviours beyond the happy path (the OTA guide's loop, an ack after a failure, a
//! drop mid-download, statuses out of order, an unknown `*_ERROR`, reports for another
//! version, an out-of-band install) are options of the profile (docs/fleet-profiles.md), so the
//! in-process fleet, the HTTP fleet and `simulate` all get them from here.

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
    /// Goes offline after `DOWNLOAD`, comes back and runs the update again.
    OfflineMidDownload,
    /// Succeeds, with reports out of order (the last one is not final).
    OutOfOrder,
    /// Ends with an undocumented `*_ERROR` status.
    UnknownError,
    /// Installs the target but reports another version.
    OtherVersion,
}

impl Outcome {
    /// All outcomes, in the order of [`crate::emulator::fleet::profile::Outcomes::named`] after
    /// `Success`.
    pub const ALL: [Outcome; 13] = [
        Outcome::Success,
        Outcome::TestError,
        Outcome::DownloadError,
        Outcome::InstallError,
        Outcome::InstallAborted,
        Outcome::Silence,
        Outcome::RebootOldVersion,
        Outcome::MalformedReports,
        Outcome::UnknownStatus,
        Outcome::OfflineMidDownload,
        Outcome::OutOfOrder,
        Outcome::UnknownError,
        Outcome::OtherVersion,
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
            Outcome::OfflineMidDownload => "offline_mid_download",
            Outcome::OutOfOrder => "out_of_order",
            Outcome::UnknownError => "unknown_error",
            Outcome::OtherVersion => "other_version",
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

/// How a device acknowledges a `config_otau` value (exosite-platform.md §1.4).
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
    /// Writes the value back after the run's final report, failures included.
    EchoAfterOutcome,
}

impl AckStyle {
    const ALL: [AckStyle; 5] = [
        AckStyle::EchoImmediately,
        AckStyle::EchoAfterInstall,
        AckStyle::LiteralAck,
        AckStyle::Never,
        AckStyle::EchoAfterOutcome,
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

/// The undocumented failure status an `unknown_error` device ends with.
pub const UNKNOWN_ERROR: &str = "VERIFY_ERROR";

/// What an `other_version` device appends to the target version in its reports.
pub const OTHER_VERSION_SUFFIX: &str = "-other";

/// Bits of [`DeviceState`]'s `flags`.
mod flag {
    /// Trait: follows the OTA guide's example loop (`behaviour.guide_loop`).
    pub const GUIDE: u8 = 1;
    /// Trait: installs a package out of band after its first boot.
    pub const OUT_OF_BAND: u8 = 2;
    /// The out-of-band install is over (or never was).
    pub const OUT_OF_BAND_DONE: u8 = 4;
    /// A manifest arrived during the out-of-band install: read `config_otau` at its end.
    pub const PENDING: u8 = 8;
    /// Back from going offline mid-download: the next run is the interrupted one again.
    pub const RESUMED: u8 = 16;
}
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
    /// Read `config_otau` and give it as [`Input::Config`] (at boot); over HTTP, start the
    /// device's long poll.
    ReadConfig,
    /// Read `config_otau` once, the way the OTA guide polls (`If-Modified-Since: 0`: answered at
    /// once when a value was ever set), and give it as [`Input::Config`], `""` when there is
    /// none.
    Poll,
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
    /// Installing a package applied out of band, not ours.
    OutOfBand,
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
    flags: u8,
}

/// Counters a fleet keeps about its devices' runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Runs started, by outcome (index = `Outcome as usize`).
    pub started: [u64; 13],
    /// Runs finished (final report or silence), by outcome.
    pub finished: [u64; 13],
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
        // Drawn after the older traits, so adding them changed none of those.
        let mut flags = 0;
        if rng.random::<f64>() < behaviour.guide_loop {
            flags |= flag::GUIDE;
        }
        if rng.random::<f64>() < behaviour.out_of_band.fraction {
            flags |= flag::OUT_OF_BAND;
        } else {
            flags |= flag::OUT_OF_BAND_DONE;
        }
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
            flags,
        }
    }

    /// Whether it follows the OTA guide's example loop (`behaviour.guide_loop`).
    pub fn guide_loop(&self) -> bool {
        self.flags & flag::GUIDE != 0
    }

    /// Whether it installs a package out of band after its first boot.
    pub fn out_of_band(&self) -> bool {
        self.flags & flag::OUT_OF_BAND != 0
    }

    /// The device's key (see [`seed::device_key`]): every draw of the device derives from it.
    pub fn key(&self) -> u64 {
        self.key
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
        // The guide's loop reads once at a time; a device back from a drop reads once (over
        // HTTP its long poll kept running); the others start watching.
        if self.flags & (flag::GUIDE | flag::RESUMED) != 0 {
            out.push(Action::Poll);
        } else {
            out.push(Action::ReadConfig);
        }
        if self.flags & flag::OUT_OF_BAND_DONE == 0 {
            self.start_out_of_band(ctx, out);
        }
    }

    /// Starts installing the package applied out of band.
    fn start_out_of_band(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        self.flags |= flag::OUT_OF_BAND_DONE;
        self.phase = Phase::OutOfBand;
        self.seq = self.seq.wrapping_add(1);
        let oob = &self.behaviour(ctx).out_of_band;
        let after = oob
            .duration
            .sample(&mut seed::rng(self.key, Purpose::OutOfBand, 0));
        let version = oob.version.clone();
        self.report_as(
            &version,
            Status::Install,
            "installing a package applied out of band",
            ctx,
            out,
        );
        out.push(Action::Schedule {
            after_micros: after,
            seq: self.seq,
        });
    }

    /// The out-of-band install is over: the device runs that version, and reads a manifest
    /// that arrived meanwhile.
    fn end_out_of_band(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let version = self.behaviour(ctx).out_of_band.version.clone();
        self.version = ctx.catalog.intern_version(&version);
        self.phase = Phase::Idle;
        self.report_as(&version, Status::InstalledVersion, "", ctx, out);
        if self.flags & flag::PENDING != 0 {
            self.flags &= !flag::PENDING;
            out.push(Action::Poll);
        }
    }

    /// A guide-loop device polls again after a pause of one step.
    fn schedule_poll(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        if self.flags & flag::GUIDE == 0 {
            return;
        }
        self.seq = self.seq.wrapping_add(1);
        self.schedule_step(7, |d| &d.step, ctx, out);
    }

    /// Goes offline in the middle of the download; comes back later, boots, and runs the
    /// update again from the start.
    fn drop_mid_download(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let salt = ctx.catalog.manifest(self.handled).map_or(0, |m| m.salt);
        let after = self
            .behaviour(ctx)
            .offline
            .mid_download_for
            .sample(&mut seed::rng(self.key, Purpose::MidDownload, salt));
        ctx.stats.finished[self.outcome as usize] += 1;
        self.phase = Phase::Offline;
        self.handled = NONE;
        self.flags |= flag::RESUMED;
        self.seq = self.seq.wrapping_add(1);
        out.push(Action::Schedule {
            after_micros: after,
            seq: self.seq,
        });
    }

    fn on_config(&mut self, raw: &str, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Unstarted | Phase::Offline) {
            return; // not connected: it reads config_otau when it boots
        }
        if self.phase == Phase::OutOfBand {
            self.flags |= flag::PENDING; // busy with another package: read it again at the end
            return;
        }
        let guide = self.flags & flag::GUIDE != 0;
        if guide && self.busy() {
            ctx.stats.skipped += 1; // the guide's script does not listen while it installs
            return;
        }
        let id = match ctx.catalog.intern_manifest(raw) {
            Ok(id) => id,
            Err(_) => {
                ctx.stats.ignored += 1;
                self.schedule_poll(ctx, out);
                return;
            }
        };
        // The guide's script keeps no memory of what it handled.
        if !guide && self.handled != NONE && ctx.catalog.same_update(self.handled, id) {
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
        if self.flags & flag::RESUMED != 0 {
            // The run it dropped, again: this time the download goes through.
            self.flags &= !flag::RESUMED;
            if self.outcome == Outcome::OfflineMidDownload {
                self.outcome = Outcome::Success;
            }
        }
        ctx.stats.started[self.outcome as usize] += 1;
        if self.outcome == Outcome::Silence {
            self.phase = Phase::Idle;
            ctx.stats.finished[Outcome::Silence as usize] += 1;
            self.schedule_poll(ctx, out);
            return;
        }
        match self.ack {
            AckStyle::EchoImmediately => out.push(Action::Ack(raw)),
            AckStyle::LiteralAck => out.push(Action::Ack(Arc::from(LITERAL_ACK))),
            AckStyle::EchoAfterInstall | AckStyle::Never | AckStyle::EchoAfterOutcome => {}
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
                (false, Outcome::OutOfOrder) => {
                    self.progress(Status::TestSuccess, "", ctx, out);
                    self.progress(Status::Test, "running tests", ctx, out);
                    self.phase = Phase::Testing;
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
                outcome => {
                    if outcome != Outcome::OutOfOrder {
                        self.progress(Status::TestSuccess, "", ctx, out);
                    }
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
            Phase::Downloaded if self.outcome == Outcome::UnknownError => self.finish(
                Status::Unknown(UNKNOWN_ERROR.into()),
                "signature verification failed",
                ctx,
                out,
            ),
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
                    if self.outcome != Outcome::OutOfOrder {
                        self.progress(Status::InstallSuccess, "", ctx, out);
                    }
                    self.phase = Phase::Rebooting;
                    self.schedule_step(6, |d| &d.reboot, ctx, out);
                }
            }
            Phase::Rebooting => self.rebooted(ctx, out),
            Phase::OutOfBand => self.end_out_of_band(ctx, out),
            Phase::Idle if self.flags & flag::GUIDE != 0 => out.push(Action::Poll),
            Phase::Unstarted | Phase::Idle | Phase::AwaitDownload => {}
        }
    }

    /// Back from the reboot after the install: the final `INSTALLED_VERSION`, then the run is
    /// over.
    fn rebooted(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
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
        if self.outcome == Outcome::OutOfOrder {
            // A progress report arrives late: the last value of otau_in is not final.
            let late = if self.short {
                Status::Init
            } else {
                Status::InstallSuccess
            };
            self.report(late, "", ctx, out);
        }
        if self.ack == AckStyle::EchoAfterInstall
            && let Some(entry) = ctx.catalog.manifest(self.handled)
        {
            out.push(Action::Ack(entry.raw.clone()));
        }
        self.done(ctx, out);
    }

    fn next_download(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        let item = ctx
            .catalog
            .manifest(self.handled)
            .and_then(|m| m.items.get(usize::from(self.item)).cloned());
        match item {
            _ if self.outcome == Outcome::OfflineMidDownload => self.drop_mid_download(ctx, out),
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
        self.done(ctx, out);
    }

    /// The run is over: ack if the device acks after any outcome, then idle (a guide-loop
    /// device polls again).
    fn done(&mut self, ctx: &mut Ctx<'_>, out: &mut Vec<Action>) {
        if self.ack == AckStyle::EchoAfterOutcome
            && let Some(entry) = ctx.catalog.manifest(self.handled)
        {
            out.push(Action::Ack(entry.raw.clone()));
        }
        self.phase = Phase::Idle;
        ctx.stats.finished[self.outcome as usize] += 1;
        self.schedule_poll(ctx, out);
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
        // Malformed devices garble the reports of their runs, never their boot reports; other-
        // version devices name another version in them.
        let value = if self.outcome == Outcome::MalformedReports && self.busy() {
            malformed_report(version, &status)
        } else if self.outcome == Outcome::OtherVersion && self.busy() {
            Report::new(format!("{version}{OTHER_VERSION_SUFFIX}"), status, message).to_json()
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
