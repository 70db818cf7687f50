//! Listing identities with state and tags, reading and writing state (exosite-platform.md §5.2-§5.4).

use std::collections::BTreeSet;

use futures::StreamExt;
use otau_operator::emulator::model::{Tag as ModelTag, WriteOrigin};
use otau_operator::otau::{Manifest, Report, Status};
use otau_operator::platform::{ListIdentities, Platform, PlatformError, Tag};

use crate::harness::{CID, Emu, expected_user_agent};

fn manifest() -> Manifest {
    Manifest::url_list("1.0.2", "Firmware update", "", vec!["fw_1.0.2.bin".into()])
}

/// 2,500 identities across pages of 300: every one arrives, tags and state parsed.
#[tokio::test]
async fn lists_2500_identities_across_pages_with_tags_and_state() {
    let emu = Emu::start().await;
    let conn = emu.conn();
    let added = conn
        .add_identities_bulk((0..2500u32).map(|n| {
            let region = if n.is_multiple_of(2) { "eu" } else { "us" };
            (format!("dev-{n:05}"), vec![ModelTag::new("region", region)])
        }))
        .expect("bulk add");
    assert_eq!(added, 2500);
    // Some state to parse: a cloud write and a device report.
    conn.set_state(
        "dev-00007",
        &[("config_otau".into(), manifest().to_json())],
        "test",
    )
    .expect("set");
    let report = Report::new("1.0.2", Status::parse("INSTALLED_VERSION"), "");
    conn.device_write(
        "dev-00042",
        &[("otau_in", report.to_json().as_str())],
        &WriteOrigin::default(),
    )
    .expect("device write");

    let client = emu.client();
    let mut pages = client.list_identities(ListIdentities { page_size: 300 });
    let mut seen = BTreeSet::new();
    let mut page_count = 0;
    let mut total = 0;
    while let Some(page) = pages.next().await {
        let page = page.expect("page");
        page_count += 1;
        for id in page.identities {
            total += 1;
            let n: usize = id.identity["dev-".len()..].parse().expect("number");
            let expected = if n.is_multiple_of(2) { "eu" } else { "us" };
            assert_eq!(id.tags.len(), 1, "{}", id.identity);
            assert_eq!(id.tags[0].name, "region");
            assert_eq!(id.tags[0].value, expected);
            assert!(id.created.is_some());
            if id.identity == "dev-00007" {
                assert!(id.state.is_set_to(&manifest()));
                assert!(id.state.config_otau.timestamp.is_some());
            }
            if id.identity == "dev-00042" {
                let r = id.state.report().expect("reported").expect("parses");
                assert_eq!(r.version, "1.0.2");
                assert_eq!(r.status.as_str(), "INSTALLED_VERSION");
            }
            seen.insert(id.identity);
        }
    }
    assert_eq!(seen.len(), 2500, "every identity listed once at least");
    assert_eq!(total, 2500, "no duplicates with the created cursor");
    assert_eq!(page_count, 9, "2500 / 300 → 9 pages");
    // Paging used the documented cursor: `before` on every page after the first.
    let lists: Vec<_> = emu
        .log()
        .into_iter()
        .filter(|l| l.path.ends_with("/device2/identity/"))
        .collect();
    assert_eq!(lists.len(), 9);
    assert!(!lists[0].query.contains("before="));
    for l in &lists {
        assert!(l.query.contains("limit=300"), "{}", l.query);
    }
    for l in &lists[1..] {
        assert!(l.query.contains("before="), "{}", l.query);
    }
}

/// Set then get `config_otau`: sent as a JSON string, read back equal; the emulator's ground
/// truth names our User-Agent as the writer.
#[tokio::test]
async fn set_and_get_state_round_trip() {
    let emu = Emu::start().await;
    emu.conn()
        .add_identity("00AB01", Default::default())
        .expect("add");
    let client = emu.client();
    let m = manifest().with_attempt(2);
    client.set_config_otau("00AB01", &m).await.expect("set");
    let state = client.identity_state("00AB01").await.expect("get");
    assert_eq!(state.config_otau.set.as_deref(), Some(m.to_json().as_str()));
    assert!(state.is_set_to(&m));
    assert!(
        !state.is_set_to(&manifest()),
        "attempt 2 differs from attempt 1"
    );
    assert_eq!(state.otau_in.reported, None);
    let writes = emu.conn().ground_truth("00AB01");
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].client, expected_user_agent());
    assert_eq!(writes[0].attempt, Some(2));
}

