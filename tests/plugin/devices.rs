//! `devices --state failed` lists exactly the devices the emulator failed; the Secret is read
//! with the user's rights, and a user who may not read it is told what to ask for (and never
//! sees the token).

use std::collections::BTreeSet;

use kube::api::Api;
use kube::config::{AuthInfo, Kubeconfig};
use otau_operator::api::Rollout;
use otau_operator::api::rollout::RolloutPhase;
use otau_operator::otau::{Classification, classify};

use crate::cli::{otau, run_with};
use crate::harness::{
    Emu, MTOKEN, Operator, VERSION, apply, base_yaml, kubectl, kubectl_stdin, profile,
    rollout_yaml, wait_rollout,
};
use crate::support::ControlPlane;

/// One wave; failures never trip the threshold.
const TOLERANT: &str =
    "  waves:\n    - percent: 100\n  policy:\n    failureThreshold:\n      percent: 100\n";

/// A kubeconfig like the admin one, but authenticating with `token`.
fn kubeconfig_with_token(
    cp: &ControlPlane,
    token: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let mut config = Kubeconfig::read_from(cp.kubeconfig()).expect("kubeconfig");
    for user in &mut config.auth_infos {
        user.auth_info = Some(AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        });
    }
    let path = dir.join("viewer.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_failed_are_exactly_the_emulators_failures() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("plugin-devices").await;
    let emu = Emu::start(&profile(
        33,
        &[("ok-", 15, ""), ("bad-", 5, "install_error: 1")],
    ))
    .await;
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(cp, &ns, &rollout_yaml("fw-mixed", TOLERANT));
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    wait_rollout(&api, "fw-mixed", "complete", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(RolloutPhase::Complete))
    })
    .await;

    // Ground truth: the devices whose last report on the emulator is a failure.
    let conn = emu.conn();
    let all: Vec<String> = emu.writes().into_keys().collect();
    assert_eq!(all.len(), 20);
    let failed: BTreeSet<String> = all
        .iter()
        .filter(|id| {
            let state = conn.state(id).expect("state");
            let raw = state.get("otau_in").and_then(|s| s.reported.clone());
            classify(raw.as_deref(), VERSION) == Classification::Failed
        })
        .cloned()
        .collect();
    assert_eq!(failed.len(), 5, "{failed:?}");

    let json: serde_json::Value = serde_json::from_str(&otau(
        cp,
        &ns,
        &["devices", "fw-mixed", "--state", "failed", "-o", "json"],
    ))
    .expect("JSON");
    let listed: BTreeSet<String> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|d| {
            assert_eq!(d["report"]["status"], "INSTALL_ERROR", "{d}");
            assert_eq!(d["attempt"], 1, "{d}");
            d["identity"].as_str().expect("identity").to_owned()
        })
        .collect();
    assert_eq!(listed, failed);

    // status lists the recent failures: exactly those devices.
    let text = otau(cp, &ns, &["status", "fw-mixed"]);
    eprintln!("--- status (complete with failures)\n{text}");
    assert!(
        text.contains("Recent failures (5 shown, newest first):"),
        "{text}"
    );
    let shown: BTreeSet<String> = text
        .lines()
        .filter(|l| l.contains(" INSTALL_ERROR "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    assert_eq!(shown, failed, "{text}");

    // The table: every device, one line each, states as the status counts them.
    let text = otau(cp, &ns, &["devices", "fw-mixed"]);
    eprintln!("--- devices\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 21, "{text}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "DEVICE", "WAVE", "STATE", "ATTEMPT", "REPORT", "VERSION", "AGE", "MESSAGE"
        ]
    );
    let succeeded = lines.iter().filter(|l| l.contains(" succeeded ")).count();
    assert_eq!(succeeded, 15, "{text}");
    assert!(!text.contains(MTOKEN));

    // A user who may read Rollouts, packages and connectors but not Secrets.
    let role = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: viewer\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: otau-viewer\nrules:\n\
         - apiGroups: [otau.dev]\n  resources: [rollouts, softwarepackages, iotconnectors]\n  verbs: [get, list, watch]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: otau-viewer\n\
         roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: otau-viewer\n\
         subjects:\n- kind: ServiceAccount\n  name: viewer\n  namespace: {ns}\n"
    );
    kubectl_stdin(cp, &["apply", "-n", &ns, "-f", "-"], &role);
    let token = kubectl(cp, &["create", "token", "viewer", "-n", &ns]);
    let dir = tempfile::tempdir().expect("tempdir");
    let viewer = kubeconfig_with_token(cp, token.trim(), dir.path());
    let ran = run_with(&viewer, &ns, &["status", "fw-mixed"]);
    assert_eq!(ran.code, Some(0), "status needs no Secret: {}", ran.stderr);
    let ran = run_with(&viewer, &ns, &["devices", "fw-mixed"]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    eprintln!("--- devices without Secret rights\n{}", ran.stderr);
    assert!(
        ran.stderr
            .starts_with(&format!("error: get Secret {ns}/token: forbidden")),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr
            .contains(&format!("needs `get` on Secret {ns}/token")),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains(MTOKEN) && !ran.stdout.contains(MTOKEN));
    // Pausing needs patch rights the viewer lacks: named, with what to ask for.
    let ran = run_with(&viewer, &ns, &["pause", "fw-mixed"]);
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("forbidden") && ran.stderr.contains("ask for `patch` on rollouts"),
        "{}",
        ran.stderr
    );

    // Even a user who may read the Secret sends its token only where it opted in
    // (docs/security.md §1): without the label, devices refuses and says how to add it.
    kubectl(
        cp,
        &[
            "label",
            "secret",
            "token",
            "otau.dev/connector-credential-",
            "-n",
            &ns,
        ],
    );
    let ran = run_with(cp.kubeconfig(), &ns, &["devices", "fw-mixed"]);
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "kubectl label secret token otau.dev/connector-credential=true -n {ns}"
        )),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains(MTOKEN) && !ran.stdout.contains(MTOKEN));
}

