//! The IoTConnector controller against the real apiserver and the emulator, with the operator
//! binary as a process: Ready with the token's TTL in status and metrics, a wrong token,
//! a Secret that appears late, a token about to expire, the ExoSense token checked, the
//! metric series of a deleted connector removed, and no token anywhere it must not be.

use kube::api::Api;
use otau_operator::api::{IoTConnector, SoftwarePackage};
use otau_operator::emulator::faults::{FaultConfig, FaultRule};

use crate::operator::{
    CID, DEADLINE, Emu, INSTANCE, MTOKEN, XTOKEN, apply, assert_no_token_leak, condition,
    events_json, kubectl, metric_value, secret_yaml, start_operator, wait_condition,
};
use crate::support::{ControlPlane, wait_for};

fn ttl_series(namespace: &str, name: &str) -> String {
    format!("otau_connector_token_ttl_seconds{{connector=\"{name}\",namespace=\"{namespace}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_becomes_ready_with_token_ttl_in_status_and_metrics() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-ready").await;
    let emu = Emu::start().await;
    let op = start_operator(cp, &ns, &[]).await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));

    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    let status = connector.status.clone().expect("status");
    let ttl = status.token_ttl_seconds.expect("tokenTtlSeconds");
    assert!((172_000..=172_800).contains(&ttl), "ttl {ttl}");
    assert!(status.token_expires_at.is_some() && status.last_checked_at.is_some());
    assert_eq!(status.observed_generation, connector.metadata.generation);
    let stalled = condition(&connector, "Stalled").expect("Stalled condition");
    assert_eq!(stalled.status, "False");
    let ready = condition(&connector, "Ready").expect("Ready");
    assert!(ready.message.contains(CID), "{}", ready.message);
    assert!(
        !ready.message.contains("warning threshold"),
        "{}",
        ready.message
    );

    let metrics = op.metrics().await;
    let value = metric_value(&metrics, &ttl_series(&ns, "emu")).expect("ttl metric");
    assert!((172_000.0..=172_800.0).contains(&value), "{value}");
    assert!(
        metrics.contains("otau_reconcile_total{controller=\"iotconnector\",result=\"success\"}")
    );
    assert!(
        metrics.contains(
            "otau_platform_requests_total{operation=\"token.check\",outcome=\"success\"}"
        )
    );
    assert!(metrics.contains("otau_build_info"));

    // Every platform request names the operator and its instance.
    let log = emu.log();
    assert!(!log.is_empty());
    for entry in &log {
        assert!(
            entry.user_agent.starts_with("otau-operator/") && entry.user_agent.contains(INSTANCE),
            "{entry:?}"
        );
    }
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_token_is_rejected_and_stalls() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-wrong-token").await;
    let emu = Emu::start().await;
    let op = start_operator(cp, &ns, &[]).await;
    let wrong = "0000000000000000000000000000000000bad0bad";
    apply(cp, &ns, &secret_yaml("token", wrong));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_condition(&api, "emu", "Ready", "False", "CredentialsRejected").await;
    let stalled = condition(&connector, "Stalled").expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "CredentialsRejected")
    );
    assert!(stalled.message.contains("401"), "{}", stalled.message);
    // What the platform wrote in its answer stays out of status and Events (docs/security.md
    // §2): the emulator answers "invalid or expired token".
    let said = "invalid or expired token";
    assert!(!stalled.message.contains(said), "{}", stalled.message);
    // Flux's kstatus reads the operator's status as failed, with the condition's message.
    let (verdict, message) = cp.kstatus_of(&ns, "iotconnector.otau.dev", "emu");
    assert_eq!(verdict, "Failed", "{message}");
    assert!(message.contains("401"), "{message}");
    let metrics = op.metrics().await;
    assert_eq!(metric_value(&metrics, &ttl_series(&ns, "emu")), Some(0.0));
    assert!(
        emu.log().iter().any(|l| l.status == 401),
        "the emulator never answered 401"
    );
    let events = events_json(cp, &ns);
    assert!(
        events.contains("CredentialsRejected"),
        "no CredentialsRejected event"
    );
    assert!(!events.contains(said), "{events}");
    assert_no_token_leak(cp, &ns, &op, &[wrong, MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_then_ready_once_it_appears() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-late-secret").await;
    let emu = Emu::start().await;
    let op = start_operator(cp, &ns, &[]).await;
    apply(cp, &ns, &emu.connector_yaml("emu", "late-token", ""));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_condition(&api, "emu", "Ready", "False", "SecretNotFound").await;
    let ready = condition(&connector, "Ready").expect("Ready");
    assert!(ready.message.contains("late-token"), "{}", ready.message);
    assert_eq!(
        condition(&connector, "Stalled").expect("Stalled").status,
        "False"
    );
    // Reconciling=True: Flux's kstatus waits instead of calling the connector ready.
    let reconciling = condition(&connector, "Reconciling").expect("Reconciling");
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("True", "SecretNotFound")
    );
    let (verdict, message) = cp.kstatus_of(&ns, "iotconnector.otau.dev", "emu");
    assert_eq!(verdict, "InProgress", "{message}");

    apply(cp, &ns, &secret_yaml("late-token", MTOKEN));
    let connector = wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    assert_eq!(
        condition(&connector, "Reconciling")
            .expect("Reconciling")
            .status,
        "False"
    );
    let (verdict, message) = cp.kstatus_of(&ns, "iotconnector.otau.dev", "emu");
    assert_eq!(verdict, "Current", "{message}");
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_about_to_expire_shows_in_the_condition_event_and_metric() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-expiring").await;
    let emu = Emu::start().await;
    // The emulator's tokens have 48 h left; warn below 72 h.
    let op = start_operator(cp, &ns, &["--token-expiry-warning", "72h"]).await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    let ready = condition(&connector, "Ready").expect("Ready");
    assert!(
        ready.message.contains("expires in 2d 0h") || ready.message.contains("expires in 1d 23h"),
        "{}",
        ready.message
    );
    assert!(
        ready
            .message
            .contains("less than the 3d 0h warning threshold"),
        "{}",
        ready.message
    );
    assert!(ready.message.contains("renew"), "{}", ready.message);
    let metrics = op.metrics().await;
    let value = metric_value(&metrics, &ttl_series(&ns, "emu")).expect("ttl metric");
    assert!(value < 72.0 * 3600.0, "{value}");
    let events = events_json(cp, &ns);
    assert!(
        events.contains("TokenExpiringSoon"),
        "no TokenExpiringSoon event"
    );
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_operator_cleanly() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("operator-sigterm").await;
    let mut op = start_operator(cp, &ns, &[]).await;
    assert!(
        op.stop(DEADLINE).await,
        "the operator did not exit 0 after SIGTERM:\n{}",
        op.logs()
    );
    assert!(op.logs().contains("shutting down"), "{}", op.logs());
}

