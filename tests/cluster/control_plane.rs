//! The harness itself: the local control plane is up at the pinned version, enforces RBAC,
//! hands out fresh namespaces, and kubectl and kube-rs talk to the same apiserver.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};

use crate::support::{self, ControlPlane, TEST_LABEL};

/// Runs a kubectl command and returns its stdout; panics with its output when it fails.
fn run(mut command: Command) -> String {
    let output = command.output().expect("kubectl runs");
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

#[tokio::test]
async fn apiserver_runs_the_pinned_version_on_loopback() {
    let cp = ControlPlane::get();
    assert!(
        cp.server().starts_with("https://127.0.0.1:"),
        "server {} is not on loopback",
        cp.server()
    );
    let version = cp.client().await.apiserver_version().await.unwrap();
    assert!(
        version.git_version.starts_with("v1.37."),
        "expected kube-apiserver v1.37.x (k8s-openapi feature v1_37), got {}",
        version.git_version
    );
}

#[tokio::test]
async fn rbac_denies_a_service_account_until_a_role_grants_it() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("rbac").await;
    let other_ns = cp.namespace("rbac-other").await;

    let mut create_sa = cp.kubectl();
    create_sa.args(["create", "serviceaccount", "probe", "-n", &ns]);
    run(create_sa);
    let mut create_token = cp.kubectl();
    create_token.args(["create", "token", "probe", "-n", &ns]);
    let token = run(create_token).trim().to_owned();
    assert!(!token.is_empty(), "kubectl create token printed no token");

    let as_probe = cp.client_with_token(&token).await;
    let secrets: Api<Secret> = Api::namespaced(as_probe.clone(), &ns);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(
            status.code, 403,
            "a ServiceAccount without a Role must be forbidden, got {status:?}"
        ),
        other => panic!("listing secrets without a Role must fail with 403, got {other:?}"),
    }

    let mut create_role = cp.kubectl();
    create_role.args([
        "create",
        "role",
        "list-secrets",
        "--verb=list",
        "--resource=secrets",
        "-n",
        &ns,
    ]);
    run(create_role);
    let mut bind = cp.kubectl();
    let subject = format!("--serviceaccount={ns}:probe");
    bind.args([
        "create",
        "rolebinding",
        "probe-lists-secrets",
        "--role=list-secrets",
        &subject,
        "-n",
        &ns,
    ]);
    run(bind);

    support::wait_for(
        Duration::from_secs(30),
        "the RoleBinding to let the ServiceAccount list secrets",
        || async { secrets.list(&ListParams::default()).await.is_ok() },
    )
    .await;

    // The grant is namespaced: the same token is still forbidden elsewhere.
    let elsewhere: Api<Secret> = Api::namespaced(as_probe, &other_ns);
    match elsewhere.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("a Role in {ns} must not grant access in {other_ns}, got {other:?}"),
    }
}

#[tokio::test]
async fn each_test_gets_a_fresh_labelled_namespace() {
    let cp = ControlPlane::get();
    let first = cp.namespace("fresh namespaces").await;
    let second = cp.namespace("fresh namespaces").await;
    assert_ne!(first, second, "two calls must give two namespaces");

    let client = cp.client().await;
    let labelled: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("{TEST_LABEL}=fresh-namespaces")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|namespace| namespace.metadata.name)
        .collect();
    assert!(
        labelled.contains(&first) && labelled.contains(&second),
        "both namespaces must carry {TEST_LABEL}=fresh-namespaces, found {labelled:?}"
    );

    let config_maps = Api::<ConfigMap>::namespaced(client, &first)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        config_maps.items.is_empty(),
        "a fresh namespace holds no ConfigMaps, found {:?}",
        config_maps.items
    );
}

#[tokio::test]
async fn kubectl_and_the_client_see_the_same_objects() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("kubectl").await;
    let mut create = cp.kubectl();
    create.args([
        "create",
        "configmap",
        "from-kubectl",
        "--from-literal=greeting=hello",
        "-n",
        &ns,
    ]);
    run(create);

    let config_map = Api::<ConfigMap>::namespaced(cp.client().await, &ns)
        .get("from-kubectl")
        .await
        .unwrap();
    assert_eq!(
        config_map.data.unwrap_or_default().get("greeting"),
        Some(&"hello".to_owned())
    );

    let mut get = cp.kubectl();
    get.args([
        "get",
        "configmap",
        "from-kubectl",
        "-n",
        &ns,
        "-o",
        "jsonpath={.data.greeting}",
    ]);
    assert_eq!(run(get), "hello");
}

#[tokio::test]
async fn crds_from_the_repository_are_established() {
    let cp = ControlPlane::get();
    let crds: Api<CustomResourceDefinition> = Api::all(cp.client().await);
    for name in repository_crd_names() {
        let crd = crds
            .get(&name)
            .await
            .unwrap_or_else(|error| panic!("CRD {name} from crds/ is not installed: {error}"));
        let established = crd
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .iter()
            .any(|condition| condition.type_ == "Established" && condition.status == "True");
        assert!(established, "CRD {name} is not Established");
    }
}

/// `metadata.name` of every CustomResourceDefinition in `crds/*.yaml`.
fn repository_crd_names() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(support::repo_root().join("crds")) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for path in entries.filter_map(|entry| entry.ok().map(|entry| entry.path())) {
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(document)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            if value["kind"] == "CustomResourceDefinition" {
                let name = value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: a CRD without metadata.name", path.display()));
                names.push(name.to_owned());
            }
        }
    }
    names
}
