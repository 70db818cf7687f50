//! Per-Rollout Prometheus metrics (docs/architecture.md §9.7; documented in docs/metrics.md).
//! Labels are namespace, rollout, wave, state, phase, status, result and source: small known
//! sets, never a device id. The gauges are rewritten after every reconcile, and every series of
//! a deleted Rollout is removed.

use std::collections::HashMap;

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::api::rollout::{DeviceCounts, ForeignManifests, MAX_WAVES, RolloutPhase, RolloutStatus};

/// Device states, as in `status.totals`, and `foreign_skipped`: the `foreign` devices that are
/// finished (never written under `policy.foreignManifests: Skip`; a subset of `foreign`, like
/// `reruns` of `succeeded`).
pub const STATES: [&str; 14] = [
    "targeted",
    "pending",
    "notified",
    "in_progress",
    "succeeded",
    "failed",
    "aborted",
    "timed_out",
    "skipped",
    "invalid",
    "busy",
    "foreign",
    "reruns",
    "foreign_skipped",
];

/// Phases, as in `status.phase`.
pub const PHASES: [&str; 5] = ["Pending", "Progressing", "Paused", "Complete", "Aborted"];

/// Pause reasons of `otau_rollout_paused`, as in the `Paused` condition.
pub const PAUSE_REASONS: [&str; 3] = [
    "PausedByUser",
    "WaitingForApproval",
    "FailureThresholdExceeded",
];

/// Failure kinds of `otau_rollout_device_failures`.
pub const FAILURE_KINDS: [&str; 6] = [
    "TEST_ERROR",
    "DOWNLOAD_ERROR",
    "INSTALL_ERROR",
    "INSTALL_ABORTED",
    "timeout",
    "invalid",
];

/// Write results of `otau_rollout_notifications_total`.
pub const WRITE_RESULTS: [&str; 4] = ["written", "already_set", "gone", "error"];

/// Results of `otau_rollout_success_records_total`.
pub const RECORD_RESULTS: [&str; 4] = ["written", "present", "gone", "error"];

/// Report sources of `otau_rollout_reports_total`.
pub const REPORT_SOURCES: [&str; 1] = ["push"];

/// The collectors.
#[derive(Clone, Debug)]
pub struct RolloutMetrics {
    devices: IntGaugeVec,
    success_ratio: GaugeVec,
    current_wave: IntGaugeVec,
    phase: IntGaugeVec,
    paused: IntGaugeVec,
    last_progress: GaugeVec,
    failures: IntGaugeVec,
    /// `otau_rollout_notifications_total{namespace, rollout, result}`.
    pub notifications: IntCounterVec,
    /// `otau_rollout_success_records_total{namespace, rollout, result}`.
    pub success_records: IntCounterVec,
    /// `otau_rollout_reports_total{namespace, rollout, source}`.
    pub reports: IntCounterVec,
    /// `otau_push_requests_total{code}`.
    pub push_requests: IntCounterVec,
    /// `otau_push_refused_total{reason}`.
    pub push_refused: IntCounterVec,
    /// `otau_rollout_status_writes_total{result}`.
    pub status_writes: IntCounterVec,
}

fn phase_name(phase: RolloutPhase) -> &'static str {
    match phase {
        RolloutPhase::Pending => "Pending",
        RolloutPhase::Progressing => "Progressing",
        RolloutPhase::Paused => "Paused",
        RolloutPhase::Complete => "Complete",
        RolloutPhase::Aborted => "Aborted",
    }
}

fn values(c: &DeviceCounts, foreign: ForeignManifests) -> [i64; 14] {
    [
        c.targeted,
        c.pending,
        c.notified,
        c.in_progress,
        c.succeeded,
        c.failed,
        c.aborted,
        c.timed_out,
        c.skipped,
        c.invalid,
        c.busy,
        c.foreign,
        c.reruns,
        crate::engine::foreign_finished(c, foreign),
    ]
}

/// `otau_push_refused_total{reason}`, every reason at 0 from the start.
fn push_refused_counter() -> Result<IntCounterVec, prometheus::Error> {
    let counter = IntCounterVec::new(
        Opts::new(
            "otau_push_refused_total",
            "Pushes refused by reason: no_connector, unknown_connector, bad_signature \
             (missing, malformed or wrong), too_large, unreadable (late or broken body), \
             bad_event, outside_window.",
        ),
        &["reason"],
    )?;
    for reason in crate::controller::push::REFUSAL_REASONS {
        counter.with_label_values(&[reason]);
    }
    Ok(counter)
}

