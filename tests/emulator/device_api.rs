//! Device HTTP API (exosite-platform.md §3) over real loopback HTTP; each test names the §9 item
//! it covers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine;
use otau_operator::emulator::model::ContentItem;
use otau_operator::emulator::server::LastModifiedFormat;
use reqwest::{Method, StatusCode};

use crate::harness::{CID, Emu, START, form};

/// Waits until `cond` holds, checking every few ms, failing after `limit`.
async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn activate(emu: &Emu, body: &str, content_type: Option<&str>) -> (StatusCode, String) {
    let mut req = emu
        .http
        .post(format!("{}/provision/activate", emu.base))
        .body(body.to_string());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

const FORM: Option<&str> = Some("application/x-www-form-urlencoded; charset=utf-8");

/// §9 Must: `POST /provision/activate` with `id=` and legacy `sn=`; `200` with a 40-character
/// token; `404` when not whitelisted; `409` when already provisioned. (Should: `415` without
/// `Content-Type`.)
#[tokio::test]
async fn activate_with_id_and_sn_gives_40_char_tokens_404_409_415() {
    let emu = Emu::start().await;
    emu.whitelist("a1").await;
    emu.whitelist("a2").await;
    let (status, token) = activate(&emu, "id=a1", FORM).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token.len(), 40, "{token:?}");
    assert!(token.chars().all(|c| c.is_ascii_alphanumeric()));
    let (status, token2) = activate(&emu, &format!("vendor={CID}&model={CID}&sn=a2"), FORM).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(token2.len(), 40);
    assert_ne!(token, token2);
    assert_eq!(activate(&emu, "id=a1", FORM).await.0, StatusCode::CONFLICT);
    assert_eq!(
        activate(&emu, "id=nobody", FORM).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        activate(&emu, "id=a1", None).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_eq!(activate(&emu, "", FORM).await.0, StatusCode::BAD_REQUEST);
    // The token works for a read.
    let r = emu
        .dev(Method::GET, "/onep:v1/stack/alias?config_otau", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

/// §9 Must: authentication by `X-Exosite-CIK`, `Authorization: token`, Basic (`:token` and
/// `identity:password`); `401` otherwise.
#[tokio::test]
async fn every_auth_variant_and_401() {
    let emu = Emu::start().await;
    let token = emu.device("d1").await;
    // A password device.
    let r = emu
        .device2(Method::PUT, "/identity/p1")
        .json(&serde_json::json!({"auth": {"type": "password", "key": "pw-123"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let url = format!("{}/onep:v1/stack/alias?otau_in", emu.base);
    let variants = [
        ("x-exosite-cik", token.clone()),
        ("authorization", format!("token {token}")),
        (
            "authorization",
            format!("Basic {}", b64(&format!(":{token}"))),
        ),
        ("authorization", format!("Basic {}", b64("p1:pw-123"))),
    ];
    for (name, value) in &variants {
        let r = emu
            .http
            .get(&url)
            .header(*name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{name}: {value}");
    }
    let bad = [
        ("x-exosite-cik", "0".repeat(40)),
        ("authorization", format!("Basic {}", b64("p1:wrong"))),
        ("authorization", "Bearer whatever".to_string()),
    ];
    for (name, value) in &bad {
        let r = emu
            .http
            .get(&url)
            .header(*name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}: {value}");
    }
    let r = emu.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// §9 Must: `POST /onep:v1/stack/alias` (`204`); `GET /onep:v1/stack/alias?a&b` (`200`
/// form-encoded `set` values, or `204`); write-then-read with a query string. Also §1.3: a
/// device write sets both `set` and `reported`.
#[tokio::test]
async fn write_read_and_write_then_read() {
    let emu = Emu::start().await;
    let token = emu.device("d1").await;
    let report = r#"{"version":"1.2.4","status":"DOWNLOAD_STEP","message":"file 1/2"}"#;
    assert_eq!(
        emu.device_write(&token, "otau_in", report).await,
        StatusCode::NO_CONTENT
    );
    // Read both: only otau_in has a value.
    let r = emu
        .dev(
            Method::GET,
            "/onep:v1/stack/alias?config_otau&otau_in",
            &token,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/x-www-form-urlencoded; charset=utf-8"
    );
    assert_eq!(
        form(&r.text().await.unwrap()),
        vec![("otau_in".to_string(), report.to_string())]
    );
    // Unknown aliases are not errors: 204.
    let r = emu
        .dev(Method::GET, "/onep:v1/stack/alias?nothing_here", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // A cloud write, then write-then-read: the device sees `set`.
    assert_eq!(
        emu.cloud_set("d1", "config_otau", r#"{"version":"2"}"#)
            .await,
        StatusCode::NO_CONTENT
    );
    let r = emu
        .dev(
            Method::POST,
            "/onep:v1/stack/alias?config_otau&otau_in",
            &token,
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body("otau_in=%7B%7D&undefined_alias=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        form(&r.text().await.unwrap()),
        vec![
            ("config_otau".to_string(), r#"{"version":"2"}"#.to_string()),
            ("otau_in".to_string(), "{}".to_string())
        ]
    );
    let state = emu.conn().state("d1").unwrap();
    assert_eq!(state["otau_in"].set.as_deref(), Some("{}"));
    assert_eq!(state["otau_in"].reported.as_deref(), Some("{}"));
    assert_eq!(state["config_otau"].reported, None);
    assert!(!state.contains_key("undefined_alias"));
    // Should: 415 for a POST without Content-Type.
    let r = emu
        .dev(Method::POST, "/onep:v1/stack/alias", &token)
        .body("otau_in=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

/// §9 Must: every device write raises a `data_in` event (§6.1), with all aliases written,
/// including undefined ones and acks of `config_otau`.
#[tokio::test]
async fn device_writes_raise_data_in_events() {
    let emu = Emu::start().await;
    let token = emu.device("d1").await;
    let mut events = emu.model.subscribe_events();
    let r = emu
        .dev(Method::POST, "/onep:v1/stack/alias", &token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("otau_in=%7B%22a%22%3A1%7D&custom=7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.connector, CID);
    assert_eq!(ev.event.kind, "data_in");
    assert_eq!(ev.event.identity, "d1");
    assert_eq!(ev.event.ip, "127.0.0.1");
    assert!(ev.event.timestamp > 1_600_000_000_000_000, "µs timestamp");
    assert_eq!(
        ev.event.payload[0].values,
        BTreeMap::from([
            ("custom".to_string(), "7".to_string()),
            ("otau_in".to_string(), r#"{"a":1}"#.to_string())
        ])
    );
    // A cloud write raises none; the device's ack does.
    emu.cloud_set("d1", "config_otau", "{}").await;
    emu.device_write(&token, "config_otau", "{}").await;
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.event.kind, "data_in");
    assert!(ev.event.payload[0].values.contains_key("config_otau"));
}

async fn poll(
    emu: &Emu,
    token: &str,
    if_modified_since: Option<&str>,
    timeout_ms: u64,
) -> (StatusCode, Option<String>, String) {
    let mut req = emu
        .dev(Method::GET, "/onep:v1/stack/alias?config_otau", token)
        .header("request-timeout", timeout_ms.to_string());
    if let Some(ims) = if_modified_since {
        req = req.header("if-modified-since", ims);
    }
    let r = req.send().await.unwrap();
    let lm = r
        .headers()
        .get("last-modified")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status(), lm, r.text().await.unwrap())
}

/// §9 Must: long poll with `If-Modified-Since: 0` returns a value set earlier at once, with
/// `Last-Modified` as an HTTP-date; the HTTP-date fed back waits; nothing set between polls
/// is lost.
#[tokio::test]
async fn long_poll_if_modified_since_zero_and_http_date_lose_nothing() {
    let emu = Emu::start_manual().await;
    let token = emu.device("d1").await;
    emu.cloud_set("d1", "config_otau", r#"{"version":"1"}"#)
        .await;
    let (status, lm, body) = poll(&emu, &token, Some("0"), 60_000).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lm.as_deref(), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
    assert_eq!(
        form(&body),
        vec![("config_otau".into(), r#"{"version":"1"}"#.into())]
    );
    // Fed back, it waits: a short poll times out with 304.
    let (status, _, _) = poll(&emu, &token, lm.as_deref(), 300).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // A value set while no poll runs is not lost: the next poll answers at once.
    emu.advance(Duration::from_secs(2));
    emu.cloud_set("d1", "config_otau", r#"{"version":"2"}"#)
        .await;
    let started = Instant::now();
    let (status, lm2, body) = poll(&emu, &token, lm.as_deref(), 60_000).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(lm2.as_deref(), Some("Tue, 14 Nov 2023 22:13:22 GMT"));
    assert_eq!(form(&body)[0].1, r#"{"version":"2"}"#);
    // Numeric If-Modified-Since works the same way.
    let secs = (START / 1_000_000).to_string();
    let (status, _, _) = poll(&emu, &token, Some(&secs), 60_000).await;
    assert_eq!(status, StatusCode::OK);
}

/// §9 Must: a long poll waits and answers `200` as soon as the cloud writes (checked with a
/// deadline far below `Request-Timeout`), and `304` when nothing changes.
#[tokio::test]
async fn long_poll_wakes_on_cloud_write_and_times_out_with_304() {
    let emu = Emu::start().await;
    let token = emu.device("d1").await;
    let conn = emu.conn();
    let waiting = {
        let emu_base = emu.base.clone();
        let http = emu.http.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let r = http
                .get(format!("{emu_base}/onep:v1/stack/alias?config_otau"))
                .header("x-exosite-cik", token)
                .header("request-timeout", "120000")
                .header("if-modified-since", "0")
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.text().await.unwrap())
        })
    };
    wait_until(Duration::from_secs(10), "the poll to wait", || {
        conn.waiting_polls() == 1
    })
    .await;
    assert_eq!(
        emu.cloud_set("d1", "config_otau", "manifest-1").await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the poll answered long before its Request-Timeout")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "config_otau=manifest-1");
    wait_until(Duration::from_secs(5), "the waiter to go", || {
        conn.waiting_polls() == 0
    })
    .await;
    // Without If-Modified-Since it waits for a later change: 304 after the timeout.
    let (status, lm, body) = poll(&emu, &token, None, 200).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(lm, None);
    assert_eq!(body, "");
}

/// §9 Must (§3.9 semantics): an ack (the identical value written back) does not move the set
/// modified time, so it does not wake the device's own poll; a real change does.
#[tokio::test]
async fn long_poll_is_not_woken_by_an_ack() {
    let emu = Emu::start_manual().await;
    let token = emu.device("d1").await;
    let conn = emu.conn();
    emu.cloud_set("d1", "config_otau", "m1").await;
    let (_, lm, _) = poll(&emu, &token, Some("0"), 1000).await;
    let lm = lm.unwrap();
    let pending = {
        let (base, http, token, lm) = (
            emu.base.clone(),
            emu.http.clone(),
            token.clone(),
            lm.clone(),
        );
        tokio::spawn(async move {
            http.get(format!("{base}/onep:v1/stack/alias?config_otau"))
                .header("x-exosite-cik", token)
                .header("request-timeout", "1500")
                .header("if-modified-since", lm)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    wait_until(Duration::from_secs(10), "the poll to wait", || {
        conn.waiting_polls() == 1
    })
    .await;
    emu.advance(Duration::from_secs(5));
    assert_eq!(
        emu.device_write(&token, "config_otau", "m1").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(pending.await.unwrap(), StatusCode::NOT_MODIFIED);
    // The ack made set == reported and kept Last-Modified.
    let state = conn.state("d1").unwrap();
    assert_eq!(state["config_otau"].reported.as_deref(), Some("m1"));
    let (status, lm_again, _) = poll(&emu, &token, Some("0"), 1000).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lm_again.as_deref(), Some(lm.as_str()));
    // A new value wakes it.
    emu.cloud_set("d1", "config_otau", "m2").await;
    let (status, _, body) = poll(&emu, &token, Some(&lm), 60_000).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "config_otau=m2");
}

/// §9 Must (flag `last_modified_format`): `Last-Modified` as unix seconds; also `400` for a
/// long poll naming two aliases or a bad `Request-Timeout` / `If-Modified-Since`.
#[tokio::test]
async fn long_poll_unix_last_modified_and_bad_requests() {
    let emu = Emu::start_with(
        Some(std::sync::Arc::new(
            otau_operator::emulator::clock::ManualClock::new(START),
        )),
        |o| o.last_modified_format = LastModifiedFormat::Unix,
    )
    .await;
    let token = emu.device("d1").await;
    emu.cloud_set("d1", "config_otau", "m1").await;
    let (status, lm, _) = poll(&emu, &token, Some("0"), 1000).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lm.as_deref(), Some("1700000000"));
    let bad = [
        ("/onep:v1/stack/alias?config_otau&otau_in", "1000", "0"),
        ("/onep:v1/stack/alias?config_otau", "soon", "0"),
        ("/onep:v1/stack/alias?config_otau", "1000", "yesterday"),
    ];
    for (path, timeout, ims) in bad {
        let r = emu
            .dev(Method::GET, path, &token)
            .header("request-timeout", timeout)
            .header("if-modified-since", ims)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{path} {timeout} {ims}"
        );
    }
}

/// §9 Should: `POST /onep:v1/stack/record` (`204`), with `409` and the comma body for
/// timestamps of one alias under 1 s apart.
#[tokio::test]
async fn record_accepts_and_409s_close_timestamps() {
    let emu = Emu::start().await;
    let token = emu.device("d1").await;
    let rec = |body: &'static str| {
        emu.dev(Method::POST, "/onep:v1/stack/record", &token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let r = rec("alias=otau_in&1700000000=a&1700000005=b&alias=custom&1700000001=c")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        emu.conn().state("d1").unwrap()["otau_in"].set.as_deref(),
        Some("b")
    );
    let r = rec("alias=otau_in&1700000010=a&1700000010=b&1700000020=c")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.text().await.unwrap(), "otau_in=1700000010,1700000010");
    assert_eq!(
        emu.conn().state("d1").unwrap()["otau_in"].set.as_deref(),
        Some("b"),
        "nothing written on conflict"
    );
    let r = rec("1700000000=a").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

fn put_file(emu: &Emu, id: &str, data: &'static [u8], description: Option<&str>) {
    let mut tags = BTreeMap::new();
    if let Some(d) = description {
        tags.insert("description".to_string(), d.to_string());
    }
    emu.conn()
        .content()
        .put(ContentItem {
            id: id.into(),
            content_type: "application/gzip".into(),
            data: Bytes::from_static(data),
            tags,
            last_modified: 1_513_931_066_000_000,
        })
        .unwrap();
}

/// §9 Must: `/provision/download` list, `?id=&info=true` CSV line, `?id=` file with `Range`
/// (`206`, `Content-Range`: `X-Y`, `-Y`, `X-`); Should: `416` for a range beyond the end.
#[tokio::test]
async fn content_list_info_download_and_ranges() {
    let emu = Emu::start().await;
    let token = emu.device("d1").await;
    put_file(&emu, "fw.bin", b"0123456789", None);
    put_file(&emu, "notes.txt", b"abc", Some("Boot, splash\nscreen"));
    let get = |query: &str, range: Option<&str>| {
        let mut r = emu.dev(Method::GET, &format!("/provision/download{query}"), &token);
        if let Some(range) = range {
            r = r.header("range", range);
        }
        r.send()
    };
    let r = get("", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "fw.bin\nnotes.txt");
    let r = get("?id=fw.bin&info=true", None).await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(r.text().await.unwrap(), "application/gzip,10,1513931066,");
    let r = get("?id=notes.txt&info=true", None).await.unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "application/gzip,3,1513931066,Boot  splash screen"
    );
    let r = get("?id=fw.bin", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/gzip");
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(&r.bytes().await.unwrap()[..], b"0123456789");
    for (range, content_range, body) in [
        ("bytes=0-3", "bytes 0-3/10", &b"0123"[..]),
        ("bytes=-4", "bytes 6-9/10", b"6789"),
        ("bytes=7-", "bytes 7-9/10", b"789"),
        ("bytes=8-100", "bytes 8-9/10", b"89"),
    ] {
        let r = get("?id=fw.bin", Some(range)).await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(r.headers()["content-range"], content_range);
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        assert_eq!(r.headers()["content-length"], body.len().to_string());
        assert_eq!(&r.bytes().await.unwrap()[..], body);
    }
    for range in ["bytes=10-", "bytes=20-30", "bytes=-0"] {
        let r = get("?id=fw.bin", Some(range)).await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */10");
    }
    let r = get("?id=missing", None).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = emu
        .http
        .get(format!("{}/provision/download", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// §9 Must: `GET /timestamp` (unix seconds, no credentials).
#[tokio::test]
async fn timestamp_is_unix_seconds() {
    let emu = Emu::start_manual().await;
    let r = emu
        .http
        .get(format!("{}/timestamp", emu.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "1700000000");
}

/// §9 (§3.1, one virtual host per connector): `<cid>.m2.<domain>` and
/// `<cid>.devmode-m2.<domain>` select the connector; an unknown host or connector is closed
/// without a response; without `default_connector` an IP host is closed too.
#[tokio::test]
async fn host_header_selects_the_connector_and_unknown_hosts_are_closed() {
    let emu = Emu::start_with(None, |o| o.default_connector = None).await;
    emu.model.add_connector("other1").unwrap();
    for host in [
        format!("{CID}.m2.exosite.io"),
        "other1.devmode-m2.example.com:80".to_string(),
    ] {
        let r = emu
            .http
            .get(format!("{}/timestamp", emu.base))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{host}");
    }
    for host in ["nobody.m2.exosite.io", "www.example.com", "127.0.0.1"] {
        let r = emu
            .http
            .get(format!("{}/timestamp", emu.base))
            .header("host", host)
            .send()
            .await;
        assert!(
            r.is_err(),
            "{host}: expected a closed connection, got {r:?}"
        );
    }
    // The management API does not depend on the host.
    let r = emu.device2(Method::GET, "").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
