//! `pause`, `resume`, `abort`, `approve [WAVE]`: each writes one one-shot annotation with a
//! fresh random nonce (docs/rollouts.md, "Control"), the mechanism a Git user has too. The
//! operator acts on each nonce once and records it in `status.actedOn`, so removing the
//! annotation later (a GitOps revert) changes nothing, and the next command acts again.

use std::process::ExitCode;

use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;

use crate::api::rollout::{
    ANNOTATION_ABORT, ANNOTATION_APPROVE, ANNOTATION_PAUSE, ANNOTATION_RESUME, Rollout,
    RolloutPhase,
};

use super::cli::{ApproveArgs, NameArgs, OutputFormat};
use super::client::Target;
use super::error::PluginError;
use super::output;
use super::render::{command, phase};
use super::status::{get_rollout, rollout_subject};

/// The field manager of the plugin's writes (visible in `managedFields`).
pub const FIELD_MANAGER: &str = "kubectl-otau";

/// What a command did, for `-o json|yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// `pause`, `resume`, `abort` or `approve`.
    pub action: String,
    /// Namespace of the Rollout.
    pub namespace: String,
    /// Name of the Rollout.
    pub name: String,
    /// The annotation written.
    pub annotation: String,
    /// Its value (the nonce, or `<wave>:<nonce>`).
    pub value: String,
}

/// A fresh nonce: 16 random hex digits.
pub fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn refuse_if_aborted(rollout: &Rollout, name: &str, action: &str) -> Result<(), PluginError> {
    if phase(rollout) == RolloutPhase::Aborted || rollout.spec.abort {
        return Err(PluginError::Refused(format!(
            "rollout {name} is aborted (terminal): {action} would do nothing; create a new Rollout to deliver again"
        )));
    }
    Ok(())
}

