//! `Rollout`: delivers one SoftwarePackage to a set of devices in waves.
//!
//! Control has two forms (docs/architecture.md §1.3), and the controller never writes `spec`:
//! - durable intent in `spec` (what Git users commit): [`RolloutSpec::paused`],
//!   [`RolloutSpec::abort`], [`RolloutSpec::approved_waves`], [`RolloutSpec::resume_token`];
//! - one-shot annotations holding a nonce (what `kubectl otau` writes): [`ANNOTATION_PAUSE`],
//!   [`ANNOTATION_RESUME`], [`ANNOTATION_APPROVE`] (`<wave>:<nonce>`), [`ANNOTATION_ABORT`]. The
//!   controller records the nonces it acted on in [`RolloutStatus::acted_on`], so an action never
//!   acts twice and removing the annotation later changes nothing.

// kube-derive takes one `printcolumn(...)` per column, so keys such as `type_` repeat by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{DeviceTag, LocalRef, identity_list_schema};
use super::conditions::conditions_schema;
use super::duration::{DEVICE_TIMEOUT, DEVICE_TIMEOUT_TOTAL, GoDuration, SOAK, not_shorter_rule};
use super::rollout_decisions::RolloutDecisions;

/// One-shot pause: any new nonce value pauses the Rollout (like `spec.paused`, but resumed by
/// [`ANNOTATION_RESUME`] or a new `spec.resumeToken`).
pub const ANNOTATION_PAUSE: &str = "otau.dev/pause";
/// One-shot resume: any new nonce value resumes after a pause by annotation or after an
/// automatic pause (failure threshold). It does not override `spec.paused: true`.
pub const ANNOTATION_RESUME: &str = "otau.dev/resume";
/// One-shot approval, value `<wave>:<nonce>`: approves waves up to and including `<wave>`
/// (numbered from 1), like raising `spec.approvedWaves`.
pub const ANNOTATION_APPROVE: &str = "otau.dev/approve";
/// One-shot abort: any nonce value aborts, exactly like `spec.abort: true`. Terminal.
pub const ANNOTATION_ABORT: &str = "otau.dev/abort";

/// The most waves a Rollout may have.
pub const MAX_WAVES: usize = 20;
/// The most explicit identities in `targets.identities` (and in `targets.exclude.identities`).
pub const MAX_IDENTITIES: usize = 1000;
/// The most tags in `targets.tags` (and in `targets.exclude.tags`).
pub const MAX_TAGS: usize = 32;
/// The most entries kept in `status.recentFailures`.
pub const MAX_RECENT_FAILURES: usize = 20;
/// The longest nonce accepted in a one-shot annotation.
pub const MAX_NONCE_LENGTH: usize = 128;

/// Default device timeout.
pub const DEFAULT_DEVICE_TIMEOUT: &str = "1h";
/// The default `deviceTimeoutTotal`, as a multiple of `deviceTimeout`.
pub const DEFAULT_DEVICE_TIMEOUT_TOTAL_FACTOR: u32 = 4;
/// Default failure threshold, percent of finished devices in the current wave.
pub const DEFAULT_FAILURE_PERCENT: i32 = 10;
/// Default minimum number of finished devices in a wave before the threshold is judged.
pub const DEFAULT_MIN_FINISHED: i32 = 10;

/// CEL indices 1..=19, to compare neighbouring waves (the list has at most 20 entries).
const WAVE_PAIRS: &str = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]";

