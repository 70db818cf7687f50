//! The chart's RBAC is enough and no more: the operator binary runs as the chart's
//! ServiceAccount (a `kubectl create token` kubeconfig, no admin), bound only by the rendered
//! ClusterRoles/Roles, through an end-to-end rollout against the emulator and a package
//! deletion (the finalizer path). The apiserver's audit log of that run must show no denied
//! request, and every verb on every resource the chart grants. Once per RBAC mode of
//! docs/security.md §5: the default (the release namespace), a `watchNamespaces` list, and
//! `watchAllNamespaces`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::chart::{chart_dir, documents, helm};
use crate::harness::{CID, Emu, MTOKEN, profile};
use crate::support::process::{
    CREDENTIAL_OPT_IN, OperatorProcess, PACKAGE_SOURCE_OPT_IN, operator_command,
};
use crate::support::{ControlPlane, tool, wait_for};

/// Devices in the fleet (tagged `fleet=e2e` by the harness profile).
const DEVICES: u64 = 300;
/// The Lease name (the chart's `leaderElection.leaseName` default).
const LEASE: &str = "otau-operator";
/// How long one step of the scenario may take.
const DEADLINE: Duration = Duration::from_secs(240);

/// One permission: (API group, resource[/subresource], verb).
type Permission = (String, String, String);

/// Whether this operator build has `--leader-elect` (the flag lands with leader election).
fn operator_has_leader_election() -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_otau-operator"))
        .args(["run", "--help"])
        .output()
        .expect("otau-operator run --help");
    String::from_utf8_lossy(&out.stdout).contains("--leader-elect")
}

/// A kubeconfig for the control plane that authenticates with `token` only.
fn service_account_kubeconfig(cp: &ControlPlane, token: &str, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    let ca = cp.dir().join("certs/apiserver.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n  - name: local\n    cluster:\n      server: {}\n      certificate-authority: {}\nusers:\n  - name: operator\n    user:\n      token: {token}\ncontexts:\n  - name: operator\n    context:\n      cluster: local\n      user: operator\ncurrent-context: operator\n",
        cp.server(),
        ca.display()
    );
    std::fs::write(&path, text).expect("write the ServiceAccount kubeconfig");
    path
}

/// Starts `otau-operator run` with `kubeconfig` as the pod `pod` in `namespace`, for every
/// namespace or only `watch`; waits for `/readyz`.
async fn start_operator(
    kubeconfig: &Path,
    namespace: &str,
    pod: &str,
    leader_elect: bool,
    watch: Option<&str>,
) -> OperatorProcess {
    let mut command = operator_command(kubeconfig);
    command
        .args(["--push-addr", "127.0.0.1:0"])
        .args(["--poll-interval-active", "1s"])
        .args(["--poll-interval-idle", "3s"])
        .args(["--status-min-interval", "300ms"]);
    if let Some(watch) = watch {
        command.args(["--watch-namespace", watch]);
    }
    if leader_elect {
        command.args([
            "--leader-elect",
            "--lease-name",
            LEASE,
            "--lease-duration",
            "4s",
            "--lease-renew-deadline",
            "3s",
        ]);
    }
    command.env("POD_NAME", pod).env("POD_NAMESPACE", namespace);
    OperatorProcess::start(&mut command, DEADLINE).await
}

/// `kubectl` as the admin, with `stdin`; returns stdout (panics on failure).
fn admin(cp: &ControlPlane, args: &[&str], stdin: &str) -> String {
    cp.kubectl_output(args, stdin)
}

