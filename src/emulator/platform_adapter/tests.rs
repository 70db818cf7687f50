//! The in-process adapter over a real model (no mocks): listings, state, writes, content and
//! registration read back through the model itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::*;
use crate::emulator::clock::ManualClock;
use crate::emulator::model::{ModelConfig, Tag as ModelTag, WriteOrigin};

const T0: i64 = 1_735_689_600_000_000;

fn platform(identities: usize) -> (EmulatorPlatform, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let model = Model::new(ModelConfig::default(), clock.clone());
    let connector = model.add_connector("simconn1").expect("connector");
    connector
        .add_identities_bulk((0..identities).map(|i| {
            let region = if i % 2 == 0 { "eu" } else { "us" };
            (format!("dev-{i:06}"), vec![ModelTag::new("region", region)])
        }))
        .expect("identities");
    let platform = EmulatorPlatform::new(model, "simconn1")
        .expect("platform")
        .with_client("adapter-test");
    (platform, clock)
}

fn manifest() -> Manifest {
    Manifest::url_list("2.0.0", "Firmware", "", vec!["fw.bin".into()])
}

async fn list_all(p: &EmulatorPlatform, page_size: u32) -> Vec<IdentityPage> {
    p.list_identities(ListIdentities { page_size })
        .map(|page| page.expect("page"))
        .collect()
        .await
}

#[tokio::test]
async fn listing_pages_through_every_identity_once_newest_first() {
    let (p, _) = platform(2_500);
    let pages = list_all(&p, 1000).await;
    let sizes: Vec<usize> = pages.iter().map(|pg| pg.identities.len()).collect();
    assert_eq!(sizes, vec![1000, 1000, 500]);
    let all: Vec<&Identity> = pages.iter().flat_map(|pg| &pg.identities).collect();
    let unique: BTreeSet<&str> = all.iter().map(|i| i.identity.as_str()).collect();
    assert_eq!(unique.len(), 2_500, "every identity exactly once");
    let created: Vec<i64> = all.iter().map(|i| i.created.expect("created")).collect();
    assert!(
        created.windows(2).all(|w| w[0] > w[1]),
        "newest first, strictly"
    );
    let first = all
        .iter()
        .find(|i| i.identity == "dev-000001")
        .expect("dev 1");
    assert_eq!(
        first.tags,
        vec![Tag {
            name: "region".into(),
            value: "us".into()
        }]
    );
    assert_eq!(first.status, "whitelisted");
    assert_eq!(first.state, IdentityState::default(), "nothing written yet");
}

#[tokio::test]
async fn page_size_is_capped_and_an_empty_connector_lists_nothing() {
    let (p, _) = platform(1_200);
    let sizes: Vec<usize> = list_all(&p, 50_000)
        .await
        .iter()
        .map(|pg| pg.identities.len())
        .collect();
    assert_eq!(sizes, vec![1000, 200]);
    let (empty, _) = platform(0);
    assert!(list_all(&empty, 100).await.is_empty());
}

#[tokio::test]
async fn config_otau_writes_land_in_state_and_ground_truth_at_the_model_clock() {
    let (p, clock) = platform(3);
    clock.advance(Duration::from_secs(90));
    let m = manifest().with_attempt(2);
    p.set_config_otau("dev-000002", &m).await.expect("write");
    let state = p.identity_state("dev-000002").await.expect("state");
    assert_eq!(state.config_otau.set.as_deref(), Some(m.to_json().as_str()));
    assert_eq!(state.config_otau.reported, None);
    assert_eq!(state.config_otau.timestamp, Some(T0 + 90_000_000));
    assert!(state.is_set_to(&m));
    let truth = p.connector().ground_truth("dev-000002");
    assert_eq!(truth.len(), 1);
    assert_eq!(truth[0].client, "adapter-test");
    assert_eq!(truth[0].attempt, Some(2));
    assert_eq!(truth[0].at, T0 + 90_000_000);

    // A device write shows as `reported` in the listing, next to the cloud's value.
    let report = r#"{"version":"2.0.0","status":"INIT","message":""}"#;
    p.connector()
        .device_write("dev-000002", &[(OTAU_IN, report)], &WriteOrigin::default())
        .expect("device write");
    let listed = list_all(&p, 10).await;
    let dev = listed[0]
        .identities
        .iter()
        .find(|i| i.identity == "dev-000002")
        .expect("listed");
    assert_eq!(dev.state.otau_in.reported.as_deref(), Some(report));
    assert_eq!(
        dev.state.report().expect("report").expect("parses").version,
        "2.0.0"
    );
}

#[tokio::test]
async fn errors_are_the_clients_typed_errors() {
    let (p, _) = platform(1);
    let err = p.set_config_otau("nobody", &manifest()).await.unwrap_err();
    assert!(
        matches!(err, PlatformError::NotFound { operation: o, .. } if o == operation::SET_STATE),
        "{err:?}"
    );
    let err = p.identity_state("nobody").await.unwrap_err();
    assert!(matches!(err, PlatformError::NotFound { .. }), "{err:?}");
    p.connector()
        .patch_settings(&serde_json::json!({"resources": {
            "config_otau": {"format": "string", "settable": false},
            "otau_in": {"format": "string", "settable": false},
        }}))
        .expect("patch");
    let err = p
        .set_config_otau("dev-000000", &manifest())
        .await
        .unwrap_err();
    assert!(matches!(err, PlatformError::NotSettable { .. }), "{err:?}");
    let check = p.check_credentials().await.expect("check");
    assert!(!check.settings.resources[CONFIG_OTAU].settable);
    assert!(!check.settings.resources[OTAU_IN].settable);
    assert_eq!(check.email, ACCOUNT);
}