/// Desired state of a Rollout.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "otau.dev",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    singular = "rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "otaro",
    category = "otau",
    derive = "PartialEq",
    selectable = ".spec.packageRef.name",
    doc = "Rolls one SoftwarePackage out to a set of devices in waves, and pauses by itself when devices \
           fail. Targets are ordered by a stable hash of (orderSeed or <namespace>/<name>, identity); wave k \
           covers the first ceil(N * size_k) devices of that order. \
           Control (the operator never writes spec): spec.paused pauses; spec.abort aborts for good; \
           spec.approvedWaves approves gated waves up to that wave number (waves count from 1); changing \
           spec.resumeToken resumes after an automatic pause. One-shot annotations whose value is a nonce do \
           the same from the CLI: otau.dev/pause, otau.dev/resume, otau.dev/approve (value <wave>:<nonce>) and \
           otau.dev/abort; each nonce acts once (status.actedOn records it), so removing or re-applying the \
           annotation changes nothing. \
           Abort stops every new config_otau write at once: no new devices and no retries. Devices already \
           notified keep the manifest they were sent (nothing is rolled back) and may still install it; they \
           keep counting by their own reports (succeeded, failed, aborted, in progress) and count as timed out \
           when deviceTimeout passes without a final report. Devices not yet notified stay pending and are \
           never notified. Use kubectl get rollouts.otau.dev (Argo Rollouts also has a kind called rollouts).",
    printcolumn(
        name = "Package",
        type_ = "string",
        json_path = ".spec.packageRef.name"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Wave",
        type_ = "string",
        json_path = ".status.waveProgress",
        description = "Current wave / number of waves"
    ),
    printcolumn(
        name = "Succeeded",
        type_ = "integer",
        json_path = ".status.totals.succeeded"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.totals.failed"
    ),
    printcolumn(
        name = "Success Rate",
        type_ = "string",
        json_path = ".status.successRate",
        description = "Succeeded / finished devices"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Targeted",
        type_ = "integer",
        json_path = ".status.totals.targeted",
        priority = 1
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#,
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        priority = 1
    )
)]
#[x_kube(validation = Rule::new(
    "has(self.orderSeed) == has(oldSelf.orderSeed) && (!has(self.orderSeed) || self.orderSeed == oldSelf.orderSeed)"
).message("orderSeed is immutable: changing it would reshuffle which devices belong to which wave"))]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The SoftwarePackage (same namespace) to roll out. Immutable: roll out another package
    /// with a new Rollout.
    #[x_kube(validation = Rule::new("self == oldSelf")
        .message("packageRef is immutable: create a new Rollout for another package"))]
    pub package_ref: LocalRef,

    /// Which devices of the package's connector get the package. Editing targets mid-rollout
    /// adds or drops devices not yet notified. An edit stops future writes only: a device this
    /// Rollout notified keeps counting in its wave and toward the failure threshold (no retry)
    /// whether `exclude` removes it or the identities or tags no longer select it. The platform
    /// remembers it: every value this Rollout writes carries its marker (`"rollout"` in
    /// `config_otau`). A device notified by an older operator release has no marker: exclude it
    /// rather than removing it from `identities` (docs/rollouts.md, "Target edits").
    pub targets: Targets,

    /// Cumulative wave sizes, in order. Count waves (canaries) come first, then percent waves;
    /// each is larger than the previous wave of its kind, and the last wave is `percent: 100`.
    /// A wave's effective size is the larger of its own size and the previous wave's, capped at
    /// the number of targets, so a count wave larger than a later percent of a small fleet
    /// simply makes that later wave empty.
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(
        validation = Rule::new(format!(
            "{WAVE_PAIRS}.all(i, i >= size(self) || !(has(self[i - 1].percent) && has(self[i].count)))"
        )).message("count waves must come before percent waves"),
        validation = Rule::new(format!(
            "{WAVE_PAIRS}.all(i, i >= size(self) \
             || !(has(self[i - 1].percent) && has(self[i].percent)) || self[i].percent > self[i - 1].percent)"
        )).message("waves must be strictly ascending: each percent must be larger than the previous wave's percent"),
        validation = Rule::new(format!(
            "{WAVE_PAIRS}.all(i, i >= size(self) \
             || !(has(self[i - 1].count) && has(self[i].count)) || self[i].count > self[i - 1].count)"
        )).message("waves must be strictly ascending: each count must be larger than the previous wave's count"),
        validation = Rule::new(
            "size(self) == 0 || (has(self[size(self) - 1].percent) && self[size(self) - 1].percent == 100)"
        )
            .message("the last wave must be percent: 100, so that it covers every target"),
        validation = Rule::new("self.all(w, !has(w.name) || self.exists_one(v, has(v.name) && v.name == w.name))")
            .message("wave names must be unique")
    )]
    pub waves: Vec<Wave>,

    /// Timeouts, retries, in-flight cap and the failure threshold.
    #[serde(default)]
    pub policy: Policy,

    /// Pause the rollout: no new device is notified while true (devices already notified carry
    /// on). Set back to false to continue.
    #[serde(default)]
    pub paused: bool,

    /// Abort the rollout for good: once true it cannot be set back to false (see the kind's
    /// description for what happens to notified devices).
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf")
        .message("abort cannot be undone: an aborted Rollout stays aborted; create a new Rollout to start again"))]
    pub abort: bool,

    /// The highest wave number (waves count from 1) approved to start. A wave with
    /// `requireApproval` starts only when this (or an `otau.dev/approve` annotation) reaches it.
    #[serde(default)]
    #[schemars(range(min = 0, max = 20))]
    pub approved_waves: i32,

    /// Changing this value (to anything new) resumes after an automatic pause (failure
    /// threshold). The controller records the token it acted on in `status.actedOn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub resume_token: Option<String>,

    /// Seed of the device order. Defaults to `<namespace>/<name>` (not the UID, so a GitOps
    /// replace or a restore from backup keeps the same waves). Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub order_seed: Option<String>,
}

