//! Management API (exosite-platform.md §5) over real loopback HTTP; each test names the §9 item
//! it covers.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{CID, Emu, MTOKEN};

async fn json_of(r: reqwest::Response) -> Value {
    let status = r.status();
    let text = r.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {text:?} is not JSON: {e}"))
}

/// §9 Must: `POST /api:1/token/`, `GET` and `DELETE /api:1/token/<t>`, `Authorization: token`;
/// `401` with `{"statusCode", "message"}` otherwise.
#[tokio::test]
async fn token_login_check_revoke_and_401() {
    let emu = Emu::start().await;
    let r = emu
        .http
        .post(format!("{}/api:1/token/", emu.base))
        .json(&json!({"email": "user@example.com", "password": "secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = json_of(r).await["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 40);
    let r = emu
        .http
        .get(format!("{}/api:1/token/{token}", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(r).await,
        json!({"email": "user@example.com", "ttl": 172800})
    );
    // The new token works on device2.
    let r = emu
        .http
        .get(format!("{}/api:1/service/{CID}/device2", emu.base))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = emu
        .http
        .delete(format!("{}/api:1/token/{token}", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = emu
        .http
        .get(format!("{}/api:1/service/{CID}/device2", emu.base))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(r).await;
    assert_eq!(body["statusCode"], 401);
    assert!(body["message"].is_string());
    let r = emu
        .http
        .get(format!("{}/api:1/token/{token}", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = emu
        .http
        .post(format!("{}/api:1/token/", emu.base))
        .json(&json!({"email": "user@example.com", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = emu
        .http
        .get(format!(
            "{}/api:1/service/{CID}/device2/identity/",
            emu.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// §9 Should: `GET /device2` and `PATCH /device2` for settings and resources.
#[tokio::test]
async fn device2_settings_get_and_patch() {
    let emu = Emu::start().await;
    let s = json_of(emu.device2(Method::GET, "").send().await.unwrap()).await;
    assert_eq!(s["fqdn"], format!("{CID}.m2.exosite.io"));
    assert_eq!(s["resources"]["config_otau"]["settable"], true);
    assert_eq!(s["resources"]["otau_in"]["settable"], false);
    assert_eq!(s["provisioning"]["auth_type"], "token");
    let mut resources = s["resources"].clone();
    resources["data_out"] = json!({"format": "string", "settable": true});
    let r = emu
        .device2(Method::PATCH, "")
        .json(&json!({"resources": resources, "protocol": {"devmode": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let s = json_of(emu.device2(Method::GET, "").send().await.unwrap()).await;
    assert_eq!(s["resources"]["data_out"]["settable"], true);
    assert_eq!(s["protocol"]["devmode"], true);
    assert_eq!(s["protocol"]["name"], "onep:v1/http");
    emu.whitelist("d1").await;
    assert_eq!(
        emu.cloud_set("d1", "data_out", "x").await,
        StatusCode::NO_CONTENT
    );
    let r = emu
        .device2(Method::PATCH, "")
        .json(&json!({"protocol": {"devmode": "yes"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// §9 Must: the device2 identity routes with their exact JSON (add with tags, get, lock,
/// unlock, tags, credential revocation, remove, `404` for an unknown identity).
#[tokio::test]
async fn identity_add_get_lock_tags_revoke_remove() {
    let emu = Emu::start().await;
    let r = emu
        .device2(Method::PUT, "/identity/00AB01")
        .json(&json!({"auth": {"type": "token"}, "locked": false,
            "tags": [{"name": "region", "value": "eu"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = json_of(r).await;
    assert_eq!(id["identity"], "00AB01");
    assert_eq!(id["status"], "whitelisted");
    assert_eq!(id["auth"], json!({"type": "token"}));
    assert_eq!(id["tags"], json!([{"name": "region", "value": "eu"}]));
    for key in [
        "state",
        "locked",
        "reprovision",
        "devmode",
        "lastip",
        "lastseen",
        "online",
        "created",
    ] {
        assert!(id.get(key).is_some(), "identity object lacks {key}: {id}");
    }
    let token = {
        let r = emu
            .http
            .post(format!("{}/provision/activate", emu.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("id=00AB01")
            .send()
            .await
            .unwrap();
        r.text().await.unwrap()
    };
    let got = json_of(
        emu.device2(Method::GET, "/identity/00AB01")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got["status"], "provisioned");
    assert!(
        got["lastseen"].as_i64().unwrap() > 1_600_000_000_000_000,
        "µs"
    );
    // Lock: status locked, the device is refused.
    let r = emu
        .device2(Method::PATCH, "/identity/00AB01")
        .json(&json!({"locked": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["status"], "locked");
    let read = || {
        emu.dev(Method::GET, "/onep:v1/stack/alias?otau_in", &token)
            .send()
    };
    assert_eq!(read().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let r = emu
        .device2(Method::PATCH, "/identity/00AB01")
        .json(&json!({"locked": false, "tags": [{"name": "ring", "value": "canary"}, {"name": "ring", "value": "2"}]}))
        .send()
        .await
        .unwrap();
    let body = json_of(r).await;
    assert_eq!(body["status"], "provisioned");
    assert_eq!(
        body["tags"],
        json!([{"name": "ring", "value": "canary"}, {"name": "ring", "value": "2"}])
    );
    assert_eq!(read().await.unwrap().status(), StatusCode::NO_CONTENT);
    // Revoke credentials: old token refused, activation allowed again.
    let r = emu
        .device2(Method::PATCH, "/identity/00AB01")
        .json(&json!({"auth": {"expire": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await["status"], "reprovision");
    assert_eq!(read().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let r = emu
        .http
        .post(format!("{}/provision/activate", emu.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("id=00AB01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Remove.
    let r = emu
        .device2(Method::DELETE, "/identity/00AB01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = emu
        .device2(Method::GET, "/identity/00AB01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_of(r).await["statusCode"], 404);
    let r = emu
        .device2(Method::DELETE, "/identity/00AB01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// §9 Must: get state `{reported, set, timestamp}` (µs), set state `204`,
/// `400 Value is not settable`, `404` for an unknown identity; the ground truth records who
/// wrote `config_otau` and the attempt.
#[tokio::test]
async fn state_get_set_not_settable_unknown_identity() {
    let emu = Emu::start().await;
    let token = emu.device("d1").await;
    let manifest = r#"{"version":"1.0.2","attempt":2,"type":"URL_LIST","payload":[]}"#;
    let r = emu
        .device2(Method::PATCH, "/identity/d1/state")
        .header("x-otau-client", "otau-operator/test")
        .json(&json!({"config_otau": manifest}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.text().await.unwrap(), "");
    emu.device_write(&token, "otau_in", r#"{"status":"INIT"}"#)
        .await;
    let state = json_of(
        emu.device2(Method::GET, "/identity/d1/state")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(state["config_otau"]["set"], manifest);
    assert!(state["config_otau"].get("reported").is_none());
    assert!(state["config_otau"]["timestamp"].as_i64().unwrap() > 1_600_000_000_000_000);
    assert_eq!(state["otau_in"]["set"], r#"{"status":"INIT"}"#);
    assert_eq!(state["otau_in"]["reported"], r#"{"status":"INIT"}"#);
    // Not settable.
    let r = emu
        .device2(Method::PATCH, "/identity/d1/state")
        .json(&json!({"otau_in": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(r).await,
        json!({"statusCode": 400, "message": "Value is not settable"})
    );
    // Values must be JSON strings.
    let r = emu
        .device2(Method::PATCH, "/identity/d1/state")
        .json(&json!({"config_otau": {"version": "1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Unknown identity.
    assert_eq!(
        emu.cloud_set("ghost", "config_otau", "{}").await,
        StatusCode::NOT_FOUND
    );
    let r = emu
        .device2(Method::GET, "/identity/ghost/state")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Ground truth.
    let truth = emu.conn().ground_truth("d1");
    assert_eq!(truth.len(), 1);
    assert_eq!(truth[0].client, "otau-operator/test");
    assert_eq!(truth[0].attempt, Some(2));
    assert!(truth[0].changed);
}

/// §9 May: the `set_state_unknown_204` bug mode answers `204` for an unknown identity.
#[tokio::test]
async fn set_state_unknown_204_bug_mode() {
    let emu = Emu::start_with(None, |o| o.set_state_unknown_204 = true).await;
    assert_eq!(
        emu.cloud_set("ghost", "config_otau", "{}").await,
        StatusCode::NO_CONTENT
    );
    emu.whitelist("d1").await;
    // Not settable is still 400.
    assert_eq!(
        emu.cloud_set("d1", "otau_in", "{}").await,
        StatusCode::BAD_REQUEST
    );
}

/// §9 Must: paging with `limit`, `before`, `offset` (§5.3) across 2,500 identities, newest
/// first, `mayLoadMore`, with `state` and `tags` in list results; `identity=<regex>` and
/// `status=` filters.
#[tokio::test]
async fn paging_2500_identities_with_before_offset_limit_filters() {
    let emu = Emu::start().await;
    let conn = emu.conn();
    let added = conn
        .add_identities_bulk((0..2500).map(|i| {
            let tags = vec![otau_operator::emulator::model::Tag::new(
                "batch",
                (i % 2).to_string(),
            )];
            (format!("dev-{i:05}"), tags)
        }))
        .unwrap();
    assert_eq!(added, 2500);
    conn.set_state("dev-02499", &[("config_otau".into(), "m".into())], "t")
        .unwrap();
    // Default limit 100, newest first, state and tags in results.
    let page = json_of(emu.device2(Method::GET, "/identity/").send().await.unwrap()).await;
    let devices = page["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 100);
    assert_eq!(page["mayLoadMore"], true);
    assert_eq!(devices[0]["identity"], "dev-02499");
    assert_eq!(devices[0]["state"]["config_otau"]["set"], "m");
    assert_eq!(devices[0]["tags"], json!([{"name": "batch", "value": "1"}]));
    // Cursor paging with before = last item's created, limit capped at 1000.
    let mut seen = Vec::new();
    let mut before: Option<i64> = None;
    let mut pages = 0;
    loop {
        let q = match before {
            Some(b) => format!("/identity/?limit=5000&before={b}"),
            None => "/identity/?limit=5000".to_string(),
        };
        let page = json_of(emu.device2(Method::GET, &q).send().await.unwrap()).await;
        let devices = page["devices"].as_array().unwrap();
        assert!(devices.len() <= 1000);
        pages += 1;
        for d in devices {
            seen.push(d["identity"].as_str().unwrap().to_string());
        }
        before = devices.last().map(|d| d["created"].as_i64().unwrap());
        if page["mayLoadMore"] == false {
            break;
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 2500);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2500);
    let expected: Vec<String> = (0..2500).rev().map(|i| format!("dev-{i:05}")).collect();
    assert_eq!(seen, expected);
    // Offset paging.
    let page = json_of(
        emu.device2(Method::GET, "/identity/?limit=10&offset=2495")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = page["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["identity"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "dev-00004",
            "dev-00003",
            "dev-00002",
            "dev-00001",
            "dev-00000"
        ]
    );
    assert_eq!(page["mayLoadMore"], false);
    // Filters.
    let page = json_of(
        emu.device2(Method::GET, "/identity/?identity=%5Edev-0001%5B0-4%5D%24")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["devices"].as_array().unwrap().len(), 5);
    emu.device("new-one").await;
    let page = json_of(
        emu.device2(Method::GET, "/identity/?status=provisioned")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page["devices"].as_array().unwrap().len(), 1);
    assert_eq!(page["devices"][0]["identity"], "new-one");
    for bad in ["?limit=x", "?before=soon", "?identity=%5B"] {
        let r = emu
            .device2(Method::GET, &format!("/identity/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

/// §9 Should: `/api:1/solution/<sid>/serviceconfig/<id>/call/<op>` for device2 and content
/// operations by name.
#[tokio::test]
async fn service_calls_by_operation_name() {
    let emu = Emu::start().await;
    emu.whitelist("d1").await;
    let call = |scid: &str, op: &str, body: Value| {
        emu.mgmt(
            Method::POST,
            &format!("solution/{CID}/serviceconfig/{scid}/call/{op}"),
        )
        .json(&body)
        .send()
    };
    let r = call(
        "device2",
        "setIdentityState",
        json!({"identity": "d1", "config_otau": "{}"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call("device2", "getIdentityState", json!({"identity": "d1"}))
        .await
        .unwrap();
    assert_eq!(json_of(r).await["config_otau"]["set"], "{}");
    let r = call("device2", "listIdentities", json!({"limit": 10}))
        .await
        .unwrap();
    assert_eq!(json_of(r).await["devices"][0]["identity"], "d1");
    let r = call(
        "device2",
        "setIdentityState",
        json!({"identity": "d1", "otau_in": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = call(
        "content",
        "upload",
        json!({"id": "f.bin", "expires_in": 30}),
    )
    .await
    .unwrap();
    let form = json_of(r).await;
    assert_eq!(form["method"], "POST");
    assert_eq!(form["enctype"], "multipart/form-data");
    let r = call("content", "list", json!({})).await.unwrap();
    assert_eq!(json_of(r).await, json!([]));
    let r = call("device2", "noSuchOp", json!({})).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = emu
        .mgmt(Method::GET, &format!("solution/{CID}/serviceconfig/"))
        .send()
        .await
        .unwrap();
    let items = json_of(r).await;
    assert_eq!(items["items"][0]["id"], "device2");
    // The same token scheme guards these routes.
    let r = emu
        .http
        .post(format!(
            "{}/api:1/solution/{CID}/serviceconfig/device2/call/listIdentities",
            emu.base
        ))
        .header("authorization", format!("token x{MTOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