/// An IoTConnector with ExoSense configured, its token in Secret `exosense`.
fn connector_with_exosense(emu: &Emu) -> String {
    emu.connector_yaml(
        "emu",
        "token",
        &format!(
            "  exosense:\n    graphqlUrl: {}/api/graphql\n    tokenSecretRef:\n      name: exosense\n",
            emu.base
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_exosense_token_is_rejected_and_the_right_one_is_ready() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-exosense").await;
    let emu = Emu::start().await;
    let op = start_operator(cp, &ns, &[]).await;
    let wrong = "0000000000000000000000000000000000e0e0e0e";
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &secret_yaml("exosense", wrong));
    apply(cp, &ns, &connector_with_exosense(&emu));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_condition(&api, "emu", "Ready", "False", "CredentialsRejected").await;
    let ready = condition(&connector, "Ready").expect("Ready");
    assert!(
        ready.message.contains("ExoSense rejected") && ready.message.contains("exosense"),
        "{}",
        ready.message
    );
    assert_eq!(
        condition(&connector, "Stalled").expect("Stalled").status,
        "True"
    );
    assert!(
        emu.log()
            .iter()
            .any(|l| l.path == "/api/graphql" && l.status == 401),
        "ExoSense never answered 401"
    );

    // The right token, then a recheck (Secrets are not watched).
    apply(cp, &ns, &secret_yaml("exosense", XTOKEN));
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "iotconnector/emu",
            "otau.dev/recheck=1",
            "--overwrite",
        ],
    );
    let connector = wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    let ready = condition(&connector, "Ready").expect("Ready");
    assert!(
        ready.message.contains("ExoSense accepted"),
        "{}",
        ready.message
    );
    assert!(
        emu.log()
            .iter()
            .any(|l| l.path == "/api/graphql" && l.status == 200),
        "ExoSense was never asked with the right token"
    );
    assert_no_token_leak(cp, &ns, &op, &[wrong, XTOKEN, MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_connector_removes_its_metric_series() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-delete-metrics").await;
    let emu = Emu::start().await;
    let op = start_operator(cp, &ns, &[]).await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    let series = ttl_series(&ns, "emu");
    assert!(
        metric_value(&op.metrics().await, &series).is_some(),
        "no {series} before the delete"
    );

    kubectl(
        cp,
        &["delete", "-n", &ns, "iotconnector/emu", "--wait=true"],
    );
    let addr = op.metrics_addr;
    wait_for(DEADLINE, "the token-TTL series to disappear", move || {
        let series = series.clone();
        async move {
            let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
                return false;
            };
            response
                .text()
                .await
                .is_ok_and(|text| metric_value(&text, &series).is_none())
        }
    })
    .await;
    // Its cached platform client (token, connection pools) goes with it.
    let op = &op;
    wait_for(
        DEADLINE,
        "the deleted connector's platform client to be dropped",
        || async move {
            op.logs()
                .contains("platform clients of deleted connectors dropped")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_management_api_is_platform_unavailable_not_stalled() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-unavailable").await;
    let emu = Emu::start().await;
    let mut rule = FaultRule::new("token.item");
    rule.error_rate = 1.0;
    rule.error_status = 503;
    emu.set_faults(FaultConfig {
        seed: 1,
        rules: vec![rule],
        rate_limit: None,
    });
    let op = start_operator(cp, &ns, &[]).await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_condition(&api, "emu", "Ready", "Unknown", "PlatformUnavailable").await;
    assert_eq!(
        condition(&connector, "Stalled").expect("Stalled").status,
        "False"
    );
    assert!(emu.log().iter().any(|l| l.status == 503));

    // The platform comes back: the retries (with backoff) reach Ready without any change.
    emu.set_faults(FaultConfig {
        seed: 1,
        rules: Vec::new(),
        rate_limit: None,
    });
    wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

/// Replaces the emulator connector's resource definitions (what `PATCH …/device2` with a
/// `resources` body does, exosite-platform.md §5.2).
fn define_resources(emu: &Emu, resources: serde_json::Value) {
    emu.conn()
        .patch_settings(&serde_json::json!({ "resources": resources }))
        .expect("patch the connector's resources");
}

/// Waits until connector `name` is `ResourcesMissing` with a message containing `text`.
async fn wait_resources_missing(api: &Api<IoTConnector>, name: &str, text: &str) -> IoTConnector {
    let found = std::sync::Arc::new(std::sync::Mutex::new(None));
    let (api2, name2, text2, found2) = (
        api.clone(),
        name.to_string(),
        text.to_string(),
        found.clone(),
    );
    wait_for(
        DEADLINE,
        &format!("{name}: ResourcesMissing naming {text}"),
        move || {
            let (api, name, text, found) =
                (api2.clone(), name2.clone(), text2.clone(), found2.clone());
            async move {
                let Ok(connector) = api.get(&name).await else {
                    return false;
                };
                let hit = condition(&connector, "Ready").is_some_and(|c| {
                    c.status == "False"
                        && c.reason == "ResourcesMissing"
                        && c.message.contains(&text)
                });
                if hit {
                    *found.lock().unwrap_or_else(|e| e.into_inner()) = Some(connector);
                }
                hit
            }
        },
    )
    .await;
    let connector = found.lock().unwrap_or_else(|e| e.into_inner()).take();
    connector.expect("found")
}

/// The requests that put content on the connector: content uploads (management API and object
/// store) and ExoSense `createContent`.
fn content_writes(emu: &Emu) -> Vec<String> {
    emu.log()
        .iter()
        .filter(|l| {
            (l.path.contains("/content/item/") && l.path.ends_with("/upload"))
                || l.path.starts_with("/objectstore/")
                || l.path == "/api/graphql" && l.method == "POST" && l.status != 401
        })
        .map(|l| format!("{} {}", l.method, l.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_unsettable_otau_resources_stall_the_connector_and_block_uploads_until_fixed() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("connector-resources").await;
    let emu = Emu::start().await;
    let string = |settable: bool| serde_json::json!({"format": "string", "settable": settable});
    // The connector defines config_otau but not otau_in.
    define_resources(&emu, serde_json::json!({"config_otau": string(true)}));
    let op = start_operator(cp, &ns, &[]).await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_resources_missing(&api, "emu", "resource otau_in is missing").await;
    let ready = condition(&connector, "Ready").expect("Ready");
    assert!(
        !ready.message.contains("config_otau is"),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains("otau.dev/recheck"),
        "{}",
        ready.message
    );
    let stalled = condition(&connector, "Stalled").expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "ResourcesMissing")
    );
    assert_eq!(
        condition(&connector, "Reconciling")
            .expect("Reconciling")
            .status,
        "False"
    );
    let (verdict, message) = cp.kstatus_of(&ns, "iotconnector.otau.dev", "emu");
    assert_eq!(verdict, "Failed", "{message}");

    // A package for this connector waits and uploads nothing.
    apply(
        cp,
        &ns,
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fw\n{}data:\n  fw.bin: resources\n",
            crate::support::process::PACKAGE_SOURCE_OPT_IN
        ),
    );
    apply(
        cp,
        &ns,
        "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: fw\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: fw\n        key: fw.bin\n",
    );
    let packages: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = wait_condition(&packages, "fw", "Ready", "False", "ConnectorNotReady").await;
    let ready = condition(&package, "Ready").expect("Ready");
    assert!(
        ready.message.contains("ResourcesMissing"),
        "{}",
        ready.message
    );

    // otau_in is back, but config_otau may not be written from the cloud.
    define_resources(
        &emu,
        serde_json::json!({"config_otau": string(false), "otau_in": string(false)}),
    );
    let recheck = |n: &str| {
        kubectl(
            cp,
            &[
                "annotate",
                "-n",
                &ns,
                "iotconnector/emu",
                &format!("otau.dev/recheck={n}"),
                "--overwrite",
            ],
        )
    };
    recheck("1");
    let connector =
        wait_resources_missing(&api, "emu", "resource config_otau is not settable").await;
    let ready = condition(&connector, "Ready").expect("Ready");
    assert!(
        !ready.message.contains("otau_in is missing"),
        "{}",
        ready.message
    );
    assert_eq!(
        condition(&packages.get("fw").await.expect("package"), "Ready")
            .expect("Ready")
            .reason,
        "ConnectorNotReady"
    );
    assert_eq!(content_writes(&emu), Vec::<String>::new());
    assert!(emu.content_ids().is_empty(), "{:?}", emu.content_ids());

    // Fixed: Ready, and the package uploads and registers.
    define_resources(
        &emu,
        serde_json::json!({"config_otau": string(true), "otau_in": string(false)}),
    );
    recheck("2");
    wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    wait_condition(&packages, "fw", "Ready", "True", "Registered").await;
    assert!(emu.uploads() >= 1, "{:?}", content_writes(&emu));
    assert!(
        emu.content_ids()
            .iter()
            .any(|id| id.starts_with("package_")),
        "{:?}",
        emu.content_ids()
    );
    let events = events_json(cp, &ns);
    assert!(
        events.contains("ResourcesMissing"),
        "no ResourcesMissing event"
    );
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}
