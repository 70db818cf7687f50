//! `devices ROLLOUT [--state S]`: the per-device view that the Rollout's status deliberately
//! does not hold, read from the platform with the connector's credentials (the token Secret
//! is read with the user's own kubeconfig rights and never printed). Each device's state is
//! named by the engine's own rules ([`crate::engine::evaluate`]), so the list agrees with the
//! counts in `status`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::api::iot_connector::{AuthScheme as SpecAuthScheme, IoTConnector};
use crate::api::rollout::{BusyDevices, ForeignManifests, Rollout};
use crate::api::software_package::SoftwarePackage;
use crate::engine::{
    DeviceIndex, DeviceObservation, DeviceState, EvalContext, IndexConfig, ParsedPolicy, SetKind,
    connector_manifests, cumulative_sizes, evaluate, newer_rollout_manifests,
    newer_rollout_packages, order_key, order_seed, positional_wave, rollout_marker,
};
use crate::net::outbound::OutboundPolicy;
use crate::otau::{Manifest, Report};
use crate::platform::{
    AuthScheme, ClientConfig, ExositePlatform, Identity, ListIdentities, Platform, RateLimit,
    RetryPolicy, SecretToken, StaticToken,
};

use super::cli::{DevicesArgs, StateFilter};
use super::client::Target;
use super::error::{PluginError, Subject};
use super::output;
use super::render::phase;
use super::status::get_rollout;
use super::style::{Style, Tone, age, shown, table};

/// One device of a rollout, as `devices` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRow {
    /// The identity.
    pub identity: String,
    /// The wave it belongs to by its place in the order (from 1).
    pub wave: usize,
    /// Its state, named as in the status counts (`pending`, `inProgress`, `timedOut`, ...).
    pub state: String,
    /// The attempt of this rollout's manifest it holds (absent when not notified or acked
    /// with a literal `ACK`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u8>,
    /// The retry due, when one is (`state` is then `pending`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_attempt: Option<u8>,
    /// Why the targets no longer write to this notified device, which still counts:
    /// `excluded` (`targets.exclude` removes it) or `former` (the identities or tags no longer
    /// select it; its `config_otau` holds this Rollout's manifest). Absent when selected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<&'static str>,
    /// Its last `otau_in` report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportView>,
    /// When that report was written (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<String>,
}

/// A device's last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportView {
    /// The version the report is about.
    pub version: String,
    /// Its status (`INSTALLED_VERSION`, `INSTALL_ERROR`, ...), or `unparseable`.
    pub status: String,
    /// Its message.
    pub message: String,
}

/// The status-count name of a state.
pub fn state_name(state: DeviceState) -> &'static str {
    match state {
        DeviceState::Pending | DeviceState::RetryDue { .. } => "pending",
        DeviceState::Notified => "notified",
        DeviceState::InProgress => "inProgress",
        // A re-run stays succeeded (it is a subset count, `reruns`).
        DeviceState::Succeeded | DeviceState::Rerun => "succeeded",
        DeviceState::Failed => "failed",
        DeviceState::Aborted => "aborted",
        DeviceState::TimedOut => "timedOut",
        DeviceState::Skipped | DeviceState::Superseded => "skipped",
        DeviceState::Invalid => "invalid",
        DeviceState::Busy => "busy",
        DeviceState::Foreign | DeviceState::ForeignSkipped => "foreign",
    }
}

/// The status-count name a filter selects.
pub fn filter_name(filter: StateFilter) -> &'static str {
    match filter {
        StateFilter::Pending => "pending",
        StateFilter::Notified => "notified",
        StateFilter::InProgress => "inProgress",
        StateFilter::Succeeded => "succeeded",
        StateFilter::Failed => "failed",
        StateFilter::Aborted => "aborted",
        StateFilter::TimedOut => "timedOut",
        StateFilter::Skipped => "skipped",
        StateFilter::Invalid => "invalid",
        StateFilter::Busy => "busy",
        StateFilter::Foreign => "foreign",
    }
}

