//! The command-line form of the fault setting.

use super::{FaultConfig, FaultConfigError, FaultRule, RateLimit};

/// Fault-injection flags of `otau-operator emulator` (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct FaultArgs {
    /// A fault rule (repeatable): `[METHOD ]ROUTE:KEY=VALUE[,KEY=VALUE...]`. ROUTE is `*`
    /// (every management route), a route name such as `device2.state`, `content.upload` or
    /// `mqtt.publish` (MQTT: `mqtt.connect`, `mqtt.publish`, `mqtt.deliver`), a prefix such as
    /// `device2.*`, or a path prefix such as `/api:1/service/`. KEYs: error_rate,
    /// error_status, throttle_rate, retry_after_secs, latency_ms, drop_rate. Example:
    /// `--fault 'PATCH device2.state:error_rate=0.1,latency_ms=200'`.
    #[arg(long = "fault", value_name = "RULE")]
    pub fault: Vec<String>,
    /// Seed of the fault RNG (same seed, same request sequence: same faults).
    #[arg(long = "fault-seed", value_name = "N", default_value_t = 1)]
    pub fault_seed: u64,
    /// Rate limit per connector and API: `PER_SECOND[/BURST]` (burst defaults to the rate,
    /// at least 1). Excess requests get `429` with `Retry-After`.
    #[arg(long = "rate-limit", value_name = "PER_SECOND[/BURST]")]
    pub rate_limit: Option<String>,
}

impl FaultArgs {
    /// The fault setting these flags describe, validated.
    pub fn to_config(&self) -> Result<FaultConfig, FaultConfigError> {
        let config = FaultConfig {
            seed: self.fault_seed,
            rules: self
                .fault
                .iter()
                .map(|s| parse_rule(s))
                .collect::<Result<_, _>>()?,
            rate_limit: self
                .rate_limit
                .as_deref()
                .map(parse_rate_limit)
                .transpose()?,
        };
        config.validate()?;
        Ok(config)
    }
}

fn flag_error(flag: &'static str, value: &str, reason: impl Into<String>) -> FaultConfigError {
    FaultConfigError::BadFlag {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Parses `[METHOD ]ROUTE:KEY=VALUE,...`. The route ends at the last `:` before the first `=`,
/// so path prefixes such as `/api:1/` keep their colon.
pub fn parse_rule(spec: &str) -> Result<FaultRule, FaultConfigError> {
    let err = |reason: String| flag_error("--fault", spec, reason);
    let first_eq = spec
        .find('=')
        .ok_or_else(|| err("expected ROUTE:KEY=VALUE[,KEY=VALUE...]".into()))?;
    let colon = spec[..first_eq]
        .rfind(':')
        .ok_or_else(|| err("expected ROUTE:KEY=VALUE[,KEY=VALUE...]".into()))?;
    let (route, settings) = (spec[..colon].trim(), &spec[colon + 1..]);
    if route.is_empty() {
        return Err(err("the route is empty".into()));
    }
    let mut rule = FaultRule::new(route);
    for pair in settings.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| err(format!("{pair:?} is not KEY=VALUE")))?;
        let (key, value) = (key.trim(), value.trim());
        let rate = || {
            value
                .parse::<f64>()
                .map_err(|_| err(format!("{key}: {value:?} is not a number")))
        };
        let int = || {
            value
                .parse::<u64>()
                .map_err(|_| err(format!("{key}: {value:?} is not a whole number")))
        };
        match key {
            "error_rate" => rule.error_rate = rate()?,
            "throttle_rate" => rule.throttle_rate = rate()?,
            "drop_rate" => rule.drop_rate = rate()?,
            "latency_ms" => rule.latency_ms = int()?,
            "retry_after_secs" => rule.retry_after_secs = int()?,
            "error_status" => {
                rule.error_status = u16::try_from(int()?)
                    .map_err(|_| err(format!("error_status {value} is not an HTTP status")))?
            }
            other => {
                return Err(err(format!(
                    "unknown key {other:?} (known: error_rate, error_status, throttle_rate, \
                     retry_after_secs, latency_ms, drop_rate)"
                )));
            }
        }
    }
    Ok(rule)
}

/// Parses `PER_SECOND[/BURST]`.
pub fn parse_rate_limit(spec: &str) -> Result<RateLimit, FaultConfigError> {
    let err = |reason: &str| flag_error("--rate-limit", spec, reason);
    let (rate, burst) = match spec.split_once('/') {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (spec.trim(), None),
    };
    let per_second: f64 = rate
        .parse()
        .map_err(|_| err("PER_SECOND must be a number, as in 10 or 0.5"))?;
    let burst = match burst {
        Some(b) => b
            .parse::<u32>()
            .map_err(|_| err("BURST must be a whole number, as in 10/20"))?,
        None if per_second.is_finite() => (per_second.ceil() as u32).max(1),
        None => 1,
    };
    Ok(RateLimit { per_second, burst })
}
