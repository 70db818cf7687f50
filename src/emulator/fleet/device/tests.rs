//! Unit tests of the pure device state machine: one test per behaviour of
//! exosite-platform.md §9 "Simulated devices", driven without I/O.

use std::collections::HashSet;

use super::*;
use crate::emulator::fleet::core::FleetCore;
use crate::emulator::fleet::profile::Profile;
use crate::otau::{Manifest, Report};

/// What a device did, in order, as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Report(String),
    Ack(String),
    Download(String),
    Link(String),
    Read,
    Poll,
}

/// A tiny pure driver: virtual time, answers downloads from `content`, reads from `config`.
struct Bench {
    core: FleetCore,
    now: i64,
    content: HashSet<String>,
    config: Option<String>,
    log: Vec<(u32, Seen)>,
}

impl Bench {
    fn new(yaml: &str) -> Bench {
        let profile = Profile::from_yaml(yaml).unwrap();
        Bench {
            core: FleetCore::new(&profile, None, None).unwrap(),
            now: 0,
            content: HashSet::from(["fw.bin".to_string()]),
            config: None,
            log: Vec::new(),
        }
    }

    fn one(behaviour: &str) -> Bench {
        Bench::new(&format!(
            "seed: 7\ngroups:\n  - name: g\n    count: 1\n    identity_prefix: d-\n    version: '1.0'\n    behaviour: {behaviour}\n"
        ))
    }

    fn input(&mut self, device: u32, input: Input<'_>) {
        let mut out = Vec::new();
        self.core.handle(device, input, self.now, &mut out);
        for action in out {
            match action {
                Action::Report(v) => self.log.push((device, Seen::Report(v))),
                Action::Ack(v) => self.log.push((device, Seen::Ack(v.to_string()))),
                Action::Download(id) => {
                    self.log.push((device, Seen::Download(id.to_string())));
                    let ok = self.content.contains(&*id);
                    self.input(device, Input::Downloaded(ok));
                }
                Action::FetchLink(url) => self.log.push((device, Seen::Link(url.to_string()))),
                Action::ReadConfig => {
                    self.log.push((device, Seen::Read));
                    if let Some(c) = self.config.clone() {
                        self.input(device, Input::Config(&c));
                    }
                }
                Action::Poll => {
                    self.log.push((device, Seen::Poll));
                    let c = self.config.clone().unwrap_or_default();
                    self.input(device, Input::Config(&c));
                }
                Action::Schedule { .. } => unreachable!("the core queues timers"),
            }
        }
    }

    fn start_all(&mut self) {
        for i in 0..self.core.len() as u32 {
            self.input(i, Input::Start);
        }
    }

    /// Fires timers in order until none is left.
    fn run(&mut self) {
        while let Some(due) = self.core.next_due() {
            self.now = self.now.max(due);
            while let Some(t) = self.core.pop_due(self.now) {
                self.input(t.device, Input::Timer(t.seq));
            }
        }
    }

    /// Fires timers in order until none is left before `until` (µs): for devices that never
    /// go quiet (the guide's loop).
    fn run_until(&mut self, until: i64) {
        while let Some(due) = self.core.next_due().filter(|d| *d <= until) {
            self.now = self.now.max(due);
            while let Some(t) = self.core.pop_due(self.now) {
                self.input(t.device, Input::Timer(t.seq));
            }
        }
    }

    fn write_config(&mut self, value: &str) {
        self.config = Some(value.to_string());
        for i in 0..self.core.len() as u32 {
            self.input(i, Input::Config(value));
        }
    }

    fn statuses(&self, device: u32) -> Vec<String> {
        self.log
            .iter()
            .filter(|(d, _)| *d == device)
            .filter_map(|(_, s)| match s {
                Seen::Report(v) => Some(match Report::parse(v) {
                    Ok(r) => format!("{}:{}", r.status, r.version),
                    Err(_) => "MALFORMED".to_string(),
                }),
                _ => None,
            })
            .collect()
    }

    fn take(&mut self) -> Vec<(u32, Seen)> {
        std::mem::take(&mut self.log)
    }
}