/// Why the targets no longer write to a device they keep counting, if they do.
pub fn target_note(entry: &crate::engine::DeviceEntry) -> Option<&'static str> {
    if entry.former_target() {
        Some("former")
    } else if entry.excluded_after_notification() {
        Some("excluded")
    } else {
        None
    }
}

fn rfc3339_of_micros(us: i64) -> Option<String> {
    let us = crate::engine::normalize_timestamp(us);
    Timestamp::from_microsecond(us).ok().map(|t| t.to_string())
}

/// The other manifests a device of the Rollout may hold that the engine tells apart, as the
/// operator finds them: of the connector's packages, and of those newer Rollouts roll out.
#[derive(Debug, Clone, Default)]
pub struct OtherManifests {
    /// Of every SoftwarePackage of the connector.
    pub connector: Vec<Manifest>,
    /// Of the packages of the Rollouts created after this one.
    pub newer_rollouts: Vec<Manifest>,
}

async fn other_manifests(
    target: &Target,
    rollout: &Rollout,
    packages: &[SoftwarePackage],
    package: &SoftwarePackage,
) -> Result<OtherManifests, PluginError> {
    let ns = &target.namespace;
    let rollouts: Api<Rollout> = Api::namespaced(target.client.clone(), ns);
    let listed = rollouts
        .list(&ListParams::default())
        .await
        .map_err(|e| Subject::otau_list("Rollout", "rollouts", Some(ns)).explain(e))?;
    let connector = &package.spec.connector_ref.name;
    let newer = newer_rollout_packages(rollout, &listed.items);
    Ok(OtherManifests {
        connector: connector_manifests(packages, ns, connector),
        newer_rollouts: newer_rollout_manifests(
            packages,
            ns,
            connector,
            &rollout.spec.package_ref.name,
            &newer,
        ),
    })
}

/// The rows of every targeted device among `identities`, in wave order, at `now` (µs).
pub fn device_rows(
    rollout: &Rollout,
    manifest: &Manifest,
    others: &OtherManifests,
    identities: &[Identity],
    now: i64,
) -> Result<Vec<DeviceRow>, PluginError> {
    let namespace = rollout.namespace().unwrap_or_default();
    let name = rollout.name_any();
    let seed = order_seed(&rollout.spec, &namespace, &name);
    let index = DeviceIndex::build(
        IndexConfig {
            seed: seed.clone(),
            targets: rollout.spec.targets.clone(),
            manifest: manifest.with_rollout(Some(&rollout_marker(&namespace, &name))),
            connector_manifests: others.connector.clone(),
            newer_rollout_manifests: others.newer_rollouts.clone(),
        },
        identities.iter().map(DeviceObservation::from),
    );
    let policy = ParsedPolicy::parse(&rollout.spec)
        .map_err(|e| PluginError::Refused(format!("rollout {name}: {e}")))?;
    let status = rollout.status.clone().unwrap_or_default();
    let aborted = rollout.spec.abort
        || status.decisions.aborted.is_some()
        || phase(rollout) == crate::api::rollout::RolloutPhase::Aborted;
    let ctx = EvalContext {
        now,
        timeout: policy.timeout,
        timeout_total: policy.timeout_total,
        max_attempts: policy.max_attempts,
        retries_allowed: !aborted,
        rollout_started_at: status
            .waves
            .iter()
            .find(|w| w.number == 1)
            .and_then(|w| w.started_at.as_ref())
            .map(|t| t.0.as_microsecond()),
        rollout_created_at: rollout
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_microsecond()),
        take_over_busy: rollout.spec.policy.busy_devices == BusyDevices::TakeOver,
        skip_foreign: rollout.spec.policy.foreign_manifests == ForeignManifests::Skip,
    };
    let mut in_scope: Vec<(u64, &Identity)> = identities
        .iter()
        .filter(|i| index.get(&i.identity).is_some())
        .map(|i| (order_key(&seed, &i.identity), i))
        .collect();
    in_scope.sort_by(|a, b| (a.0, &a.1.identity).cmp(&(b.0, &b.1.identity)));
    let sizes = cumulative_sizes(&rollout.spec.waves, in_scope.len() as u64);
    let rows =
        in_scope
            .iter()
            .enumerate()
            .filter_map(|(position, (_, identity))| {
                let entry = index.get(&identity.identity)?;
                let state = evaluate(entry, &ctx);
                let report = identity.state.otau_in.reported.as_deref().map(|raw| {
                    match Report::parse(raw) {
                        Ok(r) => ReportView {
                            version: r.version,
                            status: r.status.as_str().to_owned(),
                            message: r.message,
                        },
                        Err(e) => ReportView {
                            version: String::new(),
                            status: "unparseable".to_owned(),
                            message: e.to_string(),
                        },
                    }
                });
                Some(DeviceRow {
                    identity: identity.identity.clone(),
                    wave: positional_wave(&sizes, position as u64),
                    state: state_name(state).to_owned(),
                    attempt: (entry.set_kind == SetKind::Ours).then_some(entry.attempt.max(1)),
                    retry_attempt: match state {
                        DeviceState::RetryDue { next } => Some(next),
                        _ => None,
                    },
                    target: target_note(entry),
                    reported_at: report
                        .as_ref()
                        .and(identity.state.otau_in.timestamp)
                        .and_then(rfc3339_of_micros),
                    report,
                })
            })
            .collect();
    Ok(rows)
}