/// Which devices a Rollout targets: identities and/or tags, minus exclusions.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "(has(self.identities) && size(self.identities) > 0) || (has(self.tags) && size(self.tags) > 0)"
).message("targets must name at least one identity or tag").reason(Reason::FieldValueRequired))]
#[serde(rename_all = "camelCase")]
pub struct Targets {
    /// Device identities to target, exactly as on the connector (e.g. `00AB01`): no `/`,
    /// spaces, control or format characters, which the platform refuses in identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "identity_list_schema")]
    pub identities: Vec<String>,

    /// Device tags: a device matches when it carries any of these tags (name and value).
    /// Devices that join the connector later and match are added to the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tags: Vec<DeviceTag>,

    /// Devices never to target, even when they match above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Exclusions>,
}

/// Devices excluded from a Rollout.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exclusions {
    /// Identities never targeted (written as in `targets.identities`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "identity_list_schema")]
    pub identities: Vec<String>,

    /// Devices carrying any of these tags are never targeted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tags: Vec<DeviceTag>,
}

/// One wave: a cumulative size (exactly one of `percent` or `count`), an optional soak time
/// after it completes and an optional approval gate before it starts.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.percent) != has(self.count)")
    .message("each wave needs exactly one of percent or count"))]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Optional label shown in status and events (e.g. `canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("wave name must be lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    pub name: Option<String>,

    /// Cumulative share of the targets covered once this wave is done, 1..100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub percent: Option<i32>,

    /// Cumulative number of targets covered once this wave is done (at least 1; capped at the
    /// number of targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000000))]
    pub count: Option<i64>,

    /// Wait this long after the wave completes before the next one starts (Go duration from
    /// `0s` to `8760h`, e.g. `30m`). Failures during the soak still count against this wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = SOAK.rule())]
    pub soak: Option<GoDuration>,

    /// The wave starts only once approved (`spec.approvedWaves` >= its number, or the
    /// `otau.dev/approve` annotation).
    #[serde(default)]
    pub require_approval: bool,
}

/// How devices are judged and what happens when too many fail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = not_shorter_rule("deviceTimeoutTotal", "deviceTimeout"))]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// How long a notified device may stay silent before it counts as timed out (Go duration,
    /// from 1s to 8760h): the clock starts when its notification is written and starts again
    /// at each progress report for that notification, up to `deviceTimeoutTotal`. Both come
    /// from the platform's timestamps, so they survive operator restarts; a device's
    /// acknowledgement does not restart it.
    #[serde(default = "default_device_timeout")]
    #[x_kube(validation = DEVICE_TIMEOUT.rule())]
    pub device_timeout: GoDuration,

    /// The most time a notified device may take in all, however often it reports progress
    /// (Go duration, from 1s to 8760h, not shorter than `deviceTimeout`). Default: 4 times
    /// `deviceTimeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = DEVICE_TIMEOUT_TOTAL.rule())]
    pub device_timeout_total: Option<GoDuration>,

    /// How many more times a failed (or timed-out) device is notified, 0..10. Each retry writes
    /// the manifest with `"attempt": k`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,

    /// The most devices notified and not yet finished at any time. Unlimited when absent (the
    /// connector's rate limit still applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_in_flight: Option<i32>,

    /// When the current wave counts as failing.
    #[serde(default)]
    pub failure_threshold: FailureThreshold,

    /// What to do when the threshold is exceeded: `Pause` (resume by `spec.resumeToken`, the
    /// resume annotation or a spec change) or `Abort` (terminal).
    #[serde(default)]
    pub on_failure: FailureAction,

    /// A device whose turn comes while it installs another manifest (its `config_otau` holds
    /// that manifest and its latest `otau_in` is a non-final report for that manifest's
    /// version, e.g. a package deployed from the ExoSense UI): `Wait` (default) counts it
    /// `busy` and writes it only once that update ended (a final report), made no progress
    /// for `deviceTimeout` (from the platform's timestamps of that manifest and of the
    /// device's latest report) or ran `deviceTimeoutTotal` since that manifest's timestamp;
    /// `TakeOver` writes it at once, replacing that manifest.
    #[serde(default)]
    pub busy_devices: BusyDevices,

    /// A device whose `config_otau` holds a manifest that no SoftwarePackage of this
    /// package's IoTConnector (in its namespace) produced is counted `foreign` until it is
    /// written: `Notify` (default) writes it when its wave comes, like any other device;
    /// `Skip` never writes it and counts it finished (not toward the success rate).
    #[serde(default)]
    pub foreign_manifests: ForeignManifests,

    /// Record on the platform that a device installed the target once it starts the update
    /// again (a *re-run*, as the OTA guide's example loop does): one identity tag
    /// `otau-installed` on that device, written once (two management calls, only for
    /// re-running devices), so its success survives an operator restart while it re-runs
    /// (docs/rollouts.md, "Where each fact lives"). Default true. False writes nothing but
    /// `config_otau`: a device caught mid-re-run by a restart then counts in progress until it
    /// installs again or times out.
    #[serde(default = "default_true")]
    pub record_reruns: bool,
}