/// A cloud write to `otau_in` (not settable) is refused with `NotSettable`.
#[tokio::test]
async fn writing_a_non_settable_resource_is_not_settable() {
    let emu = Emu::start().await;
    let conn = emu.conn();
    conn.add_identity("00AB02", Default::default())
        .expect("add");
    // Make config_otau non-settable for this connector, as a misconfigured product would be.
    conn.patch_settings(&serde_json::json!({
        "resources": {"config_otau": {"format": "string", "settable": false, "unit": "", "allowed": []}}
    }))
    .expect("patch settings");
    let err = emu
        .client()
        .set_config_otau("00AB02", &manifest())
        .await
        .expect_err("not settable");
    assert!(matches!(err, PlatformError::NotSettable { .. }), "{err:?}");
    assert_eq!(err.metric_label(), "not_settable");
    assert!(!err.is_transient());
}

/// Unknown identities are `NotFound` for both reads and writes.
#[tokio::test]
async fn unknown_identity_is_not_found() {
    let emu = Emu::start().await;
    let client = emu.client();
    let err = client.identity_state("nope").await.expect_err("unknown");
    assert!(matches!(err, PlatformError::NotFound { .. }), "{err:?}");
    let err = client
        .set_config_otau("nope", &manifest())
        .await
        .expect_err("unknown");
    assert!(matches!(err, PlatformError::NotFound { .. }), "{err:?}");
    assert_eq!(client.connector_id(), CID);
}

/// The credentials check returns the token's account and TTL and the connector's resources.
#[tokio::test]
async fn check_credentials_reads_token_and_settings() {
    let emu = Emu::start().await;
    let check = emu.client().check_credentials().await.expect("check");
    assert!(check.ttl.as_secs() > 0);
    let otau_in = check.settings.resources.get("otau_in").expect("otau_in");
    assert!(!otau_in.settable);
    assert!(check.settings.resources["config_otau"].settable);
}

/// The success record: one tag added over the management API (read, then the whole list
/// written back), the device's other tags kept, nothing written when it is there already;
/// an unknown identity is `NotFound`.
#[tokio::test]
async fn adds_an_identity_tag_once_and_keeps_the_other_tags() {
    let emu = Emu::start().await;
    let conn = emu.conn();
    conn.add_identities_bulk([(
        "dev-1".to_string(),
        vec![ModelTag::new("region", "eu"), ModelTag::new("region", "us")],
    )])
    .expect("add");
    let client = emu.client();
    let record = Tag::new("otau-installed", "fecb8cef42ad570b");
    assert!(
        client
            .add_identity_tag("dev-1", &record)
            .await
            .expect("added")
    );
    let tags = conn.identity("dev-1").expect("identity").tags;
    assert_eq!(
        tags,
        vec![
            ModelTag::new("region", "eu"),
            ModelTag::new("region", "us"),
            ModelTag::new("otau-installed", "fecb8cef42ad570b"),
        ]
    );
    let patches = || {
        emu.log()
            .into_iter()
            .filter(|l| l.method == "PATCH" && l.path.ends_with("/device2/identity/dev-1"))
            .count()
    };
    assert_eq!(patches(), 1);
    assert!(
        !client
            .add_identity_tag("dev-1", &record)
            .await
            .expect("present")
    );
    assert_eq!(patches(), 1, "a tag already there is not written again");
    let err = client
        .add_identity_tag("nope", &record)
        .await
        .expect_err("unknown");
    assert!(matches!(err, PlatformError::NotFound { .. }), "{err:?}");
}
