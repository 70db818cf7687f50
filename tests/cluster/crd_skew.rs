//! Operator/CRD skew: Helm installs CRDs once and never upgrades them, so a new operator can
//! meet the CRDs of an older release. It refuses to start while an installed CRD lacks a
//! status field it writes (the apiserver would silently drop it), naming the field and the
//! fix, and starts once the release's CRDs are applied. Runs on a control plane of its own:
//! it installs an older Rollout CRD, which the other tests must not see.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::process::{OperatorProcess, operator_command};
use crate::support::{ControlPlane, repo_root};

/// The committed Rollout CRD without `status.plan.held`: what the previous release installed.
fn older_rollout_crd() -> String {
    let text = std::fs::read_to_string(repo_root().join("crds/rollouts.otau.dev.yaml"))
        .expect("crds/rollouts.otau.dev.yaml");
    let mut crd: serde_json::Value = serde_yaml::from_str(&text).expect("CRD YAML");
    let plan = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["plan"]["properties"];
    assert!(
        plan.as_object_mut()
            .expect("status.plan properties")
            .remove("held")
            .is_some(),
        "the committed CRD has status.plan.held"
    );
    serde_json::to_string(&crd).expect("JSON")
}

fn apply_crd(cp: &ControlPlane, body: &str) {
    cp.kubectl_output(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        body,
    );
    cp.kubectl_output(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/rollouts.otau.dev",
        ],
        "",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_refuses_crds_that_lack_a_field_it_writes_and_says_how_to_fix_it() {
    let (cp, _exclusive) = ControlPlane::dedicated_exclusive().await;
    apply_crd(cp, &older_rollout_crd());

    let mut child = operator_command(cp.kubeconfig())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the operator binary");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the operator kept running against an outdated CRD");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut output = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut output)
        .expect("stderr");
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut output)
        .expect("stdout");
    assert!(!status.success(), "exit status {status}: {output}");
    for needle in [
        "the installed CustomResourceDefinition rollouts.otau.dev lacks status.plan.held",
        "kubectl apply --server-side -f crds/",
        "Upgrading",
    ] {
        assert!(output.contains(needle), "{needle:?} not in:\n{output}");
    }

    // With this release's CRDs applied, the same binary starts and becomes ready.
    let current = std::fs::read_to_string(repo_root().join("crds/rollouts.otau.dev.yaml"))
        .expect("crds/rollouts.otau.dev.yaml");
    apply_crd(cp, &current);
    let operator = OperatorProcess::start(
        &mut operator_command(cp.kubeconfig()),
        Duration::from_secs(120),
    )
    .await;
    drop(operator);
}
