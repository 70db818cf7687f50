//! Push, attacked over raw loopback sockets against the operator process (docs/push.md, "The
//! receiver"): what is refused before a byte of the body is read, the one answer for an
//! unknown product id and a wrong signature, the body bound, the body timeout, the cap on
//! bodies in flight, the time window, and the key cache (apiserver Secret reads counted in
//! the audit log).
//!
//! Limits are set through the environment (`OTAU_LISTENER_*`) and every expected number is
//! derived here, so the tests run against a binary that lacks the checks and fail on what
//! they check.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::controller::push::signature;
use otau_operator::otau::MAX_MANIFEST_BYTES;
use tokio::net::TcpStream;

use crate::harness::{
    CID, DEADLINE, Emu, Operator, WEBHOOK_KEY, apply, base_yaml, has, kubectl, metric_value,
    profile, rollout_yaml, wait_rollout,
};
use crate::support::process::CREDENTIAL_OPT_IN;
use crate::support::raw_http::{Answer, read_response, send};
use crate::support::{ControlPlane, wait_for};

/// The largest legitimate event (docs/push.md): one write of `config_otau` and `otau_in` at
/// their largest, each doubled by JSON escaping, and 4 KiB for the rest.
const BOUND: usize = 2 * 2 * MAX_MANIFEST_BYTES + 4096;
/// How far an event's timestamp may be from the operator's clock (exosite-platform.md §6.3).
const WINDOW: Duration = Duration::from_secs(300);
/// The least time between two reads of one webhook key (docs/push.md, "The key cache").
const REREAD_INTERVAL: Duration = Duration::from_secs(5);
/// How long an answer that needs no body may take.
const PROMPT: Duration = Duration::from_secs(5);

/// An operator with one paused Rollout subscribed to the connector, so pushes for [`CID`]
/// reach the signature check.
struct Fixture {
    op: Operator,
    _emu: Emu,
}

async fn fixture(test: &str, env: &[(&str, &str)]) -> Fixture {
    let cp = ControlPlane::get();
    let ns = cp.namespace(test).await;
    let emu = Emu::start(&profile(5, &[("dev-", 2, "")])).await;
    let op = Operator::start_with_env(cp, &ns, &[], env).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(
        cp,
        &ns,
        &rollout_yaml("held", "  paused: true\n  waves:\n    - percent: 100\n"),
    );
    let push = op.push_addr;
    wait_for(DEADLINE, "a signed push to be accepted", || async move {
        let body = event("connect", now_micros());
        post(
            push,
            CID,
            Some(&signature(WEBHOOK_KEY.as_bytes(), body.as_bytes())),
            &body,
        )
        .await
        .status
            == 204
    })
    .await;
    Fixture { op, _emu: emu }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_micros() as i64
}

/// A device2 event of `kind` for `dev-000000` at `micros`.
fn event(kind: &str, micros: i64) -> String {
    serde_json::json!({
        "type": kind, "identity": "dev-000000", "timestamp": micros, "ip": "",
        "connection_id": "c-1", "payload": [],
    })
    .to_string()
}

