//! Behaviour profiles of a simulated fleet, read from YAML (see `examples/fleet-profile.yaml`
//! and docs/fleet-profiles.md).
//!
//! A profile is a list of device groups. Each group has a size (`count`, or `fraction` of the
//! fleet size given at start), an identity prefix, tags, a starting version and a behaviour:
//! the probabilities of each outcome of an update, the ack style, short sequences, offline
//! periods and step durations. Unknown keys are refused, and every error names the field.

mod distribution;

use std::path::Path;

use serde::Deserialize;

pub use distribution::{Distribution, Micros};

/// A whole fleet profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Seed of the fleet's randomness; the same seed gives exactly the same run.
    #[serde(default)]
    pub seed: u64,
    /// The device groups, in order.
    pub groups: Vec<Group>,
}

/// One group of devices that share tags, a starting version and a behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// A name for reports and errors.
    pub name: String,
    /// Exact number of devices. Give `count` or `fraction`, not both.
    pub count: Option<u64>,
    /// Share of the fleet size given at start (`--devices N`), between 0 and 1.
    pub fraction: Option<f64>,
    /// Identities are this prefix followed by a zero-padded index (`gw-000042`).
    pub identity_prefix: String,
    /// Tags put on every device of the group (rollouts target by tag).
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The version the devices run at first boot.
    pub version: String,
    /// How the devices behave.
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Which device protocol the group's devices speak in a socket fleet (default: HTTP).
    #[serde(default)]
    pub transport: Transport,
}

/// The device protocol of a group's devices in a socket fleet (`HttpFleet`): the device HTTP API
/// (exosite-platform.md §3) or the device MQTT API (§4). The in-process fleet has no sockets and
/// ignores it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transport {
    /// Share of the group's devices that talk MQTT (drawn per device from the fleet seed, like
    /// the firmware traits); the rest use HTTP. An MQTT device provisions, reports and acks over
    /// MQTT, receives `config_otau` as a push, and reads `config_otau` at boot and downloads
    /// content over HTTP (§4.4).
    #[serde(default)]
    pub mqtt: f64,
    /// Share of those MQTT devices that send their HTTP (the boot read of `config_otau`,
    /// content downloads) to the MQTT TLS port instead, selected there by TLS ALPN `http/1.1`
    /// (exosite-platform.md §3.1, "Content over the MQTT port": devices with one port).
    #[serde(default)]
    pub http_on_mqtt_port: f64,
}

impl Transport {
    fn validate(&self, at: &str) -> Result<(), ProfileError> {
        check_probability(format!("{at}.mqtt"), self.mqtt)?;
        check_probability(format!("{at}.http_on_mqtt_port"), self.http_on_mqtt_port)
    }
}

/// A device tag, as device2 stores it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    /// Tag name.
    pub name: String,
    /// Tag value.
    pub value: String,
}

/// How the devices of a group behave.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Probability of each outcome of one update run; success takes the rest.
    #[serde(default)]
    pub outcomes: Outcomes,
    /// Share of devices that send the short sequence `INIT` → `INSTALLED_VERSION`.
    #[serde(default)]
    pub short_sequence: f64,
    /// How devices acknowledge `config_otau` (weights; default: echo immediately).
    #[serde(default)]
    pub ack: AckWeights,
    /// Devices that are offline at start and come back later.
    #[serde(default)]
    pub offline: Offline,
    /// Step durations.
    #[serde(default)]
    pub durations: Durations,
    /// Share of devices whose firmware follows the OTA guide's example script: it polls
    /// `config_otau` with `If-Modified-Since: 0` (answered at once, exosite-platform.md §3.9),
    /// keeps no memory of the manifests it handled, and polls again after each run, so it runs
    /// the same update again and again. It does not listen while it runs an update.
    #[serde(default)]
    pub guide_loop: f64,
    /// Devices busy installing another package (applied out of band) when they boot, so that
    /// a manifest arriving meanwhile waits until that install is over.
    #[serde(default)]
    pub out_of_band: OutOfBand,
}

