//! The operator's outbound rules on a real apiserver with the emulator (docs/security.md):
//! credential Secrets opt in and are bound to hosts (an unlabelled token written before the
//! upgrade is refused, with the commands that fix it, and nothing reaches the platform), the
//! platform-host allow-list, connector URLs under the private-address check, ConfigMap sources
//! opt in, and the work dir holds at most `--upload-concurrency` staged files.

use std::path::Path;
use std::time::Duration;

use kube::api::Api;
use otau_operator::api::{IoTConnector, SoftwarePackage};
use otau_operator::emulator::faults::{FaultConfig, FaultRule};
use sha2::{Digest, Sha256};

use crate::operator::{
    CID, DEADLINE, Emu, FileServer, MTOKEN, apply, assert_no_token_leak, condition, kubectl,
    secret_yaml, start_operator, start_operator_with_outbound, unlabelled_secret_yaml,
    wait_condition,
};
use crate::support::process::operator_command;
use crate::support::{ControlPlane, wait_for};

/// An IoTConnector `name` on the emulator at `host` (its port kept), token in `secret`.
fn connector_at(emu: &Emu, name: &str, host: &str, secret: &str, extra_spec: &str) -> String {
    let port = url::Url::parse(&emu.base)
        .expect("emulator URL")
        .port()
        .expect("port");
    format!(
        "apiVersion: otau.dev/v1alpha1\nkind: IoTConnector\nmetadata:\n  name: {name}\nspec:\n  productId: {CID}\n  managementUrl: http://{host}:{port}/api:1/\n  allowInsecureHttp: true\n  tokenSecretRef:\n    name: {secret}\n{extra_spec}"
    )
}

