//! The ExoSense listing of a package: the per-device tags of its `package_<slug>.json` item
//! (exosite-platform.md §2.6, §7.2) follow the devices Rollouts of the package notified.
//!
//! - **Who is listed.** A device a Rollout notified: its `config_otau` set value is the
//!   package's manifest, at any attempt (docs/architecture.md §2). The Rollout controller counts
//!   them in its device index ([`crate::engine::DeviceIndex::notified`]), the in-memory index
//!   the engine already decides from: no new per-device memory, one pass over its 40-byte
//!   entries, identities copied only up to the bound.
//! - **The ledger.** The item's tags on the platform say who is listed. A look reads them and
//!   adds the notified devices, never removes one (a device once notified stays listed), so
//!   several Rollouts of one package add up, and neither a restart nor the package controller
//!   re-registering loses anything ([`listed`] carries the tags over).
//! - **The bound.** At most `spec.registration.maxDeviceTags` per-device tags (default 1000,
//!   capped by `--exosense-max-device-tags`); above it the item carries `total-devices` only.
//!   `total-devices` is the number listed; once either side is only a count (the item is above
//!   the bound, or this Rollout's notified devices are), it is the larger of the two counts, a
//!   lower bound when several Rollouts share the package.
//! - **When.** [`look_due`]: at most once per `--exosense-listing-interval` (default 5m) while
//!   the Rollout runs, and once when it completes. A look that finds the same notified devices
//!   as the previous one (count and fingerprint) costs nothing; otherwise one read of the item (`GET …/content/item/<id>`) and,
//!   when the tags change, one rewrite through `register_package` (ExoSense `createContent`
//!   plus the empty body's object-store POST, or the content API's two upload steps): at most
//!   three platform calls, one of them GraphQL, whatever the fleet size.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::naming;
use crate::api::{IoTConnector, SoftwarePackage};
use crate::engine::Notified;
use crate::platform::{PackageRegistration, Platform, PlatformError, package_content_id};

/// The default of `--exosense-listing-interval`.
pub const DEFAULT_LISTING_INTERVAL: Duration = Duration::from_secs(300);

/// The tag that counts the devices a package item lists.
pub const TOTAL_DEVICES_TAG: &str = "total-devices";

/// Who a package item lists, as its tags say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listed {
    /// Its `total-devices` (the number of per-device tags when absent or unreadable).
    pub total: u64,
    /// The identities of its `<pid>.<identity>` tags, sorted.
    pub identities: Vec<String>,
}

/// Who the item with `tags` lists for connector `pid`.
pub fn listed(tags: &BTreeMap<String, String>, pid: &str) -> Listed {
    let prefix = format!("{pid}.");
    let identities: Vec<String> = tags
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect();
    let total = tags
        .get(TOTAL_DEVICES_TAG)
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(identities.len() as u64);
    Listed { total, identities }
}

/// What a registration made again keeps of what the item listed: everything, unless it has
/// more per-device tags than `bound` allows now (the operator flag went down): then the count.
pub fn carried_over(mut listed: Listed, bound: u32) -> Listed {
    if listed.identities.len() as u64 > u64::from(bound) {
        listed.identities.clear();
    }
    listed
}

/// What the item should list once the `notified` devices (`identities`: all of them, or
/// empty when there are more than `bound`) are added to what it lists; `None` when it lists
/// them already.
pub fn next_listing(
    current: &Listed,
    notified: u64,
    identities: &[String],
    bound: u32,
) -> Option<Listed> {
    let bound = u64::from(bound);
    let item_exact = current.identities.len() as u64 == current.total;
    let ours_exact = identities.len() as u64 == notified;
    let next = if item_exact && ours_exact {
        let union: BTreeSet<&String> = current.identities.iter().chain(identities).collect();
        let total = union.len() as u64;
        let identities = if total <= bound {
            union.into_iter().cloned().collect()
        } else {
            Vec::new()
        };
        Listed { total, identities }
    } else {
        Listed {
            total: current.total.max(notified),
            identities: Vec::new(),
        }
    };
    (next != *current).then_some(next)
}

/// What the Rollout controller remembers of its last look at the listing: aggregates only.
/// Lost on restart, which costs one more look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListingMark {
    /// When the last look was.
    pub looked_at: Option<Instant>,
    /// The notified devices the listing was last brought up to: how many, and their
    /// fingerprint ([`crate::engine::Notified::fingerprint`]).
    pub notified: (u64, u64),
    /// The look after the Rollout completed is done.
    pub final_look: bool,
}

/// Whether a Rollout looks at its package's listing now: once after it completes, otherwise
/// when `interval` has passed since the last look (or there was none).
pub fn look_due(mark: &ListingMark, complete: bool, now: Instant, interval: Duration) -> bool {
    if complete {
        return !mark.final_look;
    }
    mark.looked_at
        .is_none_or(|at| now.saturating_duration_since(at) >= interval)
}