fn manifest(version: &str) -> Manifest {
    Manifest::url_list(
        version,
        "fw",
        "",
        vec!["fw.bin".into(), "https://cdn.example.com/notes.txt".into()],
    )
}

const FULL_SUCCESS: [&str; 13] = [
    "INSTALLED_VERSION:1.0",
    "INIT:2.0",
    "TEST:2.0",
    "TEST_SUCCESS:2.0",
    "DOWNLOAD:2.0",
    "DOWNLOAD_STEP:2.0",
    "DOWNLOAD_STEP:2.0",
    "DOWNLOAD_SUCCESS:2.0",
    "INSTALL:2.0",
    "INSTALL_SUCCESS:2.0",
    "INSTALLED_VERSION:2.0",
    "",
    "",
];

#[test]
fn device_state_is_compact() {
    assert!(
        std::mem::size_of::<DeviceState>() <= 32,
        "{}",
        std::mem::size_of::<DeviceState>()
    );
}

/// §9 Must: report `INSTALLED_VERSION` with their current version at boot.
#[test]
fn boot_reports_installed_version_with_current_version_then_reads_config() {
    let mut b = Bench::one("{}");
    b.start_all();
    assert_eq!(
        b.take(),
        vec![
            (
                0,
                Seen::Report(
                    r#"{"message":"boot","status":"INSTALLED_VERSION","version":"1.0"}"#.into()
                )
            ),
            (0, Seen::Read)
        ]
    );
}

/// §9 Must: follow §2.2: ack by echo, download bare ids (links from their URL), report
/// statuses, finish with `INSTALLED_VERSION`.
#[test]
fn full_sequence_acks_by_echo_downloads_and_finishes_with_installed_version() {
    let mut b = Bench::one("{}");
    b.start_all();
    let m = manifest("2.0").to_json();
    b.write_config(&m);
    b.run();
    assert_eq!(b.statuses(0), FULL_SUCCESS[..11].to_vec());
    let acts: Vec<Seen> = b
        .log
        .iter()
        .map(|(_, s)| s.clone())
        .filter(|s| !matches!(s, Seen::Report(_)))
        .collect();
    assert_eq!(
        acts,
        vec![
            Seen::Read,
            Seen::Ack(m.clone()),
            Seen::Download("fw.bin".into()),
            Seen::Link("https://cdn.example.com/notes.txt".into())
        ]
    );
    // The echo comes before INIT: the first thing after the boot read.
    assert!(matches!(&b.log[2].1, Seen::Ack(v) if *v == m));
    assert_eq!(
        b.core
            .catalog()
            .version(b.core.device(0).unwrap().version()),
        "2.0"
    );
    assert!(!b.core.device(0).unwrap().busy());
}

/// §9 Must: ack after install.
#[test]
fn ack_after_install_comes_after_installed_version() {
    let mut b = Bench::one("{ack: {echo_immediately: 0, echo_after_install: 1}}");
    b.start_all();
    let m = manifest("2.0").to_json();
    b.write_config(&m);
    b.run();
    let last_two: Vec<Seen> = b.log.iter().rev().take(2).map(|(_, s)| s.clone()).collect();
    assert_eq!(last_two[0], Seen::Ack(m));
    assert!(
        matches!(&last_two[1], Seen::Report(v) if v.contains("INSTALLED_VERSION") && v.contains("2.0"))
    );
    assert_eq!(
        b.log
            .iter()
            .filter(|(_, s)| matches!(s, Seen::Ack(_)))
            .count(),
        1
    );
}

/// §9 Must: ack with `ACK`.
#[test]
fn ack_with_literal_ack_writes_ack() {
    let mut b = Bench::one("{ack: {echo_immediately: 0, literal_ack: 1}}");
    b.start_all();
    b.write_config(&manifest("2.0").to_json());
    b.run();
    let acks: Vec<&Seen> = b
        .log
        .iter()
        .map(|(_, s)| s)
        .filter(|s| matches!(s, Seen::Ack(_)))
        .collect();
    assert_eq!(acks, vec![&Seen::Ack("ACK".into())]);
    // The literal ACK then comes back as config_otau: not a manifest, ignored.
    b.input(0, Input::Config("ACK"));
    assert_eq!(b.core.stats().ignored, 1);
    assert_eq!(b.core.device(0).unwrap().phase(), Phase::Idle);
}

