//! Package registration the way ExoSense lists packages (exosite-platform.md §2.6, §7.2).

use otau_operator::otau::Manifest;
use otau_operator::platform::{PackageRegistration, Platform, RegistrationPath};

use crate::harness::{CID, Emu};

fn package() -> PackageRegistration {
    PackageRegistration {
        slug: "default.fw-1-0-2".into(),
        author: "ops@example.com".into(),
        product: "myconnector".into(),
        manifest: Manifest::url_list(
            "1.0.2",
            "Firmware update",
            "fixes",
            vec![
                "default.fw-1-0-2.fw.bin".into(),
                "https://example.com/notes.txt".into(),
            ],
        ),
        total_devices: 2,
        device_tags: vec!["a0001".into(), "a0002".into()],
    }
}

fn check_listed(info: &otau_operator::platform::ContentInfo) {
    assert_eq!(info.id, "package_default.fw-1-0-2.json");
    assert_eq!(info.length, 0, "the package item's body is empty");
    assert_eq!(info.tags.get("pid").map(String::as_str), Some(CID));
    assert_eq!(
        info.tags.get("total-devices").map(String::as_str),
        Some("2")
    );
    assert_eq!(
        info.tags.get(&format!("{CID}.a0001")).map(String::as_str),
        Some("1")
    );
    let otau_info: serde_json::Value =
        serde_json::from_str(info.tags.get("otau_info").expect("otau_info")).expect("JSON string");
    assert_eq!(otau_info["author"], "ops@example.com");
    assert_eq!(otau_info["product"], "myconnector");
    assert_eq!(
        otau_info["config_otau"],
        serde_json::from_str::<serde_json::Value>(&package().manifest.to_json()).expect("json"),
        "otau_info.config_otau is the manifest object"
    );
}

/// Without ExoSense: the empty `package_…` item with its tags, through content REST.
#[tokio::test]
async fn registration_through_content_rest_is_listed_with_tags() {
    let emu = Emu::start().await;
    let client = emu.client();
    let registered = client.register_package(&package()).await.expect("register");
    assert_eq!(registered.path, RegistrationPath::ContentRest);
    assert_eq!(registered.content_id, "package_default.fw-1-0-2.json");
    let info = client
        .content_info(&registered.content_id)
        .await
        .expect("info");
    check_listed(&info);
    assert!(!emu.log().iter().any(|l| l.path == "/api/graphql"));
}

/// With ExoSense: `createContent` through GraphQL, then the empty body through its form; the
/// management API lists the item with the same tags.
#[tokio::test]
async fn registration_through_exosense_create_content() {
    let emu = Emu::start().await;
    let client = emu.client_with(emu.config_with_exosense(), None);
    let registered = client.register_package(&package()).await.expect("register");
    assert_eq!(registered.path, RegistrationPath::ExoSense);
    let info = client
        .content_info(&registered.content_id)
        .await
        .expect("info");
    check_listed(&info);
    let log = emu.log();
    let gql: Vec<_> = log.iter().filter(|l| l.path == "/api/graphql").collect();
    assert_eq!(gql.len(), 1);
    assert_eq!(gql[0].status, 200);
    assert!(
        log.iter().any(|l| l.method == "POST"
            && l.path.starts_with("/objectstore/")
            && l.status / 100 == 2),
        "the empty body went through the returned form"
    );
}

/// A wrong ExoSense token is an authentication error, not a silent success.
#[tokio::test]
async fn exosense_with_a_wrong_token_is_rejected() {
    let emu = Emu::start().await;
    let mut config = emu.config_with_exosense();
    if let Some(e) = config.exosense.as_mut() {
        e.credentials = std::sync::Arc::new(otau_operator::platform::StaticToken(
            otau_operator::platform::SecretToken::new("wrong-automation-token"),
        ));
    }
    let err = emu
        .client_with(config, None)
        .register_package(&package())
        .await
        .expect_err("401");
    assert_eq!(err.metric_label(), "authentication", "{err}");
    assert!(!err.to_string().contains("wrong-automation-token"));
}

/// A listing at the default bound (1,000 per-device tags, src/controller/package/listing.rs)
/// goes through both registration paths whole: the content API's `tags` query parameter and
/// `createContent`'s variables. Each path costs the calls the listing docs count: two for the
/// content API (upload form, object-store POST), two for ExoSense (createContent, object-store
/// POST).
#[tokio::test]
async fn a_listing_at_the_default_bound_registers_whole_through_both_paths() {
    let bound = otau_operator::api::software_package::DEFAULT_MAX_DEVICE_TAGS as usize;
    let devices: Vec<String> = (0..bound).map(|i| format!("device-{i:06}")).collect();
    let listing = PackageRegistration {
        total_devices: bound as u64,
        device_tags: devices.clone(),
        ..package()
    };
    for exosense in [false, true] {
        let emu = Emu::start().await;
        let client = if exosense {
            emu.client_with(emu.config_with_exosense(), None)
        } else {
            emu.client()
        };
        let before = emu.log().len();
        let registered = client.register_package(&listing).await.expect("register");
        let calls = emu.log().len() - before;
        assert_eq!(calls, 2, "exosense {exosense}: {:?}", &emu.log()[before..]);
        let info = client
            .content_info(&registered.content_id)
            .await
            .expect("info");
        let prefix = format!("{CID}.");
        let tagged: Vec<&str> = info
            .tags
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .collect();
        assert_eq!(tagged, devices, "exosense {exosense}");
        assert_eq!(info.tags["total-devices"], bound.to_string());
    }
}
