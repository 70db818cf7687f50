//! What a fleet run did, in numbers.

use serde::Serialize;

use super::core::FleetCore;
use super::device::Outcome;

/// Counters a driver keeps about the actions it carried out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DriverCounters {
    /// `otau_in` writes.
    pub reports: u64,
    /// `config_otau` acknowledgements written.
    pub acks: u64,
    /// Content downloads tried.
    pub downloads: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// External links recorded (not fetched).
    pub links: u64,
    /// Platform calls that failed.
    pub errors: u64,
    /// Devices on MQTT (socket fleet).
    pub mqtt_devices: u64,
    /// MQTT writes (publishes) the server acknowledged.
    pub mqtt_writes: u64,
    /// `config_otau` pushes MQTT devices received.
    pub mqtt_pushes: u64,
    /// MQTT sessions made again after a lost connection or an injected fault.
    pub mqtt_reconnects: u64,
}

/// Outcome counts, by the profile's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutcomeCounts {
    /// Ended with `INSTALLED_VERSION` of the target.
    pub success: u64,
    /// `TEST_ERROR`.
    pub test_error: u64,
    /// `DOWNLOAD_ERROR`.
    pub download_error: u64,
    /// `INSTALL_ERROR`.
    pub install_error: u64,
    /// `INSTALL_ABORTED`.
    pub install_aborted: u64,
    /// Never reported.
    pub silence: u64,
    /// Reported the old version after the reboot.
    pub reboot_old_version: u64,
    /// Sent malformed reports.
    pub malformed_reports: u64,
    /// Sent an unknown status, then succeeded.
    pub unknown_status: u64,
    /// Went offline in the middle of the download (the run it did again counts as another).
    pub offline_mid_download: u64,
    /// Succeeded with reports out of order.
    pub out_of_order: u64,
    /// Ended with an undocumented `*_ERROR` status.
    pub unknown_error: u64,
    /// Installed the target but reported another version.
    pub other_version: u64,
}

impl OutcomeCounts {
    fn from_array(a: &[u64; 13]) -> OutcomeCounts {
        let at = |o: Outcome| a[o as usize];
        OutcomeCounts {
            success: at(Outcome::Success),
            test_error: at(Outcome::TestError),
            download_error: at(Outcome::DownloadError),
            install_error: at(Outcome::InstallError),
            install_aborted: at(Outcome::InstallAborted),
            silence: at(Outcome::Silence),
            reboot_old_version: at(Outcome::RebootOldVersion),
            malformed_reports: at(Outcome::MalformedReports),
            unknown_status: at(Outcome::UnknownStatus),
            offline_mid_download: at(Outcome::OfflineMidDownload),
            out_of_order: at(Outcome::OutOfOrder),
            unknown_error: at(Outcome::UnknownError),
            other_version: at(Outcome::OtherVersion),
        }
    }

    /// The sum over all outcomes.
    pub fn total(&self) -> u64 {
        self.success
            + self.test_error
            + self.download_error
            + self.install_error
            + self.install_aborted
            + self.silence
            + self.reboot_old_version
            + self.malformed_reports
            + self.unknown_status
            + self.offline_mid_download
            + self.out_of_order
            + self.unknown_error
            + self.other_version
    }
}

/// A snapshot of a fleet run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FleetSummary {
    /// Number of devices.
    pub devices: u64,
    /// Devices in the middle of an update.
    pub busy: u64,
    /// Update runs started, by drawn outcome.
    pub started: OutcomeCounts,
    /// Update runs finished (or interrupted), by outcome.
    pub finished: OutcomeCounts,
    /// Manifests skipped as equal to the last one handled.
    pub skipped: u64,
    /// `config_otau` values that were not manifests.
    pub ignored: u64,
    /// Runs interrupted by a newer manifest.
    pub interrupted: u64,
    /// Downloads that failed.
    pub failed_downloads: u64,
    /// What the driver did.
    pub actions: DriverCounters,
}

impl FleetSummary {
    /// The summary of `core` with a driver's counters.
    pub fn new(core: &FleetCore, counters: &DriverCounters) -> FleetSummary {
        let stats = core.stats();
        FleetSummary {
            devices: core.len() as u64,
            busy: core.busy() as u64,
            started: OutcomeCounts::from_array(&stats.started),
            finished: OutcomeCounts::from_array(&stats.finished),
            skipped: stats.skipped,
            ignored: stats.ignored,
            interrupted: stats.interrupted,
            failed_downloads: stats.failed_downloads,
            actions: *counters,
        }
    }
}
impl std::fmt::Display for OutcomeCounts {
    /// `3 success, 1 install_error` (the profile's names; outcomes with none left out), or
    /// `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = [
            self.success,
            self.test_error,
            self.download_error,
            self.install_error,
            self.install_aborted,
            self.silence,
            self.reboot_old_version,
            self.malformed_reports,
            self.unknown_status,
            self.offline_mid_download,
            self.out_of_order,
            self.unknown_error,
            self.other_version,
        ];
        let parts: Vec<String> = Outcome::ALL
            .iter()
            .map(|o| (o.name(), counts[*o as usize]))
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl std::fmt::Display for FleetSummary {
    /// Two lines for people: the updates by outcome, then what the devices did.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = &self.actions;
        writeln!(
            f,
            "{} devices, {} updating; updates started: {}; finished: {}",
            self.devices, self.busy, self.started, self.finished
        )?;
        write!(
            f,
            "  {} reports, {} acks, {} downloads ({} bytes, {} failed), {} links, {} platform errors; {} manifests skipped as already handled, {} values ignored, {} updates interrupted",
            a.reports,
            a.acks,
            a.downloads,
            a.bytes,
            self.failed_downloads,
            a.links,
            a.errors,
            self.skipped,
            self.ignored,
            self.interrupted
        )?;
        if a.mqtt_devices > 0 {
            write!(
                f,
                "\n  MQTT: {} devices, {} writes acknowledged, {} pushes received, {} reconnects",
                a.mqtt_devices, a.mqtt_writes, a.mqtt_pushes, a.mqtt_reconnects
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn the_summary_reads_as_text_not_a_debug_dump() {
        let summary = FleetSummary {
            devices: 5,
            started: OutcomeCounts {
                success: 3,
                install_error: 1,
                ..OutcomeCounts::default()
            },
            actions: DriverCounters {
                reports: 12,
                ..DriverCounters::default()
            },
            ..FleetSummary::default()
        };
        let text = summary.to_string();
        assert!(
            text.starts_with(
                "5 devices, 0 updating; updates started: 3 success, 1 install_error; finished: none\n  12 reports,"
            ),
            "{text}"
        );
        assert!(!text.contains('{'), "{text}");
    }
}