/// The registration of `package` on `connector` listing `listed`.
pub fn registration(
    package: &SoftwarePackage,
    connector: &IoTConnector,
    listed: Listed,
) -> PackageRegistration {
    PackageRegistration {
        slug: naming::slug(package),
        author: naming::author(package),
        product: connector.name_any(),
        manifest: naming::manifest(package),
        total_devices: listed.total,
        device_tags: listed.identities,
    }
}

/// What a look did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Looked {
    /// The item is not there (the package controller registers it).
    NoItem,
    /// The item lists the notified devices already.
    UpToDate,
    /// The item was rewritten to list this.
    Rewritten(Listed),
}

/// Reads the package item and rewrites it when it does not list the `notified` devices yet.
pub async fn bring_up_to_date(
    platform: &dyn Platform,
    package: &SoftwarePackage,
    connector: &IoTConnector,
    notified: &Notified,
    bound: u32,
) -> Result<Looked, PlatformError> {
    let id = package_content_id(&naming::slug(package));
    let info = match platform.content_info(&id).await {
        Ok(info) => info,
        Err(PlatformError::NotFound { .. }) => return Ok(Looked::NoItem),
        Err(e) => return Err(e),
    };
    let current = listed(&info.tags, &connector.spec.product_id);
    let Some(next) = next_listing(&current, notified.count, &notified.identities, bound) else {
        return Ok(Looked::UpToDate);
    };
    platform
        .register_package(&registration(package, connector, next.clone()))
        .await?;
    Ok(Looked::Rewritten(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn exact(names: &[&str]) -> Listed {
        Listed {
            total: names.len() as u64,
            identities: ids(names),
        }
    }

    #[test]
    fn listed_reads_the_device_tags_and_the_count() {
        let tags = BTreeMap::from([
            ("pid".to_string(), "p1".to_string()),
            ("p1.a".to_string(), "1".to_string()),
            ("p1.b".to_string(), "1".to_string()),
            ("p2.c".to_string(), "1".to_string()),
            ("otau_info".to_string(), "{}".to_string()),
            (TOTAL_DEVICES_TAG.to_string(), "2".to_string()),
        ]);
        assert_eq!(listed(&tags, "p1"), exact(&["a", "b"]));
        let only_count = BTreeMap::from([(TOTAL_DEVICES_TAG.to_string(), "7".to_string())]);
        assert_eq!(
            listed(&only_count, "p1"),
            Listed {
                total: 7,
                identities: Vec::new()
            }
        );
        assert_eq!(listed(&BTreeMap::new(), "p1"), Listed::default());
    }

    #[test]
    fn registering_again_keeps_the_listing_within_the_bound() {
        assert_eq!(carried_over(exact(&["a", "b"]), 2), exact(&["a", "b"]));
        assert_eq!(
            carried_over(exact(&["a", "b"]), 1),
            Listed {
                total: 2,
                identities: Vec::new()
            }
        );
    }

    #[test]
    fn notified_devices_are_added_never_removed() {
        let next = next_listing(&exact(&["a", "b"]), 2, &ids(&["b", "c"]), 10);
        assert_eq!(next, Some(exact(&["a", "b", "c"])));
        // Nothing new: no rewrite.
        assert_eq!(next_listing(&exact(&["a", "b"]), 1, &ids(&["a"]), 10), None);
        assert_eq!(next_listing(&exact(&[]), 0, &[], 10), None);
    }

    #[test]
    fn above_the_bound_only_the_count_is_kept() {
        let count = |total| Listed {
            total,
            identities: Vec::new(),
        };
        // The union goes over the bound.
        assert_eq!(
            next_listing(&exact(&["a", "b"]), 2, &ids(&["c", "d"]), 3),
            Some(count(4))
        );
        // This Rollout's devices are over the bound: only their count is known.
        assert_eq!(next_listing(&exact(&["a"]), 5, &[], 3), Some(count(5)));
        // The item is over the bound already: the larger count, rewritten only when it grows.
        assert_eq!(next_listing(&count(5), 4, &[], 3), None);
        assert_eq!(next_listing(&count(5), 2, &ids(&["a", "b"]), 3), None);
        assert_eq!(next_listing(&count(5), 6, &[], 3), Some(count(6)));
        // A bound of 0: never a per-device tag.
        assert_eq!(
            next_listing(&Listed::default(), 1, &ids(&["a"]), 0),
            Some(count(1))
        );
    }

    #[test]
    fn a_look_is_due_once_per_interval_and_once_at_the_end() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(300);
        let first = ListingMark::default();
        assert!(look_due(&first, false, t0, interval));
        let looked = ListingMark {
            looked_at: Some(t0),
            notified: (3, 42),
            final_look: false,
        };
        assert!(!look_due(
            &looked,
            false,
            t0 + Duration::from_secs(299),
            interval
        ));
        assert!(look_due(&looked, false, t0 + interval, interval));
        // Complete: at once, whatever the interval, and only once.
        assert!(look_due(
            &looked,
            true,
            t0 + Duration::from_secs(1),
            interval
        ));
        let done = ListingMark {
            final_look: true,
            ..looked
        };
        assert!(!look_due(&done, true, t0 + interval * 10, interval));
    }
}