#[test]
fn never_acking_devices_still_report() {
    let mut b = Bench::one("{ack: {echo_immediately: 0, never: 1}}");
    b.start_all();
    b.write_config(&manifest("2.0").to_json());
    b.run();
    assert!(!b.log.iter().any(|(_, s)| matches!(s, Seen::Ack(_))));
    assert_eq!(b.statuses(0).last().unwrap(), "INSTALLED_VERSION:2.0");
}

/// §9 Must: short sub-sequences (`INIT` → `INSTALLED_VERSION`).
#[test]
fn short_sequence_sends_init_then_installed_version() {
    let mut b = Bench::one("{short_sequence: 1}");
    b.start_all();
    b.write_config(&manifest("2.0").to_json());
    b.run();
    assert_eq!(
        b.statuses(0),
        vec!["INSTALLED_VERSION:1.0", "INIT:2.0", "INSTALLED_VERSION:2.0"]
    );
    assert!(
        b.log
            .iter()
            .any(|(_, s)| *s == Seen::Download("fw.bin".into())),
        "still downloads"
    );
}

/// §9 Must: skip a manifest equal to the last one handled (same `version` and `attempt`).
#[test]
fn skips_a_manifest_equal_to_the_last_one_handled() {
    let mut b = Bench::one("{}");
    b.start_all();
    let m = manifest("2.0");
    b.write_config(&m.to_json());
    b.run();
    b.take();
    // Same version and attempt, even re-serialised with another key order and name: skipped.
    let same = r#"{"payload":["fw.bin"],"type":"URL_LIST","name":"renamed","version":"2.0"}"#;
    b.write_config(same);
    b.write_config(&m.to_json());
    b.run();
    assert!(b.take().is_empty());
    assert_eq!(b.core.stats().skipped, 2);
}

/// §9 Must: act on a new `attempt` (a retry).
#[test]
fn a_retry_with_a_new_attempt_runs_again() {
    let mut b = Bench::one("{}");
    b.start_all();
    let m = manifest("2.0");
    b.write_config(&m.to_json());
    b.run();
    b.take();
    b.write_config(&m.with_attempt(2).to_json());
    b.run();
    assert_eq!(b.statuses(0), FULL_SUCCESS[1..11].to_vec());
}

/// §9 Must: act on an older version written later (a rollback).
#[test]
fn a_rollback_to_an_older_version_runs() {
    let mut b = Bench::one("{}");
    b.start_all();
    b.write_config(&manifest("2.0").to_json());
    b.run();
    b.write_config(&manifest("3.0").to_json());
    b.run();
    b.take();
    b.write_config(&manifest("2.0").to_json());
    b.run();
    assert_eq!(b.statuses(0).last().unwrap(), "INSTALLED_VERSION:2.0");
    assert_eq!(b.statuses(0).first().unwrap(), "INIT:2.0");
    assert_eq!(
        b.core
            .catalog()
            .version(b.core.device(0).unwrap().version()),
        "2.0"
    );
}

fn final_status(behaviour: &str) -> (Vec<String>, Bench) {
    let mut b = Bench::one(behaviour);
    b.start_all();
    b.write_config(&manifest("2.0").to_json());
    b.run();
    (b.statuses(0), b)
}

