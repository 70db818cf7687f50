//! The finalizer's cleanup branch: wait while an active Rollout references the package, then
//! remove the registration item and (unless `retainContent`) the uploaded files this package
//! owns. "Not found" counts as removed, so the branch is idempotent.

use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::naming::{self, OWNER_TAG};
use super::{REASON_IN_USE, base_status, set_conditions, write_status};
use crate::api::conditions::{FALSE, rollout_phase};
use crate::api::{IoTConnector, Rollout, RolloutPhase, SoftwarePackage};
use crate::controller::Context;
use crate::controller::error::Error;
use crate::controller::schedule::fingerprint;
use crate::platform::PlatformError;

/// The active Rollouts (neither Complete nor Aborted) that reference `package`, as
/// `name (Phase)`. A Rollout that cannot be read counts as active when its name is all we know.
pub async fn active_rollouts(
    package: &SoftwarePackage,
    ctx: &Context,
) -> Result<Vec<String>, Error> {
    let api: Api<DeserializeGuard<Rollout>> =
        Api::namespaced(ctx.client.clone(), &package.namespace().unwrap_or_default());
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube("list Rollouts"))?;
    let name = package.name_any();
    let mut active = Vec::new();
    for item in list.items {
        match &item.0 {
            Ok(rollout) if rollout.spec.package_ref.name == name => {
                let phase = rollout_phase(
                    rollout
                        .status
                        .as_ref()
                        .map(|s| s.conditions.as_slice())
                        .unwrap_or_default(),
                );
                if !matches!(phase, RolloutPhase::Complete | RolloutPhase::Aborted) {
                    active.push(format!("{} ({phase:?})", rollout.name_any()));
                }
            }
            Ok(_) => {}
            Err(invalid) => tracing::warn!(
                rollout = invalid.metadata.name.as_deref().unwrap_or(""),
                error = %invalid.error,
                "a Rollout cannot be read; it does not hold this package's deletion"
            ),
        }
    }
    Ok(active)
}

/// Runs the cleanup.
#[tracing::instrument(skip_all, fields(kind = "SoftwarePackage", namespace = %package.namespace().unwrap_or_default(), name = %package.name_any()))]
pub async fn cleanup(package: &SoftwarePackage, ctx: &Context) -> Result<Action, Error> {
    let uid = package.metadata.uid.clone().unwrap_or_default();
    let fp = fingerprint(&package.metadata);
    let result = run(package, ctx).await;
    match &result {
        Ok(_) => ctx.schedule.forget(&uid),
        Err(_) => {
            ctx.schedule.failed(&uid, fp, None);
        }
    }
    result
}

async fn run(package: &SoftwarePackage, ctx: &Context) -> Result<Action, Error> {
    let namespace = package.namespace().unwrap_or_default();
    let active = active_rollouts(package, ctx).await?;
    if !active.is_empty() {
        let error = Error::InUse {
            rollouts: active.join(", "),
        };
        let mut status = base_status(package);
        set_conditions(
            &mut status.conditions,
            package.metadata.generation,
            FALSE,
            FALSE,
            FALSE,
            REASON_IN_USE,
            &error.to_string(),
        );
        write_status(package, ctx, &status).await?;
        return Err(error);
    }
    let connector_name = &package.spec.connector_ref.name;
    let connector = Api::<IoTConnector>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(connector_name)
        .await
        .map_err(Error::kube("get IoTConnector"))?
        .ok_or_else(|| Error::ConnectorMissing {
            name: connector_name.clone(),
            package: package.name_any(),
        })?;
    let client = ctx
        .connectors
        .get(
            &ctx.client,
            &ctx.settings,
            &ctx.metrics.platform,
            &connector,
        )
        .await?;
    let platform = &client.platform;
    let owner = naming::owner(package);

    let registration = crate::platform::package_content_id(&naming::slug(package));
    ignore_not_found(platform.delete_content(&registration).await)?;
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    if !package.spec.retain_content {
        for id in naming::content_ids(package) {
            match platform.content_info(&id).await {
                Ok(info) if info.tags.get(OWNER_TAG) == Some(&owner) => {
                    ignore_not_found(platform.delete_content(&id).await)?;
                    removed.push(id);
                }
                Ok(_) => kept.push(id),
                Err(PlatformError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut note = format!("removed the registration {registration}");
    if package.spec.retain_content {
        note.push_str("; uploaded files kept (retainContent)");
    } else if !removed.is_empty() {
        note.push_str(&format!("; removed {}", removed.join(", ")));
    }
    if !kept.is_empty() {
        note.push_str(&format!(
            "; left {} (owned by another package)",
            kept.join(", ")
        ));
    }
    tracing::info!(
        removed = removed.len(),
        retained = package.spec.retain_content,
        "package content cleaned up"
    );
    ctx.event(
        &package.object_ref(&()),
        EventType::Normal,
        "PackageRemoved",
        "Cleanup",
        &note,
    )
    .await;
    Ok(Action::await_change())
}

fn ignore_not_found(result: Result<(), PlatformError>) -> Result<(), Error> {
    match result {
        Ok(()) | Err(PlatformError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
