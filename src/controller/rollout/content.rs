//! The package's content items are checked to exist on the platform before devices are sent to
//! them (docs/rollouts.md "Content checked before devices are written"): a package whose
//! content was deleted on the platform (or lost in a platform reset) must not send devices to
//! files that answer 404.
//!
//! - **When.** In a pass whose decision starts a wave ([`wave_started`]), always; in a pass
//!   that writes devices otherwise (retries, late joiners, the rest of a wave started earlier),
//!   when the package's content was not checked within the last `--content-check-interval`
//!   (default 1 minute; a wave start's check counts: [`ContentChecks::claim`]). The engine
//!   decides the writes; this module reads the decision back and, before any write, checks.
//! - **Cost.** One content listing (`GET …/content/item?full=true`) per Rollout and wave
//!   start, plus at most one per package and interval while writes are due outside wave
//!   starts (one more per pass that finds the listing failing), whatever the fleet size. The
//!   wave whose content was verified is remembered in memory per Rollout
//!   ([`super::state::Tracked::content_verified`], 4 bytes), the time of each package's last
//!   check per package ([`ContentChecks`], one entry per package checked within the interval,
//!   about 100 bytes); nothing per device. A restart checks the next wave start and the next
//!   writes once more.
//! - **Missing.** The Rollout holds (the engine's [`Blocker::ContentMissing`], no write), the
//!   SoftwarePackage turns `Ready=False`, reason `ContentMissing`, naming the item, with a
//!   `ContentMissing` Warning event, and the package controller is made due at once: it uploads
//!   the item again from its source (or registers the package again) and turns Ready. The
//!   Rollout, held as `PackageNotReady` meanwhile, checks again when the package is Ready and
//!   the wave starts (or its writes are due after the interval).
//! - **Pure decision.** The engine never calls the platform: it gets the verdict as a blocker.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

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

/// The default of `--content-check-interval`.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

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

/// What a content check comes before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckPoint {
    /// The start of this wave.
    WaveStart(i32),
    /// Writes outside a wave start (retries, late joiners, the rest of a started wave) while
    /// this wave is the current one.
    Writes(i32),
}

impl CheckPoint {
    /// `before wave 2 starts`, `before devices of wave 1 are written (retries, late joiners
    /// or the rest of the wave)`.
    fn describe(self) -> String {
        match self {
            CheckPoint::WaveStart(wave) => format!("before wave {wave} starts"),
            CheckPoint::Writes(wave) => format!(
                "before devices of wave {wave} are written (retries, late joiners or the rest \
                 of the wave)"
            ),
        }
    }
}

/// The sentence naming a missing item.
pub fn missing_text(package: &str, item: &ExpectedItem, point: CheckPoint) -> String {
    format!(
        "content item {} ({}) of SoftwarePackage {package} is missing on the platform \
         (checked {}); no device is written until the package has uploaded it again and is \
         Ready",
        item.id,
        item.what,
        point.describe()
    )
}

/// What a content check found.
pub enum Verdict {
    /// Every item is there.
    Go,
    /// The Rollout holds.
    Hold(Blocker),
}

/// Checks, with one content listing, that every item of `package` exists before `point`; a
/// missing item marks the package not Ready and makes it due.
pub async fn check_content(
    ctx: &Context,
    platform: &dyn Platform,
    package: &SoftwarePackage,
    point: CheckPoint,
) -> Result<Verdict, Error> {
    let status = package.status.clone().unwrap_or_default();
    let listed = match platform.list_content().await {
        Ok(listed) => listed,
        Err(e) => {
            return Ok(Verdict::Hold(Blocker::PlatformUnavailable(format!(
                "the package's content cannot be listed {}: {e}",
                point.describe()
            ))));
        }
    };
    let Some(item) = first_missing(&expected_items(&status), &listed) else {
        return Ok(Verdict::Go);
    };
    let text = missing_text(&package.name_any(), &item, point);
    mark_package_missing(ctx, package, status, &text).await?;
    Ok(Verdict::Hold(Blocker::ContentMissing(text)))
}

/// When each package's content was last checked (a check under way included), by package UID:
/// what bounds the checks outside wave starts to one per package and interval, whichever
/// Rollouts of the package write. Memory only: entries older than the interval are dropped at
/// each claim, so it holds the packages checked within the last interval.
#[derive(Debug, Default)]
pub struct ContentChecks {
    checked: Mutex<HashMap<String, Instant>>,
}

impl ContentChecks {
    /// Whether the package `uid` is due for a check at `now` (none within `interval`), taking
    /// the check if so: a second caller within the interval is told no.
    pub fn claim(&self, uid: &str, now: Instant, interval: Duration) -> bool {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.retain(|_, at| now.saturating_duration_since(*at) < interval);
        if checked.contains_key(uid) {
            return false;
        }
        checked.insert(uid.to_owned(), now);
        true
    }

    /// Records a check of `uid` made at `now` (before a wave start), so writes within the
    /// interval after it need none.
    pub fn checked(&self, uid: &str, now: Instant) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.insert(uid.to_owned(), now);
    }

    /// Forgets the check of `uid`: it could not list the content, so the next writes check
    /// again.
    pub fn release(&self, uid: &str) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        checked.remove(uid);
    }
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
    ctx.event(
        &package.object_ref(&()),
        EventType::Warning,
        reason::CONTENT_MISSING,
        "CheckContent",
        &format!("{text}; uploading it again"),
    )
    .await;
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
        let text = missing_text("p", &missing, CheckPoint::WaveStart(2));
        assert!(
            text.starts_with("content item ns_p_a.img (file a.img) of SoftwarePackage p"),
            "{text}"
        );
        let missing = first_missing(&expected, &all[..2]).unwrap();
        assert_eq!(missing.what, "the package registration");
        let text = missing_text("p", &missing, CheckPoint::Writes(1));
        assert!(
            text.contains("(checked before devices of wave 1 are written (retries, late joiners"),
            "{text}"
        );
    }

    #[test]
    fn a_package_is_checked_at_most_once_per_interval_outside_wave_starts() {
        let checks = ContentChecks::default();
        let minute = Duration::from_secs(60);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(checks.claim("a", at(0), minute), "first writes: due");
        assert!(
            !checks.claim("a", at(0), minute),
            "a second Rollout at once: not"
        );
        assert!(!checks.claim("a", at(59), minute));
        assert!(checks.claim("b", at(59), minute), "per package");
        assert!(
            checks.claim("a", at(60), minute),
            "a minute later: due again"
        );
        // A wave start's check counts: writes within the interval after it need none.
        checks.checked("c", at(100));
        assert!(!checks.claim("c", at(130), minute));
        assert!(checks.claim("c", at(160), minute));
        // A listing that failed is given back: the next writes check again.
        assert!(checks.claim("d", at(200), minute));
        checks.release("d");
        assert!(checks.claim("d", at(201), minute));
        // Old entries go: only packages checked within the interval are kept.
        assert!(checks.claim("e", at(1000), minute));
        let kept = checks.checked.lock().unwrap().len();
        assert_eq!(kept, 1);
    }
}
