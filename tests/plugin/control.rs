//! `status` of a running, paused and aborted rollout, `pause` / `resume` / `abort` through
//! their annotations, a GitOps-style revert of each annotation (nothing acts twice, the next
//! command acts again), and `status --watch` on a pseudo-terminal showing a pause made while
//! it runs.

use kube::api::Api;
use otau_operator::api::Rollout;
use otau_operator::api::rollout::RolloutPhase;

use crate::cli::{Terminal, line_starting, otau, run_with};
use crate::harness::{
    DEADLINE, Emu, Operator, apply, base_yaml, has, kubectl, profile, rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

/// One wave over everything; the silent half never reports, so the wave stays in progress
/// (the device timeout is an hour).
const ONE_WAVE: &str = "  waves:\n    - percent: 100\n";

fn annotation_value(text: &str, key: &str) -> String {
    let start = text
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {text:?}"))
        + key.len()
        + 1;
    text[start..]
        .split(')')
        .next()
        .expect("value")
        .trim()
        .to_owned()
}

fn acted_pause(r: &Rollout) -> Option<String> {
    r.status.as_ref().and_then(|s| s.acted_on.pause.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pause_resume_revert_abort_and_watch() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("plugin-control").await;
    let emu = Emu::start(&profile(
        31,
        &[("ok-", 10, ""), ("mute-", 10, "silence: 1")],
    ))
    .await;
    let op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &rollout_yaml("fw-run", ONE_WAVE));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);

    // Running: the ten reporting devices succeeded, the ten silent ones are still notified.
    wait_rollout(&api, "fw-run", "ten successes, ten in flight", |r| {
        r.status.as_ref().is_some_and(|s| {
            s.phase == Some(RolloutPhase::Progressing)
                && s.totals.succeeded == 10
                && s.totals.notified == 10
        })
    })
    .await;
    let text = otau(cp, &ns, &["status", "fw-run"]);
    eprintln!("--- status (running)\n{text}");
    assert!(text.contains("Phase:         ◌ Progressing\n"), "{text}");
    assert!(
        text.contains("Waiting for:   10 devices of wave 1 to finish\n"),
        "{text}"
    );
    assert!(
        text.contains("Success rate:  100.0% (10 of 10 finished devices succeeded)"),
        "{text}"
    );
    let wave = line_starting(&text, "1 ").expect("wave 1 row");
    assert_eq!(
        wave.split_whitespace().take(8).collect::<Vec<_>>(),
        ["1", "20", "0", "10", "0", "10", "0", "0"],
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour off a terminal: {text:?}");

    // The live view on a terminal; a pause made while it runs appears in it.
    let mut watch = Terminal::start(cp, &ns, &["status", "fw-run", "--watch"]);
    watch.wait_for_text(0, "Progressing", DEADLINE).await;
    assert!(watch.output().contains("\x1b[36m"), "colour on a terminal");
    let mark = watch.mark();
    let said = otau(cp, &ns, &["pause", "fw-run"]);
    assert!(
        said.starts_with("rollout.otau.dev/fw-run pause requested"),
        "{said}"
    );
    assert!(
        said.contains(&format!("until `kubectl otau resume fw-run -n {ns}`")),
        "the hint names the namespace: {said}"
    );
    let first_pause = annotation_value(&said, "otau.dev/pause");
    let on_screen = watch.wait_for_text(mark, "PausedByUser", DEADLINE).await;
    eprintln!(
        "MEASURED: from the pause command's return to the pause on the redrawn watch view: \
         {on_screen:?} (operator reaction + status write + watch event + redraw)"
    );
    let r = wait_rollout(&api, "fw-run", "paused by the user", |r| {
        has(r, "Paused", "True", "PausedByUser")
    })
    .await;
    assert_eq!(acted_pause(&r), Some(first_pause.clone()));
    let text = otau(cp, &ns, &["status", "fw-run"]);
    eprintln!("--- status (paused)\n{text}");
    assert!(text.contains("Phase:         ॥ Paused\n"), "{text}");
    assert!(
        text.contains(&format!(
            "Waiting for:   a resume: kubectl otau resume fw-run -n {ns}\n"
        )),
        "{text}"
    );

    // Resume -> Progressing.
    let said = otau(cp, &ns, &["resume", "fw-run"]);
    let first_resume = annotation_value(&said, "otau.dev/resume");
    wait_rollout(&api, "fw-run", "progressing again", |r| {
        has(r, "Progressing", "True", "WaveInProgress") && !has(r, "Paused", "True", "PausedByUser")
    })
    .await;

    // A GitOps tool reverts both annotations: nothing acts again.
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "rollout.otau.dev/fw-run",
            "otau.dev/pause-",
            "otau.dev/resume-",
        ],
    );
    let listings = op.listings().await;
    op.two_more_listings(listings).await;
    let r = api.get("fw-run").await.expect("get");
    assert!(
        has(&r, "Progressing", "True", "WaveInProgress"),
        "the revert paused nothing: {:?}",
        r.status
    );
    let acted = r.status.clone().expect("status").acted_on;
    assert_eq!(acted.pause, Some(first_pause.clone()));
    assert_eq!(acted.resume, Some(first_resume));

    // ... and the next pause and resume act again.
    let said = otau(cp, &ns, &["pause", "fw-run"]);
    let second_pause = annotation_value(&said, "otau.dev/pause");
    assert_ne!(second_pause, first_pause);
    wait_rollout(&api, "fw-run", "paused again", |r| {
        has(r, "Paused", "True", "PausedByUser") && acted_pause(r) == Some(second_pause.clone())
    })
    .await;
    otau(cp, &ns, &["resume", "fw-run"]);
    wait_rollout(&api, "fw-run", "progressing again", |r| {
        has(r, "Progressing", "True", "WaveInProgress")
    })
    .await;

    // Abort -> Aborted; the watch ends by itself, exit 1 for an aborted rollout.
    let mark = watch.mark();
    let said = otau(cp, &ns, &["abort", "fw-run"]);
    assert!(said.contains("abort requested"), "{said}");
    let r = wait_rollout(&api, "fw-run", "aborted", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(RolloutPhase::Aborted))
    })
    .await;
    assert!(has(&r, "Stalled", "True", "Aborted"), "{:?}", r.status);
    watch.wait_for_text(mark, "Aborted", DEADLINE).await;
    assert_eq!(watch.wait_exit(DEADLINE).await, Some(1));
    let text = otau(cp, &ns, &["status", "fw-run"]);
    assert!(text.contains("Phase:         ✖ Aborted\n"), "{text}");
    assert!(!text.contains("Waiting for:"), "{text}");

    // Reverting the abort annotation changes nothing; acting on an aborted rollout is refused.
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "rollout.otau.dev/fw-run",
            "otau.dev/abort-",
        ],
    );
    let listings = op.listings().await;
    op.two_more_listings(listings).await;
    let r = api.get("fw-run").await.expect("get");
    assert_eq!(r.status.and_then(|s| s.phase), Some(RolloutPhase::Aborted));
    let refused = run_with(cp.kubeconfig(), &ns, &["pause", "fw-run"]);
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stderr.contains("fw-run is aborted (terminal)"),
        "{}",
        refused.stderr
    );
    // A name that does not exist is named, with what to do.
    let missing = run_with(cp.kubeconfig(), &ns, &["status", "nope"]);
    assert_eq!(missing.code, Some(1));
    assert_eq!(
        missing.stderr.trim(),
        format!(
            "error: Rollout {ns}/nope not found; list the rollouts with `kubectl otau list -n {ns}` (or `-A` for every namespace)"
        )
    );
}
