//! The human view of a Rollout (pure: the same object and time give the same text).

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::conditions::{self, reason};
use crate::api::rollout::{DeviceCounts, Rollout, RolloutPhase, RolloutStatus, WaveStatus};

use super::style::{Style, Tone, age, shown, table, until};

/// The phase word, or `Pending` before the operator wrote a status.
pub fn phase(rollout: &Rollout) -> RolloutPhase {
    rollout
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .unwrap_or_default()
}

/// Whether the rollout has ended: complete or aborted.
pub fn has_ended(rollout: &Rollout) -> bool {
    matches!(
        phase(rollout),
        RolloutPhase::Complete | RolloutPhase::Aborted
    )
}

/// The phase with a symbol, coloured.
pub fn phase_text(phase: RolloutPhase, style: &Style) -> String {
    let (symbol, word, tone) = match phase {
        RolloutPhase::Pending => ("…", "Pending", Tone::Dim),
        RolloutPhase::Progressing => ("◌", "Progressing", Tone::Busy),
        RolloutPhase::Paused => ("॥", "Paused", Tone::Warn),
        RolloutPhase::Complete => ("✔", "Complete", Tone::Good),
        RolloutPhase::Aborted => ("✖", "Aborted", Tone::Bad),
    };
    style.paint(tone, &format!("{symbol} {word}"))
}

/// Devices of `c` that have not finished (pending, notified, in progress, busy with another
/// manifest). Foreign devices are left out: they are written as soon as their wave starts,
/// or never under `foreignManifests: Skip`.
fn unfinished(c: &DeviceCounts) -> i64 {
    c.pending + c.notified + c.in_progress + c.busy
}

fn condition<'a>(
    status: &'a RolloutStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    conditions::find_condition(&status.conditions, type_)
}

/// A `kubectl otau` command on the rollout `name`: `kubectl otau <verb> <name> -n <namespace>`.
/// Every hint the plugin prints names the namespace, so it works whatever namespace the
/// reader's kubeconfig context is in; it is left out only when unknown.
pub fn command(verb: &str, name: &str, namespace: Option<&str>) -> String {
    match namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => format!("kubectl otau {verb} {name} -n {ns}"),
        None => format!("kubectl otau {verb} {name}"),
    }
}

/// What the rollout waits for, in words with the command that acts on it; `None` when it
/// waits for nothing (complete, aborted, or no status yet).
pub fn waiting_for(rollout: &Rollout, now: Timestamp) -> Option<String> {
    let status = rollout.status.as_ref()?;
    let name = rollout.name_any();
    let namespace = rollout.namespace();
    let hint = |verb: &str| command(verb, &name, namespace.as_deref());
    match status.phase.unwrap_or_default() {
        RolloutPhase::Complete | RolloutPhase::Aborted => return None,
        _ => {}
    }
    if let Some(pause) = &status.pause {
        return Some(match pause.reason.as_str() {
            reason::WAITING_FOR_APPROVAL => format!(
                "approval of wave {}: {}",
                status.current_wave + 1,
                hint("approve")
            ),
            reason::PAUSED_BY_USER if rollout.spec.paused => {
                format!("spec.paused to be set to false (where {name} is defined, e.g. Git)")
            }
            reason::PAUSED_BY_USER => format!("a resume: {}", hint("resume")),
            reason::FAILURE_THRESHOLD_EXCEEDED => format!(
                "a person: {} accepts the failures so far, {} stops",
                hint("resume"),
                hint("abort")
            ),
            other => format!("{other} to be lifted"),
        });
    }
    if let Some(ready) = condition(status, conditions::READY)
        && ready.reason == reason::TARGET_CONFLICT
    {
        return Some(format!("another rollout: {}", ready.message));
    }
    let current = current_wave(status);
    if let Some(progressing) = condition(status, conditions::PROGRESSING)
        && progressing.reason == reason::SOAKING
        && let Some(soak_until) = current.and_then(|w| w.soak_until.as_ref())
    {
        return Some(format!(
            "the soak of wave {} to end ({})",
            status.current_wave,
            until(soak_until, now)
        ));
    }
    if let Some(wave) = current {
        let left = unfinished(&wave.counts);
        if left > 0 {
            let busy = match wave.counts.busy {
                0 => String::new(),
                n => format!(" ({n} busy installing another manifest)"),
            };
            return Some(format!(
                "{left} device{} of wave {} to finish{busy}",
                if left == 1 { "" } else { "s" },
                wave.number
            ));
        }
    }
    condition(status, conditions::READY).map(|c| c.message.clone())
}

