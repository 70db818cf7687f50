//! `Retry-After` parsing, and the gate that holds every request of a connector until a
//! `Retry-After` has expired. The delay between tries without a `Retry-After` is
//! [`RetryPolicy::backoff`](super::RetryPolicy::backoff) (`super::backoff`).

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Parses a `Retry-After` value: delay seconds (`120`, also `1.5`) or an HTTP-date, which is
/// turned into the time left from `now` (zero when it is already past). `None` when it is
/// neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
        return None;
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Holds every request until the latest `Retry-After` of the connector has expired.
#[derive(Debug, Default)]
pub struct RetryAfterGate {
    not_before: Mutex<Option<Instant>>,
}

impl RetryAfterGate {
    /// Nothing is sent before `until` (a later `until` from another answer wins).
    pub fn block_until(&self, until: Instant) {
        let mut guard = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    /// The time before which nothing may be sent, if any.
    pub fn pending_until(&self) -> Option<Instant> {
        *self.not_before.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no `Retry-After` is pending.
    pub async fn wait(&self) {
        loop {
            let until = *self.not_before.lock().unwrap_or_else(|e| e.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[tokio::test]
    async fn gate_keeps_the_latest_deadline() {
        let gate = RetryAfterGate::default();
        assert_eq!(gate.pending_until(), None);
        let start = Instant::now();
        gate.block_until(start + Duration::from_secs(5));
        gate.block_until(start + Duration::from_secs(2));
        assert_eq!(gate.pending_until(), Some(start + Duration::from_secs(5)));
        // A deadline in the past does not hold anything.
        let past = RetryAfterGate::default();
        past.block_until(start);
        tokio::time::timeout(Duration::from_secs(5), past.wait())
            .await
            .expect("an expired gate lets requests through");
    }
}
