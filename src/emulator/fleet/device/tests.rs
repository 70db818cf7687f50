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
        "seed: {seed}\ngroups:\n  - name: g\n    count: {n}\n    identity_prefix: d-\n    version: '1.0'\n    behaviour:\n      outcomes: {{test_error: 0.2, download_error: 0.1, install_aborted: 0.1, silence: 0.1, reboot_old_version: 0.1}}\n      short_sequence: 0.3\n      ack: {{echo_immediately: 1, literal_ack: 1, echo_after_install: 1}}\n      durations: {{test: {{uniform: {{min: 1s, max: 9s}}}}, install: {{exponential: {{mean: 5s, cap: 60s}}}}}}\n"
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
