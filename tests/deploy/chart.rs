//! The Helm chart `charts/otau-operator` with the real tools: `helm lint`, `helm template`
//! (defaults and every optional feature on) applied with `kubectl apply --dry-run=server` to the
//! local kube-apiserver, the values schema rejecting unknown keys, the rendered manifests in
//! `deploy/` kept equal to the chart, and the kustomize base.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{ControlPlane, repo_root, tool};

/// The release name and namespace `deploy/otau-operator.yaml` is rendered with.
pub const RELEASE: &str = "otau-operator";
/// The namespace of the rendered manifests.
pub const DEPLOY_NAMESPACE: &str = "otau-system";
/// The command that regenerates both rendered copies (also in docs/install.md).
pub const REGENERATE: &str = "helm template otau-operator charts/otau-operator --namespace otau-system --include-crds > deploy/otau-operator.yaml && cp deploy/otau-operator.yaml deploy/kustomize/base/otau-operator.yaml";

/// The chart folder.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/otau-operator")
}

/// The values file with every optional feature on.
fn all_features_values() -> PathBuf {
    chart_dir().join("ci/all-features-values.yaml")
}

/// Runs helm with `args` from the repository root; `Ok(stdout)` or `Err(stdout + stderr)`.
pub fn helm(args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool("helm"))
        .args(args)
        .current_dir(repo_root())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("otau-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("otau-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("otau-helm-data"),
        )
        .stdin(Stdio::null())
        .output()
        .expect("run helm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// `helm template <RELEASE> charts/otau-operator --namespace <namespace> <extra...>`; panics
/// with helm's output when it fails.
pub fn render(namespace: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    helm(&args).unwrap_or_else(|e| panic!("helm {args:?} failed:\n{e}"))
}

/// The YAML documents of a multi-document stream, parsed (empty documents skipped).
pub fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("valid YAML from helm"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The documents of `kind`.
fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// Creates (or keeps) the namespaces for real: a dry-run cannot put objects in a namespace
/// that does not exist.
fn ensure_namespaces(cp: &ControlPlane, names: &[&str]) {
    for name in names {
        cp.kubectl_output(
            &[
                "apply",
                "--server-side",
                "--field-manager=otau-tests",
                "-f",
                "-",
            ],
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"),
        );
    }
}

/// `kubectl apply --server-side --dry-run=server -f -` of `yaml`; returns kubectl's output.
fn dry_run_apply(cp: &ControlPlane, yaml: &str) -> String {
    cp.kubectl_output(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=otau-chart-test",
            "-f",
            "-",
        ],
        yaml,
    )
}

#[test]
fn helm_lint_passes_with_defaults_and_with_every_feature_on() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for extra in [
        vec![],
        vec!["-f", all_features_values().to_str().expect("UTF-8")],
    ] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend(extra);
        let out = helm(&args).unwrap_or_else(|e| panic!("helm {args:?} failed:\n{e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

#[test]
fn chart_crds_are_the_same_bytes_as_the_repository_crds() {
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        names
    };
    let repo = repo_root().join("crds");
    let chart = chart_dir().join("crds");
    assert_eq!(
        names(&repo),
        names(&chart),
        "charts/otau-operator/crds/ must hold the same files as crds/ (cp crds/*.yaml charts/otau-operator/crds/)"
    );
    assert_eq!(names(&repo).len(), 3);
    for name in names(&repo) {
        let a = std::fs::read(repo.join(&name)).expect("read crd");
        let b = std::fs::read(chart.join(&name)).expect("read chart crd");
        assert!(
            a == b,
            "charts/otau-operator/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/otau-operator/crds/"
        );
    }
}

#[test]
fn the_rendered_manifests_in_deploy_are_what_the_chart_renders() {
    let rendered = render(DEPLOY_NAMESPACE, &["--include-crds"]);
    for copy in [
        "deploy/otau-operator.yaml",
        "deploy/kustomize/base/otau-operator.yaml",
    ] {
        let committed = std::fs::read_to_string(repo_root().join(copy))
            .unwrap_or_else(|e| panic!("reading {copy}: {e}; regenerate it with: {REGENERATE}"));
        assert!(
            committed == rendered,
            "{copy} is not what the chart renders with default values; regenerate it with:\n  {REGENERATE}"
        );
    }
}

#[test]
fn the_default_pod_is_hardened_and_leader_elected() {
    let docs = documents(&render(DEPLOY_NAMESPACE, &[]));
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let d = deployments[0];
    assert_eq!(d["spec"]["replicas"], 2);
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    let security = &c["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let watch_release = format!("--watch-namespace={DEPLOY_NAMESPACE}");
    for wanted in [
        "run",
        "--leader-elect",
        "--work-dir=/var/lib/otau-operator/work",
        "--work-dir-size-limit=1Gi",
        "--upload-concurrency=2",
        "--metrics-addr=0.0.0.0:8080",
        "--push-addr=0.0.0.0:8081",
        &watch_release,
    ] {
        assert!(args.contains(&wanted), "{wanted} missing from {args:?}");
    }
    assert_eq!(
        args.iter()
            .filter(|a| a.starts_with("--watch-namespace"))
            .count(),
        1,
        "the release namespace only: {args:?}"
    );
    assert!(
        !args
            .iter()
            .any(|a| a.starts_with("--allow-private-sources") || a.starts_with("--platform-host")),
        "{args:?}"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(env, ["POD_NAME", "POD_NAMESPACE", "POD_IP"]);
    assert_eq!(
        c["env"][2]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP",
        "the advertised push URL uses the pod IP"
    );
    assert_eq!(pod["volumes"][0]["emptyDir"]["sizeLimit"], "1Gi");
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    // Default: the release namespace only, so the rules are in a Role there (beside the
    // Lease's); no ClusterRole grants anything on Secrets or ConfigMaps.
    let roles: Vec<(&str, &str)> = of_kind(&docs, "Role")
        .iter()
        .filter_map(|r| {
            Some((
                r["metadata"]["namespace"].as_str()?,
                r["metadata"]["name"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        roles,
        [
            (DEPLOY_NAMESPACE, "otau-operator"),
            (DEPLOY_NAMESPACE, "otau-operator-leader-election")
        ]
    );
    let cluster_roles = of_kind(&docs, "ClusterRole");
    assert_eq!(cluster_roles.len(), 1, "only the CRD reads");
    let cluster_wide = serde_yaml::to_string(&cluster_roles).expect("yaml");
    assert!(
        !cluster_wide.contains("secrets") && !cluster_wide.contains("configmaps"),
        "{cluster_wide}"
    );
}

#[test]
fn watch_all_namespaces_keeps_the_cluster_role_and_passes_no_namespace() {
    let docs = documents(&render(
        DEPLOY_NAMESPACE,
        &["--set", "watchAllNamespaces=true"],
    ));
    let cluster_roles: Vec<&str> = of_kind(&docs, "ClusterRole")
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert_eq!(cluster_roles, ["otau-operator", "otau-operator-crds"]);
    let rules = serde_yaml::to_string(&of_kind(&docs, "ClusterRole")[0]).expect("yaml");
    assert!(rules.contains("secrets"), "{rules}");
    let roles: Vec<&str> = of_kind(&docs, "Role")
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert_eq!(roles, ["otau-operator-leader-election"]);
    let args = serde_yaml::to_string(
        &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"],
    )
    .expect("yaml");
    assert!(!args.contains("--watch-namespace"), "{args}");
}

#[test]
fn platform_hosts_and_the_upload_budget_become_flags() {
    let docs = documents(&render(
        DEPLOY_NAMESPACE,
        &[
            "--set",
            "operator.platformHosts={bizapi.hosted.exosite.io,murano.example.net}",
            "--set",
            "operator.uploadConcurrency=3",
            "--set",
            "workDir.sizeLimit=2Gi",
        ],
    ));
    let args = serde_yaml::to_string(
        &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"],
    )
    .expect("yaml");
    for wanted in [
        "--platform-host=bizapi.hosted.exosite.io",
        "--platform-host=murano.example.net",
        "--upload-concurrency=3",
        "--work-dir-size-limit=2Gi",
    ] {
        assert!(args.contains(wanted), "{wanted} missing from {args}");
    }
}

#[test]
fn watch_namespaces_turn_the_cluster_role_into_roles_and_flags() {
    let docs = documents(&render(
        DEPLOY_NAMESPACE,
        &["--set", "watchNamespaces={team-a,team-b}"],
    ));
    let roles: Vec<(String, String)> = of_kind(&docs, "Role")
        .iter()
        .map(|r| {
            (
                r["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
                r["metadata"]["name"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        roles.contains(&("team-a".into(), "otau-operator".into())),
        "{roles:?}"
    );
    assert!(
        roles.contains(&("team-b".into(), "otau-operator".into())),
        "{roles:?}"
    );
    let cluster_roles: Vec<&str> = of_kind(&docs, "ClusterRole")
        .iter()
        .filter_map(|r| r["metadata"]["name"].as_str())
        .collect();
    assert_eq!(cluster_roles, ["otau-operator-crds"]);
    let args =
        &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--watch-namespace=team-a"), "{args:?}");
    assert!(args.contains(&"--watch-namespace=team-b"), "{args:?}");
}

/// The `--listener-*` flags of the deployment: the chart's defaults are the binary's
/// (`otau-operator run --help`), values reach the flags (large numbers as integers), and the
/// schema refuses a zero cap or a duration it cannot parse.
#[test]
fn listener_limits_render_as_flags_with_the_binarys_defaults() {
    let args_of = |yaml: &str| -> Vec<String> {
        let docs = documents(yaml);
        of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_sequence()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect()
    };
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_otau-operator"))
        .args(["run", "--help"])
        .output()
        .expect("otau-operator run --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let defaults = args_of(&render(DEPLOY_NAMESPACE, &[]));
    for flag in [
        "--listener-header-timeout",
        "--listener-body-timeout",
        "--listener-max-connections",
        "--listener-max-bodies-in-flight",
    ] {
        let rendered = defaults
            .iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            .unwrap_or_else(|| panic!("{flag} missing from {defaults:?}"));
        let start = help
            .find(&format!("{flag} <"))
            .unwrap_or_else(|| panic!("{flag} missing from run --help"));
        let section = &help[start..];
        let section = &section[..section[2..]
            .find("\n      --")
            .map_or(section.len(), |i| i + 2)];
        assert!(
            section.contains(&format!("[default: {rendered}]")),
            "the chart passes {flag}={rendered}, the binary's default differs:\n{section}"
        );
    }
    let set = args_of(&render(
        DEPLOY_NAMESPACE,
        &[
            "--set",
            "listeners.maxConnections=1000000",
            "--set",
            "listeners.headerTimeout=3s",
        ],
    ));
    assert!(
        set.contains(&"--listener-max-connections=1000000".to_string()),
        "{set:?}"
    );
    assert!(
        set.contains(&"--listener-header-timeout=3s".to_string()),
        "{set:?}"
    );
    let chart = chart_dir().display().to_string();
    for bad in ["listeners.maxConnections=0", "listeners.bodyTimeout=ten"] {
        let error = helm(&["template", RELEASE, &chart, "--set", bad])
            .expect_err(&format!("helm template accepted {bad}"));
        assert!(error.contains("listeners"), "{bad}: {error}");
    }
}

#[test]
fn values_schema_rejects_unknown_keys_with_a_clear_message() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for (set, key, at) in [
        ("replica=3", "replica", "at ''"),
        ("operator.pollIntervall=1s", "pollIntervall", "/operator"),
        (
            "metrics.serviceMonitor.enable=true",
            "enable",
            "/metrics/serviceMonitor",
        ),
    ] {
        let error = helm(&["template", RELEASE, chart, "--set", set])
            .expect_err(&format!("helm template accepted the unknown key {set}"));
        assert!(
            error.contains(&format!("additional properties '{key}' not allowed"))
                && error.contains(at),
            "helm's message for {set} does not name the key and where it is:\n{error}"
        );
    }
    let error = helm(&[
        "template",
        RELEASE,
        chart,
        "--set",
        "operator.logFormat=xml",
    ])
    .expect_err("an unknown log format");
    assert!(error.contains("logFormat"), "{error}");
}

#[test]
fn value_combinations_the_schema_cannot_express_fail_with_what_to_change() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for (sets, needle) in [
        (
            vec!["leaderElection.enabled=false"],
            "replicas must be 1 when leaderElection.enabled is false",
        ),
        (
            vec!["networkPolicy.enabled=true"],
            "networkPolicy.apiServer.cidrs is required",
        ),
        (
            vec!["webhook.enabled=false", "webhook.ingress.enabled=true"],
            "webhook.ingress.enabled needs webhook.enabled",
        ),
        (
            vec!["watchAllNamespaces=true", "watchNamespaces={team-a}"],
            "watchNamespaces and watchAllNamespaces exclude each other",
        ),
        // 512Mi × 3 = 1.5Gi does not fit the default 1Gi work dir.
        (
            vec!["operator.uploadConcurrency=3"],
            "workDir.sizeLimit (1Gi = 1073741824 bytes) is smaller than operator.maxFileBytes (512Mi) × operator.uploadConcurrency (3) = 1610612736 bytes",
        ),
        (
            vec!["workDir.sizeLimit=1000M"],
            "workDir.sizeLimit (1000M = 1000000000 bytes) is smaller",
        ),
    ] {
        let mut args = vec!["template", RELEASE, chart];
        for set in &sets {
            args.extend(["--set", set]);
        }
        let error = helm(&args).expect_err(&format!("helm template accepted {sets:?}"));
        assert!(error.contains(needle), "{sets:?}: {error}");
    }
    // Without leader election one replica renders, with Recreate and no PDB.
    let docs = documents(&render(
        DEPLOY_NAMESPACE,
        &[
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "replicas=1",
        ],
    ));
    let d = of_kind(&docs, "Deployment")[0];
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert!(of_kind(&docs, "PodDisruptionBudget").is_empty());
    assert!(
        !serde_yaml::to_string(d)
            .expect("yaml")
            .contains("--leader-elect")
    );
}

#[test]
fn the_default_manifests_are_accepted_by_the_apiserver() {
    let cp = ControlPlane::get();
    ensure_namespaces(cp, &[DEPLOY_NAMESPACE]);
    let manifest = std::fs::read_to_string(repo_root().join("deploy/otau-operator.yaml"))
        .expect("deploy/otau-operator.yaml");
    let out = dry_run_apply(cp, &manifest);
    for object in [
        "deployment.apps/otau-operator",
        "clusterrole.rbac.authorization.k8s.io/otau-operator",
        "role.rbac.authorization.k8s.io/otau-operator-leader-election",
        "service/otau-operator-webhook",
        "poddisruptionbudget.policy/otau-operator",
        "customresourcedefinition.apiextensions.k8s.io/rollouts.otau.dev",
    ] {
        assert!(out.contains(object), "{object} not applied:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_optional_feature_is_accepted_by_the_apiserver() {
    let cp = ControlPlane::get();
    // The real ServiceMonitor and PrometheusRule CRDs (controller-gen from prometheus-operator).
    let monitoring = tool("kubectl")
        .parent()
        .and_then(Path::parent)
        .expect("tools folder")
        .join("crds/monitoring-v0.95.2");
    let crds = [
        monitoring.join("monitoring.coreos.com_servicemonitors.yaml"),
        monitoring.join("monitoring.coreos.com_prometheusrules.yaml"),
    ];
    for crd in &crds {
        assert!(
            crd.is_file(),
            "{} is missing: run hack/tools.sh (it generates the monitoring CRDs)",
            crd.display()
        );
        let text = std::fs::read_to_string(crd).expect("read CRD");
        cp.kubectl_output(
            &[
                "apply",
                "--server-side",
                "--field-manager=otau-tests",
                "-f",
                "-",
            ],
            &text,
        );
    }
    cp.kubectl_output(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=120s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
        "",
    );
    ensure_namespaces(cp, &["otau-team-a", "otau-team-b"]);
    let ns = cp.namespace("chart-all-features").await;
    let values = all_features_values();
    let rendered = render(&ns, &["-f", values.to_str().expect("UTF-8")]);
    let out = dry_run_apply(cp, &rendered);
    for object in [
        "servicemonitor.monitoring.coreos.com/otau-operator",
        "networkpolicy.networking.k8s.io/otau-operator",
        "ingress.networking.k8s.io/otau-operator-webhook",
        "deployment.apps/otau-operator",
        "poddisruptionbudget.policy/otau-operator",
    ] {
        assert!(out.contains(object), "{object} not applied:\n{out}");
    }
    // Every kind the chart rendered was applied.
    let docs = documents(&rendered);
    // The ServiceMonitor keeps the Rollout series' own `namespace` label (the alerts and the
    // dashboard select on it); without honorLabels Prometheus renames it `exported_namespace`.
    for monitor in of_kind(&docs, "ServiceMonitor") {
        for endpoint in monitor["spec"]["endpoints"]
            .as_sequence()
            .expect("endpoints")
        {
            assert_eq!(
                endpoint["honorLabels"].as_bool(),
                Some(true),
                "ServiceMonitor endpoint without honorLabels: {endpoint:?}"
            );
        }
    }
    assert_eq!(
        out.lines()
            .filter(|l| l.contains("(server dry run)"))
            .count(),
        docs.len(),
        "{out}"
    );
}

#[test]
fn the_kustomize_base_builds_and_is_accepted_by_the_apiserver() {
    let cp = ControlPlane::get();
    let base = repo_root().join("deploy/kustomize/base");
    let out = Command::new(tool("kubectl"))
        .arg("kustomize")
        .arg(&base)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        base.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let built = String::from_utf8(out.stdout).expect("UTF-8");
    let docs = documents(&built);
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "Deployment",
        "ClusterRole",
    ] {
        assert!(!of_kind(&docs, kind).is_empty(), "no {kind} in the base");
    }
    // The Namespace is part of the base; create it for real so the dry run can use it.
    ensure_namespaces(cp, &[DEPLOY_NAMESPACE]);
    let applied = dry_run_apply(cp, &built);
    assert_eq!(
        applied
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count(),
        docs.len(),
        "{applied}"
    );
}
