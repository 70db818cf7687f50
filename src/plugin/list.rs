//! `list` (one line per Rollout) and `plan ROLLOUT` (the dry-run wave split).

use std::process::ExitCode;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::api::rollout::{HeldDevices, Rollout};

use super::cli::{ListArgs, NameArgs};
use super::client::Target;
use super::error::{PluginError, Subject};
use super::output;
use super::render::{command, phase, phase_text};
use super::status::get_rollout;
use super::style::{Style, age, shown, table};

/// Runs `list`.
pub async fn run_list(
    target: &Target,
    style: &Style,
    args: ListArgs,
) -> Result<ExitCode, PluginError> {
    let (api, namespace): (Api<Rollout>, Option<&str>) = if args.all_namespaces {
        (Api::all(target.client.clone()), None)
    } else {
        (
            Api::namespaced(target.client.clone(), &target.namespace),
            Some(target.namespace.as_str()),
        )
    };
    let subject = Subject::otau_list("Rollout", "rollouts", namespace);
    let mut list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| subject.explain(e))?;
    list.items.sort_by_key(|r| (r.namespace(), r.name_any()));
    if let Some(format) = args.output {
        for r in &mut list.items {
            r.metadata.managed_fields = None;
        }
        output::print(format, &list.items)?;
        return Ok(ExitCode::SUCCESS);
    }
    if list.items.is_empty() {
        match namespace {
            Some(ns) => eprintln!("No rollouts found in {ns} namespace."),
            None => eprintln!("No rollouts found."),
        }
        return Ok(ExitCode::SUCCESS);
    }
    output::print_text(&list_view(
        &list.items,
        args.all_namespaces,
        Timestamp::now(),
        style,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The `list` table.
pub fn list_view(
    rollouts: &[Rollout],
    all_namespaces: bool,
    now: Timestamp,
    style: &Style,
) -> String {
    let mut header = vec![];
    if all_namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "PACKAGE",
        "PHASE",
        "WAVE",
        "SUCCEEDED",
        "FAILED",
        "BUSY",
        "FOREIGN",
        "RERUNS",
        "TARGETED",
        "SUCCESS",
        "AGE",
    ]);
    let rows: Vec<Vec<String>> = rollouts
        .iter()
        .map(|r| {
            let status = r.status.clone().unwrap_or_default();
            let t = &status.totals;
            let mut row = vec![];
            if all_namespaces {
                row.push(shown(&r.namespace().unwrap_or_default()));
            }
            row.extend([
                shown(&r.name_any()),
                shown(&r.spec.package_ref.name),
                phase_text(phase(r), style),
                format!("{}/{}", status.current_wave, r.spec.waves.len()),
                t.succeeded.to_string(),
                // `status.totals.failed`, the number the CRD's Failed printer column shows.
                t.failed.to_string(),
                t.busy.to_string(),
                t.foreign.to_string(),
                t.reruns.to_string(),
                t.targeted.to_string(),
                status
                    .success_rate
                    .as_deref()
                    .map_or_else(|| "-".into(), shown),
                age(r.metadata.creation_timestamp.as_ref(), now),
            ]);
            row
        })
        .collect();
    table("", &header, &rows)
}

/// One wave of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedWave {
    /// The wave's number (from 1).
    pub number: usize,
    /// Its name, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The size as written in the spec (`10%` or `5`).
    pub size: String,
    /// Devices this wave adds.
    pub devices: i64,
    /// Devices covered once it is done.
    pub cumulative: i64,
    /// Whether it waits for an approval.
    pub require_approval: bool,
    /// The soak after it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Devices of this wave that already carried the package's manifest before it started
    /// (`status.plan.held`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldDevices>,
}

/// The plan of a Rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Targeted devices the plan was computed for.
    pub targets: i64,
    /// The waves.
    pub waves: Vec<PlannedWave>,
}

