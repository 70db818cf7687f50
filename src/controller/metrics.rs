//! The operator's Prometheus metrics (docs/architecture.md §9.7): reconcile counts, errors and
//! durations per controller, the management token's remaining lifetime per connector, build
//! information, the platform client's per-route metrics and process metrics, all in one
//! registry served at `/metrics`.

use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::net::server::ListenerMetrics;
use crate::platform::PlatformMetrics;

/// Controller label of the IoTConnector controller.
pub const CONNECTOR_CONTROLLER: &str = "iotconnector";
/// Controller label of the SoftwarePackage controller.
pub const PACKAGE_CONTROLLER: &str = "softwarepackage";

/// Every collector of the operator.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `otau_reconcile_total{controller, result}`: result is success, requeue or error.
    pub reconciles: IntCounterVec,
    /// `otau_reconcile_errors_total{controller, error}`.
    pub reconcile_errors: IntCounterVec,
    /// `otau_reconcile_duration_seconds{controller}`.
    pub reconcile_duration: HistogramVec,
    /// `otau_connector_token_ttl_seconds{namespace, connector}`.
    pub token_ttl: GaugeVec,
    /// `otau_build_info{version, git_sha}` = 1.
    pub build_info: IntGaugeVec,
    /// `otau_leader`: 1 while this replica holds the leader lease (always 1 without leader
    /// election), else 0.
    pub leader: IntGauge,
    /// The platform client's metrics, shared by every connector's client.
    pub platform: Arc<PlatformMetrics>,
    /// `otau_listener_refused_total{listener, reason}` and `otau_listener_connections{listener}`
    /// of the metrics and push listeners.
    pub listeners: ListenerMetrics,
}

impl Metrics {
    /// Creates and registers every collector in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "otau_reconcile_total",
                "Reconciles by controller and result (success, requeue, error).",
            ),
            &["controller", "result"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "otau_reconcile_errors_total",
                "Failed reconciles by controller and error class.",
            ),
            &["controller", "error"],
        )?;
        let reconcile_duration = HistogramVec::new(
            HistogramOpts::new(
                "otau_reconcile_duration_seconds",
                "Duration of reconciles by controller.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["controller"],
        )?;
        let token_ttl = GaugeVec::new(
            Opts::new(
                "otau_connector_token_ttl_seconds",
                "Seconds the connector's management token had left at the last check.",
            ),
            &["namespace", "connector"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("otau_build_info", "Build information; always 1."),
            &["version", "git_sha"],
        )?;
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("OTAU_GIT_SHA").unwrap_or("unknown"),
            ])
            .set(1);
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(token_ttl.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        let leader = IntGauge::new(
            "otau_leader",
            "1 while this replica holds the leader lease and may write (1 without leader election), else 0.",
        )?;
        leader.set(1);
        registry.register(Box::new(leader.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let platform = Arc::new(PlatformMetrics::register(&registry)?);
        let listeners = ListenerMetrics::new("otau")?;
        listeners.register(&registry)?;
        Ok(Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            token_ttl,
            build_info,
            leader,
            platform,
            listeners,
        })
    }

    /// Records one finished reconcile.
    pub fn reconciled(&self, controller: &str, result: &str, seconds: f64) {
        self.reconciles
            .with_label_values(&[controller, result])
            .inc();
        self.reconcile_duration
            .with_label_values(&[controller])
            .observe(seconds);
    }

    /// Records one failed reconcile's error class.
    pub fn failed(&self, controller: &str, error: &str) {
        self.reconcile_errors
            .with_label_values(&[controller, error])
            .inc();
    }

    /// The registry, for collectors registered elsewhere (the Rollout controller's).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new().expect("metrics");
        m.reconciled(PACKAGE_CONTROLLER, "success", 0.2);
        m.failed(PACKAGE_CONTROLLER, "checksum_mismatch");
        m.token_ttl
            .with_label_values(&["default", "emulator"])
            .set(172800.0);
        m.platform.observe("content.info", "success", 0.01);
        let text = m.render().expect("render");
        for name in [
            "otau_reconcile_total",
            "otau_reconcile_errors_total",
            "otau_reconcile_duration_seconds",
            "otau_connector_token_ttl_seconds{connector=\"emulator\",namespace=\"default\"} 172800",
            "otau_build_info",
            "otau_platform_requests_total",
            "otau_leader 1",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
