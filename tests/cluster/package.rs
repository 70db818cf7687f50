//! The SoftwarePackage controller against the real apiserver and the emulator, with the
//! operator binary as a process: upload and registration (URL, ConfigMap and Secret files,
//! links, ExoSense GraphQL), sha256 mismatch, size limit, faults, two packages with the same
//! file name, deletion (with and without retainContent, and while a Rollout uses it), and a
//! token rotated after a 401.

use std::time::Duration;

use kube::api::{Api, DeleteParams};
use otau_operator::api::{IoTConnector, SoftwarePackage};
use otau_operator::emulator::faults::{FaultConfig, FaultRule, RateLimit};
use otau_operator::otau::Manifest;
use sha2::{Digest, Sha256};

use crate::operator::{
    CID, Emu, FileServer, MTOKEN, Operator, XTOKEN, apply, assert_no_token_leak, condition,
    events_json, kubectl, secret_yaml, start_operator, wait_condition, wait_gone,
};
use crate::support::ControlPlane;
use crate::support::process::PACKAGE_SOURCE_OPT_IN;

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn configmap_yaml(name: &str, key: &str, text: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{PACKAGE_SOURCE_OPT_IN}data:\n  {key}: {text:?}\n"
    )
}

/// A connector `emu` (Ready) and the operator, for one namespace.
async fn setup(
    cp: &ControlPlane,
    test: &str,
    extra_spec: &str,
    flags: &[&str],
) -> (String, Emu, Operator) {
    let ns = cp.namespace(test).await;
    let emu = Emu::start().await;
    let op = start_operator(cp, &ns, flags).await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &emu.connector_yaml("emu", "token", extra_spec));
    let api: Api<IoTConnector> = Api::namespaced(cp.client().await, &ns);
    wait_condition(&api, "emu", "Ready", "True", "Connected").await;
    (ns, emu, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn package_with_url_configmap_secret_and_links_is_uploaded_and_registered_via_exosense() {
    let cp = ControlPlane::get();
    let exosense =
        "  exosense:\n    graphqlUrl: GRAPHQL\n    tokenSecretRef:\n      name: exosense\n";
    let ns = cp.namespace("package-ready").await;
    let emu = Emu::start().await;
    emu.conn()
        .add_identity("dev-1", Default::default())
        .expect("identity");
    emu.conn()
        .add_identity("dev-2", Default::default())
        .expect("identity");
    let op = start_operator(cp, &ns, &[]).await;
    apply(cp, &ns, &secret_yaml("token", MTOKEN));
    apply(cp, &ns, &secret_yaml("exosense", XTOKEN));
    apply(
        cp,
        &ns,
        &emu.connector_yaml(
            "emu",
            "token",
            &exosense.replace("GRAPHQL", &format!("{}/api/graphql", emu.base)),
        ),
    );
    let firmware = bytes(300_000, 7);
    let files = FileServer::start(vec![("fw.bin", firmware.clone())]).await;
    let notes = "release notes 1.0.2\n";
    apply(cp, &ns, &configmap_yaml("notes", "notes.txt", notes));
    apply(
        cp,
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: keys\n  labels:\n    otau.dev/package-source: \"true\"\nstringData:\n  key.pem: device-key-material\n",
    );
    apply(
        cp,
        &ns,
        &format!(
            r#"apiVersion: otau.dev/v1alpha1
kind: SoftwarePackage
metadata:
  name: fw-1-0-2
spec:
  connectorRef:
    name: emu
  version: 1.0.2
  displayName: Firmware 1.0.2
  description: watchdog fix
  allowInsecureHttp: true
  files:
    - name: fw.bin
      url: {base}/fw.bin
      sha256: {fw_sha}
    - name: notes.txt
      configMapKeyRef:
        name: notes
        key: notes.txt
      contentType: text/plain
    - name: key.pem
      contentId: fw-1-0-2-key.pem
      secretKeyRef:
        name: keys
        key: key.pem
  links:
    - https://cdn.example.com/extra-1.0.2.bin
  registration:
    author: firmware@example.com
"#,
            base = files.base,
            fw_sha = sha(&firmware)
        ),
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = wait_condition(&api, "fw-1-0-2", "Ready", "True", "Registered").await;
    let status = package.status.clone().expect("status");

    let fw_id = format!("{ns}_fw-1-0-2_fw.bin");
    let notes_id = format!("{ns}_fw-1-0-2_notes.txt");
    let expected = Manifest::url_list(
        "1.0.2",
        "Firmware 1.0.2",
        "watchdog fix",
        vec![
            fw_id.clone(),
            notes_id.clone(),
            "fw-1-0-2-key.pem".to_string(),
            "https://cdn.example.com/extra-1.0.2.bin".to_string(),
        ],
    );
    assert_eq!(
        status.manifest.as_deref(),
        Some(expected.to_json().as_str())
    );
    assert_eq!(status.files.len(), 3);
    assert_eq!(status.files[0].content_id, fw_id);
    assert_eq!(status.files[0].size, firmware.len() as i64);
    assert_eq!(status.files[0].sha256, sha(&firmware));
    assert_eq!(status.files[1].sha256, sha(notes.as_bytes()));
    assert_eq!(status.files[2].content_id, "fw-1-0-2-key.pem");
    assert_eq!(
        condition(&package, "Progressing")
            .expect("Progressing")
            .status,
        "False"
    );
    assert_eq!(
        condition(&package, "Stalled").expect("Stalled").status,
        "False"
    );

    // The emulator holds the bytes, with owner and sha256 tags.
    for (id, data) in [
        (&fw_id, firmware.as_slice()),
        (&notes_id, notes.as_bytes()),
        (
            &"fw-1-0-2-key.pem".to_string(),
            b"device-key-material".as_slice(),
        ),
    ] {
        let item = emu
            .content(id)
            .unwrap_or_else(|| panic!("{id} not uploaded"));
        assert_eq!(sha(&item.data), sha(data), "{id}");
        assert_eq!(item.tags["sha256"], sha(data));
        assert_eq!(item.tags["owner"], format!("{ns}/fw-1-0-2"));
    }
    assert_eq!(
        emu.content(&notes_id).expect("notes").content_type,
        "text/plain"
    );

    // Listed the way ExoSense lists packages, registered through GraphQL.
    let package_id = format!("package_{ns}_fw-1-0-2.json");
    assert_eq!(
        status.package_content_id.as_deref(),
        Some(package_id.as_str())
    );
    let item = emu.content(&package_id).expect("registration item");
    assert!(item.data.is_empty());
    let info: serde_json::Value = serde_json::from_str(&item.tags["otau_info"]).expect("otau_info");
    assert_eq!(info["author"], "firmware@example.com");
    assert_eq!(info["product"], "emu");
    assert!(expected.matches(&info["config_otau"].to_string()));
    assert_eq!(item.tags["pid"], CID);
    // Listed for no device yet, although the connector has two: Rollouts add the devices
    // they notify (src/controller/package/listing.rs).
    assert_eq!(item.tags["total-devices"], "0");
    let device_tag = format!("{CID}.");
    assert!(
        item.tags.keys().all(|k| !k.starts_with(&device_tag)),
        "{:?}",
        item.tags
    );
    assert!(
        emu.log()
            .iter()
            .any(|l| l.path == "/api/graphql" && l.status == 200),
        "no GraphQL registration"
    );
    let events = events_json(cp, &ns);
    assert!(events.contains("FileUploaded") && events.contains("PackageRegistered"));

    // Idempotent: a forced re-run (an annotation change makes the object due) reads the
    // content again and uploads nothing.
    let content_info_calls = |emu: &Emu| {
        emu.log()
            .iter()
            .filter(|l| l.method == "GET" && l.path.ends_with(&format!("/content/item/{fw_id}")))
            .count()
    };
    let uploads = emu.uploads();
    let before = content_info_calls(&emu);
    kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "softwarepackage",
            "fw-1-0-2",
            "otau.dev/recheck=1",
        ],
    );
    let emu_ref = &emu;
    crate::support::wait_for(
        crate::operator::DEADLINE,
        "the re-run to read the content",
        || async move { content_info_calls(emu_ref) > before },
    )
    .await;
    wait_condition(&api, "fw-1-0-2", "Ready", "True", "Registered").await;
    assert_eq!(emu.uploads(), uploads, "a re-run uploaded again");
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN, XTOKEN, "device-key-material"]);
}