/// Where a token read for `devices` goes, and whether the operator already checked that it
/// may (the connector is Ready for its current spec).
struct Destination<'a> {
    host: &'a str,
    vetted_by_operator: bool,
}

/// The opt-in rules the operator applies before it sends a token (docs/security.md), applied
/// by the plugin too: reading the token with the user's rights must not send it to a host the
/// Secret does not allow, whoever wrote the IoTConnector.
fn check_opt_in(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    namespace: &str,
    secret: &str,
    to: &Destination<'_>,
) -> Result<(), PluginError> {
    use crate::api::opt_in::{ALLOWED_HOSTS_ANNOTATION, CREDENTIAL_LABEL, allowed_hosts};
    if !crate::api::opt_in::is_credential(meta) {
        return Err(PluginError::Refused(format!(
            "Secret {namespace}/{secret} is not labelled {CREDENTIAL_LABEL}=true, so its token is sent nowhere; if it is this connector's token: kubectl label secret {secret} {CREDENTIAL_LABEL}=true -n {namespace}"
        )));
    }
    let host = crate::api::opt_in::normalize_host(to.host);
    if to.vetted_by_operator || allowed_hosts(meta).contains(&host) {
        return Ok(());
    }
    Err(PluginError::Refused(format!(
        "Secret {namespace}/{secret} does not name {host} in its annotation {ALLOWED_HOSTS_ANNOTATION}, and the operator has not found the connector Ready for its current spec, so its token is not sent to {host}"
    )))
}

/// Reads a Secret key with the user's rights; the value is wrapped at once and never shown.
async fn read_token(
    client: &Client,
    namespace: &str,
    secret: &str,
    key: &str,
    connector: &str,
    to: &Destination<'_>,
) -> Result<SecretToken, PluginError> {
    let subject = Subject {
        kind: "Secret",
        resource: "secrets",
        otau: false,
        namespace: Some(namespace),
        name: Some(secret),
        verb: "get",
    };
    let found = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(secret)
        .await
        .map_err(|e| match subject.explain(e) {
            PluginError::Forbidden { action, message, .. } => PluginError::Forbidden {
                action,
                message,
                hint: format!(
                    "`devices` reads the platform with the token of IoTConnector {connector}, so it needs \
                     `get` on Secret {namespace}/{secret}; ask for that right, or use `kubectl otau status`, \
                     which needs no Secret"
                ),
            },
            other => other,
        })?;
    check_opt_in(&found.metadata, namespace, secret, to)?;
    let bytes = found
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .ok_or_else(|| {
            PluginError::Refused(format!(
                "Secret {namespace}/{secret} (the token of IoTConnector {connector}) has no key {key:?}"
            ))
        })?;
    let text = String::from_utf8(bytes).map_err(|_| {
        PluginError::Refused(format!(
            "Secret {namespace}/{secret} key {key:?} is not text"
        ))
    })?;
    let token = SecretToken::new(text);
    if token.is_empty() {
        return Err(PluginError::Refused(format!(
            "Secret {namespace}/{secret} key {key:?} is empty"
        )));
    }
    Ok(token)
}

