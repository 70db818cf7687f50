//! Push: with the poll interval far longer than the test, only pushed device2 events can
//! bring the devices' final reports into the Rollout's status; a request with a bad signature
//! or for an unknown product id is refused with 401 and changes nothing.

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::controller::push::signature;

use crate::harness::{
    CID, Emu, Operator, VERSION, WEBHOOK_KEY, apply, base_yaml, has, metric_value, profile,
    rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_reports_complete_a_rollout_and_bad_signatures_are_refused() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("e2e-push").await;
    let mut emu = Emu::start(&profile(41, &[("dev-", 20, "")])).await;
    // One listing at the start (to learn the devices), then none within the test.
    let op = Operator::start_push_only(cp, &ns).await;
    emu.push_to(op.push_addr, WEBHOOK_KEY);
    apply(cp, &ns, &base_yaml(&emu));
    apply(
        cp,
        &ns,
        &rollout_yaml("fw-push", "  waves:\n    - percent: 100\n"),
    );
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let r = wait_rollout(&api, "fw-push", "Complete by push", |r| {
        has(r, "Complete", "True", "AllWavesSucceeded")
    })
    .await;
    let status = r.status.clone().expect("status");
    assert_eq!(status.totals.succeeded, 20);
    let metrics = op.metrics().await;
    let listings = metric_value(&metrics, r#"otau_device_listings_total{outcome="success"}"#);
    assert_eq!(listings, Some(1.0), "only the first listing ran");
    let pushed = metric_value(
        &metrics,
        &format!(
            r#"otau_rollout_reports_total{{namespace="{ns}",rollout="fw-push",source="push"}}"#
        ),
    )
    .unwrap_or(0.0);
    assert!(pushed >= 20.0, "{pushed} pushed reports");

    // A forged final report with a bad signature: 401, status unchanged.
    let body = serde_json::json!({
        "type": "data_in",
        "identity": "dev-000000",
        "timestamp": 4_102_444_800_000_000i64,
        "ip": "",
        "connection_id": "forged",
        "payload": [{
            "values": {"otau_in": format!(r#"{{"version":"{VERSION}","status":"INSTALL_ERROR","message":"forged"}}"#)},
            "timestamp": 4_102_444_800_000_000i64,
        }],
    })
    .to_string();
    let url = format!("http://{}/hooks/device2?connector={CID}", op.push_addr);
    let http = reqwest::Client::new();
    let send = |sig: Option<String>| {
        let mut req = http.post(&url).body(body.clone());
        if let Some(s) = sig {
            req = req.header("X-Otau-Signature", s);
        }
        req.send()
    };
    let wrong = send(Some(signature(b"not-the-key", body.as_bytes())))
        .await
        .expect("POST");
    assert_eq!(wrong.status().as_u16(), 401);
    let missing = send(None).await.expect("POST");
    assert_eq!(missing.status().as_u16(), 401);
    let unknown = http
        .post(format!(
            "http://{}/hooks/device2?connector=nosuchcid",
            op.push_addr
        ))
        .header(
            "X-Otau-Signature",
            signature(WEBHOOK_KEY.as_bytes(), body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .expect("POST");
    assert_eq!(
        unknown.status().as_u16(),
        401,
        "an unknown product id answers as a bad signature"
    );
    let garbage = "not json";
    let unparsable = http
        .post(&url)
        .header(
            "X-Otau-Signature",
            signature(WEBHOOK_KEY.as_bytes(), garbage.as_bytes()),
        )
        .body(garbage)
        .send()
        .await
        .expect("POST");
    assert_eq!(unparsable.status().as_u16(), 400);
    // Let any (wrongly) triggered reconcile run: a correctly signed no-op event is accepted
    // and reconciles the same Rollout, after which the status must still be the same.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64;
    let noop = serde_json::json!({"type": "connect", "identity": "dev-000000", "timestamp": now, "payload": []})
        .to_string();
    let accepted = http
        .post(&url)
        .header(
            "X-Otau-Signature",
            signature(WEBHOOK_KEY.as_bytes(), noop.as_bytes()),
        )
        .body(noop)
        .send()
        .await
        .expect("POST");
    assert_eq!(accepted.status().as_u16(), 204);
    let after = api.get("fw-push").await.expect("get");
    let after = after.status.expect("status");
    assert_eq!(after.totals, status.totals);
    assert!(after.recent_failures.is_empty());
}
