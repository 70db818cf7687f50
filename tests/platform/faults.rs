//! Robustness against the emulator's fault injection: retries on 5xx and dropped connections,
//! `Retry-After`, the client-side rate limit, timeouts. Timing is checked from the emulator's
//! request log (server-side timestamps), never from sleeps in the test.

use std::time::Duration;

use otau_operator::emulator::faults::{FaultConfig, FaultRule};
use otau_operator::platform::{Platform, PlatformError, RateLimit, RetryPolicy};

use crate::harness::{Emu, MTOKEN};

fn rule(route: &str, tweak: impl FnOnce(&mut FaultRule)) -> FaultConfig {
    let mut r = FaultRule::new(route);
    tweak(&mut r);
    FaultConfig {
        seed: 42,
        rules: vec![r],
        rate_limit: None,
    }
}

fn patient(emu: &Emu) -> otau_operator::platform::ClientConfig {
    let mut c = emu.config(MTOKEN);
    c.retry = RetryPolicy {
        max_tries: 8,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
    };
    c
}

/// 30 % 503 and 10 % dropped connections on the state route: every read still succeeds.
#[tokio::test]
async fn retries_on_5xx_and_dropped_connections_succeed() {
    let emu = Emu::start().await;
    emu.conn()
        .add_identity("d1", Default::default())
        .expect("add");
    emu.set_faults(rule("device2.state", |r| {
        r.error_rate = 0.3;
        r.drop_rate = 0.1;
    }));
    let client = emu.client_with(patient(&emu), None);
    for _ in 0..20 {
        client
            .identity_state("d1")
            .await
            .expect("retried to success");
    }
    let log = emu.log();
    let failed = log.iter().filter(|l| l.status == 503).count();
    assert!(failed > 0, "faults were injected");
    let ok = log.iter().filter(|l| l.status == 200).count();
    assert_eq!(ok, 20);
    let counts = emu.faults.counts();
    assert!(
        counts
            .kinds()
            .iter()
            .any(|(k, n)| k.contains("drop") && *n > 0),
        "{counts:?}"
    );
}

/// No request is sent before a `Retry-After` expires: after every 429 the next request
/// reaches the emulator at least `Retry-After` later.
#[tokio::test]
async fn retry_after_is_respected() {
    let emu = Emu::start().await;
    emu.conn()
        .add_identity("d1", Default::default())
        .expect("add");
    emu.set_faults(rule("device2.state", |r| {
        r.throttle_rate = 0.4;
        r.retry_after_secs = 1;
    }));
    let client = emu.client_with(patient(&emu), None);
    for _ in 0..5 {
        client
            .identity_state("d1")
            .await
            .expect("succeeds after waiting");
    }
    let mut log = emu.log();
    log.sort_by_key(|l| l.received);
    let throttled: Vec<_> = log.iter().filter(|l| l.status == 429).collect();
    assert!(!throttled.is_empty(), "the fault was injected");
    for t in &throttled {
        assert_eq!(t.retry_after.as_deref(), Some("1"));
        let next = log
            .iter()
            .find(|l| l.received > t.answered)
            .expect("a request after the 429");
        let gap = next.received - t.answered;
        assert!(
            gap >= Duration::from_secs(1),
            "a request came {gap:?} after a 429 with Retry-After: 1"
        );
    }
}

/// Still throttled after the allowed tries: `RateLimited` carrying the `Retry-After`.
#[tokio::test]
async fn persistent_429_is_rate_limited() {
    let emu = Emu::start().await;
    emu.set_faults(rule("device2.settings", |r| {
        r.throttle_rate = 1.0;
        r.retry_after_secs = 1;
    }));
    let mut config = emu.config(MTOKEN);
    config.retry.max_tries = 2;
    let err = emu
        .client_with(config, None)
        .check_credentials()
        .await
        .expect_err("throttled");
    assert_eq!(
        err,
        PlatformError::RateLimited {
            operation: "device2.settings",
            retry_after: Some(Duration::from_secs(1)),
        }
    );
    assert!(err.is_transient());
    let settings: Vec<_> = emu.log().into_iter().filter(|l| l.status == 429).collect();
    assert_eq!(settings.len(), 2, "two tries");
    assert!(settings[1].received - settings[0].answered >= Duration::from_secs(1));
}

/// The client-side token bucket (20/s, burst 5) holds across 45 concurrent calls: in every
/// one-second window of server arrival times at most burst + rate requests.
#[tokio::test]
async fn client_rate_limit_holds() {
    let emu = Emu::start().await;
    emu.conn()
        .add_identity("d1", Default::default())
        .expect("add");
    let mut config = emu.config(MTOKEN);
    config.rate_limit = RateLimit {
        per_second: 20.0,
        burst: 5,
    };
    let client = emu.client_with(config, None);
    let calls = (0..45).map(|_| {
        let c = client.clone();
        async move { c.identity_state("d1").await }
    });
    for r in futures::future::join_all(calls).await {
        r.expect("state");
    }
    let mut times: Vec<_> = emu.log().into_iter().map(|l| l.received).collect();
    times.sort();
    assert_eq!(times.len(), 45);
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(1))
            .count();
        // 5 + 20, plus one for arrival jitter on loopback.
        assert!(in_window <= 26, "{in_window} requests within one second");
    }
    // 40 requests beyond the burst at 20/s span at least ~2 s of arrivals.
    let span = *times.last().expect("last") - times[0];
    assert!(span >= Duration::from_millis(1800), "span {span:?}");
}

/// A route slower than the request timeout: `Unavailable` naming the timeout, after the tries.
#[tokio::test]
async fn timeouts_are_unavailable_after_retries() {
    let emu = Emu::start().await;
    emu.set_faults(rule("device2.settings", |r| r.latency_ms = 400));
    let mut config = emu.config(MTOKEN);
    config.request_timeout = Duration::from_millis(100);
    config.retry.max_tries = 2;
    let err = emu
        .client_with(config, None)
        .check_credentials()
        .await
        .expect_err("times out");
    assert!(matches!(err, PlatformError::Unavailable { .. }), "{err:?}");
    assert!(err.to_string().contains("no answer within"), "{err}");
    assert!(err.is_transient());
}