fn current_wave(status: &RolloutStatus) -> Option<&WaveStatus> {
    status
        .waves
        .iter()
        .find(|w| w.number == status.current_wave)
}

fn count(style: &Style, n: i64, tone: Tone) -> String {
    if n > 0 {
        style.paint(tone, &n.to_string())
    } else {
        n.to_string()
    }
}

/// The full status view of `rollout` at `now`.
pub fn status_view(rollout: &Rollout, now: Timestamp, style: &Style) -> String {
    let status = rollout.status.clone().unwrap_or_default();
    let mut out = overview(rollout, &status, now, style);
    out.push_str("\nConditions:\n");
    out.push_str(&conditions_table(&status, now, style));
    out.push_str("\nWaves:\n");
    out.push_str(&wave_table(rollout, &status, now, style));
    out.push_str(&failures_table(&status, now, style));
    out
}

/// The view's first lines, one field each: name, namespace, package, phase, what the rollout
/// waits for, wave, targets, success rate, device counts, last progress.
fn overview(rollout: &Rollout, status: &RolloutStatus, now: Timestamp, style: &Style) -> String {
    let mut out = String::new();
    let mut field = |key: &str, value: &str| {
        let _ = writeln!(out, "{:<15}{value}", format!("{key}:"));
    };
    field("Name", &shown(&rollout.name_any()));
    field(
        "Namespace",
        &shown(&rollout.namespace().unwrap_or_default()),
    );
    field("Package", &shown(&rollout.spec.package_ref.name));
    field("Phase", &phase_text(phase(rollout), style));
    if let Some(ready) = condition(status, conditions::READY) {
        field("Message", &shown(&ready.message));
    }
    if let Some(waiting) = waiting_for(rollout, now) {
        field("Waiting for", &style.paint(Tone::Warn, &shown(&waiting)));
    }
    let total_waves = rollout.spec.waves.len();
    field("Wave", &format!("{} of {total_waves}", status.current_wave));
    let t = &status.totals;
    field("Targets", &format!("{} devices", t.targeted));
    field("Success rate", &success_rate_text(status, style));
    field("Devices", &totals_line(t));
    if let Some(at) = &status.last_progress_at {
        field("Last progress", &format!("{} ago", age(Some(at), now)));
    }
    out
}

/// `96.5% (193 of 200 finished devices succeeded)`, the rate in warning colour when any
/// finished device did not succeed; `-` while no device finished.
fn success_rate_text(status: &RolloutStatus, style: &Style) -> String {
    let t = &status.totals;
    let finished = t.finished();
    match &status.success_rate {
        Some(rate) => {
            let tone = if t.unsuccessful() > 0 {
                Tone::Warn
            } else {
                Tone::Good
            };
            format!(
                "{} ({} of {finished} finished devices succeeded)",
                style.paint(tone, &shown(rate)),
                t.succeeded
            )
        }
        None => "- (no device finished yet)".to_owned(),
    }
}

/// The conditions, one row each, coloured by what they mean; a condition's message only when
/// it says more than the Ready message printed above.
fn conditions_table(status: &RolloutStatus, now: Timestamp, style: &Style) -> String {
    if status.conditions.is_empty() {
        return "  (none yet: the operator has not written a status)\n".to_owned();
    }
    let ready_message = condition(status, conditions::READY).map(|c| c.message.as_str());
    let rows: Vec<Vec<String>> = status
        .conditions
        .iter()
        .map(|c| {
            let tone = match (c.type_.as_str(), c.status.as_str()) {
                ("Stalled", "True") => Tone::Bad,
                ("Paused", "True") => Tone::Warn,
                ("Reconciling", "True") => Tone::Busy,
                (_, "True") => Tone::Good,
                _ => Tone::Dim,
            };
            vec![
                shown(&c.type_),
                style.paint(tone, &shown(&c.status)),
                shown(&c.reason),
                age(Some(&c.last_transition_time), now),
                if Some(c.message.as_str()) == ready_message {
                    String::new()
                } else {
                    shown(&c.message)
                },
            ]
        })
        .collect();
    table("  ", &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows)
}

