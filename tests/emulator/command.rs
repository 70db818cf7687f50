//! The `otau-operator emulator` command as a process: every part is served on its one
//! listener (device + management APIs, GraphQL, admin, /metrics), the flags reach the parts,
//! and the ready line names every URL.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::start_binary;

fn url(ready: &Value, key: &str) -> String {
    ready[key]
        .as_str()
        .unwrap_or_else(|| panic!("no `{key}` in the ready line {ready}"))
        .to_string()
}

/// exosite-platform.md §9: the ready line carries every URL and the token, and each URL answers.
#[tokio::test]
async fn one_listener_serves_every_part() {
    let (_emu, ready) = start_binary(&["--devices", "20"]);
    let http = reqwest::Client::new();
    let token = url(&ready, "management_token");
    let cid = url(&ready, "connector");
    assert_eq!(token.len(), 40, "management tokens are 40 characters");
    assert_eq!(ready["devices"], 20);

    let ts = http
        .get(format!("{}/timestamp", url(&ready, "device_url")))
        .send()
        .await
        .unwrap();
    assert_eq!(ts.status(), StatusCode::OK);

    let list = http
        .get(format!(
            "{}service/{cid}/device2/identity/?limit=5",
            url(&ready, "management_url")
        ))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
    let body: Value = list.json().await.unwrap();
    assert_eq!(body["devices"].as_array().map(Vec::len), Some(5));
    assert_eq!(body["mayLoadMore"], true);

    let query = json!({ "query": "mutation($c: ContentInput) { createContent(content: $c) { id method enctype } }",
        "variables": { "c": { "name": "package_cmd.json", "content_type": "firmware", "type": "firmware",
            "length": 0, "tags": [{ "name": "pid", "value": cid }], "product_id": cid } } });
    let unauthorised = http
        .post(url(&ready, "graphql_url"))
        .json(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    let created: Value = http
        .post(url(&ready, "graphql_url"))
        .header("authorization", format!("Automation {token}"))
        .json(&query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["data"]["createContent"]["id"], "package_cmd.json");

    let metrics = http
        .get(url(&ready, "metrics_url"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "otau_emulator_devices{{connector=\"{cid}\",status=\"whitelisted\"}} 20"
        )),
        "{metrics}"
    );
    let requests: Value = http
        .get(format!("{}/requests", url(&ready, "admin_url")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        requests["routes"]["graphql"]["count"].as_u64() >= Some(2),
        "{requests}"
    );
}

/// exosite-platform.md §9, fault injection set by a flag: every set-state answers 503 at error
/// rate 1.
#[tokio::test]
async fn fault_flags_reach_the_management_api() {
    let (_emu, ready) = start_binary(&["--devices", "1", "--fault", "device2.state:error_rate=1"]);
    let http = reqwest::Client::new();
    let token = url(&ready, "management_token");
    let cid = url(&ready, "connector");
    for _ in 0..3 {
        let r = http
            .patch(format!(
                "{}service/{cid}/device2/identity/device-000000/state",
                url(&ready, "management_url")
            ))
            .header("authorization", format!("token {token}"))
            .json(&json!({ "config_otau": "{}" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let settings = http
        .get(format!(
            "{}service/{cid}/device2",
            url(&ready, "management_url")
        ))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        settings.status(),
        StatusCode::OK,
        "only the named route is faulty"
    );
}

/// SIGTERM stops the emulator with a summary of its fleet written for people (the counts by
/// outcome and what the devices did), not a debug dump of a struct.
#[test]
fn sigterm_stops_it_with_a_fleet_summary_for_people() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_otau-operator"))
        .args(["emulator", "--listen", "127.0.0.1:0", "--devices", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the emulator binary");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("the ready line");
    assert!(ready.starts_with('{'), "{ready}");
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    assert!(status.success(), "{status}: {stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("emulator: fleet at stop: "))
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"));
    assert!(
        summary
            .starts_with("emulator: fleet at stop: 5 devices, 0 updating; updates started: none"),
        "{summary}"
    );
    assert!(!stderr.contains("FleetSummary {"), "{stderr}");
}

/// `/metrics` answers before any device exists: a gauge with no series is left out instead of
/// failing the whole scrape.
#[tokio::test]
async fn metrics_answer_with_no_devices() {
    let (_emu, ready) = start_binary(&[]);
    let r = reqwest::get(url(&ready, "metrics_url")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("otau_emulator_config_otau_writes_total"),
        "{text}"
    );
}
