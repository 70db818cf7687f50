//! Fault injection on the management API and the `rate_limit` setting
//! (exosite-platform.md §8) over real loopback HTTP.

use std::time::{Duration, Instant};

use otau_operator::emulator::faults::{FaultConfig, FaultRule, RateLimit};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::admin::EdgeEmu;

fn config(rules: Vec<FaultRule>) -> FaultConfig {
    FaultConfig {
        seed: 7,
        rules,
        rate_limit: None,
    }
}

fn rule(route: &str, tweak: impl FnOnce(&mut FaultRule)) -> FaultRule {
    let mut r = FaultRule::new(route);
    tweak(&mut r);
    r
}

async fn state_get(emu: &EdgeEmu) -> reqwest::Response {
    emu.device2(Method::GET, "/identity/d1/state")
        .send()
        .await
        .unwrap()
}

async fn state_patch(emu: &EdgeEmu) -> reqwest::Result<reqwest::Response> {
    emu.device2(Method::PATCH, "/identity/d1/state")
        .json(&json!({"config_otau": "{\"version\":\"1\"}"}))
        .send()
        .await
}

/// An error rate of 1 on `PATCH device2.state` answers the configured 5xx with the
/// management API's error body; other methods and routes are untouched.
#[tokio::test]
async fn error_rate_answers_5xx_on_the_named_route_only() {
    let emu = EdgeEmu::start_with(
        config(vec![rule("PATCH device2.state", |r| {
            r.error_rate = 1.0;
            r.error_status = 502;
        })]),
        None,
    )
    .await;
    emu.device("d1");
    let r = state_patch(&emu).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["statusCode"], 502);
    assert!(body["message"].as_str().unwrap().contains("device2.state"));
    assert!(
        emu.conn().ground_truth("d1").is_empty(),
        "the faulted write never reached the model"
    );
    assert_eq!(state_get(&emu).await.status(), StatusCode::OK);
    assert_eq!(emu.faults.counts().errors, 1);
}

/// Throttling answers `429` with `Retry-After` seconds.
#[tokio::test]
async fn throttle_answers_429_with_retry_after() {
    let emu = EdgeEmu::start_with(
        config(vec![rule("content.*", |r| {
            r.throttle_rate = 1.0;
            r.retry_after_secs = 7;
        })]),
        None,
    )
    .await;
    let r = emu
        .req(
            Method::GET,
            &format!("/api:1/service/{}/content/item", crate::admin::CID),
        )
        .header("authorization", format!("token {}", crate::admin::MTOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
}

/// Added latency delays the answer by at least the configured time.
#[tokio::test]
async fn latency_is_added() {
    let emu = EdgeEmu::start_with(
        config(vec![rule("device2.state", |r| r.latency_ms = 300)]),
        None,
    )
    .await;
    emu.device("d1");
    let started = Instant::now();
    assert_eq!(state_get(&emu).await.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(emu.faults.counts().delayed, 1);
}

/// A dropped connection closes without a response (the client sees a transport error),
/// and the request counts as `closed` in the ground truth.
#[tokio::test]
async fn dropped_connections_close_without_response() {
    let emu = EdgeEmu::start_with(
        config(vec![rule("device2.state", |r| r.drop_rate = 1.0)]),
        None,
    )
    .await;
    emu.device("d1");
    let err = state_patch(&emu).await.expect_err("no response expected");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    let (_, v) = emu.get_json("/admin/requests").await;
    assert_eq!(
        v["routes"]["device2.state"]["by_status"]["closed"], 1,
        "{v}"
    );
    // The server still serves other requests.
    assert_eq!(
        emu.device2(Method::GET, "").send().await.unwrap().status(),
        StatusCode::OK
    );
}

/// Off by default, set at run time with `PUT /admin/faults`, read back with `GET`;
/// a bad setting is refused with a clear message; admin routes are never faulted.
#[tokio::test]
async fn faults_are_set_at_run_time_through_admin() {
    let emu = EdgeEmu::start().await;
    emu.device("d1");
    assert!(state_patch(&emu).await.unwrap().status().is_success());
    let (_, v) = emu.get_json("/admin/faults").await;
    assert_eq!(v["config"]["rules"], json!([]));

    let setting = json!({"seed": 1, "rules": [{"route": "*", "error_rate": 1.0}]});
    let r = emu
        .req(Method::PUT, "/admin/faults")
        .json(&setting)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        state_patch(&emu).await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, v) = emu.get_json("/admin/faults").await;
    assert_eq!(status, StatusCode::OK, "admin is never faulted");
    assert_eq!(v["config"]["rules"][0]["route"], "*");
    assert_eq!(v["config"]["rules"][0]["error_status"], 503);
    assert_eq!(v["counts"]["errors"], 1);

    let r = emu
        .req(Method::PUT, "/admin/faults")
        .json(&json!({"rules": [{"route": "device2.nope", "error_rate": 1.0}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("device2.nope"),
        "{body}"
    );
    let r = emu
        .req(Method::PUT, "/admin/faults")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let r = emu
        .req(Method::PUT, "/admin/faults")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(state_patch(&emu).await.unwrap().status().is_success());
}

/// Seeded RNG: the same seed gives the same fault sequence for the same requests.
#[tokio::test]
async fn the_same_seed_repeats_the_same_faults() {
    let emu = EdgeEmu::start().await;
    emu.device("d1");
    let setting = json!({"seed": 99, "rules": [{"route": "GET device2.state", "error_rate": 0.5}]});
    let mut runs = Vec::new();
    for _ in 0..2 {
        let r = emu
            .req(Method::PUT, "/admin/faults")
            .json(&setting)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(state_get(&emu).await.status().as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let errors = runs[0].iter().filter(|s| **s == 503).count();
    assert!((5..=25).contains(&errors), "about half fail: {:?}", runs[0]);
}

/// §8 `rate_limit`: a token bucket per connector and API; excess requests answer `429` with
/// `Retry-After`, other APIs keep their own bucket.
#[tokio::test]
async fn rate_limit_answers_429_with_retry_after_per_api() {
    let emu = EdgeEmu::start_with(
        FaultConfig {
            seed: 0,
            rules: Vec::new(),
            rate_limit: Some(RateLimit {
                per_second: 0.01,
                burst: 2,
            }),
        },
        None,
    )
    .await;
    emu.device("d1");
    assert_eq!(state_get(&emu).await.status(), StatusCode::OK);
    assert_eq!(state_get(&emu).await.status(), StatusCode::OK);
    let r = state_get(&emu).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    // The device API has its own bucket.
    let r = emu.req(Method::GET, "/timestamp").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(emu.faults.counts().rate_limited, 1);
}