/// The request head of a push for `connector` with `length` body bytes.
fn head(connector: &str, signature: Option<&str>, length: usize) -> String {
    let mut head = format!(
        "POST /hooks/device2?connector={connector} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    );
    if let Some(s) = signature {
        head.push_str(&format!("X-Otau-Signature: {s}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A whole push; the answer.
async fn post(addr: SocketAddr, connector: &str, signature: Option<&str>, body: &str) -> Answer {
    let request = format!("{}{body}", head(connector, signature, body.len()));
    let mut stream = send(addr, request.as_bytes()).await;
    read_response(&mut stream, DEADLINE)
        .await
        .expect("an answer to a whole push")
}

/// Sends only the head (and `part` of the body) of a push; the open stream.
async fn start_push(addr: SocketAddr, head: &str, part: &[u8]) -> TcpStream {
    let mut request = head.as_bytes().to_vec();
    request.extend_from_slice(part);
    send(addr, &request).await
}

fn well_formed() -> String {
    format!("sha256={}", "0".repeat(64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_connector_or_a_bad_signature_header_is_refused_before_the_body_is_sent() {
    let f = fixture("push-before-body", &[]).await;
    let push = f.op.push_addr;
    let cases = [
        (
            "unknown connector",
            head("nosuchcid", Some(&well_formed()), 100_000),
        ),
        ("no signature", head(CID, None, 100_000)),
        ("malformed signature", head(CID, Some("sha256=zz"), 100_000)),
    ];
    for (case, head) in cases {
        let mut stream = start_push(push, &head, b"").await;
        let answer = read_response(&mut stream, PROMPT).await;
        assert_eq!(
            answer.as_ref().map(|a| a.status),
            Some(401),
            "{case}: no 401 within {PROMPT:?} while the body was still to come: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_connector_and_a_wrong_signature_get_the_same_answer() {
    let f = fixture("push-same-answer", &[]).await;
    let push = f.op.push_addr;
    let body = event("connect", now_micros());
    let good = signature(WEBHOOK_KEY.as_bytes(), body.as_bytes());
    let wrong = signature(b"not-the-key", body.as_bytes());
    let unknown = post(push, "nosuchcid", Some(&good), &body).await;
    let wrong = post(push, CID, Some(&wrong), &body).await;
    let missing = post(push, CID, None, &body).await;
    assert_eq!(unknown.status, 401, "{unknown:?}");
    assert_eq!(
        (unknown.status, &unknown.body),
        (wrong.status, &wrong.body),
        "an unknown product id and a wrong signature must not be told apart"
    );
    assert_eq!((missing.status, &missing.body), (wrong.status, &wrong.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_bound_is_refused_before_it_is_sent_and_one_at_the_bound_is_read() {
    let f = fixture("push-bound", &[]).await;
    let push = f.op.push_addr;
    let mut stream = start_push(push, &head(CID, Some(&well_formed()), BOUND + 1), b"").await;
    let answer = read_response(&mut stream, PROMPT).await;
    assert_eq!(
        answer.as_ref().map(|a| a.status),
        Some(413),
        "a body declared {} bytes was not refused within {PROMPT:?}: {answer:?}",
        BOUND + 1
    );
    // An event of exactly the bound (padded in a field the receiver ignores) is accepted.
    let base = event("connect", now_micros());
    let padding = BOUND - base.len();
    let body = base.replacen(
        r#""ip":"""#,
        &format!(r#""ip":"{}""#, "x".repeat(padding)),
        1,
    );
    assert_eq!(body.len(), BOUND);
    let sig = signature(WEBHOOK_KEY.as_bytes(), body.as_bytes());
    assert_eq!(post(push, CID, Some(&sig), &body).await.status, 204);
    assert_eq!(
        otau_operator::controller::push::BODY_LIMIT,
        BOUND,
        "the receiver's bound is the documented one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_body_timeout_is_refused_with_408() {
    let f = fixture("push-body-timeout", &[("OTAU_LISTENER_BODY_TIMEOUT", "1s")]).await;
    let push = f.op.push_addr;
    let mut stream = start_push(push, &head(CID, Some(&well_formed()), 1000), b"{\"type\":").await;
    let answer = read_response(&mut stream, Duration::from_secs(15)).await;
    assert_eq!(
        answer.as_ref().map(|a| a.status),
        Some(408),
        "a body stuck after 8 bytes was not refused within 15 s of a 1 s body timeout: {answer:?}"
    );
    let metrics = f.op.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"otau_listener_refused_total{listener="push",reason="body_timeout"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_cap_are_answered_503_before_they_are_read() {
    const CAP: usize = 2;
    let f = fixture(
        "push-bodies-cap",
        &[
            ("OTAU_LISTENER_MAX_BODIES_IN_FLIGHT", &CAP.to_string()),
            ("OTAU_LISTENER_BODY_TIMEOUT", "5s"),
        ],
    )
    .await;
    let push = f.op.push_addr;
    let slow = head(CID, Some(&well_formed()), 1000);
    let started = Instant::now();
    let refused = loop {
        assert!(
            started.elapsed() < DEADLINE,
            "never refused a body over the cap of {CAP}"
        );
        // CAP bodies arrive slowly and hold every slot; one more comes.
        let mut holding = Vec::new();
        for _ in 0..CAP {
            holding.push(start_push(push, &slow, b"{").await);
        }
        let mut over = start_push(push, &slow, b"").await;
        if let Some(answer) = read_response(&mut over, Duration::from_secs(3)).await
            && answer.status == 503
        {
            break answer;
        }
    };
    assert!(refused.head.contains("retry-after: 1"), "{}", refused.head);
    let metrics = f.op.metrics().await;
    let counted = metric_value(
        &metrics,
        r#"otau_listener_refused_total{listener="push",reason="bodies_in_flight"}"#,
    );
    assert!(counted >= Some(1.0), "{counted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_outside_the_time_window_is_refused() {
    let f = fixture("push-window", &[]).await;
    let push = f.op.push_addr;
    let window = WINDOW.as_micros() as i64;
    let now = now_micros();
    // A minute beyond the window either way: clock skew on this machine is far below that.
    for (case, at) in [
        ("a replay", now - window - 60_000_000),
        ("from the future", now + window + 60_000_000),
    ] {
        let body = event("connect", at);
        let sig = signature(WEBHOOK_KEY.as_bytes(), body.as_bytes());
        let answer = post(push, CID, Some(&sig), &body).await;
        assert_eq!(answer.status, 400, "{case}: {answer:?}");
    }
    let body = event("connect", now_micros());
    let sig = signature(WEBHOOK_KEY.as_bytes(), body.as_bytes());
    assert_eq!(post(push, CID, Some(&sig), &body).await.status, 204);
    let metrics = f.op.metrics().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"otau_push_refused_total{reason="outside_window"}"#
        ),
        Some(2.0)
    );
}

/// The operator's `get`s of the Secret `webhook` in `namespaces` in the audit log, after
/// `skip` lines; and whether any client listed or watched Secrets there.
fn webhook_reads(
    log: &std::path::Path,
    skip: usize,
    namespaces: &BTreeSet<String>,
) -> (usize, usize) {
    let text = std::fs::read_to_string(log).expect("the audit log");
    let mut reads = 0;
    let mut listed = 0;
    for line in text.lines().skip(skip) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let object = &event["objectRef"];
        if event["stage"] != "ResponseComplete" || object["resource"] != "secrets" {
            continue;
        }
        let in_scope = object["namespace"]
            .as_str()
            .is_none_or(|ns| namespaces.contains(ns));
        match event["verb"].as_str() {
            Some("get") if in_scope && object["name"] == "webhook" => reads += 1,
            Some("list" | "watch") if in_scope => listed += 1,
            _ => {}
        }
    }
    (reads, listed)
}

fn audit_lines(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |t| t.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_cost_at_most_one_secret_read_per_key_per_interval() {
    const CONNECTORS: usize = 4;
    const PUSHES: usize = 50;
    let cp = ControlPlane::with_audit_log();
    let log = cp.audit_log().expect("an audit log");
    let mut namespaces = Vec::new();
    for _ in 0..CONNECTORS {
        namespaces.push(cp.namespace("push-key-reads").await);
    }
    let emu = Emu::start(&profile(6, &[("dev-", 2, "")])).await;
    let others = namespaces[1..].join(",");
    let op = Operator::start(cp, &namespaces[0], &["--watch-namespace", &others]).await;
    // Every namespace has a connector for the same product id, with its own webhook Secret.
    for ns in &namespaces {
        apply(cp, ns, &base_yaml(&emu));
        apply(
            cp,
            ns,
            &rollout_yaml("held", "  paused: true\n  waves:\n    - percent: 100\n"),
        );
    }
    for ns in &namespaces {
        let api: Api<Rollout> = Api::namespaced(cp.client().await, ns);
        wait_rollout(&api, "held", "paused (subscribed)", |r| {
            has(r, "Paused", "True", "PausedByUser")
        })
        .await;
    }
    let push = op.push_addr;
    let body = event("connect", now_micros());
    let good = signature(WEBHOOK_KEY.as_bytes(), body.as_bytes());
    assert_eq!(post(push, CID, Some(&good), &body).await.status, 204);

    let skip = audit_lines(log);
    let started = Instant::now();
    let forged = signature(b"forged", body.as_bytes());
    let answers =
        futures::future::join_all((0..PUSHES).map(|_| post(push, CID, Some(&forged), &body))).await;
    for _ in 0..PUSHES {
        assert_eq!(post(push, CID, Some(&forged), &body).await.status, 401);
    }
    let elapsed = started.elapsed();
    assert!(answers.iter().all(|a| a.status == 401));
    // A marker request after the pushes: once it is in the log, so are their reads.
    let marker = &namespaces[0];
    kubectl(cp, &["get", "namespace", marker, "-o", "name"]);
    wait_for(DEADLINE, "the marker in the audit log", || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let seen = text
            .lines()
            .skip(skip)
            .any(|l| l.contains(r#""verb":"get""#) && l.contains(&format!(r#""name":"{marker}""#)));
        async move { seen }
    })
    .await;
    let scope: BTreeSet<String> = namespaces.iter().cloned().collect();
    let (reads, listed) = webhook_reads(log, skip, &scope);
    let intervals = (elapsed.as_secs_f64() / REREAD_INTERVAL.as_secs_f64()).ceil() as usize;
    let bound = CONNECTORS * (1 + intervals);
    println!(
        "{} forged pushes, {CONNECTORS} connectors, {elapsed:?}: {reads} Secret reads (bound {bound})",
        2 * PUSHES
    );
    assert!(
        reads <= bound,
        "{} forged pushes over {CONNECTORS} connectors in {elapsed:?} read the webhook Secrets {reads} times (at most {bound})",
        2 * PUSHES
    );
    assert_eq!(listed, 0, "Secrets are never listed or watched");

    // A rotated key is taken at the first push signed with it, once the interval has passed.
    let rotated = "rotated-webhook-key-0123456789";
    apply(
        cp,
        &namespaces[0],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: webhook\n{CREDENTIAL_OPT_IN}type: Opaque\nstringData:\n  hmacKey: {rotated}\n"
        ),
    );
    wait_for(
        DEADLINE,
        "a push signed with the rotated key to be accepted",
        || async move {
            let body = event("connect", now_micros());
            let sig = signature(rotated.as_bytes(), body.as_bytes());
            post(push, CID, Some(&sig), &body).await.status == 204
        },
    )
    .await;
}