/// The platform client of `connector`, configured from its spec like the operator's.
async fn platform_of(
    client: &Client,
    connector: &IoTConnector,
) -> Result<ExositePlatform, PluginError> {
    let namespace = connector.namespace().unwrap_or_default();
    let name = connector.name_any();
    let spec = &connector.spec;
    let url = url::Url::parse(&spec.management_url).map_err(|e| {
        PluginError::Refused(format!(
            "IoTConnector {namespace}/{name}: managementUrl {:?} is not a URL: {e}",
            spec.management_url
        ))
    })?;
    if url.scheme() != "https" && !(url.scheme() == "http" && spec.allow_insecure_http) {
        return Err(PluginError::Refused(format!(
            "IoTConnector {namespace}/{name}: managementUrl must be https:// (or http:// with allowInsecureHttp: true)"
        )));
    }
    let vetted_by_operator = connector.status.as_ref().is_some_and(|s| {
        s.observed_generation == connector.metadata.generation
            && crate::api::conditions::is_true(&s.conditions, crate::api::conditions::READY)
    });
    let destination = Destination {
        host: url.host_str().unwrap_or_default(),
        vetted_by_operator,
    };
    let token = read_token(
        client,
        &namespace,
        &spec.token_secret_ref.name,
        &spec.token_secret_ref.key,
        &name,
        &destination,
    )
    .await?;
    let mut config = ClientConfig::new(spec.product_id.clone(), url, Arc::new(StaticToken(token)));
    config.auth_scheme = match spec.auth_scheme {
        SpecAuthScheme::Token => AuthScheme::Token,
        SpecAuthScheme::Bearer => AuthScheme::Bearer,
    };
    config.instance = "kubectl-otau".to_owned();
    config.retry = RetryPolicy {
        max_tries: 3,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(5),
    };
    config.rate_limit = RateLimit {
        per_second: f64::from(spec.rate_limit.requests_per_second.max(1)),
        burst: u32::try_from(spec.rate_limit.burst.max(1)).unwrap_or(1),
    };
    config.insecure_skip_verify = spec.tls.insecure_skip_verify;
    // The plugin runs on the user's machine with the user's rights: the private-address
    // check guards the operator's network position and is off here; redirects stay off and
    // answers stay capped (src/net/outbound.rs).
    config.outbound = OutboundPolicy::new(true, [""; 0]).map_err(PluginError::Refused)?;
    if let Some(ca) = &spec.tls.ca_bundle {
        let map = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
            .get(&ca.name)
            .await
            .map_err(|e| {
                Subject {
                    kind: "ConfigMap",
                    resource: "configmaps",
                    otau: false,
                    namespace: Some(&namespace),
                    name: Some(&ca.name),
                    verb: "get",
                }
                .explain(e)
            })?;
        let pem = map
            .data
            .as_ref()
            .and_then(|d| d.get(&ca.key))
            .ok_or_else(|| {
                PluginError::Refused(format!(
                    "the CA bundle ConfigMap {namespace}/{} has no key {:?}",
                    ca.name, ca.key
                ))
            })?;
        config
            .extra_root_certificates_pem
            .push(pem.as_bytes().to_vec());
    }
    ExositePlatform::new(config, None)
        .map_err(|e| PluginError::Platform(format!("IoTConnector {namespace}/{name}: {e}")))
}

async fn get_otau<K>(
    client: &Client,
    namespace: &str,
    kind: &str,
    resource: &str,
    name: &str,
) -> Result<K, PluginError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| {
            Subject {
                kind,
                resource,
                otau: true,
                namespace: Some(namespace),
                name: Some(name),
                verb: "get",
            }
            .explain(e)
        })
}