/// What happens to a device that is installing another manifest when its turn comes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum BusyDevices {
    /// Count it `busy` and write it once that update ends or stalls for `deviceTimeout`.
    #[default]
    Wait,
    /// Write it at once, replacing the other manifest.
    TakeOver,
}

/// What happens to a device that holds a manifest no SoftwarePackage of the connector made.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ForeignManifests {
    /// Count it `foreign` and write it when its wave comes.
    #[default]
    Notify,
    /// Count it `foreign`, never write it; it counts as finished.
    Skip,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            device_timeout: default_device_timeout(),
            device_timeout_total: None,
            retries: 0,
            max_in_flight: None,
            failure_threshold: FailureThreshold::default(),
            on_failure: FailureAction::default(),
            busy_devices: BusyDevices::default(),
            foreign_manifests: ForeignManifests::default(),
            record_reruns: true,
        }
    }
}

fn default_device_timeout() -> GoDuration {
    GoDuration::new(DEFAULT_DEVICE_TIMEOUT)
}

fn default_failure_percent() -> i32 {
    DEFAULT_FAILURE_PERCENT
}

fn default_min_finished() -> i32 {
    DEFAULT_MIN_FINISHED
}

fn default_true() -> bool {
    true
}

/// The failure threshold of a wave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureThreshold {
    /// The wave fails when more than this percentage of its finished devices failed, 0..100
    /// (0: any failure trips it; 100: never).
    #[serde(default = "default_failure_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,
    /// Judge the wave only once at least this many of its devices finished (succeeded, failed,
    /// aborted, timed out or sent an unreadable report), so one early failure does not stop a
    /// large wave.
    #[serde(default = "default_min_finished")]
    #[schemars(range(min = 0, max = 1000000))]
    pub min_finished: i32,
    /// Count timed-out devices as failures.
    #[serde(default = "default_true")]
    pub count_timeouts: bool,
    /// Count devices that refused the update (`INSTALL_ABORTED`) as failures (default true).
    /// False leaves them out of the failures; they still count as finished devices.
    #[serde(default = "default_true")]
    pub count_aborted: bool,
    /// Count devices whose report cannot be read (`invalid`) as failures (default true). False
    /// leaves them out of the failures; they still count as finished devices.
    #[serde(default = "default_true")]
    pub count_invalid: bool,
}

