//! Fault injection and rate limiting (exosite-platform.md §8 `rate_limit`).
//!
//! Off by default. A [`FaultConfig`] holds rules, each for a route pattern, with an error rate
//! (5xx), a throttle rate (`429` + `Retry-After`), added latency and a dropped-connection rate;
//! and an optional token-bucket rate limit per connector and API. Decisions use a seeded
//! ChaCha RNG, so a sequence of requests meets the same faults on every run.
//!
//! Set it with flags ([`FaultArgs`]) at start or at run time with `PUT /admin/faults` (JSON
//! [`FaultConfig`]); apply it with [`apply`] on a router.
//!
//! Dropped connections: the middleware answers with the server's
//! [`CloseConnection`](crate::emulator::server::CloseConnection) marker; the emulator's accept
//! loop turns that into a failed request, and hyper closes the connection without writing a
//! response (the client sees the connection closed before any byte).

pub mod args;
mod layer;
mod rate_limit;
pub mod routes;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use args::FaultArgs;
pub use layer::{apply, inject};
use rate_limit::RateLimiter;
pub use routes::{Api, ROUTE_NAMES, RouteInfo, route_name};

/// The whole fault setting: what `GET /admin/faults` returns and `PUT /admin/faults` takes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Seed of the fault RNG; the same seed and request sequence give the same faults.
    #[serde(default)]
    pub seed: u64,
    /// Fault rules. Every rule whose route matches a request applies: latencies add up, and the
    /// first rule whose roll hits decides the request's fate.
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    /// Token-bucket rate limit per connector and API (flag `rate_limit`); `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// One fault rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `[METHOD ]PATTERN`: PATTERN is `*` (every management API route), a route name
    /// (`device2.state`, see [`ROUTE_NAMES`]), a name prefix (`device2.*`) or a path prefix
    /// (`/api:1/service/abc/`). Names and path prefixes may also target the device API,
    /// GraphQL or the object store; admin routes and `/metrics` are never touched. For example
    /// `PATCH device2.state`.
    pub route: String,
    /// Share of requests answered with `error_status`, 0 to 1.
    #[serde(default)]
    pub error_rate: f64,
    /// The 5xx status of injected errors.
    #[serde(default = "default_error_status")]
    pub error_status: u16,
    /// Share of requests answered `429 Too Many Requests`, 0 to 1.
    #[serde(default)]
    pub throttle_rate: f64,
    /// `Retry-After` seconds of injected `429`s.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Latency added to every matching request, ms.
    #[serde(default)]
    pub latency_ms: u64,
    /// Share of requests whose connection is closed without a response, 0 to 1.
    #[serde(default)]
    pub drop_rate: f64,
}

fn default_error_status() -> u16 {
    503
}

fn default_retry_after() -> u64 {
    1
}

impl FaultRule {
    /// A rule for `route` that injects nothing yet.
    pub fn new(route: impl Into<String>) -> Self {
        FaultRule {
            route: route.into(),
            error_rate: 0.0,
            error_status: default_error_status(),
            throttle_rate: 0.0,
            retry_after_secs: default_retry_after(),
            latency_ms: 0,
            drop_rate: 0.0,
        }
    }
}

/// A token bucket: `per_second` requests per second on average, bursts of `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Refill rate, requests per second (> 0).
    pub per_second: f64,
    /// Bucket size (≥ 1).
    pub burst: u32,
}