/// Devices holding a manifest no package of the connector made (deployed from elsewhere, here
/// written to the emulator as the ExoSense UI would) show as `foreign` in `status`, `list` and
/// `devices`, exactly those devices; the Rollout is paused from the start, so none is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_devices_show_in_status_list_and_devices() {
    use otau_operator::otau::{CONFIG_OTAU, Manifest, Report};
    let cp = ControlPlane::get();
    let ns = cp.namespace("plugin-foreign").await;
    let emu = Emu::start(&profile(34, &[("ok-", 6, "")])).await;
    let conn = emu.conn();
    let tool = Manifest::url_list(
        "7.7.0",
        "Vendor tool",
        "",
        vec!["https://vendor.example.com/tool/7.7.0.img".into()],
    );
    let foreign: BTreeSet<String> = ["ok-000001", "ok-000004"].map(String::from).into();
    for id in &foreign {
        conn.set_state(id, &[(CONFIG_OTAU.into(), tool.to_json())], "exosense-ui")
            .expect("out-of-band write");
    }
    // The devices run that update to its end: then they are foreign, not busy.
    for id in &foreign {
        crate::support::wait_for(crate::harness::DEADLINE, "the out-of-band update", || {
            let done = emu
                .reported(id, "otau_in")
                .and_then(|r| Report::parse(&r).ok())
                .is_some_and(|r| r.version == "7.7.0" && r.status.as_str() == "INSTALLED_VERSION");
            async move { done }
        })
        .await;
    }
    let _op = Operator::start(cp, &ns, &[]).await;
    apply(cp, &ns, &base_yaml(&emu));
    apply(
        cp,
        &ns,
        &rollout_yaml("fw-foreign", &format!("  paused: true\n{TOLERANT}")),
    );
    let api: Api<Rollout> = Api::namespaced(cp.client().await, &ns);
    wait_rollout(&api, "fw-foreign", "two foreign devices", |r| {
        r.status.as_ref().is_some_and(|s| s.totals.foreign == 2)
    })
    .await;

    let text = otau(cp, &ns, &["status", "fw-foreign"]);
    eprintln!("--- status (foreign devices)\n{text}");
    assert!(
        text.contains("Devices:       4 pending, 2 foreign\n"),
        "{text}"
    );

    let text = otau(cp, &ns, &["list"]);
    let mut lines = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    let header = lines.next().expect("header");
    let row = lines.next().expect("row");
    let at = header
        .iter()
        .position(|h| *h == "FOREIGN")
        .expect("FOREIGN");
    // The phase cell is two words ("॥ Paused").
    assert_eq!(row[at + 1], "2", "{text}");

    let listed = crate::support::process::listed_identities(&otau(
        cp,
        &ns,
        &["devices", "fw-foreign", "--state", "foreign", "-o", "json"],
    ));
    assert_eq!(listed, foreign);
    for (id, writes) in emu.write_records() {
        assert!(
            writes.iter().all(|w| w.client == "exosense-ui"),
            "{id} written by the paused Rollout: {writes:?}"
        );
    }
}