impl Default for FailureThreshold {
    fn default() -> Self {
        Self {
            percent: DEFAULT_FAILURE_PERCENT,
            min_finished: DEFAULT_MIN_FINISHED,
            count_timeouts: true,
            count_aborted: true,
            count_invalid: true,
        }
    }
}

/// What a tripped failure threshold does.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum FailureAction {
    /// Pause automatically (`Paused=True`, `Stalled=True`, reason `FailureThresholdExceeded`).
    #[default]
    Pause,
    /// Abort (terminal), as if `spec.abort` were set.
    Abort,
}

/// The one-word summary in `status.phase`, derived from the conditions by
/// [`super::conditions::rollout_phase`].
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum RolloutPhase {
    /// Nothing delivered yet (package or connector not ready, first visit).
    #[default]
    Pending,
    /// A wave is being delivered or soaking.
    Progressing,
    /// Held: by the user, for an approval, or automatically after failures.
    Paused,
    /// Every wave delivered within the threshold.
    Complete,
    /// Aborted; terminal.
    Aborted,
}

/// Observed state of a Rollout, written only by the operator. Holds aggregates, never one
/// entry per device.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Conditions: `Ready`, `Progressing`, `Paused`, `Complete`, `Stalled`, and `Reconciling`
    /// (neither complete nor stalled: waves, soaks, approvals and pauses are in progress).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One-word summary of the conditions, for `kubectl get` and the CLI. Never read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,
    /// The wave being delivered or last delivered (numbered from 1; 0 before the first).
    #[serde(default)]
    #[schemars(range(min = 0, max = 20))]
    pub current_wave: i32,
    /// `<current wave>/<number of waves>`, e.g. `2/4`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub wave_progress: Option<String>,
    /// The wave sizes for the current targets (a dry run of the split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<WavePlan>,
    /// Per-wave progress, one entry per wave that has started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub waves: Vec<WaveStatus>,
    /// Counts over all waves.
    #[serde(default)]
    pub totals: DeviceCounts,
    /// Succeeded / finished devices, e.g. `97.5%`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub success_rate: Option<String>,
    /// The most recent failures (at most 20, newest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub recent_failures: Vec<DeviceFailure>,
    /// Why and since when the rollout is paused, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseInfo>,
    /// The one-shot actions and resume token already acted on.
    #[serde(default)]
    pub acted_on: ActedOn,
    /// When a device last moved forward: notified, reported in progress, or finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_at: Option<Time>,
    /// Decisions no platform read can tell (abort, pause by annotation, failures accepted by a
    /// resume), so that a restarted operator carries on exactly.
    #[serde(default, skip_serializing_if = "RolloutDecisions::is_empty")]
    pub decisions: RolloutDecisions,
}