impl RolloutMetrics {
    /// Creates the collectors and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let devices = IntGaugeVec::new(
            Opts::new(
                "otau_rollout_devices",
                "Devices of a Rollout per wave and state (states as in status.waves; summing over wave gives status.totals; reruns and foreign_skipped are subsets of succeeded and foreign).",
            ),
            &["namespace", "rollout", "wave", "state"],
        )?;
        let success_ratio = GaugeVec::new(
            Opts::new(
                "otau_rollout_success_ratio",
                "Succeeded / finished devices of a Rollout (0..1); absent until a device finished.",
            ),
            &["namespace", "rollout"],
        )?;
        let current_wave = IntGaugeVec::new(
            Opts::new(
                "otau_rollout_current_wave",
                "The wave being delivered or last delivered (from 1; 0 before the first).",
            ),
            &["namespace", "rollout"],
        )?;
        let phase = IntGaugeVec::new(
            Opts::new(
                "otau_rollout_phase",
                "1 for the Rollout's current phase, 0 for the others.",
            ),
            &["namespace", "rollout", "phase"],
        )?;
        let paused = IntGaugeVec::new(
            Opts::new(
                "otau_rollout_paused",
                "1 for the reason the Rollout is paused (PausedByUser, WaitingForApproval, FailureThresholdExceeded), 0 for the others.",
            ),
            &["namespace", "rollout", "reason"],
        )?;
        let last_progress = GaugeVec::new(
            Opts::new(
                "otau_rollout_last_progress_timestamp_seconds",
                "When a device of the Rollout last moved forward (notified or finished), Unix seconds.",
            ),
            &["namespace", "rollout"],
        )?;
        let failures = IntGaugeVec::new(
            Opts::new(
                "otau_rollout_device_failures",
                "Devices of a Rollout whose latest report is a failure status, or that timed out or sent invalid reports.",
            ),
            &["namespace", "rollout", "status"],
        )?;
        let notifications = IntCounterVec::new(
            Opts::new(
                "otau_rollout_notifications_total",
                "config_otau notifications by result (written, already_set, gone, error).",
            ),
            &["namespace", "rollout", "result"],
        )?;
        let success_records = IntCounterVec::new(
            Opts::new(
                "otau_rollout_success_records_total",
                "Success records (the otau-installed identity tag on a device that re-runs an update it installed) by result (written, present: the device carried it already, gone, error).",
            ),
            &["namespace", "rollout", "result"],
        )?;
        let reports = IntCounterVec::new(
            Opts::new(
                "otau_rollout_reports_total",
                "Device reports folded into a Rollout by source (push).",
            ),
            &["namespace", "rollout", "source"],
        )?;
        let push_requests = IntCounterVec::new(
            Opts::new(
                "otau_push_requests_total",
                "Requests to POST /hooks/device2 by answer code (204, 400, 401, 408, 413).",
            ),
            &["code"],
        )?;
        let push_refused = push_refused_counter()?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "otau_rollout_status_writes_total",
                "Rollout status writes (server-side apply) by result (success, error).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(devices.clone()))?;
        registry.register(Box::new(success_ratio.clone()))?;
        registry.register(Box::new(current_wave.clone()))?;
        registry.register(Box::new(phase.clone()))?;
        registry.register(Box::new(paused.clone()))?;
        registry.register(Box::new(last_progress.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(notifications.clone()))?;
        registry.register(Box::new(success_records.clone()))?;
        registry.register(Box::new(reports.clone()))?;
        registry.register(Box::new(push_requests.clone()))?;
        registry.register(Box::new(push_refused.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        Ok(RolloutMetrics {
            devices,
            success_ratio,
            current_wave,
            phase,
            paused,
            last_progress,
            failures,
            notifications,
            success_records,
            reports,
            push_requests,
            push_refused,
            status_writes,
        })
    }

    /// Rewrites the gauges of one Rollout from its status, its `policy.foreignManifests` and
    /// the failure tally of its index.
    pub fn observe(
        &self,
        namespace: &str,
        rollout: &str,
        status: &RolloutStatus,
        foreign: ForeignManifests,
        failure_reports: &HashMap<&'static str, i64>,
    ) {
        for wave in 1..=MAX_WAVES {
            let label = wave.to_string();
            match status.waves.iter().find(|w| w.number as usize == wave) {
                Some(w) => {
                    for (state, value) in STATES.iter().zip(values(&w.counts, foreign)) {
                        self.devices
                            .with_label_values(&[namespace, rollout, &label, state])
                            .set(value);
                    }
                }
                None => {
                    for state in STATES {
                        let _ = self
                            .devices
                            .remove_label_values(&[namespace, rollout, &label, state]);
                    }
                }
            }
        }
        let t = &status.totals;
        let finished = t.finished();
        if finished > 0 {
            self.success_ratio
                .with_label_values(&[namespace, rollout])
                .set(t.succeeded as f64 / finished as f64);
        } else {
            let _ = self
                .success_ratio
                .remove_label_values(&[namespace, rollout]);
        }
        self.current_wave
            .with_label_values(&[namespace, rollout])
            .set(i64::from(status.current_wave));
        let current = status.phase.map(phase_name).unwrap_or("Pending");
        for p in PHASES {
            self.phase
                .with_label_values(&[namespace, rollout, p])
                .set(i64::from(p == current));
        }
        let pause_reason = status.pause.as_ref().map(|p| p.reason.as_str());
        for reason in PAUSE_REASONS {
            self.paused
                .with_label_values(&[namespace, rollout, reason])
                .set(i64::from(pause_reason == Some(reason)));
        }
        if let Some(at) = &status.last_progress_at {
            self.last_progress
                .with_label_values(&[namespace, rollout])
                .set(at.0.as_second() as f64);
        }
        for kind in FAILURE_KINDS {
            let value = match kind {
                "timeout" => t.timed_out,
                "invalid" => t.invalid,
                other => failure_reports.get(other).copied().unwrap_or(0),
            };
            self.failures
                .with_label_values(&[namespace, rollout, kind])
                .set(value);
        }
    }

    /// Removes every series of a deleted Rollout.
    pub fn forget(&self, namespace: &str, rollout: &str) {
        for wave in 1..=MAX_WAVES {
            let label = wave.to_string();
            for state in STATES {
                let _ = self
                    .devices
                    .remove_label_values(&[namespace, rollout, &label, state]);
            }
        }
        let _ = self
            .success_ratio
            .remove_label_values(&[namespace, rollout]);
        let _ = self.current_wave.remove_label_values(&[namespace, rollout]);
        let _ = self
            .last_progress
            .remove_label_values(&[namespace, rollout]);
        for p in PHASES {
            let _ = self.phase.remove_label_values(&[namespace, rollout, p]);
        }
        for reason in PAUSE_REASONS {
            let _ = self
                .paused
                .remove_label_values(&[namespace, rollout, reason]);
        }
        for kind in FAILURE_KINDS {
            let _ = self
                .failures
                .remove_label_values(&[namespace, rollout, kind]);
        }
        for result in WRITE_RESULTS {
            let _ = self
                .notifications
                .remove_label_values(&[namespace, rollout, result]);
        }
        for result in RECORD_RESULTS {
            let _ = self
                .success_records
                .remove_label_values(&[namespace, rollout, result]);
        }
        for source in REPORT_SOURCES {
            let _ = self
                .reports
                .remove_label_values(&[namespace, rollout, source]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::rollout::WaveStatus;

    #[test]
    fn series_follow_the_status_and_leave_with_the_rollout() {
        let registry = Registry::new();
        let m = RolloutMetrics::register(&registry).expect("register");
        let counts = DeviceCounts {
            targeted: 13,
            succeeded: 8,
            failed: 2,
            busy: 1,
            foreign: 2,
            reruns: 3,
            ..DeviceCounts::default()
        };
        let status = RolloutStatus {
            phase: Some(RolloutPhase::Complete),
            current_wave: 1,
            waves: vec![WaveStatus {
                number: 1,
                counts: counts.clone(),
                ..WaveStatus::default()
            }],
            totals: counts,
            pause: Some(crate::api::rollout::PauseInfo {
                reason: "FailureThresholdExceeded".into(),
                since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                generation: None,
            }),
            ..RolloutStatus::default()
        };
        let tally = HashMap::from([("INSTALL_ERROR", 2)]);
        m.observe("ns", "r", &status, ForeignManifests::Notify, &tally);
        m.notifications
            .with_label_values(&["ns", "r", "written"])
            .inc_by(10);
        m.success_records
            .with_label_values(&["ns", "r", "written"])
            .inc_by(4);
        let text = render(&registry);
        for line in [
            r#"otau_rollout_devices{namespace="ns",rollout="r",state="succeeded",wave="1"} 8"#,
            r#"otau_rollout_devices{namespace="ns",rollout="r",state="busy",wave="1"} 1"#,
            r#"otau_rollout_devices{namespace="ns",rollout="r",state="foreign",wave="1"} 2"#,
            r#"otau_rollout_devices{namespace="ns",rollout="r",state="reruns",wave="1"} 3"#,
            r#"otau_rollout_devices{namespace="ns",rollout="r",state="foreign_skipped",wave="1"} 0"#,
            r#"otau_rollout_success_ratio{namespace="ns",rollout="r"} 0.8"#,
            r#"otau_rollout_phase{namespace="ns",phase="Complete",rollout="r"} 1"#,
            r#"otau_rollout_phase{namespace="ns",phase="Paused",rollout="r"} 0"#,
            r#"otau_rollout_paused{namespace="ns",reason="FailureThresholdExceeded",rollout="r"} 1"#,
            r#"otau_rollout_paused{namespace="ns",reason="PausedByUser",rollout="r"} 0"#,
            r#"otau_rollout_device_failures{namespace="ns",rollout="r",status="INSTALL_ERROR"} 2"#,
            r#"otau_rollout_notifications_total{namespace="ns",result="written",rollout="r"} 10"#,
            r#"otau_rollout_success_records_total{namespace="ns",result="written",rollout="r"} 4"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
        // Under Skip the foreign devices are finished.
        m.observe("ns", "r", &status, ForeignManifests::Skip, &tally);
        let skipped = r#"otau_rollout_devices{namespace="ns",rollout="r",state="foreign_skipped",wave="1"} 2"#;
        let text = render(&registry);
        assert!(text.contains(skipped), "{skipped} missing in\n{text}");
        m.forget("ns", "r");
        let text = render(&registry);
        assert!(!text.contains(r#"rollout="r""#), "left over:\n{text}");
    }

    fn render(registry: &Registry) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encode");
        String::from_utf8(out).expect("utf8")
    }
}