/// Devices that install another package, applied out of band, right after they first boot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutOfBand {
    /// Share of the group that does it.
    #[serde(default)]
    pub fraction: f64,
    /// The version of that other package; the device runs it afterwards.
    #[serde(default = "OutOfBand::default_version")]
    pub version: String,
    /// How long that install takes; a manifest seen meanwhile is read again at its end.
    #[serde(default = "OutOfBand::default_duration")]
    pub duration: Distribution,
}

impl OutOfBand {
    fn default_version() -> String {
        "0.0.0-out-of-band".into()
    }
    fn default_duration() -> Distribution {
        Distribution::Fixed(Micros(60_000_000))
    }
}

impl Default for OutOfBand {
    fn default() -> Self {
        OutOfBand {
            fraction: 0.0,
            version: OutOfBand::default_version(),
            duration: OutOfBand::default_duration(),
        }
    }
}

/// Probabilities of the outcomes of one update run. They must add up to at most 1; success is
/// what is left.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcomes {
    /// Tests fail: `TEST_ERROR`.
    #[serde(default)]
    pub test_error: f64,
    /// Download fails: `DOWNLOAD_ERROR`.
    #[serde(default)]
    pub download_error: f64,
    /// Installer fails: `INSTALL_ERROR`.
    #[serde(default)]
    pub install_error: f64,
    /// The device aborts after its tests: `INSTALL_ABORTED`.
    #[serde(default)]
    pub install_aborted: f64,
    /// The device never reports nor acks.
    #[serde(default)]
    pub silence: f64,
    /// The device installs, reboots, and reports `INSTALLED_VERSION` with its old version.
    #[serde(default)]
    pub reboot_old_version: f64,
    /// The device installs but its reports are not valid `otau_in` values.
    #[serde(default)]
    pub malformed_reports: f64,
    /// The device also sends a status the schema does not define, then succeeds.
    #[serde(default)]
    pub unknown_status: f64,
    /// The device goes offline in the middle of the download (after `DOWNLOAD`), comes back
    /// after `offline.mid_download_for`, boots, reads `config_otau` and runs the update again
    /// from the start (that second run succeeds).
    #[serde(default)]
    pub offline_mid_download: f64,
    /// The update succeeds but its reports arrive out of order: `TEST_SUCCESS` before `TEST`,
    /// and `INSTALL_SUCCESS` after the final `INSTALLED_VERSION` (`INIT` again for
    /// short-sequence devices), so the last value of `otau_in` is not final.
    #[serde(default)]
    pub out_of_order: f64,
    /// The update ends after the download with an undocumented failure status ending in
    /// `_ERROR` (`VERIFY_ERROR`).
    #[serde(default)]
    pub unknown_error: f64,
    /// The device installs the target, but every report of the run names another version
    /// (the target with `-other` appended), the final `INSTALLED_VERSION` included.
    #[serde(default)]
    pub other_version: f64,
}

/// Weights of the acknowledgement styles (relative; they need not add up to 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckWeights {
    /// Write the received value back at once.
    #[serde(default)]
    pub echo_immediately: f64,
    /// Write the received value back after the install (survives power loss).
    #[serde(default)]
    pub echo_after_install: f64,
    /// Write the literal `ACK` (the murano-client README style).
    #[serde(default)]
    pub literal_ack: f64,
    /// Never acknowledge.
    #[serde(default)]
    pub never: f64,
    /// Write the received value back after the run's final report, whatever it was: after
    /// `INSTALLED_VERSION`, and also after a failure (`INSTALL_ERROR`, `TEST_ERROR`, ...).
    #[serde(default)]
    pub echo_after_outcome: f64,
}

impl Default for AckWeights {
    fn default() -> Self {
        AckWeights {
            echo_immediately: 1.0,
            echo_after_install: 0.0,
            literal_ack: 0.0,
            never: 0.0,
            echo_after_outcome: 0.0,
        }
    }
}

