//! Per-route request counting: the middleware that counts every request by route, method and
//! status and times it, for `/admin/requests` (JSON) and `/metrics` (Prometheus).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde::Serialize;

use crate::emulator::faults::RouteInfo;
use crate::emulator::server::CloseConnection;

/// Status label of requests whose connection was closed without a response.
pub const CLOSED_STATUS: &str = "closed";

/// Latency histogram buckets, seconds: 1 ms to 5 min (long polls last up to 300 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

/// Counts and timings of one route.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteTally {
    /// Requests answered (or closed).
    pub count: u64,
    /// Count per status code (`closed` for dropped connections).
    pub by_status: BTreeMap<String, u64>,
    /// Count per HTTP method.
    pub by_method: BTreeMap<String, u64>,
    /// Sum of handling times, ms.
    pub total_ms: f64,
    /// Mean handling time, ms.
    pub mean_ms: f64,
    /// Longest handling time, ms.
    pub max_ms: f64,
}

/// What `GET /admin/requests` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestsReport {
    /// Requests over all routes.
    pub total: u64,
    /// Tally per route name.
    pub routes: BTreeMap<String, RouteTally>,
}

/// The request counters, in Prometheus form and as plain tallies.
#[derive(Debug)]
pub struct RequestMetrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    tallies: Mutex<BTreeMap<&'static str, RouteTally>>,
}

impl RequestMetrics {
    /// New, empty counters registered in a fresh registry (prefix `otau_emulator_`), with the
    /// process collector (CPU, resident memory) where the platform has one.
    pub fn new() -> Arc<RequestMetrics> {
        let registry = Registry::new_custom(Some("otau_emulator".into()), None).unwrap_or_default();
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )
        .unwrap_or_else(|e| unreachable!("static metric options are valid: {e}"));
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request to response by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("static metric options are valid: {e}"));
        // Registering fresh collectors in a fresh registry cannot collide.
        let _ = registry.register(Box::new(requests.clone()));
        let _ = registry.register(Box::new(latency.clone()));
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        Arc::new(RequestMetrics {
            registry,
            requests,
            latency,
            tallies: Mutex::new(BTreeMap::new()),
        })
    }

    /// The registry holding the live request metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one finished request.
    pub fn record(&self, route: &'static str, method: &str, status: &str, elapsed_secs: f64) {
        self.requests
            .with_label_values(&[route, method, status])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed_secs);
        let ms = elapsed_secs * 1000.0;
        let mut tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        let t = tallies.entry(route).or_default();
        t.count += 1;
        *t.by_status.entry(status.to_string()).or_default() += 1;
        *t.by_method.entry(method.to_string()).or_default() += 1;
        t.total_ms += ms;
        t.max_ms = t.max_ms.max(ms);
        t.mean_ms = t.total_ms / t.count as f64;
    }

    /// The tallies now.
    pub fn report(&self) -> RequestsReport {
        let tallies = self.tallies.lock().unwrap_or_else(|e| e.into_inner());
        RequestsReport {
            total: tallies.values().map(|t| t.count).sum(),
            routes: tallies
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    /// Clears the JSON tallies (between benchmark phases). Prometheus counters keep counting,
    /// as counters must.
    pub fn reset_tallies(&self) {
        self.tallies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The counting middleware: put it outermost, so injected faults are counted too.
pub async fn count_requests(
    State(metrics): State<Arc<RequestMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let route = RouteInfo::of(&req);
    let started = Instant::now();
    let resp = next.run(req).await;
    let status = if resp.extensions().get::<CloseConnection>().is_some() {
        CLOSED_STATUS.to_string()
    } else {
        resp.status().as_u16().to_string()
    };
    metrics.record(
        route.name,
        route.method.as_str(),
        &status,
        started.elapsed().as_secs_f64(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_and_time_per_route() {
        let m = RequestMetrics::new();
        m.record("device2.state", "PATCH", "204", 0.002);
        m.record("device2.state", "PATCH", "503", 0.004);
        m.record("device.write", "POST", CLOSED_STATUS, 0.001);
        let r = m.report();
        assert_eq!(r.total, 3);
        let s = &r.routes["device2.state"];
        assert_eq!(s.count, 2);
        assert_eq!(s.by_status["204"], 1);
        assert_eq!(s.by_status["503"], 1);
        assert!((s.mean_ms - 3.0).abs() < 1e-9 && (s.max_ms - 4.0).abs() < 1e-9);
        assert_eq!(r.routes["device.write"].by_status[CLOSED_STATUS], 1);
        m.reset_tallies();
        assert_eq!(m.report().total, 0);
    }
}