/// §9 Must: fault injection `TEST_ERROR`, `DOWNLOAD_ERROR`, `INSTALL_ERROR`, `INSTALL_ABORTED`.
#[test]
fn failure_outcomes_end_with_their_status() {
    let cases = [
        ("test_error", "TEST_ERROR:2.0", 3),
        ("download_error", "DOWNLOAD_ERROR:2.0", 7),
        ("install_error", "INSTALL_ERROR:2.0", 9),
        ("install_aborted", "INSTALL_ABORTED:2.0", 3),
    ];
    for (outcome, last, len) in cases {
        let (statuses, b) = final_status(&format!("{{outcomes: {{{outcome}: 1}}}}"));
        assert_eq!(statuses.last().unwrap(), last, "{outcome}: {statuses:?}");
        assert_eq!(statuses.len(), len + 1, "{outcome}: {statuses:?}");
        assert_eq!(
            b.core
                .catalog()
                .version(b.core.device(0).unwrap().version()),
            "1.0",
            "{outcome}"
        );
    }
    // Short sequences fail as sub-sequences too.
    let (statuses, _) = final_status("{short_sequence: 1, outcomes: {install_error: 1}}");
    assert_eq!(
        statuses,
        vec!["INSTALLED_VERSION:1.0", "INIT:2.0", "INSTALL_ERROR:2.0"]
    );
}

#[test]
fn missing_content_gives_download_error() {
    let mut b = Bench::one("{}");
    b.start_all();
    b.write_config(&Manifest::url_list("2.0", "fw", "", vec!["missing.bin".into()]).to_json());
    b.run();
    assert_eq!(b.statuses(0).last().unwrap(), "DOWNLOAD_ERROR:2.0");
    assert!(
        b.log
            .iter()
            .any(|(_, s)| matches!(s, Seen::Report(v) if v.contains("missing.bin")))
    );
    assert_eq!(b.core.stats().failed_downloads, 1);
}

/// §9 Must: silence.
#[test]
fn silent_devices_never_report_nor_ack() {
    let (statuses, b) = final_status("{outcomes: {silence: 1}}");
    assert_eq!(statuses, vec!["INSTALLED_VERSION:1.0"]);
    assert!(!b.log.iter().any(|(_, s)| matches!(s, Seen::Ack(_))));
    assert_eq!(b.core.stats().finished[Outcome::Silence as usize], 1);
}

/// §9 Must: reboot that reports the old version.
#[test]
fn reboot_reports_the_old_version() {
    let (statuses, b) = final_status("{outcomes: {reboot_old_version: 1}}");
    assert_eq!(statuses.last().unwrap(), "INSTALLED_VERSION:1.0");
    assert!(statuses.contains(&"INSTALL_SUCCESS:2.0".to_string()));
    assert_eq!(
        b.core
            .catalog()
            .version(b.core.device(0).unwrap().version()),
        "1.0"
    );
}

#[test]
fn malformed_reports_are_not_valid_otau_in_values() {
    let (statuses, b) = final_status("{outcomes: {malformed_reports: 1}}");
    assert_eq!(
        statuses[0], "INSTALLED_VERSION:1.0",
        "boot report stays valid"
    );
    assert!(
        statuses[1..].iter().all(|s| s == "MALFORMED"),
        "{statuses:?}"
    );
    assert_eq!(statuses.len(), 11);
    // The three kinds of garbage all appear.
    let raws: Vec<&String> = b
        .log
        .iter()
        .filter_map(|(_, s)| match s {
            Seen::Report(v) => Some(v),
            _ => None,
        })
        .collect();
    assert!(
        raws.iter()
            .any(|v| serde_json::from_str::<serde_json::Value>(v).is_err())
    );
    assert!(raws.iter().any(|v| v.contains("\"state\"")));
    assert!(raws.iter().any(|v| v.contains("\"status\":7")));
}

/// §9 Must: unknown statuses.
#[test]
fn unknown_status_is_sent_then_the_device_succeeds() {
    let (statuses, _) = final_status("{outcomes: {unknown_status: 1}}");
    assert!(
        statuses.contains(&format!("{UNKNOWN_STATUS}:2.0")),
        "{statuses:?}"
    );
    assert_eq!(statuses.last().unwrap(), "INSTALLED_VERSION:2.0");
    let (short, _) = final_status("{short_sequence: 1, outcomes: {unknown_status: 1}}");
    assert_eq!(
        short,
        vec![
            "INSTALLED_VERSION:1.0",
            "INIT:2.0",
            &format!("{UNKNOWN_STATUS}:2.0"),
            "INSTALLED_VERSION:2.0"
        ]
    );
}

