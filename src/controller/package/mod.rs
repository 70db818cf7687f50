//! The SoftwarePackage controller: waits for its IoTConnector to be Ready, reads and verifies
//! every file, uploads what the connector does not already hold, builds the `config_otau`
//! manifest, registers the package the way ExoSense lists packages, and writes status (the
//! exact manifest, per-file id/size/sha256, conditions) by server-side apply.
//!
//! | Outcome | Ready | Progressing | Stalled | Reason |
//! |---|---|---|---|---|
//! | connector missing or not Ready | False | False | False | `ConnectorNotReady` |
//! | uploading files | False | True | False | `Uploading` |
//! | uploaded and registered | True | False | False | `Registered` |
//! | platform 5xx / timeout / rate limited | Unknown | False | False | `PlatformUnavailable` |
//! | a source cannot be read now (download failed, ConfigMap missing) | False | False | False | `SourceUnavailable` |
//! | sha256 mismatch, file over the limit, refused source, content id owned by another package | False | False | True | `PackageInvalid` |
//! | deleting while an active Rollout uses it | False | False | False | `InUseByRollout` |
//!
//! Files are read, verified and uploaded one at a time, in spec order: a URL download is staged
//! in the work dir while it waits for an upload slot (`--upload-concurrency`), so the work dir
//! holds at most that many files of at most `--max-file-bytes`. A bad file stops the pass
//! before its own upload; the package is registered (and so offered to devices) only once every
//! file passed. Re-runs upload nothing that is already there with the same `sha256` tag. An item whose
//! `owner` tag names another package (or that has no owner tag) is never overwritten.
//!
//! The finalizer `otau.dev/platform-cleanup` removes the registration and, unless
//! `retainContent`, the uploaded files (only those this package owns) once no active Rollout
//! references the package.

pub mod cleanup;
pub mod fetch;
pub mod listing;
pub mod naming;
pub mod sources;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use tokio::time::Instant;

use super::Context;
use super::clients::ConnectorClient;
use super::error::{Error, ErrorCondition, PLATFORM_UNAVAILABLE, platform_is_transient};
use super::metrics::PACKAGE_CONTROLLER;
use super::schedule::fingerprint;
use super::status_write::{apply_status, now};
use crate::api::conditions::{
    self, FALSE, PROGRESSING, READY, STALLED, TRUE, new_condition, reason, set_condition,
};
use crate::api::software_package::UploadedFile;
use crate::api::{IoTConnector, SoftwarePackage, SoftwarePackageStatus};
use crate::platform::{ContentUpload, PlatformError};

use fetch::Fetched;
use naming::{OWNER_TAG, SHA256_TAG};

/// The finalizer on every SoftwarePackage.
pub const FINALIZER: &str = "otau.dev/platform-cleanup";
/// Reason: a file source cannot be read right now; retried with backoff.
pub const REASON_SOURCE_UNAVAILABLE: &str = "SourceUnavailable";
/// Reason: deletion waits while an active Rollout uses the package.
pub const REASON_IN_USE: &str = "InUseByRollout";
/// How often a package waiting for its connector looks again (besides the connector watch).
pub const CONNECTOR_WAIT_RECHECK: Duration = Duration::from_secs(300);
/// Tries of one file upload (the object-store POST is not retried inside the client).
pub const UPLOAD_TRIES: u32 = 4;

/// Reconciles one SoftwarePackage (the controller's reconcile function).
pub async fn reconcile(
    obj: Arc<DeserializeGuard<SoftwarePackage>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &obj.0 {
        Ok(package) => {
            let api: Api<SoftwarePackage> =
                Api::namespaced(ctx.client.clone(), &package.namespace().unwrap_or_default());
            let ctx2 = ctx.clone();
            finalizer(
                &api,
                FINALIZER,
                Arc::new(package.clone()),
                |event| async move {
                    match event {
                        Finalizer::Apply(p) => apply(&p, &ctx2).await,
                        Finalizer::Cleanup(p) => cleanup::cleanup(&p, &ctx2).await,
                    }
                },
            )
            .await
            .map_err(|e| Error::Finalizer(Box::new(e)))
        }
        Err(invalid) => {
            let uid = obj.meta().uid.clone().unwrap_or_default();
            ctx.schedule
                .failed(&uid, fingerprint(obj.meta()), Some(None));
            Err(Error::Malformed {
                message: invalid.error.clone(),
            })
        }
    };
    let label = if result.is_ok() { "success" } else { "error" };
    ctx.metrics
        .reconciled(PACKAGE_CONTROLLER, label, started.elapsed().as_secs_f64());
    result
}

