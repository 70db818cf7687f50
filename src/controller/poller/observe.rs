//! Turning what the platform says about a device into the engine's [`DeviceObservation`]:
//! from a listed identity (poll), and from a partial update (a pushed report, our own write)
//! applied on top of what the index already holds.
//!
//! The engine's index keeps a compact summary per device, not the raw values. A partial update
//! is folded by rebuilding an observation equivalent to that summary (same classification of
//! the set value and of the report, same timestamps) and replacing only the part that changed.

use crate::api::DeviceTag;
use crate::api::rollout::Targets;
use crate::engine::{
    DeviceEntry, DeviceIndex, DeviceObservation, Micros, ReportCode, ResourceState, SetKind,
};
use crate::otau::{Report, Status};
use crate::platform::{Identity, ResourceState as PlatformResource};

/// A version no real package uses, standing for "some other version" in rebuilt values.
const OTHER_VERSION: &str = "\u{0}otau-other-version";

/// The observation of one listed identity.
pub fn from_identity(identity: &Identity) -> DeviceObservation {
    DeviceObservation {
        identity: identity.identity.clone(),
        tags: identity
            .tags
            .iter()
            .map(|t| DeviceTag::new(t.name.clone(), t.value.clone()))
            .collect(),
        config_otau: resource(&identity.state.config_otau),
        otau_in: resource(&identity.state.otau_in),
    }
}

/// The engine's view of one platform resource; `None` when it holds nothing at all.
pub fn resource(state: &PlatformResource) -> Option<ResourceState> {
    if state.set.is_none() && state.reported.is_none() {
        return None;
    }
    Some(ResourceState {
        set: state.set.clone(),
        reported: state.reported.clone(),
        timestamp: state.timestamp.unwrap_or(0),
    })
}

/// What changed about one device, to fold into an index that already holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialUpdate {
    /// A new `config_otau` value (set) at a time (µs), e.g. our own write or a device ack.
    pub config_otau: Option<(String, Micros)>,
    /// A new `otau_in` report at a time (µs).
    pub otau_in: Option<(String, Micros)>,
}

/// Folds `update` into `index` for a device it already holds. Returns false (and changes
/// nothing) when the device is not in the index, or when every part of the update is older
/// than what the index holds (pushed events may arrive late or twice).
pub fn apply_partial(index: &mut DeviceIndex, identity: &str, update: &PartialUpdate) -> bool {
    let Some(entry) = index.get(identity).copied() else {
        return false;
    };
    let mut observation = rebuild(index, identity, &entry);
    let mut changed = false;
    if let Some((value, at)) = &update.config_otau
        && *at >= entry.set_at
    {
        observation.config_otau = Some(ResourceState::set(value.clone(), *at));
        changed = true;
    }
    if let Some((value, at)) = &update.otau_in
        && *at >= entry.report_at
    {
        observation.otau_in = Some(ResourceState::written_by_device(value.clone(), *at));
        changed = true;
    }
    if changed {
        index.upsert(std::iter::once(observation));
    }
    changed
}

/// An observation the index folds into exactly `entry` (tags included: a device in the index
/// matched the targets, so it gets a tag or identity the targets select).
pub fn rebuild(index: &DeviceIndex, identity: &str, entry: &DeviceEntry) -> DeviceObservation {
    let version = index.version().to_owned();
    let config_otau = match entry.set_kind {
        SetKind::Absent => None,
        SetKind::Ours => Some(ResourceState::set(
            index.manifest_value(entry.attempt),
            entry.set_at,
        )),
        SetKind::OtherManifest => Some(ResourceState::set(other_manifest(), entry.set_at)),
        SetKind::Foreign => Some(ResourceState::set("ACK", entry.set_at)),
    };
    let report = |v: &str, s: &str| Report::new(v, Status::parse(s), "").to_json();
    let text = match entry.report {
        ReportCode::None => None,
        ReportCode::OtherVersion => Some(report(OTHER_VERSION, "INIT")),
        ReportCode::CurrentVersion => Some(report(OTHER_VERSION, "INSTALLED_VERSION")),
        ReportCode::Succeeded => Some(report(&version, "INSTALLED_VERSION")),
        ReportCode::InProgress => Some(report(&version, "INIT")),
        ReportCode::InProgressUnknown => Some(report(&version, "OTAU_OPERATOR_UNKNOWN")),
        ReportCode::TestError => Some(report(&version, "TEST_ERROR")),
        ReportCode::DownloadError => Some(report(&version, "DOWNLOAD_ERROR")),
        ReportCode::InstallError => Some(report(&version, "INSTALL_ERROR")),
        ReportCode::Aborted => Some(report(&version, "INSTALL_ABORTED")),
        ReportCode::Malformed => Some("not a report".to_owned()),
    };
    DeviceObservation {
        identity: identity.to_owned(),
        tags: selecting_tags(&index.config().targets),
        config_otau,
        otau_in: text.map(|t| ResourceState::written_by_device(t, entry.report_at)),
    }
}