/// §9 Must: offline periods.
#[test]
fn offline_devices_come_back_boot_and_pick_up_the_manifest() {
    let mut b = Bench::one("{offline: {fraction: 1, back_after: 1h}}");
    b.start_all();
    assert_eq!(b.core.device(0).unwrap().phase(), Phase::Offline);
    let m = manifest("2.0").to_json();
    b.write_config(&m);
    assert!(b.log.is_empty(), "offline devices see nothing");
    b.run();
    assert!(b.now >= 3_600_000_000);
    assert_eq!(b.statuses(0), FULL_SUCCESS[..11].to_vec());
    assert_eq!(b.log[1].1, Seen::Read);
}

#[test]
fn a_newer_manifest_interrupts_a_run_and_stale_timers_are_ignored() {
    let mut b = Bench::one("{}");
    b.start_all();
    b.write_config(&manifest("2.0").to_json());
    // Fire only the first timer (INIT -> TEST), then a new version arrives.
    let due = b.core.next_due().unwrap();
    b.now = due;
    let t = b.core.pop_due(due).unwrap();
    b.input(t.device, Input::Timer(t.seq));
    b.write_config(&manifest("3.0").to_json());
    b.run();
    let s = b.statuses(0);
    assert_eq!(s[..3], ["INSTALLED_VERSION:1.0", "INIT:2.0", "TEST:2.0"]);
    assert_eq!(
        s[3..],
        FULL_SUCCESS[1..11]
            .iter()
            .map(|x| x.replace("2.0", "3.0"))
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(b.core.stats().interrupted, 1);
}

fn outcomes_of(seed: u64, n: u64, reverse: bool) -> Vec<(String, Vec<String>)> {
    let yaml = format!(
        "seed: {seed}\ngroups:\n  - name: g\n    count: {n}\n    identity_prefix: d-\n    version: '1.0'\n    behaviour:\n      outcomes: {{test_error: 0.1, download_error: 0.1, install_aborted: 0.1, silence: 0.1, reboot_old_version: 0.1, offline_mid_download: 0.1, out_of_order: 0.1, unknown_error: 0.1, other_version: 0.1}}\n      short_sequence: 0.3\n      out_of_band: {{fraction: 0.2, duration: {{uniform: {{min: 1s, max: 30s}}}}}}\n      ack: {{echo_immediately: 1, literal_ack: 1, echo_after_install: 1, echo_after_outcome: 1}}\n      durations: {{test: {{uniform: {{min: 1s, max: 9s}}}}, install: {{exponential: {{mean: 5s, cap: 60s}}}}}}\n"
    );
    let mut b = Bench::new(&yaml);
    let order: Vec<u32> = if reverse {
        (0..n as u32).rev().collect()
    } else {
        (0..n as u32).collect()
    };
    for &i in &order {
        b.input(i, Input::Start);
    }
    let m = manifest("2.0").to_json();
    b.config = Some(m.clone());
    for &i in &order {
        b.input(i, Input::Config(&m));
    }
    b.run();
    (0..n as u32)
        .map(|i| {
            let acts: Vec<String> = b
                .log
                .iter()
                .filter(|(d, _)| *d == i)
                .map(|(_, s)| format!("{s:?}"))
                .collect();
            (b.core.identity(i).to_string(), acts)
        })
        .collect()
}

/// Seeded randomness: the same seed gives exactly the same run, whatever the event order.
#[test]
fn same_seed_gives_the_same_outcomes_in_any_event_order() {
    let a = outcomes_of(11, 300, false);
    assert_eq!(a, outcomes_of(11, 300, false));
    assert_eq!(a, outcomes_of(11, 300, true));
    assert_ne!(a, outcomes_of(12, 300, false));
}

#[test]
fn outcome_shares_follow_the_profile() {
    let yaml = "seed: 3\ngroups:\n  - name: g\n    count: 20000\n    identity_prefix: d-\n    version: '1.0'\n    behaviour: {outcomes: {test_error: 0.25, silence: 0.05}}\n";
    let mut b = Bench::new(yaml);
    b.content.clear();
    b.start_all();
    b.write_config(&Manifest::url_list("2.0", "fw", "", vec![]).to_json());
    let started = &b.core.stats().started;
    let share = |o: Outcome| started[o as usize] as f64 / 20000.0;
    assert!(
        (share(Outcome::TestError) - 0.25).abs() < 0.02,
        "{started:?}"
    );
    assert!((share(Outcome::Silence) - 0.05).abs() < 0.01, "{started:?}");
    assert!((share(Outcome::Success) - 0.70).abs() < 0.02, "{started:?}");
}

/// The OTA guide's example loop: it polls with `If-Modified-Since: 0`, which answers at once
/// with the same manifest; with no memory of it, the device runs the update again, and again.
#[test]
fn guide_loop_devices_poll_again_and_rerun_the_update_they_installed() {
    let mut b = Bench::one("{guide_loop: 1}");
    b.start_all();
    assert!(b.core.device(0).unwrap().guide_loop());
    // At boot it polls once (nothing set: it polls again a step later), not a long poll.
    assert_eq!(b.log[1].1, Seen::Poll);
    assert!(!b.log.iter().any(|(_, s)| *s == Seen::Read));
    let m = manifest("2.0").to_json();
    b.config = Some(m.clone());
    // One run lasts 0.5+2+0.5+0.5+5+0.5+10+5 s plus the 5 s of the link item; give it three.
    b.run_until(3 * 30_000_000);
    let statuses = b.statuses(0);
    let installs = statuses
        .iter()
        .filter(|s| *s == "INSTALLED_VERSION:2.0")
        .count();
    assert!(installs >= 2, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| *s == "INIT:2.0").count(),
        installs + usize::from(b.core.device(0).unwrap().busy()),
        "every run starts with INIT: {statuses:?}"
    );
    let acks = b
        .log
        .iter()
        .filter(|(_, s)| *s == Seen::Ack(m.clone()))
        .count();
    assert_eq!(
        acks,
        installs + usize::from(b.core.device(0).unwrap().busy())
    );
    assert_eq!(b.core.stats().skipped, 0);
    assert!(b.core.stats().started[Outcome::Success as usize] >= 2);
}

