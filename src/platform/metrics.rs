//! Prometheus metrics of the platform client (docs/architecture.md §9.7): per operation (a route
//! name, never a device or content id) and outcome (`success` or the error's `metric_label()`).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The client's collectors. Share one instance (in an `Arc`) between the connectors' clients.
#[derive(Debug, Clone)]
pub struct PlatformMetrics {
    /// `otau_platform_requests_total{operation, outcome}`: every HTTP attempt.
    pub requests: IntCounterVec,
    /// `otau_platform_request_duration_seconds{operation, outcome}`.
    pub duration: HistogramVec,
    /// `otau_platform_retries_total{operation, reason}`: retries scheduled.
    pub retries: IntCounterVec,
}

/// Outcome label of a successful attempt.
pub const OUTCOME_SUCCESS: &str = "success";

impl PlatformMetrics {
    /// Creates the collectors and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "otau_platform_requests_total",
                "HTTP requests to the Exosite platform, by operation and outcome.",
            ),
            &["operation", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "otau_platform_request_duration_seconds",
                "Duration of HTTP requests to the Exosite platform, by operation and outcome.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["operation", "outcome"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "otau_platform_retries_total",
                "Retries of platform requests, by operation and the reason for the retry.",
            ),
            &["operation", "reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        Ok(PlatformMetrics {
            requests,
            duration,
            retries,
        })
    }

    /// Records one attempt.
    pub fn observe(&self, operation: &str, outcome: &str, seconds: f64) {
        self.requests.with_label_values(&[operation, outcome]).inc();
        self.duration
            .with_label_values(&[operation, outcome])
            .observe(seconds);
    }

    /// Records one scheduled retry.
    pub fn retry(&self, operation: &str, reason: &str) {
        self.retries.with_label_values(&[operation, reason]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_counts() {
        let registry = Registry::new();
        let m = PlatformMetrics::register(&registry).expect("register");
        m.observe("device2.list", OUTCOME_SUCCESS, 0.01);
        m.observe("device2.list", "unavailable", 0.5);
        m.retry("device2.list", "unavailable");
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(names.contains(&"otau_platform_requests_total".to_string()));
        assert_eq!(
            m.requests
                .with_label_values(&["device2.list", "unavailable"])
                .get(),
            1
        );
        // Registering twice in one registry is refused, not duplicated.
        assert!(PlatformMetrics::register(&registry).is_err());
    }
}