fn selecting_tags(targets: &Targets) -> Vec<DeviceTag> {
    targets.tags.first().cloned().into_iter().collect()
}

fn other_manifest() -> String {
    serde_json::json!({
        "version": OTHER_VERSION,
        "name": "other",
        "type": "URL_LIST",
        "payload": [],
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::IndexConfig;
    use crate::otau::Manifest;

    fn index(targets: Targets) -> DeviceIndex {
        DeviceIndex::new(IndexConfig {
            seed: "ns/r".into(),
            targets,
            manifest: Manifest::url_list("2.0", "fw", "", vec!["fw.bin".into()]),
        })
    }

    fn by_tag() -> Targets {
        Targets {
            tags: vec![DeviceTag::new("fleet", "a")],
            ..Targets::default()
        }
    }

    fn observation(
        id: &str,
        config: Option<ResourceState>,
        report: Option<&str>,
    ) -> DeviceObservation {
        DeviceObservation {
            identity: id.into(),
            tags: vec![DeviceTag::new("fleet", "a"), DeviceTag::new("x", "y")],
            config_otau: config,
            otau_in: report.map(|r| ResourceState::written_by_device(r, 1_700_000_000_000_000)),
        }
    }

    #[test]
    fn rebuilt_observations_fold_into_the_same_entry() {
        let mut idx = index(by_tag());
        let manifest2 = idx.manifest_value(2).to_owned();
        let reports = [
            None,
            Some(r#"{"version":"2.0","status":"DOWNLOAD_ERROR","message":"disk"}"#),
            Some(r#"{"version":"2.0","status":"INSTALLED_VERSION"}"#),
            Some(r#"{"version":"1.0","status":"INSTALLED_VERSION"}"#),
            Some(r#"{"version":"1.0","status":"INIT"}"#),
            Some(r#"{"version":"2.0","status":"WHATEVER"}"#),
            Some(r#"{"version":"2.0","status":"INSTALL_ABORTED"}"#),
            Some("junk"),
        ];
        let configs = [
            None,
            Some(ResourceState::set(manifest2.clone(), 1_699_999_000_000_000)),
            Some(ResourceState::set("ACK", 1_699_999_000_000_000)),
            Some(ResourceState::set(
                r#"{"version":"9","name":"n","type":"URL_LIST","payload":[]}"#,
                1_699_999_000_000_000,
            )),
        ];
        let mut n = 0;
        for r in reports {
            for c in &configs {
                let id = format!("dev-{n}");
                n += 1;
                idx.upsert([observation(&id, c.clone(), r)]);
                let before = *idx.get(&id).expect("in scope");
                let again = rebuild(&idx, &id, &before);
                idx.upsert([again]);
                assert_eq!(
                    *idx.get(&id).expect("still in scope"),
                    before,
                    "{id}: {r:?} {c:?}"
                );
            }
        }
    }

    #[test]
    fn partial_updates_apply_only_newer_values_to_known_devices() {
        let mut idx = index(by_tag());
        idx.upsert([observation("a", None, None)]);
        let report = r#"{"version":"2.0","status":"INSTALLED_VERSION"}"#.to_owned();
        let update = PartialUpdate {
            otau_in: Some((report.clone(), 1_700_000_000_000_500)),
            ..PartialUpdate::default()
        };
        assert!(!apply_partial(&mut idx, "unknown", &update));
        assert!(apply_partial(&mut idx, "a", &update));
        assert_eq!(idx.get("a").unwrap().report, ReportCode::Succeeded);
        // An older report does not win.
        let older = PartialUpdate {
            otau_in: Some((
                r#"{"version":"2.0","status":"INIT"}"#.to_owned(),
                1_700_000_000_000_100,
            )),
            ..PartialUpdate::default()
        };
        assert!(!apply_partial(&mut idx, "a", &older));
        assert_eq!(idx.get("a").unwrap().report, ReportCode::Succeeded);
        // Our own write marks the device notified with its attempt.
        let value = idx.manifest_value(1).to_owned();
        let write = PartialUpdate {
            config_otau: Some((value, 1_700_000_000_001_000)),
            ..PartialUpdate::default()
        };
        assert!(apply_partial(&mut idx, "a", &write));
        let e = idx.get("a").unwrap();
        assert_eq!((e.set_kind, e.attempt), (SetKind::Ours, 1));
        assert_eq!(e.report, ReportCode::Succeeded, "the report is kept");
    }
}