/// The guide's script does not listen while it installs: a cloud write then is not seen, and
/// the next poll after the run picks up the newest value.
#[test]
fn guide_loop_devices_do_not_listen_while_they_install() {
    let mut b = Bench::one("{guide_loop: 1}");
    b.start_all();
    b.write_config(&manifest("2.0").to_json());
    assert!(b.core.device(0).unwrap().busy());
    b.write_config(&manifest("3.0").to_json());
    assert_eq!(b.core.stats().interrupted, 0);
    assert_eq!(b.core.stats().skipped, 1);
    b.run_until(60_000_000);
    let statuses = b.statuses(0);
    assert!(statuses.contains(&"INSTALLED_VERSION:2.0".to_string()));
    assert!(statuses.contains(&"INIT:3.0".to_string()), "{statuses:?}");
}

/// Acks after a failed install: the echo comes after `INSTALL_ERROR`.
#[test]
fn echo_after_outcome_acks_after_a_failed_install_too() {
    let m = manifest("2.0").to_json();
    let (statuses, b) = final_status(
        "{ack: {echo_immediately: 0, echo_after_outcome: 1}, outcomes: {install_error: 1}}",
    );
    assert_eq!(statuses.last().unwrap(), "INSTALL_ERROR:2.0");
    let n = b.log.len();
    assert_eq!(b.log[n - 1].1, Seen::Ack(m.clone()), "{:?}", b.log);
    assert!(matches!(&b.log[n - 2].1, Seen::Report(v) if v.contains("INSTALL_ERROR")));
    assert_eq!(
        b.log
            .iter()
            .filter(|(_, s)| matches!(s, Seen::Ack(_)))
            .count(),
        1
    );
    let (statuses, b) = final_status("{ack: {echo_immediately: 0, echo_after_outcome: 1}}");
    assert_eq!(statuses.last().unwrap(), "INSTALLED_VERSION:2.0");
    assert_eq!(b.log.last().unwrap().1, Seen::Ack(m));
}