/// Files go one at a time (docs/connectors-and-packages.md): the good file before the bad one
/// is uploaded, the bad one is not, and the package is not registered, so no device is offered
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256_mismatch_fails_uploads_not_that_file_and_registers_nothing() {
    let cp = ControlPlane::get();
    let (ns, emu, op) = setup(cp, "package-mismatch", "", &[]).await;
    let served = bytes(10_000, 1);
    let files = FileServer::start(vec![("fw.bin", served.clone())]).await;
    let wrong = sha(b"something else");
    apply(cp, &ns, &configmap_yaml("notes", "notes.txt", "fine"));
    apply(
        cp,
        &ns,
        &format!(
            "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: bad\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  allowInsecureHttp: true\n  files:\n    - name: notes.txt\n      configMapKeyRef:\n        name: notes\n        key: notes.txt\n    - name: fw.bin\n      url: {}/fw.bin\n      sha256: {wrong}\n",
            files.base
        ),
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = wait_condition(&api, "bad", "Stalled", "True", "PackageInvalid").await;
    let ready = condition(&package, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    for needle in ["fw.bin", &wrong, &sha(&served), "sha256 mismatch"] {
        assert!(
            ready.message.contains(needle),
            "{needle} not in {}",
            ready.message
        );
    }
    let ids = emu.content_ids();
    assert!(
        !ids.iter()
            .any(|id| id.contains("fw.bin") || id.starts_with("package_")),
        "the bad file or a registration was uploaded: {ids:?}"
    );
    assert_eq!(emu.uploads(), 1, "only notes.txt: {ids:?}");
    assert!(events_json(cp, &ns).contains("ChecksumMismatch"));
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_file_fails_naming_the_limit_and_unlabelled_secret_is_refused() {
    let cp = ControlPlane::get();
    let (ns, emu, op) = setup(cp, "package-limits", "", &["--max-file-bytes", "64Ki"]).await;
    let big = bytes(100_000, 3);
    let files = FileServer::start(vec![("big.bin", big.clone())]).await;
    apply(
        cp,
        &ns,
        &format!(
            "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: big\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  allowInsecureHttp: true\n  files:\n    - name: big.bin\n      url: {}/big.bin\n      sha256: {}\n",
            files.base,
            sha(&big)
        ),
    );
    apply(
        cp,
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: plain\nstringData:\n  k: v\n",
    );
    apply(
        cp,
        &ns,
        "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: from-secret\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: k\n      secretKeyRef:\n        name: plain\n        key: k\n",
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = wait_condition(&api, "big", "Stalled", "True", "PackageInvalid").await;
    let message = condition(&package, "Ready").expect("Ready").message;
    assert!(
        message.contains("65536 bytes") && message.contains("big.bin"),
        "{message}"
    );
    let package = wait_condition(&api, "from-secret", "Stalled", "True", "PackageInvalid").await;
    let message = condition(&package, "Ready").expect("Ready").message;
    assert!(
        message.contains("otau.dev/package-source=true"),
        "{message}"
    );
    assert!(emu.content_ids().is_empty(), "{:?}", emu.content_ids());
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_retry_after_and_rate_limit_still_end_ready() {
    let cp = ControlPlane::get();
    let (ns, emu, op) = setup(
        cp,
        "package-faults",
        "  rateLimit:\n    requestsPerSecond: 5\n    burst: 2\n",
        &[],
    )
    .await;
    let mut rule = FaultRule::new("*");
    rule.error_rate = 0.3;
    rule.throttle_rate = 0.1;
    rule.retry_after_secs = 1;
    rule.latency_ms = 20;
    emu.set_faults(FaultConfig {
        seed: 7,
        rules: vec![rule],
        rate_limit: None::<RateLimit>,
    });
    let started = tokio::time::Instant::now();
    let data = bytes(50_000, 9);
    let files = FileServer::start(vec![("a.bin", data.clone()), ("b.bin", bytes(20_000, 2))]).await;
    apply(
        cp,
        &ns,
        &format!(
            "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: flaky\nspec:\n  connectorRef:\n    name: emu\n  version: 2.0.0\n  allowInsecureHttp: true\n  files:\n    - name: a.bin\n      url: {b}/a.bin\n      sha256: {a}\n    - name: b.bin\n      url: {b}/b.bin\n      sha256: {bb}\n",
            b = files.base,
            a = sha(&data),
            bb = sha(&bytes(20_000, 2))
        ),
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    wait_condition(&api, "flaky", "Ready", "True", "Registered").await;
    let item = emu.content(&format!("{ns}_flaky_a.bin")).expect("a.bin");
    assert_eq!(sha(&item.data), sha(&data));

    let log: Vec<_> = emu
        .log()
        .into_iter()
        .filter(|l| l.received >= started && l.path.starts_with("/api:1/"))
        .collect();
    assert!(log.iter().any(|l| l.status >= 500), "no 5xx was injected");
    let throttled: Vec<_> = log.iter().filter(|l| l.status == 429).collect();
    assert!(!throttled.is_empty(), "no 429 was injected");
    // No management request reaches the emulator before a Retry-After has passed. The
    // Retry-After counts from when the 429 was answered (latency 20 ms after arrival), and
    // a request that had already left the client when the 429 arrived is not a violation:
    // allow the injected latency plus scheduling slack.
    for t in &throttled {
        let wait = Duration::from_secs(t.retry_after_secs().unwrap_or(0));
        let early = log.iter().filter(|l| {
            l.received > t.received + Duration::from_millis(150)
                && l.received + Duration::from_millis(150) < t.received + wait
        });
        assert_eq!(
            early.count(),
            0,
            "a request was sent inside a Retry-After window"
        );
    }
    // The client-side bucket (5/s, burst 2): no 1 s window holds more than 2 + 5 requests
    // (one extra for the window edges).
    for (i, first) in log.iter().enumerate() {
        let in_window = log[i..]
            .iter()
            .take_while(|l| l.received < first.received + Duration::from_secs(1))
            .count();
        assert!(in_window <= 8, "{in_window} management requests within 1 s");
    }
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_file_names_do_not_collide_and_deleting_one_keeps_the_other() {
    let cp = ControlPlane::get();
    let (ns, emu, op) = setup(cp, "package-collide", "", &[]).await;
    for (pkg, text) in [("pkg-a", "firmware A"), ("pkg-b", "firmware B")] {
        apply(cp, &ns, &configmap_yaml(pkg, "fw.bin", text));
        apply(
            cp,
            &ns,
            &format!(
                "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: {pkg}\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: {pkg}\n        key: fw.bin\n"
            ),
        );
    }
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    wait_condition(&api, "pkg-a", "Ready", "True", "Registered").await;
    wait_condition(&api, "pkg-b", "Ready", "True", "Registered").await;
    let a = format!("{ns}_pkg-a_fw.bin");
    let b = format!("{ns}_pkg-b_fw.bin");
    assert_eq!(&emu.content(&a).expect("a").data[..], b"firmware A");
    assert_eq!(&emu.content(&b).expect("b").data[..], b"firmware B");

    // A third package asking for pkg-b's content id is refused, naming the owner.
    apply(
        cp,
        &ns,
        &format!(
            "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: pkg-c\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: fw.bin\n      contentId: {b}\n      configMapKeyRef:\n        name: pkg-a\n        key: fw.bin\n"
        ),
    );
    let c = wait_condition(&api, "pkg-c", "Stalled", "True", "PackageInvalid").await;
    let message = condition(&c, "Ready").expect("Ready").message;
    assert!(
        message.contains(&format!("SoftwarePackage {ns}/pkg-b")),
        "{message}"
    );
    assert_eq!(
        &emu.content(&b).expect("b").data[..],
        b"firmware B",
        "pkg-b overwritten"
    );

    api.delete("pkg-a", &DeleteParams::default())
        .await
        .expect("delete pkg-a");
    wait_gone(&api, "pkg-a").await;
    assert!(emu.content(&a).is_none(), "pkg-a's file is still there");
    assert!(emu.content(&format!("package_{ns}_pkg-a.json")).is_none());
    assert_eq!(&emu.content(&b).expect("b kept").data[..], b"firmware B");
    assert!(emu.content(&format!("package_{ns}_pkg-b.json")).is_some());
    // Deleting pkg-c must not remove pkg-b's item it never owned.
    api.delete("pkg-c", &DeleteParams::default())
        .await
        .expect("delete pkg-c");
    wait_gone(&api, "pkg-c").await;
    assert!(
        emu.content(&b).is_some(),
        "pkg-c's cleanup removed pkg-b's file"
    );
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_waits_for_an_active_rollout_and_retain_content_keeps_files() {
    let cp = ControlPlane::get();
    let (ns, emu, op) = setup(cp, "package-delete", "", &[]).await;
    for (pkg, retain) in [("used", false), ("kept", true)] {
        apply(cp, &ns, &configmap_yaml(pkg, "fw.bin", pkg));
        apply(
            cp,
            &ns,
            &format!(
                "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: {pkg}\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  retainContent: {retain}\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: {pkg}\n        key: fw.bin\n"
            ),
        );
    }
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    wait_condition(&api, "used", "Ready", "True", "Registered").await;
    wait_condition(&api, "kept", "Ready", "True", "Registered").await;
    apply(
        cp,
        &ns,
        "apiVersion: otau.dev/v1alpha1\nkind: Rollout\nmetadata:\n  name: canary\nspec:\n  packageRef:\n    name: used\n  targets:\n    identities: [dev-1]\n  waves:\n    - percent: 100\n",
    );
    api.delete("used", &DeleteParams::default())
        .await
        .expect("delete");
    let waiting = wait_condition(&api, "used", "Ready", "False", "InUseByRollout").await;
    let message = condition(&waiting, "Ready").expect("Ready").message;
    assert!(message.contains("canary"), "{message}");
    assert!(
        emu.content(&format!("{ns}_used_fw.bin")).is_some(),
        "removed while in use"
    );
    kubectl(
        cp,
        &[
            "delete",
            "-n",
            &ns,
            "rollout.otau.dev",
            "canary",
            "--wait=false",
        ],
    );
    wait_gone(&api, "used").await;
    assert!(emu.content(&format!("{ns}_used_fw.bin")).is_none());

    api.delete("kept", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&api, "kept").await;
    assert!(
        emu.content(&format!("{ns}_kept_fw.bin")).is_some(),
        "retainContent ignored"
    );
    assert!(emu.content(&format!("package_{ns}_kept.json")).is_none());
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_after_a_401_is_picked_up() {
    let cp = ControlPlane::get();
    let (ns, emu, op) = setup(cp, "package-rotation", "", &[]).await;
    // Rotate: the old token stops working, the Secret gets the new one. Nothing re-reads the
    // Secret until the platform answers 401.
    let fresh = "abcdefabcdefabcdefabcdefabcdefabcdef0002";
    emu.model.tokens().add_configured(fresh);
    assert!(emu.model.tokens().revoke(MTOKEN));
    apply(cp, &ns, &secret_yaml("token", fresh));
    apply(cp, &ns, &configmap_yaml("cm", "fw.bin", "rotated"));
    apply(
        cp,
        &ns,
        "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: after-rotation\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: cm\n        key: fw.bin\n",
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    wait_condition(&api, "after-rotation", "Ready", "True", "Registered").await;
    assert!(emu.log().iter().any(|l| l.status == 401), "no 401 was seen");
    assert!(
        emu.content(&format!("{ns}_after-rotation_fw.bin"))
            .is_some()
    );
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN, fresh]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_config_map_re_reconciles_its_package() {
    let cp = ControlPlane::get();
    // The resync is 10 minutes: only the ConfigMap watch can make the change show in time.
    let (ns, emu, op) = setup(cp, "package-configmap-edit", "", &[]).await;
    apply(cp, &ns, &configmap_yaml("fw", "fw.bin", "first build"));
    apply(
        cp,
        &ns,
        "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: edited\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: fw\n        key: fw.bin\n",
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = wait_condition(&api, "edited", "Ready", "True", "Registered").await;
    let files = package.status.expect("status").files;
    assert_eq!(files[0].sha256, sha(b"first build"));
    let id = files[0].content_id.clone();

    apply(cp, &ns, &configmap_yaml("fw", "fw.bin", "second build"));
    let want = sha(b"second build");
    let (api2, want2) = (api.clone(), want.clone());
    crate::support::wait_for(
        crate::operator::DEADLINE,
        "the package's status sha256 to follow the edited ConfigMap",
        move || {
            let (api, want) = (api2.clone(), want2.clone());
            async move {
                api.get("edited").await.ok().is_some_and(|p| {
                    p.status
                        .is_some_and(|s| s.files.first().is_some_and(|f| f.sha256 == want))
                })
            }
        },
    )
    .await;
    let item = emu.content(&id).expect("the file is still uploaded");
    assert_eq!(item.data.as_ref(), b"second build");
    assert_eq!(item.tags.get("sha256"), Some(&want));
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_again_keeps_the_devices_the_item_lists_and_tags_no_other() {
    let cp = ControlPlane::get();
    let (ns, emu, op) = setup(cp, "package-listing-kept", "", &[]).await;
    for identity in ["dev-1", "dev-2", "dev-3"] {
        emu.conn()
            .add_identity(identity, Default::default())
            .expect("identity");
    }
    // The item as a Rollout left it (dev-1 and dev-2 notified), registered for an older
    // manifest: the package registers again and must keep both, and not add dev-3.
    let id = format!("package_{ns}_kept.json");
    let listed = [
        ("otau_info".to_string(), "{\"author\":\"old\"}".to_string()),
        ("pid".to_string(), CID.to_string()),
        ("total-devices".to_string(), "2".to_string()),
        (format!("{CID}.dev-1"), "1".to_string()),
        (format!("{CID}.dev-2"), "1".to_string()),
    ];
    emu.conn()
        .content()
        .put(otau_operator::emulator::model::ContentItem {
            id: id.clone(),
            content_type: "application/json".into(),
            data: Default::default(),
            tags: listed.into_iter().collect(),
            last_modified: 0,
        })
        .expect("put the old item");
    apply(cp, &ns, &configmap_yaml("fw", "fw.bin", "kept"));
    apply(
        cp,
        &ns,
        "apiVersion: otau.dev/v1alpha1\nkind: SoftwarePackage\nmetadata:\n  name: kept\nspec:\n  connectorRef:\n    name: emu\n  version: 1.0.0\n  files:\n    - name: fw.bin\n      configMapKeyRef:\n        name: fw\n        key: fw.bin\n",
    );
    let api: Api<SoftwarePackage> = Api::namespaced(cp.client().await, &ns);
    let package = wait_condition(&api, "kept", "Ready", "True", "Registered").await;
    let ready = condition(&package, "Ready").expect("Ready");
    assert!(
        ready.message.contains("listed for 2 notified device(s)"),
        "{}",
        ready.message
    );
    let item = emu.content(&id).expect("registration item");
    let info: serde_json::Value = serde_json::from_str(&item.tags["otau_info"]).expect("otau_info");
    assert_eq!(info["product"], "emu", "registered again");
    assert_eq!(item.tags["total-devices"], "2");
    let prefix = format!("{CID}.");
    let tagged: Vec<&str> = item
        .tags
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .collect();
    assert_eq!(tagged, vec!["dev-1", "dev-2"]);
    assert_no_token_leak(cp, &ns, &op, &[MTOKEN]);
}
