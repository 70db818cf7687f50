//! `approve` opens a gated wave (a revert of its annotation opens nothing more; the next
//! approve does), `plan`, `list`, `status` of a paused-for-approval and of a complete
//! rollout, Ctrl-C ends a watch, and the plugin runs as `kubectl otau` through kubectl.

use std::time::Duration;

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::api::rollout::RolloutPhase;

use crate::cli::{Terminal, line_starting, otau, through_kubectl};
use crate::harness::{
    DEADLINE, Emu, Operator, apply, base_yaml, has, kubectl, profile, rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

/// Three waves; the last two wait for an approval.
const GATED: &str = "  waves:\n    - percent: 34\n    - percent: 67\n      requireApproval: true\n    - percent: 100\n      requireApproval: true\n";

fn waiting_at(r: &Rollout, wave: i32) -> bool {
    has(r, "Paused", "True", "WaitingForApproval")
        && r.status.as_ref().is_some_and(|s| {
            s.current_wave == wave
                && s.waves
                    .iter()
                    .find(|w| w.number == wave)
                    .is_some_and(|w| w.completed_at.is_some())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_opens_gated_waves_once_each_and_complete_status() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("plugin-approve").await;
    let emu = Emu::start(&profile(32, &[("dev-", 30, "")])).await;
    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &rollout_yaml("fw-gate", GATED));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    // Wave 1 done; wave 2 waits for approval.
    wait_rollout(&api, "fw-gate", "wave 2 waiting for approval", |r| {
        waiting_at(r, 1)
    })
    .await;
    let text = otau(cp, &ns, &["status", "fw-gate"]);
    eprintln!("--- status (waiting for approval)\n{text}");
    assert!(text.contains("Phase:         ॥ Paused\n"), "{text}");
    assert!(
        text.contains(&format!(
            "Waiting for:   approval of wave 2: kubectl otau approve fw-gate -n {ns}\n"
        )),
        "{text}"
    );
    let wave2 = line_starting(&text, "2 (gated)").expect("wave 2 row");
    assert!(wave2.contains("not started"), "{text}");

    // The plan: 11, 10 and 9 of 30 devices.
    let plan = otau(cp, &ns, &["plan", "fw-gate"]);
    eprintln!("--- plan\n{plan}");
    assert!(
        plan.starts_with("Plan of fw-gate for 30 targeted devices:\n"),
        "{plan}"
    );
    let sizes: Vec<&str> = (1..=3)
        .map(|n| {
            line_starting(&plan, &format!("{n} "))
                .and_then(|l| l.split_whitespace().nth(2))
                .expect("row")
        })
        .collect();
    assert_eq!(sizes, ["11", "10", "9"], "{plan}");

    // Ctrl-C ends a watch at once, exit 0.
    let mut watch = Terminal::start(cp, &ns, &["status", "fw-gate", "-w"]);
    watch.wait_for_text(0, "WaitingForApproval", DEADLINE).await;
    watch.interrupt();
    assert_eq!(watch.wait_exit(Duration::from_secs(30)).await, Some(0));

    // approve (no wave: the next gated one, 2) opens wave 2 only.
    let said = otau(cp, &ns, &["approve", "fw-gate"]);
    assert!(
        said.starts_with(
            "rollout.otau.dev/fw-gate approval of waves up to 2 requested (otau.dev/approve=2:"
        ),
        "{said}"
    );
    let r = wait_rollout(&api, "fw-gate", "wave 3 waiting for approval", |r| {
        waiting_at(r, 2)
    })
    .await;
    assert_eq!(r.status.as_ref().map(|s| s.acted_on.approved_wave), Some(2));

    // A GitOps revert of the annotation opens nothing more.
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "rollout.otau.dev/fw-gate",
            "otau.dev/approve-",
        ],
    );
    let before = op.listings().await;
    op.two_more_listings(before).await;
    let r = api.get("fw-gate").await.expect("get");
    assert!(waiting_at(&r, 2), "still waiting at wave 3: {:?}", r.status);
    assert_eq!(emu.writes().len(), 21, "waves 1 and 2 written, not wave 3");

    // The next approve opens wave 3; the rollout completes.
    let said = otau(cp, &ns, &["approve", "fw-gate"]);
    assert!(said.contains("approval of waves up to 3"), "{said}");
    wait_rollout(&api, "fw-gate", "complete", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(RolloutPhase::Complete))
    })
    .await;
    let text = otau(cp, &ns, &["status", "fw-gate"]);
    eprintln!("--- status (complete)\n{text}");
    assert!(text.contains("Phase:         ✔ Complete\n"), "{text}");
    assert!(!text.contains("Waiting for:"), "{text}");
    assert!(
        text.contains("Success rate:  100.0% (30 of 30 finished devices succeeded)"),
        "{text}"
    );
    assert!(text.contains("Wave:          3 of 3\n"), "{text}");
    let refused = crate::cli::run_with(cp.kubeconfig(), &ns, &["approve", "fw-gate"]);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused
            .stderr
            .contains("every gated wave (2, 3) is already approved"),
        "{}",
        refused.stderr
    );

    // list, in text and JSON.
    let list = otau(cp, &ns, &["list"]);
    eprintln!("--- list\n{list}");
    let row = line_starting(&list, "fw-gate").expect("row");
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[..12],
        [
            "fw-gate", "fw", "✔", "Complete", "3/3", "30", "0", "0", "0", "0", "30", "100.0%"
        ],
        "{list}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&otau(cp, &ns, &["list", "-o", "json"])).expect("JSON");
    assert_eq!(json[0]["status"]["phase"], "Complete");

    // kubectl finds the plugin on PATH and passes the arguments through.
    let kubeconfig = cp.kubeconfig().display().to_string();
    let ran = through_kubectl(&["--kubeconfig", &kubeconfig, "list", "-n", &ns]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    let through = crate::cli::line_starting(&ran.stdout, "fw-gate").expect("row");
    assert_eq!(
        through.split_whitespace().take(9).collect::<Vec<_>>(),
        row.split_whitespace().take(9).collect::<Vec<_>>(),
        "{}",
        ran.stdout
    );
    let help = through_kubectl(&["--help"]);
    assert!(
        help.stdout.contains("Examples:") && help.stdout.contains("Usage:\n  kubectl otau"),
        "{}{}",
        help.stdout,
        help.stderr
    );
}