/// Offline in the middle of the download: `DOWNLOAD`, silence for `mid_download_for`, a boot
/// report of the old version, a read, and the whole update again, which succeeds.
#[test]
fn offline_mid_download_comes_back_and_runs_the_update_again() {
    let (statuses, b) =
        final_status("{outcomes: {offline_mid_download: 1}, offline: {mid_download_for: 1h}}");
    assert_eq!(
        statuses[..6],
        [
            "INSTALLED_VERSION:1.0",
            "INIT:2.0",
            "TEST:2.0",
            "TEST_SUCCESS:2.0",
            "DOWNLOAD:2.0",
            "INSTALLED_VERSION:1.0"
        ]
    );
    assert_eq!(statuses[6..], FULL_SUCCESS[1..11]);
    assert!(b.now >= 3_600_000_000);
    // No file was fetched before the drop: one download in all, by the second run.
    let downloads = b
        .log
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Download(_)))
        .count();
    assert_eq!(downloads, 1);
    assert!(
        b.log.iter().any(|(_, s)| *s == Seen::Poll),
        "it reads once on return"
    );
    let stats = b.core.stats();
    assert_eq!(stats.finished[Outcome::OfflineMidDownload as usize], 1);
    assert_eq!(stats.finished[Outcome::Success as usize], 1);
    assert_eq!(
        b.core
            .catalog()
            .version(b.core.device(0).unwrap().version()),
        "2.0"
    );
}

/// Statuses out of order: `TEST_SUCCESS` before `TEST`, `INSTALL_SUCCESS` after the final
/// `INSTALLED_VERSION`; the device does run the target.
#[test]
fn out_of_order_statuses_leave_a_progress_report_last() {
    let (statuses, b) = final_status("{outcomes: {out_of_order: 1}}");
    assert_eq!(
        statuses,
        [
            "INSTALLED_VERSION:1.0",
            "INIT:2.0",
            "TEST_SUCCESS:2.0",
            "TEST:2.0",
            "DOWNLOAD:2.0",
            "DOWNLOAD_STEP:2.0",
            "DOWNLOAD_STEP:2.0",
            "DOWNLOAD_SUCCESS:2.0",
            "INSTALL:2.0",
            "INSTALLED_VERSION:2.0",
            "INSTALL_SUCCESS:2.0",
        ]
    );
    assert_eq!(
        b.core
            .catalog()
            .version(b.core.device(0).unwrap().version()),
        "2.0"
    );
    let (short, _) = final_status("{short_sequence: 1, outcomes: {out_of_order: 1}}");
    assert_eq!(
        short,
        [
            "INSTALLED_VERSION:1.0",
            "INIT:2.0",
            "INSTALLED_VERSION:2.0",
            "INIT:2.0"
        ]
    );
}

/// An unknown `*_ERROR` status ends the run after the download; the device keeps its version.
#[test]
fn unknown_error_ends_with_an_undocumented_error_status() {
    let (statuses, b) = final_status("{outcomes: {unknown_error: 1}}");
    assert_eq!(statuses.last().unwrap(), &format!("{UNKNOWN_ERROR}:2.0"));
    assert!(UNKNOWN_ERROR.ends_with("_ERROR"));
    assert!(matches!(
        crate::otau::Status::parse(UNKNOWN_ERROR),
        crate::otau::Status::Unknown(_)
    ));
    assert_eq!(statuses[..8], FULL_SUCCESS[..8]);
    assert_eq!(statuses.len(), 9, "{statuses:?}");
    assert_eq!(
        b.core
            .catalog()
            .version(b.core.device(0).unwrap().version()),
        "1.0"
    );
    assert_eq!(b.core.stats().finished[Outcome::UnknownError as usize], 1);
}