/// Whether `connector` is Ready for its current generation.
pub fn connector_ready(connector: &IoTConnector) -> bool {
    connector.status.as_ref().is_some_and(|s| {
        conditions::is_true(&s.conditions, READY)
            && s.observed_generation == connector.metadata.generation
    })
}

/// The three conditions of a package, all with the same reason, then `Reconciling` from them
/// ([`conditions::set_reconciling`]: in progress unless Ready or Stalled).
pub fn set_conditions(
    conds: &mut Vec<Condition>,
    generation: Option<i64>,
    ready: &str,
    progressing: &str,
    stalled: &str,
    why: &str,
    message: &str,
) {
    let at = now();
    for (type_, status) in [
        (READY, ready),
        (PROGRESSING, progressing),
        (STALLED, stalled),
    ] {
        let text = if type_ == READY || status == TRUE {
            // Platform text (an error body) made safe to show and bounded, as the engine does.
            crate::engine::condition_message(message)
        } else {
            String::new()
        };
        set_condition(
            conds,
            new_condition(type_, status, why, text, generation, at.clone()),
        );
    }
    conditions::set_reconciling(conds, generation, at);
}

/// Writes `status` when it differs from what the object holds.
pub async fn write_status(
    package: &SoftwarePackage,
    ctx: &Context,
    status: &SoftwarePackageStatus,
) -> Result<(), Error> {
    if package.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<SoftwarePackage> =
        Api::namespaced(ctx.client.clone(), &package.namespace().unwrap_or_default());
    apply_status(&api, &package.name_any(), "SoftwarePackage", status).await
}

fn deferred(wait: Option<Duration>) -> Action {
    match wait {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    }
}

fn base_status(package: &SoftwarePackage) -> SoftwarePackageStatus {
    let mut status = package.status.clone().unwrap_or_default();
    status.observed_generation = package.metadata.generation;
    status
}

#[tracing::instrument(skip_all, fields(kind = "SoftwarePackage", namespace = %package.namespace().unwrap_or_default(), name = %package.name_any(), generation = package.metadata.generation))]
async fn apply(package: &SoftwarePackage, ctx: &Context) -> Result<Action, Error> {
    let uid = package.metadata.uid.clone().unwrap_or_default();
    let fp = fingerprint(&package.metadata);
    let generation = package.metadata.generation;
    let namespace = package.namespace().unwrap_or_default();
    let connector_name = &package.spec.connector_ref.name;

    let connector = Api::<IoTConnector>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(connector_name)
        .await
        .map_err(Error::kube("get IoTConnector"))?;
    let connector = match connector {
        Some(c) if connector_ready(&c) => c,
        other => {
            let message = match other {
                None => format!("IoTConnector {connector_name} does not exist"),
                Some(c) => {
                    let why = c
                        .status
                        .as_ref()
                        .and_then(|s| conditions::find_condition(&s.conditions, READY))
                        .map(|r| format!("{}: {}", r.reason, r.message))
                        .unwrap_or_else(|| "not checked yet".to_string());
                    format!("IoTConnector {connector_name} is not Ready ({why})")
                }
            };
            let mut status = base_status(package);
            set_conditions(
                &mut status.conditions,
                generation,
                FALSE,
                FALSE,
                FALSE,
                reason::CONNECTOR_NOT_READY,
                &message,
            );
            write_status(package, ctx, &status).await?;
            // Work again as soon as the connector turns Ready (the connector watch).
            ctx.schedule.expire(&uid);
            return Ok(Action::requeue(CONNECTOR_WAIT_RECHECK));
        }
    };
    if let Some(wait) = ctx.schedule.wait(&uid, fp) {
        return Ok(deferred(wait));
    }
    let client = ctx
        .connectors
        .get(
            &ctx.client,
            &ctx.settings,
            &ctx.metrics.platform,
            &connector,
        )
        .await?;

    match publish(package, &connector, &client, ctx).await {
        Ok(done) => {
            let mut status = base_status(package);
            status.manifest = Some(done.manifest.clone());
            status.package_content_id = Some(done.package_content_id.clone());
            status.files = done.files;
            if done.registered_now || status.registered_at.is_none() {
                status.registered_at = Some(now());
            }
            set_conditions(
                &mut status.conditions,
                generation,
                TRUE,
                FALSE,
                FALSE,
                reason::REGISTERED,
                &done.message,
            );
            if let Err(e) = write_status(package, ctx, &status).await {
                ctx.schedule.failed(&uid, fp, None);
                return Err(e);
            }
            let resync = ctx.settings.package_resync;
            ctx.schedule.succeeded(&uid, fp, Some(resync));
            Ok(Action::requeue(resync))
        }
        Err(error) => {
            if matches!(error, Error::Kube { .. } | Error::KubeTimeout { .. }) {
                ctx.schedule.failed(&uid, fp, None);
                return Err(error);
            }
            let (ready, stalled, why) = condition_for_error(&error);
            let mut status = base_status(package);
            set_conditions(
                &mut status.conditions,
                generation,
                ready,
                FALSE,
                stalled,
                why,
                &error.to_string(),
            );
            let written = write_status(package, ctx, &status).await;
            let retry = retry_after_permanent(&error, ctx.settings.package_resync);
            ctx.schedule.failed(&uid, fp, retry);
            if let Err(e) = written {
                tracing::warn!(error = %e, "could not write the failure to status");
            }
            Err(error)
        }
    }
}