/// Devices that are offline when the fleet starts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offline {
    /// Share of the group that starts offline.
    #[serde(default)]
    pub fraction: f64,
    /// When each comes back (then it boots and reads `config_otau`).
    #[serde(default = "Offline::default_back_after")]
    pub back_after: Distribution,
    /// How long a device that goes offline in the middle of a download
    /// (`outcomes.offline_mid_download`) stays away.
    #[serde(default = "Offline::default_mid_download_for")]
    pub mid_download_for: Distribution,
}

impl Offline {
    fn default_back_after() -> Distribution {
        Distribution::Fixed(Micros(600_000_000))
    }
    fn default_mid_download_for() -> Distribution {
        Distribution::Fixed(Micros(30_000_000))
    }
}

impl Default for Offline {
    fn default() -> Self {
        Offline {
            fraction: 0.0,
            back_after: Offline::default_back_after(),
            mid_download_for: Offline::default_mid_download_for(),
        }
    }
}

/// Durations of the steps of an update run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durations {
    /// Gap between two progress reports.
    #[serde(default = "Durations::default_step")]
    pub step: Distribution,
    /// The tests.
    #[serde(default = "Durations::default_test")]
    pub test: Distribution,
    /// One payload item's download.
    #[serde(default = "Durations::default_download")]
    pub download: Distribution,
    /// The install.
    #[serde(default = "Durations::default_install")]
    pub install: Distribution,
    /// The reboot after the install.
    #[serde(default = "Durations::default_reboot")]
    pub reboot: Distribution,
}

impl Durations {
    fn default_step() -> Distribution {
        Distribution::Fixed(Micros(500_000))
    }
    fn default_test() -> Distribution {
        Distribution::Fixed(Micros(2_000_000))
    }
    fn default_download() -> Distribution {
        Distribution::Fixed(Micros(5_000_000))
    }
    fn default_install() -> Distribution {
        Distribution::Fixed(Micros(10_000_000))
    }
    fn default_reboot() -> Distribution {
        Distribution::Fixed(Micros(5_000_000))
    }
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            step: Durations::default_step(),
            test: Durations::default_test(),
            download: Durations::default_download(),
            install: Durations::default_install(),
            reboot: Durations::default_reboot(),
        }
    }
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read fleet profile {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or has a wrong or unknown field (the message names it).
    #[error("fleet profile is not valid: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A value is out of range or inconsistent.
    #[error("fleet profile field `{field}`: {reason}")]
    Invalid {
        /// Path of the field, e.g. `groups[1].behaviour.outcomes`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_probability(field: String, p: f64) -> Result<(), ProfileError> {
    if p.is_finite() && (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{p} is not a probability between 0 and 1"),
        ))
    }
}

/// Slack for probabilities that should add up to at most 1 (0.1 + 0.2 + 0.7 in binary).
const SUM_SLACK: f64 = 1e-9;

impl Outcomes {
    /// The outcome probabilities with their YAML names, in a fixed order.
    pub fn named(&self) -> [(&'static str, f64); 12] {
        [
            ("test_error", self.test_error),
            ("download_error", self.download_error),
            ("install_error", self.install_error),
            ("install_aborted", self.install_aborted),
            ("silence", self.silence),
            ("reboot_old_version", self.reboot_old_version),
            ("malformed_reports", self.malformed_reports),
            ("unknown_status", self.unknown_status),
            ("offline_mid_download", self.offline_mid_download),
            ("out_of_order", self.out_of_order),
            ("unknown_error", self.unknown_error),
            ("other_version", self.other_version),
        ]
    }
}

impl AckWeights {
    /// The weights with their YAML names, in a fixed order.
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("echo_immediately", self.echo_immediately),
            ("echo_after_install", self.echo_after_install),
            ("literal_ack", self.literal_ack),
            ("never", self.never),
            ("echo_after_outcome", self.echo_after_outcome),
        ]
    }
}