/// Reports for another version: every report of the run names `<target>-other`, though the
/// device runs the target (the ground truth); its boot reports stay truthful.
#[test]
fn other_version_reports_name_another_version_than_the_target() {
    let (statuses, b) = final_status("{outcomes: {other_version: 1}}");
    let expected: Vec<String> = std::iter::once("INSTALLED_VERSION:1.0".to_string())
        .chain(
            FULL_SUCCESS[1..11]
                .iter()
                .map(|s| s.replace("2.0", &format!("2.0{OTHER_VERSION_SUFFIX}"))),
        )
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(
        b.core
            .catalog()
            .version(b.core.device(0).unwrap().version()),
        "2.0"
    );
}

/// Installing another package (applied out of band) when our manifest arrives: the manifest
/// waits; at the end of that install the device reports the other version, reads
/// `config_otau` once and runs our update.
#[test]
fn out_of_band_install_defers_our_manifest_until_it_is_over() {
    let mut b = Bench::one("{out_of_band: {fraction: 1, version: '1.5-oob', duration: 1m}}");
    b.start_all();
    assert!(b.core.device(0).unwrap().out_of_band());
    assert_eq!(b.core.device(0).unwrap().phase(), Phase::OutOfBand);
    let m = manifest("2.0").to_json();
    b.write_config(&m);
    assert_eq!(b.statuses(0), ["INSTALLED_VERSION:1.0", "INSTALL:1.5-oob"]);
    assert!(
        !b.log.iter().any(|(_, s)| matches!(s, Seen::Ack(_))),
        "no ack while busy"
    );
    b.run();
    assert!(b.now >= 60_000_000);
    let statuses = b.statuses(0);
    assert_eq!(statuses[2], "INSTALLED_VERSION:1.5-oob");
    assert_eq!(statuses[3..], FULL_SUCCESS[1..11]);
    let poll = b.log.iter().position(|(_, s)| *s == Seen::Poll).unwrap();
    assert!(matches!(&b.log[poll + 1].1, Seen::Ack(v) if *v == m));
    // Only after the first boot.
    assert_eq!(statuses.iter().filter(|s| s.contains("oob")).count(), 2);
}

/// The new traits are drawn after the old ones: a profile that leaves them at 0 gives every
/// device the ack style and sequence style it had before they existed, and a guide-loop fleet
/// repeats exactly under the same seed whatever the event order.
#[test]
fn new_traits_keep_old_draws_and_guide_loops_are_deterministic() {
    let run = |behaviour: &str, reverse: bool| {
        let yaml = format!(
            "seed: 5\ngroups:\n  - name: g\n    count: 200\n    identity_prefix: d-\n    version: '1.0'\n    behaviour: {behaviour}\n"
        );
        let mut b = Bench::new(&yaml);
        let mut order: Vec<u32> = (0..200).collect();
        if reverse {
            order.reverse();
        }
        for &i in &order {
            b.input(i, Input::Start);
        }
        b.config = Some(manifest("2.0").to_json());
        b.run_until(120_000_000);
        let mut logs: Vec<Vec<String>> = vec![Vec::new(); 200];
        for (d, s) in &b.log {
            logs[*d as usize].push(format!("{s:?}"));
        }
        let traits: Vec<(AckStyle, bool)> = (0..200)
            .map(|i| {
                let d = b.core.device(i).unwrap();
                (d.ack_style(), d.short_sequence())
            })
            .collect();
        (traits, logs)
    };
    let styles = "{short_sequence: 0.5, ack: {echo_immediately: 1, literal_ack: 1}";
    let plain = run(&format!("{styles}}}"), false);
    let looping = run(
        &format!("{styles}, guide_loop: 0.5, out_of_band: {{fraction: 0.3}}}}"),
        false,
    );
    assert_eq!(plain.0, looping.0);
    assert_eq!(
        looping.1,
        run(
            &format!("{styles}, guide_loop: 0.5, out_of_band: {{fraction: 0.3}}}}"),
            true
        )
        .1
    );
    assert_ne!(plain.1, looping.1);
}