/// Why a fault setting cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultConfigError {
    /// A bad route pattern.
    #[error("fault rule route {route:?}: {reason}")]
    BadRoute {
        /// The pattern.
        route: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad number in a rule.
    #[error("fault rule {route:?}: {reason}")]
    BadRule {
        /// The rule's route.
        route: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad rate limit.
    #[error("rate limit: {0}")]
    BadRateLimit(String),
    /// A flag that cannot be parsed.
    #[error("{flag} {value:?}: {reason}")]
    BadFlag {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoutePattern {
    method: Option<Method>,
    target: PatternTarget,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternTarget {
    Any,
    Name(String),
    NamePrefix(String),
    PathPrefix(String),
}

impl RoutePattern {
    fn parse(text: &str) -> Result<Self, FaultConfigError> {
        let bad = |reason: String| FaultConfigError::BadRoute {
            route: text.to_string(),
            reason,
        };
        let text_trim = text.trim();
        let (method, pattern) = match text_trim.split_once(' ') {
            Some((m, rest)) => {
                let method = Method::from_bytes(m.as_bytes())
                    .ok()
                    .filter(|_| m.bytes().all(|b| b.is_ascii_uppercase()))
                    .ok_or_else(|| bad(format!("{m:?} is not an HTTP method like GET or PATCH")))?;
                (Some(method), rest.trim())
            }
            None => (None, text_trim),
        };
        let target = if pattern == "*" {
            PatternTarget::Any
        } else if pattern.starts_with('/') {
            PatternTarget::PathPrefix(pattern.to_string())
        } else if let Some(prefix) = pattern.strip_suffix(".*") {
            let dotted = format!("{prefix}.");
            if !ROUTE_NAMES.iter().any(|n| n.starts_with(&dotted)) {
                return Err(bad(format!(
                    "no route name starts with {dotted:?} (known: {})",
                    ROUTE_NAMES.join(", ")
                )));
            }
            PatternTarget::NamePrefix(dotted)
        } else if ROUTE_NAMES.contains(&pattern) {
            PatternTarget::Name(pattern.to_string())
        } else {
            return Err(bad(format!(
                "unknown route name (use `*`, a path prefix starting with `/`, `<prefix>.*` or one of: {})",
                ROUTE_NAMES.join(", ")
            )));
        };
        Ok(RoutePattern { method, target })
    }

    fn matches(&self, route: &RouteInfo) -> bool {
        if route.api == Api::Admin {
            return false;
        }
        if let Some(m) = &self.method
            && *m != route.method
        {
            return false;
        }
        match &self.target {
            PatternTarget::Any => route.api == Api::Management,
            PatternTarget::Name(n) => route.name == n,
            PatternTarget::NamePrefix(p) => route.name.starts_with(p.as_str()),
            PatternTarget::PathPrefix(p) => route.path.starts_with(p.as_str()),
        }
    }
}

impl FaultConfig {
    /// Checks every rule and the rate limit; errors name the rule and say what is wrong.
    pub fn validate(&self) -> Result<(), FaultConfigError> {
        for rule in &self.rules {
            RoutePattern::parse(&rule.route)?;
            let bad = |reason: String| FaultConfigError::BadRule {
                route: rule.route.clone(),
                reason,
            };
            for (name, rate) in [
                ("error_rate", rule.error_rate),
                ("throttle_rate", rule.throttle_rate),
                ("drop_rate", rule.drop_rate),
            ] {
                if !(0.0..=1.0).contains(&rate) {
                    return Err(bad(format!("{name} {rate} must be between 0 and 1")));
                }
            }
            let total = rule.error_rate + rule.throttle_rate + rule.drop_rate;
            if total > 1.0 + 1e-9 {
                return Err(bad(format!(
                    "error_rate + throttle_rate + drop_rate is {total}, more than 1"
                )));
            }
            if !(500..=599).contains(&rule.error_status) {
                return Err(bad(format!(
                    "error_status {} must be a 5xx status",
                    rule.error_status
                )));
            }
            if rule.latency_ms > 600_000 {
                return Err(bad(format!(
                    "latency_ms {} is over the 600000 ms limit",
                    rule.latency_ms
                )));
            }
        }
        if let Some(rl) = &self.rate_limit {
            if !(rl.per_second.is_finite() && rl.per_second > 0.0) {
                return Err(FaultConfigError::BadRateLimit(format!(
                    "per_second {} must be a number above 0",
                    rl.per_second
                )));
            }
            if rl.burst == 0 {
                return Err(FaultConfigError::BadRateLimit(
                    "burst must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether this setting injects nothing and limits nothing.
    pub fn is_off(&self) -> bool {
        self.rules.is_empty() && self.rate_limit.is_none()
    }
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Handle it normally.
    Pass,
    /// Close the connection without a response.
    Drop,
    /// Answer with this 5xx status.
    Error(u16),
    /// Answer `429` with `Retry-After` (a fault rule's throttle).
    Throttle {
        /// `Retry-After` seconds.
        retry_after_secs: u64,
    },
    /// Answer `429` with `Retry-After` (the rate limit's bucket is empty).
    RateLimited {
        /// `Retry-After` seconds.
        retry_after_secs: u64,
    },
}

/// The decision for one request: a delay, then an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Latency to add before the action.
    pub latency: Duration,
    /// What to do after the delay.
    pub action: Action,
}

/// Counts of injected faults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Requests that got added latency.
    pub delayed: u64,
    /// Connections dropped.
    pub dropped: u64,
    /// 5xx answers.
    pub errors: u64,
    /// 429 answers from fault rules.
    pub throttled: u64,
    /// 429 answers from the rate limit.
    pub rate_limited: u64,
}

impl FaultCounts {
    /// `(kind, count)` pairs for metrics.
    pub fn kinds(&self) -> [(&'static str, u64); 5] {
        [
            ("delayed", self.delayed),
            ("dropped", self.dropped),
            ("errors", self.errors),
            ("throttled", self.throttled),
            ("rate_limited", self.rate_limited),
        ]
    }
}

#[derive(Debug, Default)]
struct Counters {
    delayed: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    throttled: AtomicU64,
    rate_limited: AtomicU64,
}

#[derive(Debug)]
struct Active {
    config: FaultConfig,
    patterns: Vec<RoutePattern>,
    rng: ChaCha8Rng,
    limiter: Option<RateLimiter>,
}

impl Active {
    fn new(config: FaultConfig) -> Result<Self, FaultConfigError> {
        config.validate()?;
        let patterns = config
            .rules
            .iter()
            .map(|r| RoutePattern::parse(&r.route))
            .collect::<Result<_, _>>()?;
        Ok(Active {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            limiter: config.rate_limit.map(RateLimiter::new),
            patterns,
            config,
        })
    }
}

/// The live fault setting of a running emulator, shared by the middleware and the admin API.
#[derive(Debug)]
pub struct Faults {
    active: Mutex<Active>,
    counters: Counters,
}

impl Faults {
    /// Faults as `config` says (validated).
    pub fn new(config: FaultConfig) -> Result<Faults, FaultConfigError> {
        Ok(Faults {
            active: Mutex::new(Active::new(config)?),
            counters: Counters::default(),
        })
    }

    /// No faults, no rate limit.
    pub fn off() -> Faults {
        Faults {
            active: Mutex::new(Active {
                config: FaultConfig::default(),
                patterns: Vec::new(),
                rng: ChaCha8Rng::seed_from_u64(0),
                limiter: None,
            }),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current setting.
    pub fn config(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    /// Replaces the setting: the RNG restarts from the new seed and every rate-limit bucket
    /// starts full. An invalid setting leaves the current one in place.
    pub fn set_config(&self, config: FaultConfig) -> Result<(), FaultConfigError> {
        let next = Active::new(config)?;
        *self.lock() = next;
        Ok(())
    }

    /// Counts of faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FaultCounts {
            delayed: get(&self.counters.delayed),
            dropped: get(&self.counters.dropped),
            errors: get(&self.counters.errors),
            throttled: get(&self.counters.throttled),
            rate_limited: get(&self.counters.rate_limited),
        }
    }

    /// Decides the fate of one request (and counts it).
    pub fn decide(&self, route: &RouteInfo) -> Decision {
        let decision = {
            let mut guard = self.lock();
            let active = &mut *guard;
            decide_locked(active, route)
        };
        let bump = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        if !decision.latency.is_zero() {
            bump(&self.counters.delayed);
        }
        match decision.action {
            Action::Pass => {}
            Action::Drop => bump(&self.counters.dropped),
            Action::Error(_) => bump(&self.counters.errors),
            Action::Throttle { .. } => bump(&self.counters.throttled),
            Action::RateLimited { .. } => bump(&self.counters.rate_limited),
        }
        decision
    }
}

fn decide_locked(active: &mut Active, route: &RouteInfo) -> Decision {
    let pass = Decision {
        latency: Duration::ZERO,
        action: Action::Pass,
    };
    if route.api == Api::Admin {
        return pass;
    }
    if let Some(limiter) = &mut active.limiter
        && route.api != Api::Mqtt
        && let Err(retry_after_secs) = limiter.take(route.api, route.connector.as_deref())
    {
        return Decision {
            latency: Duration::ZERO,
            action: Action::RateLimited { retry_after_secs },
        };
    }
    let mut decision = pass;
    for (rule, pattern) in active.config.rules.iter().zip(&active.patterns) {
        if !pattern.matches(route) {
            continue;
        }
        decision.latency += Duration::from_millis(rule.latency_ms);
        if decision.action != Action::Pass {
            continue;
        }
        if rule.drop_rate + rule.error_rate + rule.throttle_rate <= 0.0 {
            continue;
        }
        let roll: f64 = active.rng.random();
        decision.action = if roll < rule.drop_rate {
            Action::Drop
        } else if roll < rule.drop_rate + rule.error_rate {
            Action::Error(rule.error_status)
        } else if roll < rule.drop_rate + rule.error_rate + rule.throttle_rate {
            Action::Throttle {
                retry_after_secs: rule.retry_after_secs,
            }
        } else {
            Action::Pass
        };
    }
    decision
}

#[cfg(test)]
mod tests;