/// The recent failures the status keeps, newest first; empty when there are none.
fn failures_table(status: &RolloutStatus, now: Timestamp, style: &Style) -> String {
    if status.recent_failures.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = status
        .recent_failures
        .iter()
        .map(|f| {
            vec![
                shown(&f.identity),
                style.paint(Tone::Bad, &shown(&f.status)),
                age(Some(&f.at), now),
                shown(f.message.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    format!(
        "\nRecent failures ({} shown, newest first):\n{}",
        status.recent_failures.len(),
        table("  ", &["DEVICE", "STATUS", "AGE", "MESSAGE"], &rows)
    )
}

/// `pending 3, notified 2, ...`: every non-zero device count (all of them while nothing is
/// targeted).
pub fn totals_line(t: &DeviceCounts) -> String {
    let parts = [
        ("pending", t.pending),
        ("notified", t.notified),
        ("in progress", t.in_progress),
        ("succeeded", t.succeeded),
        ("failed", t.failed),
        ("aborted", t.aborted),
        ("timed out", t.timed_out),
        ("skipped", t.skipped),
        ("invalid", t.invalid),
        ("busy", t.busy),
        ("foreign", t.foreign),
        ("re-ran after succeeding", t.reruns),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(word, n)| format!("{n} {word}"))
        .collect();
    if shown.is_empty() {
        "none".to_owned()
    } else {
        shown.join(", ")
    }
}

fn wave_table(rollout: &Rollout, status: &RolloutStatus, now: Timestamp, style: &Style) -> String {
    let cumulative = status
        .plan
        .as_ref()
        .map(|p| p.cumulative.clone())
        .unwrap_or_default();
    let approved = rollout
        .spec
        .approved_waves
        .max(status.acted_on.approved_wave);
    let mut rows = Vec::new();
    for (i, wave) in rollout.spec.waves.iter().enumerate() {
        let number = i as i32 + 1;
        let mut label = number.to_string();
        if let Some(name) = &wave.name {
            label.push_str(&format!(" {}", shown(name)));
        }
        if wave.require_approval {
            label.push_str(if approved >= number {
                " (approved)"
            } else {
                " (gated)"
            });
        }
        let planned = match (
            cumulative.get(i),
            i.checked_sub(1).map(|p| cumulative.get(p)),
        ) {
            (Some(c), Some(Some(p))) => (c - p).to_string(),
            (Some(c), None) => c.to_string(),
            _ => "-".to_owned(),
        };
        let started = status.waves.iter().find(|w| w.number == number);
        let row = match started {
            Some(w) => {
                let c = &w.counts;
                let completed = match (&w.completed_at, &w.soak_until) {
                    (Some(done), Some(soak)) if soak.0 > now => {
                        format!("{} (soak {})", age(Some(done), now), until(soak, now))
                    }
                    (Some(done), _) => age(Some(done), now),
                    (None, _) => "-".to_owned(),
                };
                vec![
                    if number == status.current_wave {
                        style.paint(Tone::Busy, &label)
                    } else {
                        label
                    },
                    c.targeted.to_string(),
                    c.pending.to_string(),
                    c.notified.to_string(),
                    c.in_progress.to_string(),
                    count(style, c.succeeded, Tone::Good),
                    count(style, c.failed + c.aborted + c.invalid, Tone::Bad),
                    count(style, c.timed_out, Tone::Bad),
                    c.busy.to_string(),
                    c.foreign.to_string(),
                    c.reruns.to_string(),
                    age(w.started_at.as_ref(), now),
                    completed,
                ]
            }
            None => {
                let mut row = vec![label, planned];
                row.extend(std::iter::repeat_n("-".to_owned(), 9));
                row.push(style.paint(Tone::Dim, "not started"));
                row.push(String::new());
                row
            }
        };
        rows.push(row);
    }
    table(
        "  ",
        &[
            "WAVE",
            "SIZE",
            "PENDING",
            "NOTIFIED",
            "IN PROGRESS",
            "SUCCEEDED",
            "FAILED",
            "TIMED OUT",
            "BUSY",
            "FOREIGN",
            "RERUNS",
            "STARTED",
            "COMPLETED",
        ],
        &rows,
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::api::rollout::{PauseInfo, RolloutSpec, WavePlan};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).expect("time"))
    }

    fn rollout(status: RolloutStatus) -> Rollout {
        let spec: RolloutSpec = serde_yaml::from_str(
            "packageRef: {name: fw}\ntargets: {tags: [{name: fleet, value: a}]}\nwaves:\n  - {percent: 50}\n  - {percent: 100, requireApproval: true}\n",
        )
        .expect("spec");
        let mut r = Rollout::new("fw-2-1", spec);
        r.metadata.namespace = Some("fleet".into());
        r.status = Some(status);
        r
    }

    fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: at(1_000),
            observed_generation: Some(1),
        }
    }

    #[test]
    fn a_rollout_waiting_for_approval_says_so_with_the_command() {
        let counts = DeviceCounts {
            targeted: 10,
            succeeded: 9,
            failed: 1,
            ..DeviceCounts::default()
        };
        let r = rollout(RolloutStatus {
            phase: Some(RolloutPhase::Paused),
            current_wave: 1,
            conditions: vec![
                cond(
                    "Ready",
                    "False",
                    "WaitingForApproval",
                    "wave 2 waits for approval",
                ),
                cond(
                    "Paused",
                    "True",
                    "WaitingForApproval",
                    "wave 2 waits for approval",
                ),
            ],
            pause: Some(PauseInfo {
                reason: "WaitingForApproval".into(),
                since: at(1_000),
                generation: Some(1),
            }),
            plan: Some(WavePlan {
                targets: 20,
                cumulative: vec![10, 20],
                held: Vec::new(),
            }),
            waves: vec![WaveStatus {
                number: 1,
                counts: counts.clone(),
                started_at: Some(at(900)),
                completed_at: Some(at(1_000)),
                ..WaveStatus::default()
            }],
            totals: DeviceCounts {
                targeted: 20,
                pending: 10,
                ..counts.clone()
            },
            success_rate: Some("90.0%".into()),
            ..RolloutStatus::default()
        });
        let now = Timestamp::from_second(1_060).expect("now");
        let text = status_view(&r, now, &Style::plain());
        assert!(text.contains("Phase:         ॥ Paused\n"), "{text}");
        assert!(
            text.contains(
                "Waiting for:   approval of wave 2: kubectl otau approve fw-2-1 -n fleet\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Success rate:  90.0% (9 of 10 finished devices succeeded)"),
            "{text}"
        );
        assert!(
            text.contains("Devices:       10 pending, 9 succeeded, 1 failed\n"),
            "{text}"
        );
        let wave1 = text
            .lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .expect("wave 1");
        assert_eq!(
            wave1.split_whitespace().collect::<Vec<_>>(),
            [
                "1", "10", "0", "0", "0", "9", "1", "0", "0", "0", "0", "2m40s", "60s"
            ]
        );
        let wave2 = text
            .lines()
            .find(|l| l.trim_start().starts_with("2 "))
            .expect("wave 2");
        assert!(
            wave2.contains("(gated)") && wave2.contains("not started"),
            "{wave2}"
        );
        assert_eq!(
            wave2.split_whitespace().nth(2),
            Some("10"),
            "planned size from the plan: {wave2}"
        );
    }

    #[test]
    fn busy_foreign_and_reruns_show_in_the_totals_and_the_wave_table() {
        let counts = DeviceCounts {
            targeted: 12,
            pending: 1,
            succeeded: 6,
            busy: 2,
            foreign: 3,
            reruns: 4,
            ..DeviceCounts::default()
        };
        let r = rollout(RolloutStatus {
            phase: Some(RolloutPhase::Progressing),
            current_wave: 1,
            waves: vec![WaveStatus {
                number: 1,
                counts: counts.clone(),
                started_at: Some(at(900)),
                ..WaveStatus::default()
            }],
            totals: counts,
            ..RolloutStatus::default()
        });
        let now = Timestamp::from_second(1_000).expect("now");
        let text = status_view(&r, now, &Style::plain());
        assert!(
            text.contains(
                "Devices:       1 pending, 6 succeeded, 2 busy, 3 foreign, 4 re-ran after succeeding\n"
            ),
            "{text}"
        );
        let header = text
            .lines()
            .find(|l| l.trim_start().starts_with("WAVE"))
            .expect("header");
        let wave1 = text
            .lines()
            .find(|l| l.trim_start().starts_with("1 "))
            .expect("wave 1");
        let cell = |name: &str| {
            let at = header.find(name).expect(name);
            wave1[at..].split_whitespace().next().map(str::to_owned)
        };
        assert_eq!(cell("BUSY").as_deref(), Some("2"), "{text}");
        assert_eq!(cell("FOREIGN").as_deref(), Some("3"), "{text}");
        assert_eq!(cell("RERUNS").as_deref(), Some("4"), "{text}");
    }

    #[test]
    fn complete_and_aborted_wait_for_nothing_and_running_counts_what_is_left() {
        let now = Timestamp::from_second(2_000).expect("now");
        let done = rollout(RolloutStatus {
            phase: Some(RolloutPhase::Complete),
            ..RolloutStatus::default()
        });
        assert_eq!(waiting_for(&done, now), None);
        assert!(has_ended(&done));
        let running = rollout(RolloutStatus {
            phase: Some(RolloutPhase::Progressing),
            current_wave: 1,
            waves: vec![WaveStatus {
                number: 1,
                counts: DeviceCounts {
                    targeted: 5,
                    notified: 2,
                    in_progress: 1,
                    succeeded: 2,
                    ..DeviceCounts::default()
                },
                ..WaveStatus::default()
            }],
            ..RolloutStatus::default()
        });
        assert_eq!(
            waiting_for(&running, now).as_deref(),
            Some("3 devices of wave 1 to finish")
        );
        let mut busy = running.clone();
        if let Some(s) = busy.status.as_mut() {
            s.waves[0].counts.busy = 2;
            s.waves[0].counts.targeted = 7;
        }
        assert_eq!(
            waiting_for(&busy, now).as_deref(),
            Some("5 devices of wave 1 to finish (2 busy installing another manifest)")
        );
        assert!(!has_ended(&running));
        let colour = status_view(&running, now, &Style { colour: true });
        assert!(colour.contains("\x1b[36m◌ Progressing\x1b[0m"), "{colour}");
        assert!(!status_view(&running, now, &Style::plain()).contains('\x1b'));
    }

    fn paused(reason: &str) -> Rollout {
        rollout(RolloutStatus {
            phase: Some(RolloutPhase::Paused),
            current_wave: 1,
            pause: Some(PauseInfo {
                reason: reason.into(),
                since: at(1_000),
                generation: Some(1),
            }),
            ..RolloutStatus::default()
        })
    }

    #[test]
    fn every_command_in_a_hint_names_the_namespace() {
        let now = Timestamp::from_second(2_000).expect("now");
        assert_eq!(
            waiting_for(&paused(reason::PAUSED_BY_USER), now).as_deref(),
            Some("a resume: kubectl otau resume fw-2-1 -n fleet")
        );
        assert_eq!(
            waiting_for(&paused(reason::FAILURE_THRESHOLD_EXCEEDED), now).as_deref(),
            Some(
                "a person: kubectl otau resume fw-2-1 -n fleet accepts the failures so far, \
                 kubectl otau abort fw-2-1 -n fleet stops"
            )
        );
        let mut elsewhere = paused(reason::WAITING_FOR_APPROVAL);
        elsewhere.metadata.namespace = Some("default".into());
        assert_eq!(
            waiting_for(&elsewhere, now).as_deref(),
            Some("approval of wave 2: kubectl otau approve fw-2-1 -n default"),
            "the default namespace too: the reader's context may be in another one"
        );
        assert_eq!(
            command("status", "fw", None),
            "kubectl otau status fw",
            "no -n when the namespace is not known"
        );
    }

    /// A rollout whose every string of the status holds device-written control text, as an
    /// older operator (which stored it raw) or another writer of the status could leave it.
    pub(crate) fn hostile_rollout() -> Rollout {
        use crate::api::rollout::DeviceFailure;
        use crate::plugin::style::HOSTILE;
        let mut r = paused(HOSTILE);
        r.spec.waves[0].name = Some(format!("canary{HOSTILE}"));
        let status = r.status.as_mut().expect("status");
        status.conditions = vec![
            cond("Ready", "False", HOSTILE, &format!("ready {HOSTILE}")),
            cond(HOSTILE, HOSTILE, HOSTILE, &format!("other {HOSTILE}")),
        ];
        status.success_rate = Some(format!("9{HOSTILE}%"));
        status.waves = vec![WaveStatus {
            number: 1,
            name: Some(HOSTILE.into()),
            started_at: Some(at(900)),
            ..WaveStatus::default()
        }];
        status.recent_failures = vec![DeviceFailure {
            identity: format!("dev-{HOSTILE}"),
            status: format!("INSTALL_ERROR{HOSTILE}"),
            message: Some(format!("exit 1{HOSTILE}")),
            at: at(1_000),
        }];
        r
    }

    #[test]
    fn device_text_in_the_status_never_reaches_the_terminal_raw() {
        use crate::plugin::style::assert_terminal_safe;
        let r = hostile_rollout();
        let now = Timestamp::from_second(2_000).expect("now");
        for style in [Style::plain(), Style { colour: true }] {
            let text = status_view(&r, now, &style);
            assert_terminal_safe(&text, &style);
            // The device's bytes are there, as visible escapes.
            let failure = text
                .lines()
                .find(|l| l.trim_start().starts_with("dev-"))
                .expect("the failure row");
            assert!(
                failure.contains(r"dev-\u{1b}]0;pwned\u{7}\u{1b}[2J\rspoofed\u{202e}gnp.exe"),
                "{failure}"
            );
            assert!(
                text.contains(r"Message:       ready \u{1b}]0;pwned"),
                "{text}"
            );
        }
    }
}