fn upload(id: &str, data: &[u8], length: u64, sha256: String) -> ContentUpload {
    ContentUpload {
        id: id.into(),
        content_type: "application/octet-stream".into(),
        length,
        sha256,
        tags: BTreeMap::from([("owner".to_string(), "default/fw".to_string())]),
        body: Box::pin(std::io::Cursor::new(data.to_vec())),
    }
}

#[tokio::test]
async fn uploads_are_checked_stored_listed_and_deleted() {
    let (p, clock) = platform(0);
    clock.advance(Duration::from_millis(1500));
    let data = b"firmware bytes".to_vec();
    let sha = hex::encode(Sha256::digest(&data));
    let err = p
        .upload_content(upload("fw.bin", &data, 99, sha.clone()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("14 bytes, 99 were announced"),
        "{err}"
    );
    let err = p
        .upload_content(upload("fw.bin", &data, 14, "00".repeat(32)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
    assert!(p.list_content().await.expect("list").is_empty());

    p.upload_content(upload("fw.bin", &data, 14, sha))
        .await
        .expect("upload");
    let info = p.content_info("fw.bin").await.expect("info");
    assert_eq!(info.length, 14);
    assert_eq!(info.tags["owner"], "default/fw");
    assert_eq!(info.last_modified, "2025-01-01T00:00:01.500Z");
    let stored = p.connector().content().read("fw.bin", None).expect("bytes");
    assert_eq!(&stored[..], &data[..]);
    assert_eq!(p.list_content().await.expect("list").len(), 1);
    p.delete_content("fw.bin").await.expect("delete");
    let err = p.delete_content("fw.bin").await.unwrap_err();
    assert!(matches!(err, PlatformError::NotFound { .. }), "{err:?}");
    assert!(p.content_info("fw.bin").await.is_err());
}

#[tokio::test]
async fn package_registration_writes_the_exosense_tags() {
    let (p, _) = platform(0);
    let package = PackageRegistration {
        slug: "default_fw".into(),
        author: "ops@example.com".into(),
        product: "simconn1".into(),
        manifest: manifest(),
        total_devices: 2,
        device_tags: vec!["dev-000000".into(), "dev-000001".into()],
    };
    let done = p.register_package(&package).await.expect("register");
    assert_eq!(done.content_id, "package_default_fw.json");
    assert_eq!(done.path, RegistrationPath::ContentRest);
    let info = p.content_info(&done.content_id).await.expect("item");
    assert_eq!(info.length, 0);
    assert_eq!(info.tags["pid"], "simconn1");
    assert_eq!(info.tags["total-devices"], "2");
    assert_eq!(info.tags["simconn1.dev-000001"], "1");
    let otau: serde_json::Value = serde_json::from_str(&info.tags["otau_info"]).expect("json");
    assert_eq!(otau["config_otau"]["version"], "2.0.0");
    assert_eq!(otau["author"], "ops@example.com");
}

#[tokio::test]
async fn changed_since_returns_only_the_devices_written_after_the_cursor() {
    let (p, clock) = platform(50);
    let conn = p.connector().clone();
    let start = p.change_cursor();
    // Nothing changed yet: an empty answer with the same cursor.
    let none = p.changed_since(start);
    assert!(none.ids.is_empty());
    assert_eq!(none.cursor, start);
    clock.advance(Duration::from_secs(1));
    p.set_config_otau("dev-000007", &manifest())
        .await
        .expect("cloud write");
    conn.device_write(
        "dev-000030",
        &[(
            "otau_in",
            r#"{"version":"2.0.0","status":"INSTALLED_VERSION"}"#,
        )],
        &WriteOrigin::default(),
    )
    .expect("device write");
    p.set_config_otau("dev-000007", &manifest().with_attempt(2))
        .await
        .expect("second cloud write");
    let changed = p.changed_since(start);
    let (identities, removed) = p.identities_of(&changed.ids);
    assert!(removed.is_empty());
    let ids: Vec<&str> = identities.iter().map(|i| i.identity.as_str()).collect();
    assert_eq!(
        ids,
        vec!["dev-000030", "dev-000007"],
        "each once, newest first"
    );
    let seven = &identities[1];
    assert!(
        seven
            .state
            .config_otau
            .set
            .as_deref()
            .is_some_and(|v| v.contains(r#""attempt":2"#)),
        "the latest value: {seven:?}"
    );
    // From the new cursor: nothing, until the next change.
    assert!(p.changed_since(changed.cursor).ids.is_empty());
    conn.remove_identity("dev-000030").expect("remove");
    let after = p.changed_since(changed.cursor);
    let (identities, removed) = p.identities_of(&after.ids);
    assert!(identities.is_empty());
    assert_eq!(removed, vec!["dev-000030".to_string()]);
}