/// The plan from the spec and `status.plan`; `None` before the operator computed one.
pub fn plan_of(rollout: &Rollout) -> Option<Plan> {
    let plan = rollout.status.as_ref()?.plan.as_ref()?;
    let mut previous = 0;
    let waves = rollout
        .spec
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let cumulative = plan.cumulative.get(i).copied().unwrap_or(previous);
            let devices = cumulative - previous;
            previous = cumulative;
            PlannedWave {
                number: i + 1,
                name: w.name.clone(),
                size: match (w.percent, w.count) {
                    (Some(p), _) => format!("{p}%"),
                    (None, Some(c)) => c.to_string(),
                    (None, None) => "-".into(),
                },
                devices,
                cumulative,
                require_approval: w.require_approval,
                soak: w.soak.as_ref().map(|s| s.as_str().to_owned()),
                held: plan.held.get(i).filter(|h| h.total() > 0).cloned(),
            }
        })
        .collect();
    Some(Plan {
        targets: plan.targets,
        waves,
    })
}

/// One wave's held devices as text: `5 (4 failed, 1 in flight)`, or `-`.
fn held_text(held: Option<&HeldDevices>) -> String {
    let Some(h) = held else {
        return "-".to_owned();
    };
    let parts: Vec<String> = [
        (h.succeeded, "succeeded"),
        (h.failed, "failed"),
        (h.in_flight, "in flight"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    format!("{} ({})", h.total(), parts.join(", "))
}

/// The `plan` text.
pub fn plan_view(name: &str, plan: &Plan) -> String {
    let rows: Vec<Vec<String>> = plan
        .waves
        .iter()
        .map(|w| {
            vec![
                match &w.name {
                    Some(n) => format!("{} {}", w.number, shown(n)),
                    None => w.number.to_string(),
                },
                shown(&w.size),
                w.devices.to_string(),
                w.cumulative.to_string(),
                if w.require_approval { "yes" } else { "no" }.to_owned(),
                w.soak.as_deref().map_or_else(|| "-".into(), shown),
                held_text(w.held.as_ref()),
            ]
        })
        .collect();
    let mut text = format!(
        "Plan of {} for {} targeted devices:\n{}",
        shown(name),
        plan.targets,
        table(
            "  ",
            &[
                "WAVE",
                "SIZE",
                "DEVICES",
                "CUMULATIVE",
                "APPROVAL",
                "SOAK",
                "HELD"
            ],
            &rows
        )
    );
    if plan.waves.iter().any(|w| w.held.is_some()) {
        text.push_str(
            "HELD: devices that already carried this package's manifest before their wave started \
             (an earlier Rollout of the same package wrote it). They count by their reports and \
             are not notified again (a due retry excepted); the failure threshold judges them \
             with the started waves before any further wave starts.\n",
        );
    }
    text
}

/// Runs `plan`.
pub async fn run_plan(
    target: &Target,
    _style: &Style,
    args: NameArgs,
) -> Result<ExitCode, PluginError> {
    let rollout = get_rollout(target, &args.name).await?;
    let Some(plan) = plan_of(&rollout) else {
        return Err(PluginError::Refused(format!(
            "rollout {}/{} has no plan yet: the operator computes it once it has listed the devices \
             (phase {:?}); see `{}`",
            target.namespace,
            args.name,
            phase(&rollout),
            command("status", &args.name, Some(&target.namespace))
        )));
    };
    match args.output {
        Some(format) => output::print(format, &plan)?,
        None => output::print_text(&plan_view(&args.name, &plan))?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{DeviceCounts, RolloutSpec, RolloutStatus, WavePlan};

    #[test]
    fn failed_is_the_number_of_the_failed_printer_column() {
        use kube::CustomResourceExt;
        let crd = Rollout::crd();
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        let failed = columns
            .iter()
            .find(|c| c.name == "Failed")
            .expect("a Failed printer column");
        assert_eq!(failed.json_path, ".status.totals.failed");

        let spec: RolloutSpec = serde_yaml::from_str(
            "packageRef: {name: fw}\ntargets: {identities: [a]}\nwaves:\n  - {percent: 100}\n",
        )
        .expect("spec");
        let mut r = Rollout::new("fw-1", spec);
        let totals = DeviceCounts {
            targeted: 20,
            succeeded: 10,
            failed: 1,
            aborted: 2,
            timed_out: 3,
            invalid: 4,
            busy: 5,
            foreign: 6,
            reruns: 7,
            ..DeviceCounts::default()
        };
        r.status = Some(RolloutStatus {
            totals: totals.clone(),
            ..RolloutStatus::default()
        });
        let now = Timestamp::from_second(1_000).expect("now");
        let text = list_view(&[r], false, now, &Style::plain());
        let mut lines = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        let header = lines.next().expect("header");
        let row = lines.next().expect("row");
        let at = header.iter().position(|h| *h == "FAILED").expect("FAILED");
        // The phase cell is two words ("… Pending").
        assert_eq!(row[at + 1], totals.failed.to_string(), "{text}");
        for (column, value) in [
            ("BUSY", totals.busy),
            ("FOREIGN", totals.foreign),
            ("RERUNS", totals.reruns),
        ] {
            let at = header.iter().position(|h| *h == column).expect(column);
            assert_eq!(row[at + 1], value.to_string(), "{column}: {text}");
        }
    }

    #[test]
    fn the_plan_shows_each_waves_new_devices() {
        let spec: RolloutSpec = serde_yaml::from_str(
            "packageRef: {name: fw}\ntargets: {identities: [a]}\nwaves:\n  - {count: 5, name: canary}\n  - {percent: 10, soak: 30m}\n  - {percent: 100, requireApproval: true}\n",
        )
        .expect("spec");
        let mut r = Rollout::new("fw", spec);
        assert_eq!(plan_of(&r), None);
        r.status = Some(RolloutStatus {
            plan: Some(WavePlan {
                targets: 200,
                cumulative: vec![5, 20, 200],
                held: Vec::new(),
            }),
            ..RolloutStatus::default()
        });
        let plan = plan_of(&r).expect("plan");
        let devices: Vec<i64> = plan.waves.iter().map(|w| w.devices).collect();
        assert_eq!(devices, [5, 15, 180]);
        let text = plan_view("fw", &plan);
        assert!(
            text.starts_with("Plan of fw for 200 targeted devices:\n"),
            "{text}"
        );
        let line = text.lines().nth(3).expect("wave 2");
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["2", "10%", "15", "20", "no", "30m", "-"]
        );
        assert!(!text.contains("HELD:"), "no note without held devices");
    }

    #[test]
    fn the_plan_shows_devices_an_earlier_rollout_left_holding_the_manifest() {
        let spec: RolloutSpec = serde_yaml::from_str(
            "packageRef: {name: fw}\ntargets: {identities: [a]}\nwaves:\n  - {count: 5}\n  - {percent: 100}\n",
        )
        .expect("spec");
        let mut r = Rollout::new("fw", spec);
        r.status = Some(RolloutStatus {
            plan: Some(WavePlan {
                targets: 50,
                cumulative: vec![5, 50],
                held: vec![
                    HeldDevices {
                        failed: 4,
                        in_flight: 1,
                        ..HeldDevices::default()
                    },
                    HeldDevices::default(),
                ],
            }),
            ..RolloutStatus::default()
        });
        let plan = plan_of(&r).expect("plan");
        assert_eq!(plan.waves[1].held, None, "an all-zero wave shows nothing");
        let text = plan_view("fw", &plan);
        let line = text.lines().nth(2).expect("wave 1");
        assert!(line.ends_with("5 (4 failed, 1 in flight)"), "{line}");
        assert!(
            text.contains("\nHELD: devices that already carried"),
            "{text}"
        );
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(json["waves"][0]["held"]["failed"], 4);
        assert!(json["waves"][1].get("held").is_none());
    }

    #[test]
    fn list_and_plan_show_object_text_only_escaped() {
        use crate::plugin::render::tests::hostile_rollout;
        use crate::plugin::style::{HOSTILE, assert_terminal_safe};
        let mut r = hostile_rollout();
        r.metadata.name = Some(format!("fw{HOSTILE}"));
        r.metadata.namespace = Some(format!("ns{HOSTILE}"));
        r.spec.package_ref.name = format!("pkg{HOSTILE}");
        r.status.as_mut().expect("status").plan = Some(WavePlan {
            targets: 2,
            cumulative: vec![1, 2],
            held: Vec::new(),
        });
        let now = Timestamp::from_second(2_000).expect("now");
        for style in [Style::plain(), Style { colour: true }] {
            let text = list_view(std::slice::from_ref(&r), true, now, &style);
            assert_terminal_safe(&text, &style);
            assert!(text.contains(r"pkg\u{1b}]0;pwned"), "{text}");
        }
        let plan = plan_of(&r).expect("plan");
        let text = plan_view(r.metadata.name.as_deref().unwrap_or_default(), &plan);
        assert_terminal_safe(&text, &Style::plain());
        assert!(text.contains(r"1 canary\u{1b}]0;pwned"), "{text}");
    }
}