/// Writes `annotation: value` with a merge patch (only that key changes).
async fn annotate(
    target: &Target,
    name: &str,
    action: &str,
    annotation: &str,
    value: String,
    format: Option<OutputFormat>,
    done: &str,
) -> Result<ExitCode, PluginError> {
    let api: Api<Rollout> = Api::namespaced(target.client.clone(), &target.namespace);
    let patch = serde_json::json!({ "metadata": { "annotations": { annotation: value } } });
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| rollout_subject(&target.namespace, name, "patch").explain(e))?;
    let record = ActionRecord {
        action: action.to_owned(),
        namespace: target.namespace.clone(),
        name: name.to_owned(),
        annotation: annotation.to_owned(),
        value,
    };
    match format {
        Some(format) => output::print(format, &record)?,
        None => output::print_text(&format!(
            "rollout.otau.dev/{name} {done} ({}={})\n",
            record.annotation, record.value
        ))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `pause ROLLOUT`.
pub async fn pause(target: &Target, args: NameArgs) -> Result<ExitCode, PluginError> {
    let rollout = get_rollout(target, &args.name).await?;
    refuse_if_aborted(&rollout, &args.name, "pause")?;
    annotate(
        target,
        &args.name,
        "pause",
        ANNOTATION_PAUSE,
        nonce(),
        args.output,
        &format!(
            "pause requested: no new device is notified until `{}`",
            command("resume", &args.name, Some(&target.namespace))
        ),
    )
    .await
}

/// `resume ROLLOUT`.
pub async fn resume(target: &Target, args: NameArgs) -> Result<ExitCode, PluginError> {
    let rollout = get_rollout(target, &args.name).await?;
    refuse_if_aborted(&rollout, &args.name, "resume")?;
    if rollout.spec.paused {
        eprintln!(
            "warning: spec.paused is true on rollout {}: a resume does not override it; set \
             spec.paused: false where the Rollout is defined (e.g. Git)",
            args.name
        );
    }
    annotate(
        target,
        &args.name,
        "resume",
        ANNOTATION_RESUME,
        nonce(),
        args.output,
        "resume requested",
    )
    .await
}

/// `abort ROLLOUT`.
pub async fn abort(target: &Target, args: NameArgs) -> Result<ExitCode, PluginError> {
    let rollout = get_rollout(target, &args.name).await?;
    if phase(&rollout) == RolloutPhase::Aborted {
        return Err(PluginError::Refused(format!(
            "rollout {} is already aborted",
            args.name
        )));
    }
    annotate(
        target,
        &args.name,
        "abort",
        ANNOTATION_ABORT,
        nonce(),
        args.output,
        "abort requested: nothing more will be written to any device (terminal)",
    )
    .await
}

/// The wave `approve` approves: `requested`, or the first gated wave above what is already
/// approved (by `spec.approvedWaves` or an earlier annotation).
pub fn wave_to_approve(rollout: &Rollout, requested: Option<u32>) -> Result<u32, String> {
    let waves = &rollout.spec.waves;
    let approved = rollout.spec.approved_waves.max(
        rollout
            .status
            .as_ref()
            .map_or(0, |s| s.acted_on.approved_wave),
    );
    if let Some(wave) = requested {
        if wave as usize > waves.len() {
            return Err(format!(
                "wave {wave} does not exist: the rollout has {} wave{}",
                waves.len(),
                if waves.len() == 1 { "" } else { "s" }
            ));
        }
        return Ok(wave);
    }
    let gated: Vec<usize> = waves
        .iter()
        .enumerate()
        .filter(|(_, w)| w.require_approval)
        .map(|(i, _)| i + 1)
        .collect();
    gated
        .iter()
        .find(|&&n| n as i32 > approved)
        .map(|&n| n as u32)
        .ok_or_else(|| {
            if gated.is_empty() {
                "no wave has requireApproval: true, so there is nothing to approve".to_owned()
            } else {
                format!(
                    "every gated wave ({}) is already approved (up to wave {approved})",
                    gated
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        })
}

/// `approve ROLLOUT [WAVE]`.
pub async fn approve(target: &Target, args: ApproveArgs) -> Result<ExitCode, PluginError> {
    let rollout = get_rollout(target, &args.name).await?;
    refuse_if_aborted(&rollout, &args.name, "approve")?;
    let wave = wave_to_approve(&rollout, args.wave)
        .map_err(|why| PluginError::Refused(format!("rollout {}: {why}", args.name)))?;
    annotate(
        target,
        &args.name,
        "approve",
        ANNOTATION_APPROVE,
        format!("{wave}:{}", nonce()),
        args.output,
        &format!("approval of waves up to {wave} requested"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::{ApproveAnnotation, RolloutSpec, RolloutStatus};

    fn rollout(approved_waves: i32, acted: i32) -> Rollout {
        let mut spec: RolloutSpec = serde_yaml::from_str(
            "packageRef: {name: fw}\ntargets: {identities: [a]}\nwaves:\n  - {percent: 10}\n  - {percent: 50, requireApproval: true}\n  - {percent: 100, requireApproval: true}\n",
        )
        .expect("spec");
        spec.approved_waves = approved_waves;
        let mut r = Rollout::new("fw", spec);
        let mut status = RolloutStatus::default();
        status.acted_on.approved_wave = acted;
        r.status = Some(status);
        r
    }

    #[test]
    fn approve_picks_the_next_gated_wave() {
        assert_eq!(wave_to_approve(&rollout(0, 0), None), Ok(2));
        assert_eq!(wave_to_approve(&rollout(0, 2), None), Ok(3));
        assert_eq!(wave_to_approve(&rollout(2, 0), None), Ok(3));
        let done = wave_to_approve(&rollout(0, 3), None).unwrap_err();
        assert!(done.contains("already approved (up to wave 3)"), "{done}");
        assert_eq!(wave_to_approve(&rollout(0, 0), Some(3)), Ok(3));
        let missing = wave_to_approve(&rollout(0, 0), Some(4)).unwrap_err();
        assert!(missing.contains("has 3 waves"), "{missing}");
    }

    #[test]
    fn nonces_are_fresh_and_make_valid_annotations() {
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        let parsed: ApproveAnnotation = format!("2:{a}").parse().expect("valid");
        assert_eq!(parsed.wave, 2);
    }
}
