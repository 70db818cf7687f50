//! Before a wave starts, the package's content items are checked to exist on the platform
//! (docs/rollouts.md "Content checked before each wave"): a package whose content was deleted
//! on the platform (or lost in a platform reset) must not send a wave of devices to files that
//! answer 404.
//!
//! - **When.** Only in a pass whose decision starts a wave ([`wave_started`]): the engine
//!   decides that; this module reads the decision back and, before any write, checks.
//! - **Cost.** One content listing (`GET …/content/item?full=true`) per Rollout and wave start,
//!   whatever the fleet size. The wave whose content was verified is remembered in memory
//!   ([`super::state::Tracked::content_verified`], 4 bytes per Rollout, nothing per device); a
//!   restart verifies the wave once more when it starts again.
//! - **Missing.** The Rollout holds (the engine's [`Blocker::ContentMissing`], no write), the
//!   SoftwarePackage turns `Ready=False`, reason `ContentMissing`, naming the item, and the
//!   package controller is made due at once: it uploads the item again from its source (or
//!   registers the package again) and turns Ready. The Rollout, held as `PackageNotReady`
//!   meanwhile, checks again when the package is Ready and the wave starts.
//! - **Pure decision.** The engine never calls the platform: it gets the verdict as a blocker.

use kube::ResourceExt;

use crate::api::SoftwarePackage;
use crate::api::conditions::{FALSE, reason};
use crate::api::rollout::RolloutStatus;
use crate::api::software_package::SoftwarePackageStatus;
use crate::controller::Context;
use crate::controller::error::Error;
use crate::controller::package;
use crate::engine::{Blocker, Decision};
use crate::platform::{ContentInfo, Platform};

/// The wave a decision starts (its `currentWave` when it moved past the previous one).
pub fn wave_started(previous: &RolloutStatus, decision: &Decision) -> Option<i32> {
    let wave = decision.status.current_wave;
    (wave > previous.current_wave).then_some(wave)
}

/// One content item the package's manifest depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedItem {
    /// Its content id on the platform.
    pub id: String,
    /// What it is, for people: `file fw.img` or `the package registration`.
    pub what: String,
}

/// The items a Ready package put on the platform: its uploaded files and its registration
/// item (`package_….json`).
pub fn expected_items(status: &SoftwarePackageStatus) -> Vec<ExpectedItem> {
    let files = status.files.iter().map(|f| ExpectedItem {
        id: f.content_id.clone(),
        what: format!("file {}", f.name),
    });
    let registration = status.package_content_id.iter().map(|id| ExpectedItem {
        id: id.clone(),
        what: "the package registration".to_owned(),
    });
    files.chain(registration).collect()
}

/// The first expected item the listing does not hold.
pub fn first_missing(expected: &[ExpectedItem], listed: &[ContentInfo]) -> Option<ExpectedItem> {
    let present: std::collections::HashSet<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    expected
        .iter()
        .find(|item| !present.contains(item.id.as_str()))
        .cloned()
}

/// The sentence naming a missing item.
pub fn missing_text(package: &str, item: &ExpectedItem, wave: i32) -> String {
    format!(
        "content item {} ({}) of SoftwarePackage {package} is missing on the platform \
         (checked before wave {wave} starts); no device is written until the package has \
         uploaded it again and is Ready",
        item.id, item.what
    )
}

/// What the check before a wave found.
pub enum Verdict {
    /// Every item is there (or no wave starts).
    Go,
    /// The Rollout holds.
    Hold(Blocker),
}

/// Checks, with one content listing, that every item of `package` exists before `wave`
/// starts; a missing item marks the package not Ready and makes it due.
pub async fn check_before_wave(
    ctx: &Context,
    platform: &dyn Platform,
    package: &SoftwarePackage,
    wave: i32,
) -> Result<Verdict, Error> {
    let status = package.status.clone().unwrap_or_default();
    let listed = match platform.list_content().await {
        Ok(listed) => listed,
        Err(e) => {
            return Ok(Verdict::Hold(Blocker::PlatformUnavailable(format!(
                "the package's content cannot be listed before wave {wave} starts: {e}"
            ))));
        }
    };
    let Some(item) = first_missing(&expected_items(&status), &listed) else {
        return Ok(Verdict::Go);
    };
    let text = missing_text(&package.name_any(), &item, wave);
    mark_package_missing(ctx, package, status, &text).await?;
    Ok(Verdict::Hold(Blocker::ContentMissing(text)))
}

/// Turns the package `Ready=False` with `ContentMissing`, and makes its controller due now so
/// it uploads the item again (the status write wakes it).
async fn mark_package_missing(
    ctx: &Context,
    package: &SoftwarePackage,
    mut status: SoftwarePackageStatus,
    text: &str,
) -> Result<(), Error> {
    package::set_conditions(
        &mut status.conditions,
        package.metadata.generation,
        FALSE,
        FALSE,
        FALSE,
        reason::CONTENT_MISSING,
        &format!("{text}; uploading it again"),
    );
    ctx.schedule.expire(&package.uid().unwrap_or_default());
    package::write_status(package, ctx, &status).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::software_package::UploadedFile;

    fn item(id: &str) -> ContentInfo {
        ContentInfo {
            id: id.into(),
            content_type: String::new(),
            length: 0,
            last_modified: String::new(),
            tags: Default::default(),
        }
    }

    #[test]
    fn the_first_missing_item_is_named() {
        let status = SoftwarePackageStatus {
            files: vec![
                UploadedFile {
                    name: "a.img".into(),
                    content_id: "ns_p_a.img".into(),
                    ..UploadedFile::default()
                },
                UploadedFile {
                    name: "b.img".into(),
                    content_id: "ns_p_b.img".into(),
                    ..UploadedFile::default()
                },
            ],
            package_content_id: Some("package_ns_p.json".into()),
            ..SoftwarePackageStatus::default()
        };
        let expected = expected_items(&status);
        assert_eq!(expected.len(), 3);
        let all = [
            item("ns_p_a.img"),
            item("ns_p_b.img"),
            item("package_ns_p.json"),
            item("other"),
        ];
        assert_eq!(first_missing(&expected, &all), None);
        let missing = first_missing(&expected, &all[1..]).unwrap();
        assert_eq!(missing.id, "ns_p_a.img");
        let text = missing_text("p", &missing, 2);
        assert!(
            text.starts_with("content item ns_p_a.img (file a.img) of SoftwarePackage p"),
            "{text}"
        );
        let missing = first_missing(&expected, &all[..2]).unwrap();
        assert_eq!(missing.what, "the package registration");
    }
}