/// Ready status, Stalled status and reason for a failure.
pub fn condition_for_error(error: &Error) -> ErrorCondition {
    match error {
        Error::Platform { source } => match source {
            PlatformError::Authentication { .. } | PlatformError::CredentialsUnavailable { .. } => {
                (FALSE, FALSE, reason::CONNECTOR_NOT_READY)
            }
            e if platform_is_transient(e) => PLATFORM_UNAVAILABLE,
            _ => (FALSE, TRUE, reason::PACKAGE_INVALID),
        },
        Error::SourceUnavailable { .. } => (FALSE, FALSE, REASON_SOURCE_UNAVAILABLE),
        Error::InUse { .. } => (FALSE, FALSE, REASON_IN_USE),
        Error::ConnectorSpecInvalid { .. }
        | Error::ResourcesMissing { .. }
        | Error::SecretNotFound { .. }
        | Error::CredentialNotAllowed { .. } => (FALSE, FALSE, reason::CONNECTOR_NOT_READY),
        e if e.is_transient() => PLATFORM_UNAVAILABLE,
        _ => (FALSE, TRUE, reason::PACKAGE_INVALID),
    }
}

/// `None`: transient, back off. Otherwise the fixed delay for a permanent failure: wait for a
/// change when trying again would only repeat the same download, else look again after
/// `resync` (an owner may let go of a content id, a Secret may get its label).
fn retry_after_permanent(error: &Error, resync: Duration) -> Option<Option<Duration>> {
    if error.is_transient() {
        return None;
    }
    match error {
        Error::ChecksumMismatch { .. } | Error::FileTooLarge { .. } | Error::Malformed { .. } => {
            Some(None)
        }
        _ => Some(Some(resync)),
    }
}

/// What a successful pass produced.
struct Published {
    manifest: String,
    package_content_id: String,
    files: Vec<UploadedFile>,
    registered_now: bool,
    message: String,
}

/// One file's plan: its id and, when already on the platform with our owner tag, its info.
struct Planned<'a> {
    file: &'a crate::api::software_package::PackageFile,
    content_id: String,
    existing: Option<crate::platform::ContentInfo>,
    fetched: Option<Fetched>,
    /// The upload slot a staged download holds until the plan is dropped.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Reads, verifies, uploads and registers. Idempotent.