/// Runs `devices`.
pub async fn run(
    target: &Target,
    style: &Style,
    args: DevicesArgs,
) -> Result<ExitCode, PluginError> {
    let rollout = get_rollout(target, &args.name).await?;
    let ns = &target.namespace;
    let package: SoftwarePackage = get_otau(
        &target.client,
        ns,
        "SoftwarePackage",
        "softwarepackages",
        &rollout.spec.package_ref.name,
    )
    .await?;
    let manifest_text = package
        .status
        .as_ref()
        .and_then(|s| s.manifest.clone())
        .ok_or_else(|| {
            PluginError::Refused(format!(
                "SoftwarePackage {ns}/{} has no manifest yet (it is not Ready); see `kubectl get softwarepackage {} -n {ns}`",
                package.name_any(),
                package.name_any()
            ))
        })?;
    let manifest = Manifest::parse(&manifest_text).map_err(|e| {
        PluginError::Refused(format!(
            "SoftwarePackage {ns}/{}: status.manifest is not a manifest: {e}",
            package.name_any()
        ))
    })?;
    let connector: IoTConnector = get_otau(
        &target.client,
        ns,
        "IoTConnector",
        "iotconnectors",
        &package.spec.connector_ref.name,
    )
    .await?;
    let platform = platform_of(&target.client, &connector).await?;
    let mut pages = platform.list_identities(ListIdentities::default());
    let mut by_identity: BTreeMap<String, Identity> = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| {
            PluginError::Platform(format!(
                "listing the devices of IoTConnector {ns}/{} (product {}): {e}",
                connector.name_any(),
                connector.spec.product_id
            ))
        })?;
        for identity in page.identities {
            by_identity.insert(identity.identity.clone(), identity);
        }
    }
    let identities: Vec<Identity> = by_identity.into_values().collect();
    let now = Timestamp::now().as_microsecond();
    let packages: Api<SoftwarePackage> = Api::namespaced(target.client.clone(), ns);
    let listed = packages.list(&ListParams::default()).await.map_err(|e| {
        Subject::otau_list("SoftwarePackage", "softwarepackages", Some(ns)).explain(e)
    })?;
    let others = other_manifests(target, &rollout, &listed.items, &package).await?;
    let mut rows = device_rows(&rollout, &manifest, &others, &identities, now)?;
    if let Some(filter) = args.state {
        let wanted = filter_name(filter);
        rows.retain(|r| r.state == wanted);
    }
    if let Some(format) = args.output {
        output::print(format, &rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!(
            "No devices{} in rollout {ns}/{}.",
            args.state
                .map(|f| format!(" in state {}", filter_name(f)))
                .unwrap_or_default(),
            args.name
        );
        return Ok(ExitCode::SUCCESS);
    }
    output::print_text(&devices_view(&rows, Timestamp::now(), style))?;
    Ok(ExitCode::SUCCESS)
}