/// The commands a refusal message asks for: what follows `run: ` up to `; then check at once
/// with: `, then the recheck command, each as kubectl's arguments (`$(date +%s)` evaluated).
fn commands_in(message: &str) -> Vec<Vec<String>> {
    let (_, rest) = message
        .split_once("run: ")
        .unwrap_or_else(|| panic!("no commands in {message:?}"));
    let (fixes, recheck) = rest
        .split_once("; then check at once with: ")
        .unwrap_or_else(|| panic!("no recheck command in {message:?}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        .to_string();
    fixes
        .split(" && ")
        .chain([recheck])
        .map(|command| {
            let command = command.trim().replace("$(date +%s)", &now);
            let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
            assert_eq!(words[0], "kubectl", "{command}");
            words[1..].to_vec()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlabelled_token_written_before_the_upgrade_is_refused_until_labelled_as_told() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("outbound-upgrade").await;
    let emu = Emu::start().await;
    // The objects as the previous release's docs had users write them (a plain Secret), and
    // the status the previous release wrote once it had checked the token.
    apply(cp, &ns, &unlabelled_secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let previous = r#"{"status":{"observedGeneration":1,"conditions":[{"type":"Ready","status":"True","reason":"Connected","message":"the management API accepted the token","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":1}]}}"#;
    kubectl(
        cp,
        &[
            "patch",
            "iotconnector",
            "emu",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            previous,
        ],
    );
    let op = start_operator(cp, &ns, &[]).await;
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    let connector = wait_condition(&api, "emu", "Ready", "False", "CredentialNotAllowed").await;
    let stalled = condition(&connector, "Stalled").expect("Stalled");
    assert_eq!(stalled.status, "True", "{stalled:?}");
    let message = condition(&connector, "Ready").expect("Ready").message;
    for wanted in [
        format!("kubectl label secret token otau.dev/connector-credential=true -n {ns}"),
        format!(
            "kubectl annotate secret token otau.dev/allowed-hosts=127.0.0.1 --overwrite -n {ns}"
        ),
        format!(
            "kubectl annotate iotconnector emu otau.dev/recheck=$(date +%s) --overwrite -n {ns}"
        ),
    ] {
        assert!(message.contains(&wanted), "{wanted:?} not in {message}");
    }
    assert!(
        emu.log().is_empty(),
        "the platform was called before the Secret opted in: {:?}",
        emu.log()
    );

    // Do what the message says, word for word.
    for args in commands_in(&message) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(cp, &args);
    }
    wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    assert!(
        emu.log().iter().any(|l| l.status == 200),
        "the platform was never called after the opt-in"
    );
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_goes_only_to_the_hosts_its_secret_names_and_the_webhook_key_needs_the_label() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("outbound-hosts").await;
    let emu = Emu::start().await;
    let _op = start_operator(cp, &ns, &[]).await;
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    // The token is labelled and allowed for 127.0.0.1 only; the connector names `localhost`
    // (the same emulator), which a user who may create IoTConnectors could point anywhere.
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(
        cp,
        &ns,
        &connector_at(&emu, "elsewhere", "localhost", "token", ""),
    );
    let connector =
        wait_condition(&api, "elsewhere", "Ready", "False", "CredentialNotAllowed").await;
    let message = condition(&connector, "Ready").expect("Ready").message;
    assert!(
        message.contains("may not be sent to localhost")
            && message.contains("otau.dev/allowed-hosts=127.0.0.1,localhost")
            && !message.contains("kubectl label"),
        "{message}"
    );
    // A webhook key Secret without the label refuses the connector too.
    apply(
        cp,
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\nstringData:\n  hmacKey: k\n",
    );
    apply(
        cp,
        &ns,
        &emu.connector_yaml(
            "hooked",
            "token",
            "  webhook:\n    secretRef:\n      name: hook\n",
        ),
    );
    let connector = wait_condition(&api, "hooked", "Ready", "False", "CredentialNotAllowed").await;
    let message = condition(&connector, "Ready").expect("Ready").message;
    assert!(
        message.contains(&format!(
            "kubectl label secret hook otau.dev/connector-credential=true -n {ns}"
        )) && !message.contains("allowed-hosts"),
        "{message}"
    );
    assert!(
        emu.log().is_empty(),
        "the platform was called: {:?}",
        emu.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_host_list_trusts_named_hosts_and_other_private_urls_are_refused() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("outbound-platform-host").await;
    let emu = Emu::start().await;
    // No --allow-private-sources: only the named host may be private.
    let _op = start_operator_with_outbound(cp, &ns, &["--platform-host", "localhost"], &[]).await;
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    // Labelled, with no host annotation: the allow-list stands in for it.
    apply(
        cp,
        &ns,
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n  labels:\n    otau.dev/connector-credential: \"true\"\nstringData:\n  token: {MTOKEN}\n"
        ),
    );
    apply(
        cp,
        &ns,
        &connector_at(&emu, "trusted", "localhost", "token", ""),
    );
    wait_condition(&api, "trusted", "Ready", "True", "Connected").await;
    // The same emulator by its address: loopback, not on the list.
    apply(cp, &ns, &emu.connector_yaml("private", "token", ""));
    let connector = wait_condition(&api, "private", "Ready", "False", "ConfigurationInvalid").await;
    let message = condition(&connector, "Ready").expect("Ready").message;
    assert!(
        message.contains("127.0.0.1 is a loopback address")
            && message.contains("--allow-private-sources")
            && message.contains("--platform-host"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_map_source_needs_the_label_and_labelling_it_publishes_the_package() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("outbound-configmap").await;
    let emu = Emu::start().await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let _op = start_operator(cp, &ns, &[]).await;
    apply(
        cp,
        &ns,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes.txt: hello\n",
    );
    apply(
        cp,
        &ns,
        "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: p\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: notes.txt\n      configMapKeyRef:\n        name: notes\n        key: notes.txt\n",
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = wait_condition(&api, "p", "Stalled", "True", "PackageInvalid").await;
    let message = condition(&package, "Ready").expect("Ready").message;
    let command = format!("kubectl label configmap notes otau.dev/package-source=true -n {ns}");
    assert!(message.contains(&command), "{message}");
    assert!(emu.content_ids().is_empty(), "{:?}", emu.content_ids());
    // Labelling it brings it into the operator's ConfigMap watch, which re-reads the package
    // at once (the resync is 10 minutes away).
    kubectl(
        cp,
        &[
            "label",
            "configmap",
            "notes",
            "otau.dev/package-source=true",
            "-n",
            &ns,
        ],
    );
    wait_condition(&api, "p", "Ready", "True", "Registered").await;
}

/// The most files `dir` held at once while `until` was pending, sampled every 20 ms.
async fn most_files_in(dir: &Path, until: impl std::future::Future<Output = ()>) -> usize {
    let most = std::cell::Cell::new(0);
    let sample = async {
        loop {
            let now = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
            most.set(most.get().max(now));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = until => {}
        () = sample => {}
    }
    most.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_dir_holds_at_most_one_staged_file_per_upload_slot() {
    let cp = ControlPlane::get();
    let ns = cp.namespace("outbound-staging").await;
    let emu = Emu::start().await;
    // Each object-store upload takes a second, so staged files would pile up meanwhile.
    let mut slow = FaultRule::new("objectstore.upload");
    slow.latency_ms = 1000;
    emu.set_faults(FaultConfig {
        rules: vec![slow],
        ..FaultConfig::default()
    });
    let files: Vec<(String, Vec<u8>)> = (0..3u8)
        .map(|i| (format!("f{i}.bin"), vec![i; 200_000]))
        .collect();
    let server =
        FileServer::start(files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect()).await;
    let work = tempfile::tempdir().expect("work dir");
    let work_dir = work.path().to_str().expect("UTF-8").to_string();
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", ""));
    let _op = start_operator(
        cp,
        &ns,
        &["--work-dir", &work_dir, "--upload-concurrency", "1"],
    )
    .await;
    let mut yaml = "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: three\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  allowInsecureHttp: true\n  files:\n".to_string();
    for (name, bytes) in &files {
        yaml.push_str(&format!(
            "    - name: {name}\n      url: {}/{name}\n      sha256: {}\n",
            server.base,
            hex::encode(Sha256::digest(bytes))
        ));
    }
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    apply(cp, &ns, &yaml);
    let most = most_files_in(work.path(), async {
        wait_condition(&api, "three", "Ready", "True", "Registered").await;
    })
    .await;
    assert_eq!(
        most, 1,
        "the work dir held {most} staged files at once with one upload slot"
    );
    assert_eq!(
        emu.uploads(),
        files.len() + 1,
        "three files and the registration"
    );
    wait_for(DEADLINE, "the staged files to be removed", || {
        let left = std::fs::read_dir(work.path())
            .map(|d| d.count())
            .unwrap_or(0);
        async move { left == 0 }
    })
    .await;
}

#[test]
fn the_operator_refuses_a_work_dir_smaller_than_its_upload_slots() {
    // The check comes before the operator reads its kubeconfig: none is needed.
    let out = operator_command(Path::new("/nonexistent/kubeconfig"))
        .args(["--max-file-bytes", "512Mi", "--upload-concurrency", "3"])
        .args(["--work-dir-size-limit", "1Gi"])
        .output()
        .expect("run the operator");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--work-dir-size-limit (1073741824 bytes) is smaller than --max-file-bytes (536870912 bytes) × --upload-concurrency (3)"),
        "{stderr}"
    );
}