impl Behaviour {
    fn validate(&self, at: &str) -> Result<(), ProfileError> {
        let mut sum = 0.0;
        for (name, p) in self.outcomes.named() {
            check_probability(format!("{at}.outcomes.{name}"), p)?;
            sum += p;
        }
        if sum > 1.0 + SUM_SLACK {
            return Err(invalid(
                format!("{at}.outcomes"),
                format!("probabilities add up to {sum}, more than 1 (success takes what is left)"),
            ));
        }
        check_probability(format!("{at}.short_sequence"), self.short_sequence)?;
        let mut weights = 0.0;
        for (name, w) in self.ack.named() {
            if !w.is_finite() || w < 0.0 {
                return Err(invalid(
                    format!("{at}.ack.{name}"),
                    format!("weight {w} is negative"),
                ));
            }
            weights += w;
        }
        if weights <= 0.0 {
            return Err(invalid(
                format!("{at}.ack"),
                "at least one weight must be above 0",
            ));
        }
        check_probability(format!("{at}.offline.fraction"), self.offline.fraction)?;
        check_probability(format!("{at}.guide_loop"), self.guide_loop)?;
        check_probability(
            format!("{at}.out_of_band.fraction"),
            self.out_of_band.fraction,
        )?;
        if self.out_of_band.version.trim().is_empty() {
            return Err(invalid(
                format!("{at}.out_of_band.version"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// A group with its resolved size.
#[derive(Debug, Clone)]
pub struct SizedGroup {
    /// Index of the group in the profile.
    pub group: usize,
    /// Number of devices.
    pub count: u64,
}

/// Most devices one fleet may hold (device indexes are `u32`).
pub const MAX_DEVICES: u64 = u32::MAX as u64 - 1;

impl Profile {
    /// Parses and validates a YAML profile.
    pub fn from_yaml(text: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = serde_yaml::from_str(text)?;
        profile.validate()?;
        Ok(profile)
    }

    /// Reads, parses and validates a YAML profile file.
    pub fn from_file(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Profile::from_yaml(&text)
    }

    /// A one-group profile where every device succeeds: handy for tests and `--devices N`
    /// without a profile.
    pub fn all_succeed(prefix: &str, version: &str, count: u64) -> Profile {
        Profile {
            seed: 0,
            groups: vec![Group {
                name: "default".into(),
                count: Some(count),
                fraction: None,
                identity_prefix: prefix.into(),
                tags: Vec::new(),
                version: version.into(),
                behaviour: Behaviour::default(),
                transport: Transport::default(),
            }],
        }
    }

    /// Checks ranges and consistency; the error names the field.
    pub fn validate(&self) -> Result<(), ProfileError> {
        if self.groups.is_empty() {
            return Err(invalid("groups", "a profile needs at least one group"));
        }
        let mut fractions = 0.0;
        for (i, g) in self.groups.iter().enumerate() {
            let at = format!("groups[{i}]");
            if g.name.trim().is_empty() {
                return Err(invalid(format!("{at}.name"), "must not be empty"));
            }
            match (g.count, g.fraction) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &at,
                        format!(
                            "group `{}` has both `count` and `fraction`; give one",
                            g.name
                        ),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        &at,
                        format!("group `{}` needs `count` or `fraction`", g.name),
                    ));
                }
                (None, Some(f)) => {
                    check_probability(format!("{at}.fraction"), f)?;
                    fractions += f;
                }
                (Some(_), None) => {}
            }
            if g.identity_prefix.is_empty() {
                return Err(invalid(
                    format!("{at}.identity_prefix"),
                    "must not be empty",
                ));
            }
            if g.identity_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    format!("{at}.identity_prefix"),
                    "must not contain spaces or control characters",
                ));
            }
            if g.version.is_empty() {
                return Err(invalid(format!("{at}.version"), "must not be empty"));
            }
            for (j, t) in g.tags.iter().enumerate() {
                if t.name.is_empty() {
                    return Err(invalid(format!("{at}.tags[{j}].name"), "must not be empty"));
                }
            }
            g.behaviour.validate(&format!("{at}.behaviour"))?;
            g.transport.validate(&format!("{at}.transport"))?;
        }
        if fractions > 1.0 + SUM_SLACK {
            return Err(invalid(
                "groups",
                format!("fractions add up to {fractions}, more than 1"),
            ));
        }
        // Prefixes must not be prefixes of one another, so an identity names one group.
        for (i, a) in self.groups.iter().enumerate() {
            for (j, b) in self.groups.iter().enumerate() {
                if i != j && b.identity_prefix.starts_with(&a.identity_prefix) {
                    return Err(invalid(
                        format!("groups[{j}].identity_prefix"),
                        format!(
                            "`{}` starts with the prefix `{}` of group `{}`; prefixes must be distinct",
                            b.identity_prefix, a.identity_prefix, a.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The size of each group. Groups with `count` get it; groups with `fraction` share what
    /// `total` leaves (largest remainder, so the sizes add up exactly when fractions add up to 1).
    pub fn resolve(&self, total: Option<u64>) -> Result<Vec<SizedGroup>, ProfileError> {
        let counted: u64 = self.groups.iter().filter_map(|g| g.count).sum();
        let has_fractions = self.groups.iter().any(|g| g.fraction.is_some());
        let rest = match (total, has_fractions) {
            (None, true) => {
                return Err(invalid(
                    "groups",
                    "a group uses `fraction`, so the fleet size must be given (--devices N)",
                ));
            }
            (Some(t), true) => t.checked_sub(counted).ok_or_else(|| {
                invalid("groups", format!("groups with `count` already hold {counted} devices, more than the {t} asked for"))
            })?,
            (_, false) => 0,
        };
        let fraction_sum: f64 = self.groups.iter().filter_map(|g| g.fraction).sum();
        let mut sizes: Vec<SizedGroup> = Vec::with_capacity(self.groups.len());
        let mut remainders: Vec<(f64, usize)> = Vec::new();
        let mut assigned = 0u64;
        for (i, g) in self.groups.iter().enumerate() {
            let count = match (g.count, g.fraction) {
                (Some(c), _) => c,
                (None, Some(f)) => {
                    let exact = f * rest as f64;
                    let floor = exact.floor() as u64;
                    remainders.push((exact - floor as f64, i));
                    assigned += floor;
                    floor
                }
                (None, None) => 0,
            };
            sizes.push(SizedGroup { group: i, count });
        }
        if (fraction_sum - 1.0).abs() <= SUM_SLACK {
            let mut left = rest.saturating_sub(assigned);
            remainders.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for (_, i) in remainders.iter().cycle().take(remainders.len().max(1) * 2) {
                if left == 0 {
                    break;
                }
                sizes[*i].count += 1;
                left -= 1;
            }
        }
        let sum: u64 = sizes.iter().map(|s| s.count).sum();
        if sum > MAX_DEVICES {
            return Err(invalid(
                "groups",
                format!("{sum} devices is more than the {MAX_DEVICES} one fleet can hold"),
            ));
        }
        Ok(sizes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
groups:
  - name: a
    count: 3
    identity_prefix: a-
    version: '1.0'
";

    #[test]
    fn minimal_profile_gets_defaults() {
        let p = Profile::from_yaml(MINIMAL).unwrap();
        assert_eq!(p.seed, 0);
        let b = &p.groups[0].behaviour;
        assert_eq!(b.ack.echo_immediately, 1.0);
        assert_eq!(b.outcomes.named().iter().map(|(_, p)| p).sum::<f64>(), 0.0);
        assert_eq!(p.resolve(None).unwrap()[0].count, 3);
    }

    #[test]
    fn unknown_and_wrong_fields_are_named() {
        let e = Profile::from_yaml(&MINIMAL.replace("version:", "verison:")).unwrap_err();
        assert!(e.to_string().contains("verison"), "{e}");
        let e = Profile::from_yaml(&format!(
            "{MINIMAL}    behaviour: {{outcomes: {{test_eror: 0.1}}}}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `test_eror`"), "{e}");
        let e = Profile::from_yaml(&format!(
            "{MINIMAL}    behaviour: {{outcomes: {{test_error: 1.5}}}}\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("groups[0].behaviour.outcomes.test_error"),
            "{e}"
        );
        let e = Profile::from_yaml(&format!(
            "{MINIMAL}    behaviour: {{outcomes: {{test_error: 0.6, silence: 0.6}}}}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("add up to"), "{e}");
        let e = Profile::from_yaml(&format!("{MINIMAL}    behaviour: {{ack: {{never: 0}}}}\n"))
            .unwrap_err();
        assert!(e.to_string().contains("groups[0].behaviour.ack"), "{e}");
        let e = Profile::from_yaml("groups: []").unwrap_err();
        assert!(e.to_string().contains("at least one group"), "{e}");
        let e = Profile::from_yaml(&MINIMAL.replace("count: 3", "count: 3\n    fraction: 0.5"))
            .unwrap_err();
        assert!(e.to_string().contains("both `count` and `fraction`"), "{e}");
    }

    #[test]
    fn transport_is_http_by_default_and_its_mqtt_share_is_a_probability() {
        let p = Profile::from_yaml(MINIMAL).unwrap();
        assert_eq!(p.groups[0].transport.mqtt, 0.0);
        let p = Profile::from_yaml(&format!("{MINIMAL}    transport: {{mqtt: 0.3}}\n")).unwrap();
        assert_eq!(p.groups[0].transport.mqtt, 0.3);
        let e =
            Profile::from_yaml(&format!("{MINIMAL}    transport: {{mqtt: 1.5}}\n")).unwrap_err();
        assert!(
            e.to_string().contains("groups[0].transport.mqtt") && e.to_string().contains("1.5"),
            "{e}"
        );
        let e =
            Profile::from_yaml(&format!("{MINIMAL}    transport: {{mqttt: 0.3}}\n")).unwrap_err();
        assert!(e.to_string().contains("unknown field `mqttt`"), "{e}");
    }

    #[test]
    fn the_mqtt_example_profile_is_valid() {
        let p = Profile::from_yaml(include_str!("../../../../examples/fleet-profile-mqtt.yaml"))
            .unwrap();
        let shares: Vec<(f64, f64)> = p
            .groups
            .iter()
            .map(|g| (g.transport.mqtt, g.transport.http_on_mqtt_port))
            .collect();
        assert_eq!(shares, [(0.5, 0.0), (1.0, 0.5)]);
        assert_eq!(p.groups[1].behaviour.outcomes.install_error, 0.01);
    }

    #[test]
    fn prefixes_must_not_overlap() {
        let text = format!(
            "{MINIMAL}  - name: b\n    count: 1\n    identity_prefix: a-x\n    version: '1'\n"
        );
        let e = Profile::from_yaml(&text).unwrap_err();
        assert!(e.to_string().contains("groups[1].identity_prefix"), "{e}");
    }

    #[test]
    fn fractions_share_the_total_exactly() {
        let text = "
groups:
  - {name: fixed, count: 10, identity_prefix: f-, version: '1'}
  - {name: a, fraction: 0.333, identity_prefix: a-, version: '1'}
  - {name: b, fraction: 0.667, identity_prefix: b-, version: '1'}
";
        let p = Profile::from_yaml(text).unwrap();
        let sizes: Vec<u64> = p
            .resolve(Some(1000))
            .unwrap()
            .iter()
            .map(|s| s.count)
            .collect();
        assert_eq!(sizes.iter().sum::<u64>(), 1000);
        assert_eq!(sizes[0], 10);
        assert!(
            p.resolve(None)
                .unwrap_err()
                .to_string()
                .contains("--devices")
        );
        assert!(
            p.resolve(Some(5))
                .unwrap_err()
                .to_string()
                .contains("more than the 5")
        );
    }
}
