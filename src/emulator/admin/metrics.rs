//! `/metrics` in Prometheus text: the live request counters and latency histogram, plus values
//! read at scrape time from the model, the fault counters and the webhook counters.
//!
//! | Metric | Labels |
//! |---|---|
//! | `otau_emulator_requests_total` | `route`, `method`, `status` |
//! | `otau_emulator_request_duration_seconds` (histogram) | `route` |
//! | `otau_emulator_config_otau_writes_total` | `connector` |
//! | `otau_emulator_webhook_deliveries_total` | `outcome` |
//! | `otau_emulator_faults_injected_total` | `kind` |
//! | `otau_emulator_devices` (gauge) | `connector`, `status` (whitelisted, provisioned, …) |
//! | `otau_emulator_devices_by_otau_status` (gauge) | `connector`, `otau_status` (last `otau_in` status; `none`, `malformed`, `unknown`) |
//! | `process_*` | CPU, resident memory (Linux) |
//!
//! The device gauges walk every identity at scrape time (one page of 1000 at a time): cheap
//! for test fleets, about a second per million devices.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, TextEncoder};

use super::AdminState;
use crate::emulator::model::{ListQuery, Model};
use crate::otau::OTAU_IN;
use crate::otau::Report;

const NAMESPACE: &str = "otau_emulator";
const PAGE: usize = 1000;

/// `GET /metrics`.
pub async fn render(State(state): State<AdminState>) -> Response {
    // The device walk can take a while on big fleets: keep it off the async workers.
    let text = tokio::task::spawn_blocking(move || encode(&state)).await;
    match text {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")).into_response(),
    }
}

/// The whole exposition text.
pub fn encode(state: &AdminState) -> Result<String, prometheus::Error> {
    let mut families = state.requests.registry().gather();
    families.extend(scrape_time_families(state)?);
    // A gauge with no series yet (no devices) is left out: the encoder refuses empty families.
    families.retain(|f| !f.get_metric().is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    TextEncoder::new().encode_to_string(&families)
}

fn counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, prometheus::Error> {
    IntGaugeVec::new(Opts::new(name, help).namespace(NAMESPACE), labels)
}

fn scrape_time_families(state: &AdminState) -> Result<Vec<MetricFamily>, prometheus::Error> {
    let mut out = Vec::new();

    let writes = counter_vec(
        "config_otau_writes_total",
        "Cloud writes of config_otau by connector",
        &["connector"],
    )?;
    for c in state.model.connectors() {
        let n: usize = c.ground_truth_all().values().map(Vec::len).sum();
        writes.with_label_values(&[c.id()]).inc_by(n as u64);
    }
    out.extend(writes.collect());

    if let Some(stats) = &state.webhook {
        let deliveries = counter_vec(
            "webhook_deliveries_total",
            "Webhook deliveries of device2 events by outcome",
            &["outcome"],
        )?;
        for (outcome, n) in stats.snapshot().outcomes() {
            deliveries.with_label_values(&[outcome]).inc_by(n);
        }
        out.extend(deliveries.collect());
    }

    let faults = counter_vec(
        "faults_injected_total",
        "Injected faults by kind",
        &["kind"],
    )?;
    for (kind, n) in state.faults.counts().kinds() {
        faults.with_label_values(&[kind]).inc_by(n);
    }
    out.extend(faults.collect());

    let by_status = gauge_vec("devices", "Identities by status", &["connector", "status"])?;
    let by_otau = gauge_vec(
        "devices_by_otau_status",
        "Identities by the status of their last otau_in report",
        &["connector", "otau_status"],
    )?;
    for (cid, counts) in device_counts(&state.model) {
        for (status, n) in counts.status {
            by_status.with_label_values(&[&cid, &status]).set(n);
        }
        for (status, n) in counts.otau {
            by_otau.with_label_values(&[&cid, &status]).set(n);
        }
    }
    out.extend(by_status.collect());
    out.extend(by_otau.collect());
    Ok(out)
}

/// Identity counts of one connector.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceCounts {
    /// By identity status.
    pub status: BTreeMap<String, i64>,
    /// By last `otau_in` status.
    pub otau: BTreeMap<String, i64>,
}

/// Counts identities of every connector by status and by last reported `otau_in` status.
/// Undocumented statuses count as `unknown`, so the label set stays small.
pub fn device_counts(model: &Model) -> BTreeMap<String, DeviceCounts> {
    let mut out = BTreeMap::new();
    for c in model.connectors() {
        let mut counts = DeviceCounts::default();
        let mut before = None;
        loop {
            let page = c.list_identities(&ListQuery {
                limit: Some(PAGE),
                before,
                ..Default::default()
            });
            for d in &page.devices {
                *counts.status.entry(d.status.clone()).or_default() += 1;
                let otau = match d.state.get(OTAU_IN).and_then(|s| s.reported.as_deref()) {
                    None => "none".to_string(),
                    Some(text) => match Report::parse(text) {
                        Ok(r) if r.status.is_known() => r.status.as_str().to_string(),
                        Ok(_) => "unknown".to_string(),
                        Err(_) => "malformed".to_string(),
                    },
                };
                *counts.otau.entry(otau).or_default() += 1;
            }
            match (page.may_load_more, page.devices.last()) {
                (true, Some(last)) => before = Some(last.created),
                _ => break,
            }
        }
        out.insert(c.id().to_string(), counts);
    }
    out
}
