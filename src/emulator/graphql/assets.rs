//! The documented asset operations of exosite-platform.md §7.3, as simple stubs: they accept
//! the documented arguments (so queries validate as on ExoSense) and answer plausible shapes.
//! The emulator keeps no groups, templates or assets; the operator does not use them.
//!
//! - `groups` answers the requested group (or `root`) with no children.
//! - `updateDevices` checks that each `<cid>.<identity>` exists and echoes its id.
//! - `search` finds nothing; `template2VersionYAML` knows no template.
//! - `createAssetFromT` answers a new asset id with the given name and description.

use std::sync::atomic::{AtomicU64, Ordering};

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};

use super::GraphqlState;

/// `GroupFilters` of `groups`.
#[derive(Debug, Clone, Default, InputObject)]
#[graphql(rename_fields = "snake_case")]
pub struct GroupFilters {
    /// The group to return.
    pub group_id: Option<ID>,
}

/// A child of a group.
#[derive(Debug, Clone, SimpleObject)]
pub struct GroupChild {
    /// Group id.
    pub id: ID,
    /// Group name.
    pub name: String,
}

/// A group (stub: never has children).
#[derive(Debug, Clone, SimpleObject)]
pub struct Group {
    /// Group id.
    pub id: ID,
    /// Group name.
    pub name: String,
    /// Child groups.
    pub children: Vec<GroupChild>,
}

/// `SearchFilters` of `search`.
#[derive(Debug, Clone, InputObject)]
pub struct SearchFilters {
    /// Text to look for.
    pub text: Option<String>,
}

/// One search hit.
#[derive(Debug, Clone, SimpleObject)]
pub struct SearchItem {
    /// Id.
    pub id: ID,
    /// Name.
    pub name: String,
    /// Kind of object.
    #[graphql(name = "type")]
    pub kind: String,
}

/// The answer of `search` (stub: always empty).
#[derive(Debug, Clone, SimpleObject)]
pub struct SearchResult {
    /// Hits.
    pub results: Vec<SearchItem>,
}

/// One element of `updateDevices`.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "DevicesUpdateInput", rename_fields = "snake_case")]
pub struct DevicesUpdateInput {
    /// `<cid>.<identity>`.
    pub id: ID,
    /// Group to move the device to.
    pub group_id: Option<ID>,
}

/// A device as `updateDevices` answers it.
#[derive(Debug, Clone, SimpleObject)]
pub struct Device {
    /// `<cid>.<identity>`.
    pub id: ID,
}

/// `newAsset` of `createAssetFromT`.
#[derive(Debug, Clone, InputObject)]
#[graphql(name = "Asset2Create")]
pub struct Asset2Create {
    /// Asset name.
    pub name: String,
    /// Asset description.
    pub description: Option<String>,
}

/// A signal-to-channel mapping of `createAssetFromT`.
#[derive(Debug, Clone, InputObject)]
pub struct ChannelMapping {
    /// Signal link id.
    pub from: String,
    /// `<cid>.<identity>.data_in.<ChannelID>`.
    pub to: String,
}

/// An asset.
#[derive(Debug, Clone, SimpleObject)]
pub struct Asset {
    /// Asset id.
    pub id: ID,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
}

/// Stub asset queries.
#[derive(Debug, Default)]
pub struct AssetQueries;

#[Object]
impl AssetQueries {
    /// The group `filters.group_id` (or `root`), without children (stub).
    async fn groups(&self, filters: Option<GroupFilters>) -> Vec<Group> {
        let id = filters
            .and_then(|f| f.group_id)
            .unwrap_or_else(|| ID::from("root"));
        let name = if id.as_str() == "root" {
            "Root".to_string()
        } else {
            id.to_string()
        };
        vec![Group {
            id,
            name,
            children: Vec::new(),
        }]
    }

    /// Search (stub: no results).
    async fn search(&self, filters: SearchFilters) -> SearchResult {
        let _ = filters.text;
        SearchResult {
            results: Vec::new(),
        }
    }

    /// The YAML of a template version (stub: no template exists).
    #[graphql(name = "template2VersionYAML")]
    async fn template2_version_yaml(&self, id: ID) -> Result<String> {
        Err(format!(
            "template {:?} not found (the emulator keeps no templates)",
            id.as_str()
        )
        .into())
    }
}

/// Stub asset mutations.
#[derive(Debug, Default)]
pub struct AssetMutations {
    next_asset: AtomicU64,
}

#[Object]
impl AssetMutations {
    /// Moves devices to a group (stub: checks that each device exists, echoes the ids).
    async fn update_devices(
        &self,
        ctx: &Context<'_>,
        devices: Option<Vec<Option<DevicesUpdateInput>>>,
    ) -> Result<Vec<Device>> {
        let state = ctx.data::<GraphqlState>()?;
        let mut out = Vec::new();
        for d in devices.unwrap_or_default().into_iter().flatten() {
            let (cid, identity) = d
                .id
                .split_once('.')
                .ok_or_else(|| format!("device id {:?} is not <cid>.<identity>", d.id.as_str()))?;
            let exists = state
                .model
                .connector(cid)
                .is_some_and(|c| c.device_id(identity).is_some());
            if !exists {
                return Err(format!("device {:?} not found", d.id.as_str()).into());
            }
            out.push(Device { id: d.id });
        }
        Ok(out)
    }

    /// Creates an asset from a template (stub: answers a new id; nothing is stored).
    #[graphql(name = "createAssetFromT")]
    async fn create_asset_from_t(
        &self,
        #[graphql(name = "newAsset")] new_asset: Option<Asset2Create>,
        #[graphql(name = "templateId")] template_id: Option<ID>,
        #[graphql(name = "group_id")] group_id: ID,
        #[graphql(name = "channelMapping")] channel_mapping: Option<Vec<Option<ChannelMapping>>>,
    ) -> Asset {
        let _ = (template_id, group_id, channel_mapping);
        let n = self.next_asset.fetch_add(1, Ordering::Relaxed) + 1;
        let (name, description) = new_asset
            .map(|a| (a.name, a.description))
            .unwrap_or_default();
        Asset {
            id: ID::from(format!("asset-{n}")),
            name,
            description,
        }
    }
}