async fn publish(
    package: &SoftwarePackage,
    connector: &IoTConnector,
    client: &ConnectorClient,
    ctx: &Context,
) -> Result<Published, Error> {
    let owner = naming::owner(package);
    let namespace = package.namespace().unwrap_or_default();
    if let Some((first, second, id)) = naming::shared_content_id(package) {
        return Err(Error::PackageInvalid {
            message: format!(
                "files {first} and {second} would both be stored as content id {id}: give one \
                 of them another contentId (publish a new SoftwarePackage: the spec is immutable)"
            ),
        });
    }

    // What is already there, and whose.
    let mut plan = Vec::with_capacity(package.spec.files.len());
    for (file, content_id) in package.spec.files.iter().zip(naming::content_ids(package)) {
        let existing = owned_content(client, file, &content_id, &owner).await?;
        plan.push(Planned {
            file,
            content_id,
            existing,
            fetched: None,
            _slot: None,
        });
    }
    // One file at a time: read and verify it, upload it if needed, let its staged copy go,
    // then the next; a download waits for an upload slot (`--upload-concurrency`), so the work
    // dir never holds more than the slots allow. A bad file stops the pass before its own
    // upload; the package is registered only after every file passed.
    let mut files = Vec::with_capacity(plan.len());
    let mut uploaded = 0;
    let total = plan.len();
    for (index, planned) in plan.into_iter().enumerate() {
        let planned = fetch_unless_stored(planned, &namespace, package, ctx).await?;
        if planned.fetched.is_some() {
            if uploaded == 0 {
                report_uploading(package, connector, ctx, &planned, index, total).await?;
            }
            uploaded += 1;
        }
        files.push(upload_file(&planned, &owner, package, client, ctx).await?);
    }

    let registration = register(package, connector, client, ctx).await?;
    let message = published_message(
        package,
        &connector.spec.product_id,
        &files,
        uploaded,
        &registration,
    );
    Ok(Published {
        manifest: registration.manifest_json,
        package_content_id: registration.package_content_id,
        files,
        registered_now: registration.registered_now,
        message,
    })
}

/// The content item under `content_id`, when there is one and this package owns it
/// (`None`: not there yet). An item another package owns, or one without an owner tag, is
/// never overwritten: that is an error.
async fn owned_content(
    client: &ConnectorClient,
    file: &crate::api::software_package::PackageFile,
    content_id: &str,
    owner: &str,
) -> Result<Option<crate::platform::ContentInfo>, Error> {
    let info = match client.platform.content_info(content_id).await {
        Ok(info) => info,
        Err(PlatformError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let other_owner = match info.tags.get(OWNER_TAG) {
        Some(o) if o == owner => return Ok(Some(info)),
        Some(o) => format!("SoftwarePackage {o}"),
        None => "an item no SoftwarePackage created (it has no owner tag)".to_string(),
    };
    Err(Error::ContentOwned {
        file: file.name.clone(),
        content_id: content_id.to_string(),
        owner: other_owner,
    })
}

/// Reads and verifies one file unless the platform already holds it with the spec's sha256;
/// a file whose bytes turn out to be stored already (a source without a spec sha256) is not
/// uploaded again either. The returned plan holds the bytes to upload, if any.
async fn fetch_unless_stored<'a>(
    mut planned: Planned<'a>,
    namespace: &str,
    package: &SoftwarePackage,
    ctx: &Context,
) -> Result<Planned<'a>, Error> {
    let stored_sha = planned
        .existing
        .as_ref()
        .and_then(|i| i.tags.get(SHA256_TAG))
        .map(|s| s.to_ascii_lowercase());
    let wanted = planned.file.sha256.as_ref().map(|s| s.to_ascii_lowercase());
    if stored_sha.is_some() && stored_sha == wanted {
        return Ok(planned);
    }
    if planned.file.url.is_some() {
        // A URL download is staged in the work dir: it waits for an upload slot.
        planned._slot = Some(
            ctx.settings
                .staging
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::SourceUnavailable {
                    file: planned.file.name.clone(),
                    message: "the operator is stopping".to_string(),
                })?,
        );
    }
    let fetched = fetch::fetch(
        planned.file,
        namespace,
        package.spec.allow_insecure_http,
        ctx,
    )
    .await?;
    if stored_sha.as_deref() == Some(fetched.sha256.as_str()) {
        // Same bytes already uploaded (a source without a spec sha256).
        planned.existing = planned.existing.take().map(|mut i| {
            i.length = fetched.size;
            i
        });
        return Ok(planned);
    }
    planned.fetched = Some(fetched);
    Ok(planned)
}