/// The `devices` table. Identities and reports are device text, shown only through
/// [`shown`].
pub fn devices_view(rows: &[DeviceRow], now: Timestamp, style: &Style) -> String {
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let tone = match r.state.as_str() {
                "succeeded" | "skipped" => Tone::Good,
                "failed" | "aborted" | "timedOut" | "invalid" => Tone::Bad,
                "notified" | "inProgress" => Tone::Busy,
                _ => Tone::Dim,
            };
            let state = match (r.retry_attempt, r.target) {
                (Some(next), _) => format!("pending (retry {next} due)"),
                (None, Some("former")) => format!("{} (former target)", r.state),
                (None, Some(why)) => format!("{} ({why})", r.state),
                (None, None) => r.state.clone(),
            };
            let report_age = r
                .reported_at
                .as_deref()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| {
                    age(
                        Some(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t)),
                        now,
                    )
                })
                .unwrap_or_else(|| "-".into());
            let (status, version, message) = match &r.report {
                Some(rep) => (shown(&rep.status), shown(&rep.version), shown(&rep.message)),
                None => ("-".into(), "-".into(), String::new()),
            };
            vec![
                shown(&r.identity),
                r.wave.to_string(),
                style.paint(tone, &state),
                r.attempt.map_or_else(|| "-".into(), |a| a.to_string()),
                status,
                version,
                report_age,
                message,
            ]
        })
        .collect();
    table(
        "",
        &[
            "DEVICE", "WAVE", "STATE", "ATTEMPT", "REPORT", "VERSION", "AGE", "MESSAGE",
        ],
        &lines,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::style::{HOSTILE, assert_terminal_safe};

    #[test]
    fn device_identities_and_reports_are_shown_only_escaped() {
        let rows = vec![DeviceRow {
            identity: format!("dev{HOSTILE}"),
            wave: 1,
            state: "failed".into(),
            attempt: Some(1),
            retry_attempt: None,
            target: None,
            report: Some(ReportView {
                version: format!("2.0{HOSTILE}"),
                status: format!("INSTALL_ERROR{HOSTILE}"),
                message: format!("exit{HOSTILE}"),
            }),
            reported_at: Some("2025-01-01T00:00:00Z".into()),
        }];
        let now: Timestamp = "2025-01-01T00:01:00Z".parse().expect("now");
        for style in [Style::plain(), Style { colour: true }] {
            let text = devices_view(&rows, now, &style);
            assert_terminal_safe(&text, &style);
            assert!(text.starts_with(r"DEVICE"), "{text}");
            assert!(text.contains(r"dev\u{1b}]0;pwned\u{7}"), "{text}");
            assert!(text.contains(r"exit\u{1b}]0;pwned"), "{text}");
        }
        // -o json keeps the device's exact text, in JSON escapes only.
        let json = output::render(crate::plugin::OutputFormat::Json, &rows).expect("json");
        assert_terminal_safe(&json, &Style::plain());
        let back: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(back[0]["report"]["message"], format!("exit{HOSTILE}"));
    }

    /// A device the identities no longer select, holding this Rollout's marked manifest, is
    /// listed as a former target with its outcome; one holding the unmarked manifest is not.
    #[test]
    fn a_former_target_is_listed_with_its_outcome() {
        use crate::otau::{Manifest, Report, Status};
        use crate::platform::{IdentityState, ResourceState};
        let rollout: Rollout = serde_json::from_value(serde_json::json!({
            "apiVersion": "otau.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "ro", "namespace": "ns"},
            "spec": {"packageRef": {"name": "p"}, "targets": {"identities": ["in"]},
                     "waves": [{"percent": 100}]}
        }))
        .expect("rollout");
        let manifest = Manifest::url_list("2.0", "fw", "", vec!["fw.bin".into()]);
        let marked = manifest.with_rollout(Some(&rollout_marker("ns", "ro")));
        let failed = Report::new("2.0", Status::parse("INSTALL_ERROR"), "disk").to_json();
        let device = |id: &str, value: &str| Identity {
            identity: id.into(),
            status: String::new(),
            tags: Vec::new(),
            state: IdentityState {
                config_otau: ResourceState::written_by_device(value, 1_000_000),
                otau_in: ResourceState::written_by_device(failed.clone(), 2_000_000),
            },
            created: None,
        };
        let identities = [
            device("in", &marked.to_json()),
            device("former", &marked.to_json()),
            device("unmarked", &manifest.to_json()),
        ];
        let rows = device_rows(
            &rollout,
            &manifest,
            &OtherManifests::default(),
            &identities,
            3_000_000,
        )
        .expect("rows");
        let shown: Vec<(&str, &str, Option<&str>)> = rows
            .iter()
            .map(|r| (r.identity.as_str(), r.state.as_str(), r.target))
            .collect();
        let mut shown = shown;
        shown.sort();
        assert_eq!(
            shown,
            [("former", "failed", Some("former")), ("in", "failed", None)]
        );
        let text = devices_view(&rows, Timestamp::UNIX_EPOCH, &Style::plain());
        assert!(text.contains("failed (former target)"), "{text}");
    }
}
