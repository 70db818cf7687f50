//! The largest status device and platform text can make: every `recentFailures` entry with
//! the longest identity and message a device can send, in the characters that cost the most
//! (multibyte, control and bidi characters, and `"` and `\`, which JSON writes as two bytes),
//! and condition messages quoting a platform error of a megabyte. The per-wave lists are
//! filled to the CRD's maximum of 20 waves with the largest numbers. The whole status,
//! serialized as the apiserver stores it (JSON), stays under a budget far below etcd's
//! 1.5 MiB object limit (docs/rollouts.md, "Status fields").

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::rollout::{
    ActedOn, DeviceCounts, HeldDevices, MAX_RECENT_FAILURES, WavePlan, WaveStatus,
};
use crate::api::rollout_decisions::ThresholdBaseline;
use crate::engine::tests::fleet::*;
use crate::engine::{
    MAX_CONDITION_MESSAGE_BYTES, MAX_FAILURE_IDENTITY_BYTES, MAX_FAILURE_MESSAGE_BYTES,
    ResourceState, WriteShortfall, writes_failed,
};
use crate::otau::{Report, Status, is_safe_text};

/// The most a Rollout's status may take, serialized: 64 KiB, under a twentieth of etcd's
/// 1.5 MiB request limit, which the spec and metadata share.
const STATUS_BUDGET_BYTES: usize = 64 * 1024;

/// Device text in the characters that cost the most once stored.
const COSTLY: &str = "\"\\\u{1b}[2J\u{7}\r\u{202e}𝕏é";

fn costly(len: usize) -> String {
    COSTLY.repeat(len / COSTLY.len() + 1)
}

#[test]
fn a_status_full_of_worst_case_failures_stays_under_its_budget() {
    // More failing devices than `recentFailures` keeps, each with a 256-byte identity (the
    // emulator's longest; the platform's own are shorter).
    let devices = (0..MAX_RECENT_FAILURES + 10)
        .map(|i| {
            let mut identity = format!("{i:02}");
            for c in costly(300).chars() {
                if identity.len() + c.len_utf8() > 256 {
                    break;
                }
                identity.push(c);
            }
            let mut d = SimDevice::new(identity);
            d.outcomes = vec![Outcome::Fail];
            d
        })
        .collect();
    let mut s = spec(&[100]);
    s.policy.retries = 1;
    let mut run = Run::new(s, Fleet::new(devices));
    run.step();
    run.wait(2 * MINUTE);
    // Each device's failure report carries a 64 KiB message of costly characters.
    let message = costly(64 * 1024);
    for d in &mut run.fleet.devices {
        let at = d
            .report
            .as_ref()
            .and_then(|r| r.timestamp)
            .expect("a report");
        let report = Report::new(VERSION, Status::InstallError, message.clone()).to_json();
        d.report = Some(ResourceState::written_by_device(report, at));
    }
    let mut decision = run.decide();
    // A platform error of a megabyte, quoted in the Ready condition.
    let platform_error = costly(1024 * 1024);
    writes_failed(
        &mut decision,
        WriteShortfall {
            error: &platform_error,
            decided: 1,
            written: 0,
        },
        Some(1),
        run.fleet.now,
    );
    let mut status = decision.status;

    assert_eq!(status.recent_failures.len(), MAX_RECENT_FAILURES);
    for f in &status.recent_failures {
        assert!(
            f.identity.len() <= MAX_FAILURE_IDENTITY_BYTES,
            "{}",
            f.identity
        );
        assert!(is_safe_text(&f.identity), "{:?}", f.identity);
        let m = f.message.as_deref().expect("a message");
        assert!(
            m.len() <= MAX_FAILURE_MESSAGE_BYTES && is_safe_text(m),
            "{m:?}"
        );
        assert!(m.starts_with(r#""\\u{1b}[2J\u{7}\r\u{202e}𝕏é"#), "{m:?}");
    }
    for c in &status.conditions {
        assert!(c.message.len() <= MAX_CONDITION_MESSAGE_BYTES && is_safe_text(&c.message));
    }
    // Every condition message at its longest, and the per-wave lists at the CRD's 20 waves.
    let longest = status
        .conditions
        .iter()
        .map(|c| c.message.clone())
        .max_by_key(String::len)
        .unwrap_or_default();
    assert!(
        longest.len() > MAX_CONDITION_MESSAGE_BYTES - 16,
        "{}",
        longest.len()
    );
    for c in &mut status.conditions {
        c.message = longest.clone();
    }
    fill_per_wave_lists(&mut status);

    let size = serde_json::to_vec(&status).expect("json").len();
    eprintln!("worst-case status: {size} bytes serialized");
    assert!(
        size < STATUS_BUDGET_BYTES,
        "{size} bytes, over the {STATUS_BUDGET_BYTES}-byte budget"
    );
}

/// 20 waves, each with the largest counts, times, names and held devices; nonces at their
/// longest.
fn fill_per_wave_lists(status: &mut crate::api::rollout::RolloutStatus) {
    let max = i64::MAX;
    let time = Time(Timestamp::MAX);
    let counts = DeviceCounts {
        targeted: max,
        pending: max,
        notified: max,
        in_progress: max,
        succeeded: max,
        failed: max,
        reruns: max,
        aborted: max,
        timed_out: max,
        skipped: max,
        invalid: max,
        busy: max,
        foreign: max,
    };
    status.waves = (1..=20)
        .map(|number| WaveStatus {
            number,
            name: Some("w".repeat(63)),
            counts: counts.clone(),
            started_at: Some(time.clone()),
            completed_at: Some(time.clone()),
            soak_until: Some(time.clone()),
        })
        .collect();
    let held = HeldDevices {
        succeeded: max,
        failed: max,
        in_flight: max,
    };
    status.plan = Some(WavePlan {
        targets: max,
        cumulative: vec![max; 20],
        held: vec![held; 20],
    });
    status.totals = counts;
    status.decisions.baselines = (1..=20)
        .map(|wave| ThresholdBaseline {
            wave,
            finished: max,
            failed: max,
        })
        .collect();
    let nonce = Some("n".repeat(128));
    status.acted_on = ActedOn {
        pause: nonce.clone(),
        resume: nonce.clone(),
        approve: Some("a".repeat(140)),
        approved_wave: 20,
        abort: nonce.clone(),
        resume_token: nonce,
    };
}