/// The Warning events with `reason` in `namespace` that were repeated (series count >= 2):
/// the Recorder patched them.
fn repeated_events(cp: &ControlPlane, namespace: &str, reason: &str) -> usize {
    let text = admin(
        cp,
        &["get", "events.events.k8s.io", "-n", namespace, "-o", "json"],
        "",
    );
    let v: serde_json::Value = serde_json::from_str(&text).expect("events JSON");
    v["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["reason"] == reason && e["series"]["count"].as_u64().unwrap_or(0) >= 2)
        .count()
}

/// The permissions the rendered ClusterRoles and Roles grant, rule by rule.
fn granted(rendered: &str) -> BTreeSet<Permission> {
    let mut out = BTreeSet::new();
    for doc in documents(rendered) {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "Role" {
            continue;
        }
        for rule in doc["rules"].as_sequence().expect("rules") {
            let list = |key: &str| -> Vec<String> {
                rule[key]
                    .as_sequence()
                    .map(|s| {
                        s.iter()
                            .map(|v| v.as_str().expect("string").to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        out.insert((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

/// What `user` did according to the audit log: the permissions it used, and the requests the
/// apiserver denied (as readable lines).
fn audited(log: &Path, user: &str) -> (BTreeSet<Permission>, Vec<String>) {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("reading the audit log {}: {e}", log.display()));
    let mut used = BTreeSet::new();
    let mut denied = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if event["user"]["username"] != user {
            continue;
        }
        let object = &event["objectRef"];
        let Some(resource) = object["resource"].as_str() else {
            // Discovery and other non-resource URLs (/api, /apis, /version).
            continue;
        };
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        let group = object["apiGroup"].as_str().unwrap_or("").to_owned();
        let verb = event["verb"].as_str().unwrap_or("").to_owned();
        if event["responseStatus"]["code"] == 403 {
            denied.push(format!(
                "{verb} {group}/{resource} {} {}",
                object["namespace"].as_str().unwrap_or("-"),
                object["name"].as_str().unwrap_or("-")
            ));
        } else {
            used.insert((group, resource, verb));
        }
    }
    (used, denied)
}

/// Takes and renews the Lease the way a leader does (get, create, update), as the
/// ServiceAccount with kubectl: used only when the operator has no `--leader-elect` yet, so
/// the chart's Lease rule is still checked against the audit log.
fn exercise_lease_rule(kubeconfig: &Path, namespace: &str) {
    let kubectl = |args: &[&str], stdin: &str| -> String {
        use std::io::Write;
        let mut child = Command::new(tool("kubectl"))
            .env_remove("KUBECONFIG")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["-n", namespace])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?} as the ServiceAccount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let lease = format!(
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: {LEASE}\nspec:\n  holderIdentity: rbac-pod-0\n  leaseDurationSeconds: 15\n"
    );
    kubectl(&["create", "-f", "-"], &lease);
    let current = kubectl(&["get", "lease", LEASE, "-o", "json"], "");
    let mut current: serde_json::Value = serde_json::from_str(&current).expect("lease JSON");
    current["spec"]["holderIdentity"] = "rbac-pod-1".into();
    kubectl(&["replace", "-f", "-"], &current.to_string());
}

/// Which namespaces the chart's values make the operator watch (docs/security.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Default values: the release namespace, the rules in a Role there.
    ReleaseNamespace,
    /// `watchNamespaces` set to another namespace: the rules in a Role there.
    Listed,
    /// `watchAllNamespaces: true`: the rules in a ClusterRole.
    All,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_with_exactly_the_charts_rbac() {
    prove_chart_rbac("otau-operator", Mode::ReleaseNamespace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_with_exactly_the_charts_roles_for_watched_namespaces() {
    prove_chart_rbac("otau-operator-roles", Mode::Listed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_with_exactly_the_charts_cluster_role_for_all_namespaces() {
    prove_chart_rbac("otau-operator-all", Mode::All).await;
}

/// The scenario of the tests, as the ServiceAccount of the chart installed as `release` (its
/// own ServiceAccount, ClusterRoles and bindings) with the values of `mode`.
async fn prove_chart_rbac(release: &str, mode: Mode) {
    let cp = ControlPlane::with_audit_log();
    let audit_log = cp.audit_log().expect("an audit log");
    let release_ns = cp.namespace("rbac-release").await;
    // The fleet's objects live in the release namespace by default, in another one else.
    let ns = match mode {
        Mode::ReleaseNamespace => release_ns.clone(),
        Mode::Listed | Mode::All => cp.namespace("rbac-fleet").await,
    };

    // The chart's ServiceAccount and RBAC, rendered for the release namespace, applied by the
    // admin.
    let chart = chart_dir();
    let watch = format!("watchNamespaces={{{ns}}}");
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        &release_ns,
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ];
    match mode {
        Mode::ReleaseNamespace => {}
        Mode::Listed => args.extend(["--set", &watch]),
        Mode::All => args.extend(["--set", "watchAllNamespaces=true"]),
    }
    let rendered = helm(&args).unwrap_or_else(|e| panic!("helm {args:?}: {e}"));
    let cluster_roles: Vec<serde_yaml::Value> = documents(&rendered)
        .into_iter()
        .filter(|d| d["kind"] == "ClusterRole")
        .collect();
    // Unless every namespace is watched, only the CRD reads are cluster-wide: no Secret is
    // readable outside the watched namespaces.
    let cluster_wide = serde_yaml::to_string(&cluster_roles).expect("yaml");
    if mode == Mode::All {
        assert_eq!(cluster_roles.len(), 2, "{rendered}");
    } else {
        assert_eq!(cluster_roles.len(), 1, "{rendered}");
        assert!(!cluster_wide.contains("secrets"), "{cluster_wide}");
    }
    admin(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=otau-tests",
            "-f",
            "-",
        ],
        &rendered,
    );
    let token = admin(
        cp,
        &[
            "create",
            "token",
            release,
            "-n",
            &release_ns,
            "--duration=2h",
        ],
        "",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = service_account_kubeconfig(cp, token.trim(), dir.path());
    let user = format!("system:serviceaccount:{release_ns}:{release}");

    let emulator = Emu::start(&profile(9, &[("rbac-", DEVICES, "")])).await;
    let leader_elect = operator_has_leader_election();
    let mut operator = start_operator(
        &kubeconfig,
        &release_ns,
        &format!("{release}-0"),
        leader_elect,
        (mode != Mode::All).then_some(ns.as_str()),
    )
    .await;

    // The connector first, without its Secret: the operator reports SecretNotFound again
    // and again, so the Recorder patches the repeated event into a series.
    let connector = format!(
        "apiVersion: otau.dev/v1alpha1\nkind: IoTConnector\nmetadata:\n  name: emulator\nspec:\n  productId: {CID}\n  managementUrl: {}/api:1/\n  allowInsecureHttp: true\n  tokenSecretRef:\n    name: token\n  rateLimit:\n    requestsPerSecond: 5000\n    burst: 5000\n",
        emulator.base
    );
    admin(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=rbac-user",
            "-n",
            &ns,
            "-f",
            "-",
        ],
        &connector,
    );
    wait_for(DEADLINE, "a repeated SecretNotFound event", || {
        let repeated = repeated_events(cp, &ns, "SecretNotFound");
        async move { repeated > 0 }
    })
    .await;

    // Then the Secret, a ConfigMap package source, the package and a Rollout to every device.
    let rest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n{CREDENTIAL_OPT_IN}type: Opaque\nstringData:\n  token: {MTOKEN}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n{PACKAGE_SOURCE_OPT_IN}data:\n  notes.txt: release notes of 2.0.0\n---\napiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw\nspec:\n  connectorRef:\n    name: emulator\n  version: 2.0.0\n  links:\n    - https://vendor.example.com/fw/2.0.0/fw.img\n  files:\n    - name: notes.txt\n      configMapKeyRef:\n        name: notes\n        key: notes.txt\n      contentType: text/plain\n---\napiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: fw-all\nspec:\n  packageRef:\n    name: fw\n  targets:\n    tags:\n      - name: fleet\n        value: e2e\n  waves:\n    - percent: 20\n    - percent: 100\n"
    );
    admin(
        cp,
        &[
            "apply",
            "--server-side",
            "--field-manager=rbac-user",
            "-n",
            &ns,
            "-f",
            "-",
        ],
        &rest,
    );
    let out = admin(
        cp,
        &[
            "wait",
            "-n",
            &ns,
            "--for=condition=Complete",
            &format!("--timeout={}s", DEADLINE.as_secs()),
            "rollout.otau.dev/fw-all",
        ],
        "",
    );
    assert!(out.contains("condition met"), "{out}\n{}", operator.logs());

    // The finalizer path: the Rollout goes, then the package, whose content the operator
    // removes from the platform before it lets the object go.
    admin(
        cp,
        &[
            "delete",
            "-n",
            &ns,
            "rollout.otau.dev/fw-all",
            "--wait=false",
        ],
        "",
    );
    admin(
        cp,
        &[
            "delete",
            "-n",
            &ns,
            "softwarepackage.otau.dev/fw",
            "--wait=false",
        ],
        "",
    );
    wait_for(DEADLINE, "the SoftwarePackage to be deleted", || {
        let out = cp
            .kubectl()
            .args([
                "get",
                "-n",
                &ns,
                "softwarepackage.otau.dev/fw",
                "--ignore-not-found",
                "-o",
                "name",
            ])
            .output()
            .expect("kubectl get");
        let gone = out.status.success() && out.stdout.is_empty();
        async move { gone }
    })
    .await;

    assert!(
        operator.stop(DEADLINE).await,
        "the operator did not exit 0 after SIGTERM:\n{}",
        operator.logs()
    );
    if !leader_elect {
        eprintln!(
            "otau-operator has no --leader-elect yet: the chart's Lease rule is exercised with kubectl as the ServiceAccount"
        );
        exercise_lease_rule(&kubeconfig, &release_ns);
    }

    let (used, denied) = audited(audit_log, &user);
    assert!(
        denied.is_empty(),
        "the apiserver denied the chart's ServiceAccount {} request(s): the chart must grant them:\n  {}\noperator logs:\n{}",
        denied.len(),
        denied.join("\n  "),
        operator.logs()
    );
    let granted = granted(&rendered);
    let unused: Vec<String> = granted
        .difference(&used)
        .map(|(group, resource, verb)| format!("{verb} {group}/{resource}"))
        .collect();
    assert!(
        unused.is_empty(),
        "the chart grants permissions the operator never used in this run (remove them, or \
         exercise them here):\n  {}\nused:\n  {}",
        unused.join("\n  "),
        used.iter()
            .map(|(g, r, v)| format!("{v} {g}/{r}"))
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    // Sanity: the run really went through the operator's own identity.
    assert!(
        used.contains(&("otau.dev".into(), "rollouts/status".into(), "patch".into())),
        "{used:?}"
    );
}
