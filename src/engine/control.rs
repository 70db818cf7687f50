//! Control (docs/architecture.md §1): durable intent in spec, one-shot annotations holding nonces.
//! Each nonce acts once: it is recorded in `status.actedOn` the first time it is seen, acted on or
//! not, so a stale annotation can never act later and removing it changes nothing.
//!
//! Pause and resume events are not emitted here: the step derives them from the change of
//! `status.pause`, whatever caused it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::rollout::{
    ANNOTATION_ABORT, ANNOTATION_APPROVE, ANNOTATION_PAUSE, ANNOTATION_RESUME, ActedOn,
    ApproveAnnotation, MAX_NONCE_LENGTH, RolloutSpec,
};

use super::events::{EngineEvent, reason};
use super::memory::{AbortCause, AbortRecord, EngineMemory};

/// Why a resume was asked for in this step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeRequest {
    /// A new `otau.dev/resume` nonce.
    Annotation,
    /// A new `spec.resumeToken`.
    Token,
}

/// The result of reading spec and annotations against what was already acted on.
#[derive(Clone, Debug, PartialEq)]
pub struct Control {
    /// The updated `status.actedOn`.
    pub acted_on: ActedOn,
    /// The updated memory (annotation pause, abort).
    pub memory: EngineMemory,
    /// A resume asked for in this step, if any.
    pub resume: Option<ResumeRequest>,
    /// The highest wave number approved (spec or annotation).
    pub approved_wave: i32,
    /// Events for what was acted on.
    pub events: Vec<EngineEvent>,
}

impl Control {
    /// Whether the rollout is aborted (terminal).
    pub fn aborted(&self) -> bool {
        self.memory.aborted.is_some()
    }
}

fn valid_nonce(value: &str) -> bool {
    !value.is_empty() && value.len() <= MAX_NONCE_LENGTH
}

/// A one-shot annotation with a nonce not acted on yet. An invalid value is reported (a
/// Warning event) and not recorded, since `actedOn` only holds valid nonces.
fn new_nonce(
    annotations: &BTreeMap<String, String>,
    key: &str,
    acted: &Option<String>,
    events: &mut Vec<EngineEvent>,
) -> Option<String> {
    let value = annotations.get(key)?;
    if acted.as_deref() == Some(value.as_str()) {
        return None;
    }
    if !valid_nonce(value) {
        events.push(EngineEvent::warning(
            reason::INVALID_ANNOTATION,
            format!("{key} must hold a nonce of 1 to {MAX_NONCE_LENGTH} characters; ignored"),
        ));
        return None;
    }
    Some(value.clone())
}

/// Reads control from spec and annotations. `now` is whole seconds.
pub fn read_control(
    spec: &RolloutSpec,
    annotations: &BTreeMap<String, String>,
    acted_on: &ActedOn,
    memory: &EngineMemory,
    now: &Time,
) -> Control {
    let mut acted = acted_on.clone();
    let mut memory = memory.clone();
    let mut events = Vec::new();
    let abort = |cause: AbortCause, memory: &mut EngineMemory, events: &mut Vec<_>| {
        if memory.aborted.is_none() {
            memory.aborted = Some(AbortRecord {
                cause,
                at: now.clone(),
            });
            events.push(EngineEvent::warning(
                reason::ABORTED,
                format!(
                    "aborted by {}: nothing more is written; devices already notified keep the manifest",
                    cause.describe()
                ),
            ));
        }
    };

    // Abort first: it dominates everything else.
    if let Some(nonce) = new_nonce(annotations, ANNOTATION_ABORT, &acted.abort, &mut events) {
        acted.abort = Some(nonce);
        abort(AbortCause::Annotation, &mut memory, &mut events);
    }
    if spec.abort {
        abort(AbortCause::Spec, &mut memory, &mut events);
    }
    let aborted = memory.aborted.is_some();

    if let Some(nonce) = new_nonce(annotations, ANNOTATION_PAUSE, &acted.pause, &mut events) {
        acted.pause = Some(nonce);
        if !aborted && memory.paused_by_annotation_since.is_none() {
            memory.paused_by_annotation_since = Some(now.clone());
        }
    }

    let mut resume = None;
    if let Some(nonce) = new_nonce(annotations, ANNOTATION_RESUME, &acted.resume, &mut events) {
        acted.resume = Some(nonce);
        resume = Some(ResumeRequest::Annotation);
    }
    if let Some(token) = &spec.resume_token
        && acted.resume_token.as_ref() != Some(token)
    {
        acted.resume_token = Some(token.clone());
        resume = resume.or(Some(ResumeRequest::Token));
    }
    if resume.is_some() {
        memory.paused_by_annotation_since = None;
    }

    if let Some(value) = annotations.get(ANNOTATION_APPROVE)
        && acted.approve.as_deref() != Some(value.as_str())
    {
        match value.parse::<ApproveAnnotation>() {
            Ok(approval) => {
                acted.approve = Some(value.clone());
                let wave = approval.wave as i32;
                if wave > acted.approved_wave {
                    acted.approved_wave = wave;
                    events.push(EngineEvent::normal(
                        reason::WAVE_APPROVED,
                        format!("waves up to {wave} approved by the otau.dev/approve annotation"),
                    ));
                }
            }
            Err(e) => events.push(EngineEvent::warning(
                reason::INVALID_ANNOTATION,
                format!("{e}; ignored"),
            )),
        }
    }

    Control {
        approved_wave: spec.approved_waves.max(acted.approved_wave),
        acted_on: acted,
        memory,
        resume: if aborted { None } else { resume },
        events,
    }
}

/// How a person's pause is named in messages: `spec.paused` or the annotation.
pub fn paused_by(spec: &RolloutSpec) -> &'static str {
    if spec.paused {
        "spec.paused"
    } else {
        "the otau.dev/pause annotation"
    }
}

/// The `Paused` and `Resumed` Events of a person's pause that begins or ends in this step
/// (`previous_reason`: the pause reason in the previous status).
pub fn user_pause_events(
    user_paused: bool,
    aborted: bool,
    auto_paused: bool,
    previous_reason: Option<&str>,
    paused_by: &str,
) -> Vec<EngineEvent> {
    let by_user = crate::api::conditions::reason::PAUSED_BY_USER;
    let was_paused_by_user = previous_reason == Some(by_user);
    let mut events = Vec::new();
    if user_paused && !aborted && !auto_paused && !was_paused_by_user {
        events.push(EngineEvent::normal(
            reason::PAUSED,
            format!("paused by {paused_by}: no new device is notified; devices in flight carry on"),
        ));
    }
    if was_paused_by_user && !user_paused && !aborted {
        events.push(EngineEvent::normal(
            reason::RESUMED,
            "resumed by the user".to_owned(),
        ));
    }
    events
}