/// Writes `Uploading` to status before the first upload of a pass.
async fn report_uploading(
    package: &SoftwarePackage,
    connector: &IoTConnector,
    ctx: &Context,
    first: &Planned<'_>,
    index: usize,
    files: usize,
) -> Result<(), Error> {
    let mut status = base_status(package);
    set_conditions(
        &mut status.conditions,
        package.metadata.generation,
        FALSE,
        TRUE,
        FALSE,
        reason::UPLOADING,
        &format!(
            "uploading files to connector {} (file {} of {}: {})",
            connector.spec.product_id,
            index + 1,
            files,
            first.file.name
        ),
    );
    write_status(package, ctx, &status).await
}

/// Uploads one file when it needs it (a `FileUploaded` event) and returns it as status records
/// it: uploaded with its new size and sha256, or as stored.
async fn upload_file(
    p: &Planned<'_>,
    owner: &str,
    package: &SoftwarePackage,
    client: &ConnectorClient,
    ctx: &Context,
) -> Result<UploadedFile, Error> {
    let (size, sha256) = match &p.fetched {
        Some(fetched) => {
            upload(p, fetched, owner, client).await?;
            tracing::info!(file = %p.file.name, content_id = %p.content_id, size = fetched.size, "file uploaded");
            ctx.event(
                &package.object_ref(&()),
                EventType::Normal,
                "FileUploaded",
                "Upload",
                &format!(
                    "uploaded {} as {} ({} bytes, sha256 {})",
                    p.file.name, p.content_id, fetched.size, fetched.sha256
                ),
            )
            .await;
            (fetched.size, fetched.sha256.clone())
        }
        None => {
            let info = p.existing.as_ref();
            (
                info.map_or(0, |i| i.length),
                info.and_then(|i| i.tags.get(SHA256_TAG).cloned())
                    .unwrap_or_default(),
            )
        }
    };
    Ok(UploadedFile {
        name: p.file.name.clone(),
        content_id: p.content_id.clone(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        sha256,
    })
}

/// The package's manifest and registration, as [`register`] found or made it.
struct Registration {
    /// The `config_otau` manifest as JSON.
    manifest_json: String,
    /// The registration item's content id.
    package_content_id: String,
    /// Whether this pass registered the package (else an up-to-date registration existed).
    registered_now: bool,
    /// Devices the registration tags, as it was found or registered.
    tagged: u64,
    /// Devices it lists (`total-devices`).
    total: u64,
    /// The most device tags a registration carries.
    bound: u32,
}

/// Builds the manifest and registers the package, unless a registration for the same product
/// with the same `otau_info` (author, product, manifest) is there already.
async fn register(
    package: &SoftwarePackage,
    connector: &IoTConnector,
    client: &ConnectorClient,
    ctx: &Context,
) -> Result<Registration, Error> {
    let manifest = naming::manifest(package);
    // Every write of a Rollout (a retry's attempt, the Rollout's marker) must fit too.
    manifest
        .widest_written()
        .to_json_checked()
        .map_err(|e| Error::PackageInvalid {
            message: e.to_string(),
        })?;
    let manifest_json = manifest
        .to_json_checked()
        .map_err(|e| Error::PackageInvalid {
            message: e.to_string(),
        })?;
    let (author, product) = (naming::author(package), connector.name_any());
    let package_content_id = crate::platform::package_content_id(&naming::slug(package));
    let pid = &connector.spec.product_id;
    let existing = match client.platform.content_info(&package_content_id).await {
        Ok(info) => Some(info),
        Err(PlatformError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let current = existing.as_ref().filter(|info| {
        info.tags.get("pid") == Some(pid)
            && info
                .tags
                .get("otau_info")
                .is_some_and(|t| naming::otau_info_matches(t, &author, &product, &manifest))
    });
    let bound = device_tag_bound(package, ctx.settings.max_device_tags);
    // The devices the item lists (Rollouts add them, src/controller/package/listing.rs) stay
    // listed when the item is registered again.
    let before = existing
        .as_ref()
        .map(|info| listing::carried_over(listing::listed(&info.tags, pid), bound))
        .unwrap_or_default();
    let (tagged, total) = (before.identities.len() as u64, before.total);
    let registered_now = match current {
        Some(_) => false,
        None => {
            register_now(package, connector, client, ctx, before).await?;
            true
        }
    };
    Ok(Registration {
        manifest_json,
        package_content_id,
        registered_now,
        tagged,
        total,
        bound,
    })
}

/// The most device tags a registration carries: the package's
/// `spec.registration.maxDeviceTags`, at most the operator's `--exosense-max-device-tags`.
pub fn device_tag_bound(package: &SoftwarePackage, operator_max: u32) -> u32 {
    u32::try_from(package.spec.registration.max_device_tags.max(0))
        .unwrap_or(0)
        .min(operator_max)
}

/// Registers the package (a `PackageRegistered` event), listing the devices `listed` names
/// (those the item listed before; a new package lists none until a Rollout notifies one).
async fn register_now(
    package: &SoftwarePackage,
    connector: &IoTConnector,
    client: &ConnectorClient,
    ctx: &Context,
    listed: listing::Listed,
) -> Result<(), Error> {
    let (tagged, total) = (listed.identities.len(), listed.total);
    let registration = listing::registration(package, connector, listed);
    let registered = client.platform.register_package(&registration).await?;
    let how = match registered.path {
        crate::platform::RegistrationPath::ExoSense => "ExoSense createContent",
        crate::platform::RegistrationPath::ContentRest => "the content API",
    };
    let note = format!(
        "registered {} through {how} (listed for {total} notified device(s), {tagged} tagged)",
        registered.content_id
    );
    tracing::info!(content_id = %registered.content_id, total, tagged, "package registered");
    ctx.event(
        &package.object_ref(&()),
        EventType::Normal,
        "PackageRegistered",
        "Register",
        &note,
    )
    .await;
    Ok(())
}

/// The Ready message of a published package: its files (and how many were uploaded now), its
/// links, where it is registered and for how many devices.
fn published_message(
    package: &SoftwarePackage,
    pid: &str,
    files: &[UploadedFile],
    uploaded: usize,
    registration: &Registration,
) -> String {
    let files_note = if uploaded > 0 {
        format!("{} file(s) ({uploaded} uploaded now)", files.len())
    } else {
        format!("{} file(s)", files.len())
    };
    let mut message = format!(
        "{files_note} and {} link(s) on connector {pid}; registered as {}",
        package.spec.links.len(),
        registration.package_content_id
    );
    let (tagged, total, bound) = (registration.tagged, registration.total, registration.bound);
    if tagged < total {
        message.push_str(&format!(
            "; listed for {total} notified device(s) without per-device tags: they exceed the bound of {bound} (spec.registration.maxDeviceTags, operator flag --exosense-max-device-tags)"
        ));
    } else {
        message.push_str(&format!(
            "; listed for {total} notified device(s) (Rollouts add the devices they notify)"
        ));
    }
    message
}

/// Uploads one file, trying again on transient failures (the object-store POST is not
/// retried inside the client because its body is consumed).
async fn upload(
    planned: &Planned<'_>,
    fetched: &Fetched,
    owner: &str,
    client: &ConnectorClient,
) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let body = fetched.open().await.map_err(|e| Error::SourceUnavailable {
            file: planned.file.name.clone(),
            message: format!("reopening the downloaded file: {e}"),
        })?;
        let upload = ContentUpload {
            id: planned.content_id.clone(),
            content_type: planned
                .file
                .content_type
                .clone()
                .unwrap_or_else(|| naming::DEFAULT_CONTENT_TYPE.to_string()),
            length: fetched.size,
            sha256: fetched.sha256.clone(),
            tags: naming::file_tags(owner, &fetched.sha256),
            body,
        };
        match client.platform.upload_content(upload).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < UPLOAD_TRIES && platform_is_transient(&e) => {
                let delay = Duration::from_millis(500 * (1 << (attempt - 1)));
                tracing::debug!(file = %planned.file.name, attempt, error = %e, "upload failed; trying again");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