/// Device counts of a wave or of the whole rollout. Each device is in exactly one of the
/// states after `targeted` (`reruns` is a part of `succeeded`, not a state).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceCounts {
    /// Devices in scope.
    #[serde(default)]
    pub targeted: i64,
    /// Waiting for a write: not notified yet, or a retry is due.
    #[serde(default)]
    pub pending: i64,
    /// Sent the manifest, no report for this version yet.
    #[serde(default)]
    pub notified: i64,
    /// Reporting progress for this version (downloading, installing, or an unknown status not
    /// ending in `_ERROR`).
    #[serde(default)]
    pub in_progress: i64,
    /// Installed the version after its notification (final for this Rollout).
    #[serde(default)]
    pub succeeded: i64,
    /// Reported an error, any status ending in `_ERROR` (after all retries).
    #[serde(default)]
    pub failed: i64,
    /// Of `succeeded`: devices that installed the version and have reported about it again
    /// since (they run the update again, or a progress report came late). Still succeeded; not
    /// one of the states `targeted` adds up.
    #[serde(default)]
    pub reruns: i64,
    /// Reported `INSTALL_ABORTED`.
    #[serde(default)]
    pub aborted: i64,
    /// No final report within the device timeout (after all retries).
    #[serde(default)]
    pub timed_out: i64,
    /// Already at the version; never notified.
    #[serde(default)]
    pub skipped: i64,
    /// Sent a report that cannot be parsed.
    #[serde(default)]
    pub invalid: i64,
    /// Not written yet because it is installing another manifest right now
    /// (`policy.busyDevices: Wait`); written once that update ends.
    #[serde(default)]
    pub busy: i64,
    /// Not written yet (or never, with `policy.foreignManifests: Skip`) and holding a
    /// manifest no SoftwarePackage of the connector produced.
    #[serde(default)]
    pub foreign: i64,
}

/// Per-wave progress.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaveStatus {
    /// The wave's number (from 1).
    #[schemars(range(min = 1, max = 20))]
    pub number: i32,
    /// The wave's name, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// Device counts of the devices this wave added.
    #[serde(flatten)]
    pub counts: DeviceCounts,
    /// When the wave started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When every device of the wave finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// When the soak after this wave ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<Time>,
}

/// The split of the current targets into waves.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WavePlan {
    /// Number of targeted devices the plan was computed for.
    pub targets: i64,
    /// Cumulative number of devices covered after each wave, in wave order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub cumulative: Vec<i64>,
    /// Devices that already carried this package's `config_otau` manifest before their wave
    /// started, one entry per wave in wave order (empty when no device did). An earlier
    /// Rollout of the same package wrote it (this Rollout before it was deleted and applied
    /// again, or another one), or this Rollout did before devices that joined later moved them
    /// to a later wave. Such devices are counted by their reports, not notified again (a due
    /// retry excepted), and the failure threshold judges them with the started waves before
    /// any further wave starts. Counted when the wave starts and kept from then on; live for
    /// waves not started yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub held: Vec<HeldDevices>,
}

/// Devices of one wave found already carrying the package's manifest.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldDevices {
    /// Already reporting the target version installed.
    #[serde(default)]
    pub succeeded: i64,
    /// Already reporting a failure, a refusal or an unreadable report for the manifest, or
    /// silent past the device timeout (a retry may still be due).
    #[serde(default)]
    pub failed: i64,
    /// Acknowledged or installing, with no final report yet.
    #[serde(default)]
    pub in_flight: i64,
}

impl HeldDevices {
    /// All held devices of the wave.
    pub fn total(&self) -> i64 {
        self.succeeded + self.failed + self.in_flight
    }
}

/// One recent device failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceFailure {
    /// The device identity.
    #[schemars(length(max = 128))]
    pub identity: String,
    /// The status the device reported (e.g. `DOWNLOAD_ERROR`), `Timeout`, or `InvalidReport`.
    #[schemars(length(max = 64))]
    pub status: String,
    /// Short explanation (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub message: Option<String>,
    /// When the failure was seen.
    pub at: Time,
}

