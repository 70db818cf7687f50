//! A device that writes terminal control text: its identity carries a bidi override and a
//! zero-width space (what the emulator lets an identity hold), its failure message an OSC
//! title change, a bell, clear-screen, a carriage return and a bidi override. Every output path
//! of the plugin, and `kubectl get -o wide` on what the operator stored, shows it only as
//! visible escapes; `-o json` keeps the device's exact bytes in JSON escapes.

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::api::rollout::RolloutPhase;
use otau_operator::emulator::model::{NewIdentity, Tag, WriteOrigin};
use otau_operator::otau::{Report, Status, needs_escape};

use crate::cli::{Terminal, otau};
use crate::harness::{
    DEADLINE, Emu, Operator, VERSION, apply, base_yaml, kubectl, profile, rollout_yaml,
    wait_rollout,
};
use crate::support::{ControlPlane, wait_for};

/// The hostile device's identity.
const EVIL: &str = "evil-\u{202e}txt.exe\u{200b}";
/// Its failure message.
const MESSAGE: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J\rspoofed\u{202e}";
/// One wave; failures never trip the threshold.
const TOLERANT: &str =
    "  waves:\n    - percent: 100\n  policy:\n    failureThreshold:\n      percent: 100\n";

/// Panics unless `text` holds no control or invisible character but line breaks and, when
/// `colour`, SGR colour codes (`ESC [ digits m`).
fn assert_no_raw(path: &str, text: &str, colour: bool) {
    let mut rest = text.replace("\r\n", "\n");
    if colour {
        let sgr = regex_lite_sgr(&rest);
        rest = sgr;
    }
    if let Some((at, c)) = rest
        .char_indices()
        .find(|&(_, c)| c != '\n' && needs_escape(c))
    {
        panic!("{path}: raw {c:?} at byte {at} of:\n{text}");
    }
}

/// `text` without `ESC [ digits m` sequences.
fn regex_lite_sgr(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\u{1b}[") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && after.as_bytes().get(digits) == Some(&b'm') {
            rest = &after[digits + 1..];
        } else {
            out.push('\u{1b}');
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_control_text_reaches_no_output_path_raw() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("plugin-hostile").await;
    let emu = Emu::start(&profile(35, &[("ok-", 3, "")])).await;
    let conn = emu.conn();
    conn.add_identity(
        EVIL,
        NewIdentity {
            tags: vec![Tag {
                name: "fleet".into(),
                value: "e2e".into(),
            }],
            ..NewIdentity::default()
        },
    )
    .expect("the hostile identity");
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &rollout_yaml("fw-hostile", TOLERANT));

    // The operator notifies the hostile device, which answers with its failure.
    wait_for(DEADLINE, "the hostile device to be notified", || {
        let conn = conn.clone();
        async move { !conn.ground_truth(EVIL).is_empty() }
    })
    .await;
    let report = Report::new(VERSION, Status::InstallError, MESSAGE).to_json();
    conn.device_write(EVIL, &[("otau_in", &report)], &WriteOrigin::default())
        .expect("the device's report");
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    let done = wait_rollout(&api, "fw-hostile", "complete with one failure", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(RolloutPhase::Complete) && s.totals.failed == 1)
    })
    .await;

    // What the operator stored is already escaped and bounded.
    let failure = &done.status.as_ref().expect("status").recent_failures[0];
    assert_eq!(failure.identity, r"evil-\u{202e}txt.exe\u{200b}");
    assert_eq!(
        failure.message.as_deref(),
        Some(r"\u{1b}]0;owned\u{7}\u{1b}[2J\rspoofed\u{202e} (attempt 1 of 1)")
    );

    let status = otau(cp, &ns, &["status", "fw-hostile"]);
    eprintln!("--- status\n{status}");
    assert_no_raw("status", &status, false);
    assert!(
        status.contains(r"evil-\u{202e}txt.exe\u{200b}")
            && status.contains(r"\u{1b}]0;owned\u{7}\u{1b}[2J\rspoofed"),
        "{status}"
    );
    // `--watch` draws the same view; the rollout is complete, so it draws once and ends.
    let watched = otau(cp, &ns, &["status", "fw-hostile", "--watch"]);
    assert_no_raw("status --watch", &watched, false);
    assert!(watched.contains(r"\u{1b}]0;owned"), "{watched}");
    for format in ["json", "yaml"] {
        let text = otau(cp, &ns, &["status", "fw-hostile", "-o", format]);
        assert_no_raw(&format!("status -o {format}"), &text, false);
    }

    let devices = otau(cp, &ns, &["devices", "fw-hostile"]);
    eprintln!("--- devices\n{devices}");
    assert_no_raw("devices", &devices, false);
    assert!(
        devices.contains(r"evil-\u{202e}txt.exe\u{200b}")
            && devices.contains(r"\u{1b}]0;owned\u{7}\u{1b}[2J\rspoofed\u{202e}"),
        "{devices}"
    );
    let json = otau(
        cp,
        &ns,
        &["devices", "fw-hostile", "--state", "failed", "-o", "json"],
    );
    assert_no_raw("devices -o json", &json, false);
    let rows: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(rows[0]["identity"], EVIL, "JSON keeps the exact identity");
    assert_eq!(
        rows[0]["report"]["message"], MESSAGE,
        "and the exact message"
    );
    let yaml = otau(cp, &ns, &["devices", "fw-hostile", "-o", "yaml"]);
    assert_no_raw("devices -o yaml", &yaml, false);

    for args in [&["list"][..], &["list", "-A"], &["list", "-o", "json"]] {
        let text = otau(cp, &ns, args);
        assert_no_raw(&format!("{args:?}"), &text, false);
    }
    let wide = kubectl(cp, &["get", "rollouts.otau.dev", "-n", &ns, "-o", "wide"]);
    assert_no_raw("kubectl get -o wide", &wide, false);

    // On a terminal, with colour: only the plugin's own colour codes.
    let mut terminal = Terminal::start(cp, &ns, &["status", "fw-hostile"]);
    assert_eq!(terminal.wait_exit(DEADLINE).await, Some(0));
    let shown = terminal.output();
    assert!(
        shown.contains("\u{1b}[32m"),
        "colour on the terminal: {shown}"
    );
    assert_no_raw("status on a terminal", &shown, true);
}