/// Why the rollout is paused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseInfo {
    /// The reason, as in the `Paused` condition (`PausedByUser`, `WaitingForApproval`,
    /// `FailureThresholdExceeded`).
    #[schemars(length(max = 64))]
    pub reason: String,
    /// When the pause began.
    pub since: Time,
    /// The `metadata.generation` at which it paused; an automatic pause resumes only on a newer
    /// generation (or a resume annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// One-shot actions already carried out, so none acts twice.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActedOn {
    /// Nonce of the last `otau.dev/pause` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub pause: Option<String>,
    /// Nonce of the last `otau.dev/resume` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub resume: Option<String>,
    /// Value (`<wave>:<nonce>`) of the last `otau.dev/approve` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 140))]
    pub approve: Option<String>,
    /// The highest wave number approved by annotation.
    #[serde(default)]
    #[schemars(range(min = 0, max = 20))]
    pub approved_wave: i32,
    /// Nonce of the `otau.dev/abort` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub abort: Option<String>,
    /// The `spec.resumeToken` acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub resume_token: Option<String>,
}

/// Why an `otau.dev/approve` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApproveAnnotationError {
    /// No `:` between wave and nonce.
    #[error("otau.dev/approve must be <wave>:<nonce>, e.g. 2:7f3a; got {0:?}")]
    Shape(String),
    /// The wave is not a number in 1..=20.
    #[error("otau.dev/approve: the wave must be a number from 1 to {MAX_WAVES}; got {0:?}")]
    Wave(String),
    /// The nonce is empty or too long.
    #[error("otau.dev/approve: the nonce must be 1 to {MAX_NONCE_LENGTH} characters")]
    Nonce,
}

/// An `otau.dev/approve` value, `<wave>:<nonce>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApproveAnnotation {
    /// Approves waves up to and including this number (from 1).
    pub wave: u32,
    /// Makes the action unique; acted on once.
    pub nonce: String,
}

impl std::str::FromStr for ApproveAnnotation {
    type Err = ApproveAnnotationError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (wave, nonce) = value
            .split_once(':')
            .ok_or_else(|| ApproveAnnotationError::Shape(value.to_owned()))?;
        let number: u32 = wave
            .trim()
            .parse()
            .map_err(|_| ApproveAnnotationError::Wave(wave.to_owned()))?;
        if number == 0 || number as usize > MAX_WAVES {
            return Err(ApproveAnnotationError::Wave(wave.to_owned()));
        }
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LENGTH {
            return Err(ApproveAnnotationError::Nonce);
        }
        Ok(Self {
            wave: number,
            nonce: nonce.to_owned(),
        })
    }
}

/// The `waveProgress` text for `kubectl get`: `"<current>/<total>"`.
pub fn wave_progress(current_wave: i32, total_waves: usize) -> String {
    format!("{current_wave}/{total_waves}")
}

/// The `successRate` text: succeeded / finished ([`DeviceCounts::finished`]), with one
/// decimal as [`percent_text`] rounds it (`"97.5%"`; 99.96% shows as 99.9%, never 100.0%);
/// `None` while nothing finished.
pub fn success_rate(counts: &DeviceCounts) -> Option<String> {
    let finished = counts.finished();
    if finished <= 0 {
        return None;
    }
    Some(percent_text(counts.succeeded, finished))
}

impl DeviceCounts {
    /// Devices that came to an end after a notification: succeeded, failed, aborted, timed out
    /// or sent an unreadable report (skipped devices were never notified). The success rate
    /// and the failure threshold are judged over these.
    pub fn finished(&self) -> i64 {
        self.succeeded + self.failed + self.aborted + self.timed_out + self.invalid
    }

    /// Finished devices that did not install the version: failed, aborted, timed out or
    /// invalid, whatever the threshold counts.
    pub fn unsuccessful(&self) -> i64 {
        self.finished() - self.succeeded
    }
}

/// `part / whole` as a percentage with one decimal, rounded to the nearest tenth, except that
/// it never shows 0.0% for a non-zero part nor 100.0% for a part short of the whole.
pub fn percent_text(part: i64, whole: i64) -> String {
    if whole <= 0 {
        return "0.0%".into();
    }
    let (part, whole) = (i128::from(part.clamp(0, whole)), i128::from(whole));
    let mut tenths = (part * 2000 + whole) / (2 * whole);
    if part > 0 {
        tenths = tenths.max(1);
    }
    if part < whole {
        tenths = tenths.min(999);
    }
    format!("{}.{}%", tenths / 10, tenths % 10)
}
