//! The IoTConnector controller: reads the token Secret(s) with `get`, checks the token and the
//! connector against the management API, and reports `Ready` (docs/architecture.md §8):
//!
//! | Outcome | Ready | Stalled | Reason |
//! |---|---|---|---|
//! | token accepted, product exists | True | False | `Connected` |
//! | Secret or key missing | False | False | `SecretNotFound` (retried with backoff) |
//! | a credentials Secret without the opt-in label, or a token not allowed to go to the connector's host | False | True | `CredentialNotAllowed` (nothing sent; checked again every `checkInterval`) |
//! | 5xx, timeout, rate limited | Unknown | False | `PlatformUnavailable` (retried with backoff) |
//! | 401 (after one Secret re-read) / 403 | False | True | `CredentialsRejected` |
//! | the product id does not exist | False | True | `ProductNotFound` |
//! | the spec cannot be used (URL, a refused address, CA bundle) | False | True | `ConfigurationInvalid` |
//! | `config_otau` missing or not settable, or `otau_in` missing ([`resource_problems`]) | False | True | `ResourcesMissing` |
//!
//! With `spec.exosense` set, the ExoSense Automation token is checked as well (one
//! `{ __typename }` GraphQL query); ExoSense refusing it is `CredentialsRejected` with a message
//! that names ExoSense and the Secret key, never the token.
//!
//! The connector's resources come with the settings the credential check reads (`GET
//! …/device2`, no extra call): a connector that cannot carry a manifest to its devices or hear
//! their reports is `ResourcesMissing`, so no package uploads to it and no Rollout writes to it
//! (both wait for `Ready`) until a person defines the resources and the next check passes.
//!
//! A check runs on every spec or annotation change and every `spec.checkInterval` (sooner
//! when the token expires first). The token's remaining lifetime goes to
//! `status.tokenTtlSeconds`, `status.tokenExpiresAt` and the metric
//! `otau_connector_token_ttl_seconds` (the series goes away when the connector is deleted, see
//! [`prune_deleted`]); below the `--token-expiry-warning` threshold the Ready
//! message says so and a `TokenExpiringSoon` Warning event is published.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use prometheus::core::Collector;
use tokio::time::Instant;

use super::Context;
use super::credentials;
use super::error::{Error, ErrorCondition, PLATFORM_UNAVAILABLE};
use super::metrics::CONNECTOR_CONTROLLER;
use super::schedule::fingerprint;
use super::status_write::{after, apply_status, human_duration, now};
use crate::api::conditions::{
    self, FALSE, READY, STALLED, TRUE, new_condition, reason, set_condition,
};
use crate::api::duration::CHECK_INTERVAL;
use crate::api::iot_connector::DEFAULT_CHECK_INTERVAL;
use crate::api::{IoTConnector, IoTConnectorStatus, parse_duration};
use crate::net::outbound::{OutboundError, OutboundPolicy};
use crate::otau::{CONFIG_OTAU, OTAU_IN};
use crate::platform::{CredentialCheck, PlatformError, ResourceSettings};

/// Reason: the connector's product id does not exist on the management API.
pub const REASON_PRODUCT_NOT_FOUND: &str = "ProductNotFound";
/// Reason: the spec cannot be used as written (URL, CA bundle, client settings).
pub const REASON_CONFIGURATION_INVALID: &str = "ConfigurationInvalid";
/// Reason: the connector lacks `config_otau` or `otau_in`, or `config_otau` is not settable.
pub const REASON_RESOURCES_MISSING: &str = "ResourcesMissing";
/// Event reason: the token expires within the warning threshold.
pub const EVENT_TOKEN_EXPIRING: &str = "TokenExpiringSoon";

/// Reconciles one IoTConnector (the controller's reconcile function).
pub async fn reconcile(
    obj: Arc<DeserializeGuard<IoTConnector>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &obj.0 {
        Ok(connector) => reconcile_connector(connector, &ctx).await,
        Err(invalid) => {
            let uid = obj.meta().uid.clone().unwrap_or_default();
            ctx.schedule
                .failed(&uid, fingerprint(obj.meta()), Some(None));
            Err(Error::Malformed {
                message: invalid.error.clone(),
            })
        }
    };
    let label = match &result {
        Ok(_) => "success",
        Err(_) => "error",
    };
    ctx.metrics
        .reconciled(CONNECTOR_CONTROLLER, label, started.elapsed().as_secs_f64());
    result
}

/// The check interval of a connector (the CRD validates it with the same range; a value
/// outside it, stored before the range existed, falls back to 5m).
pub fn check_interval(connector: &IoTConnector) -> Duration {
    connector
        .spec
        .check_interval
        .to_std_in(&CHECK_INTERVAL)
        .or_else(|_| parse_duration(DEFAULT_CHECK_INTERVAL))
        .unwrap_or(Duration::from_secs(300))
}

fn deferred(wait: Option<Duration>) -> Action {
    match wait {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    }
}

#[tracing::instrument(skip_all, fields(kind = "IoTConnector", namespace = %connector.namespace().unwrap_or_default(), name = %connector.name_any(), generation = connector.metadata.generation))]
async fn reconcile_connector(connector: &IoTConnector, ctx: &Context) -> Result<Action, Error> {
    let uid = connector.metadata.uid.clone().unwrap_or_default();
    let fp = fingerprint(&connector.metadata);
    if let Some(wait) = ctx.schedule.wait(&uid, fp) {
        return Ok(deferred(wait));
    }
    let namespace = connector.namespace().unwrap_or_default();
    let name = connector.name_any();
    let interval = check_interval(connector);
    let outcome = match check(connector, ctx).await {
        Err(e @ (Error::Kube { .. } | Error::KubeTimeout { .. })) => {
            // The apiserver is the problem: nothing useful to write.
            ctx.schedule.failed(&uid, fp, None);
            return Err(e);
        }
        other => other,
    };

    let generation = connector.metadata.generation;
    let was_ready = connector
        .status
        .as_ref()
        .is_some_and(|s| conditions::is_true(&s.conditions, READY));
    let mut status = status_after_check(connector.status.as_ref(), generation, &outcome);
    // The series exists from the first check on, even before a check could tell the lifetime.
    let ttl_gauge = ctx
        .metrics
        .token_ttl
        .with_label_values(&[namespace.as_str(), name.as_str()]);
    if let Some(ttl) = token_ttl(&outcome) {
        ttl_gauge.set(ttl.as_secs_f64());
    }
    let (ready, stalled, why, message) = match &outcome {
        Ok(checked) => {
            let message = connected_message(connector, ctx, checked).await;
            (TRUE, FALSE, reason::CONNECTED, message)
        }
        Err(error) => {
            let (ready, stalled, why) = condition_for_error(error);
            (ready, stalled, why, error.to_string())
        }
    };
    set_conditions(
        &mut status.conditions,
        generation,
        (ready, stalled, why),
        &message,
        now(),
    );
    let api: Api<IoTConnector> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = apply_status(&api, &name, "IoTConnector", &status).await;

    match outcome {
        Ok(checked) => {
            let ttl = checked.management.ttl;
            if !was_ready {
                tracing::info!(ttl_seconds = ttl.as_secs(), "connector ready");
                ctx.event(
                    &connector.object_ref(&()),
                    EventType::Normal,
                    reason::CONNECTED,
                    "CheckCredentials",
                    &message,
                )
                .await;
            }
            if let Err(e) = written {
                ctx.schedule.failed(&uid, fp, None);
                return Err(e);
            }
            // Check again after the interval, or just after the token has expired.
            let next = interval.min(ttl + Duration::from_secs(1));
            ctx.schedule.succeeded(&uid, fp, Some(next));
            Ok(Action::requeue(next))
        }
        Err(error) => {
            let retry = if error.is_transient() {
                None
            } else {
                // A corrected Secret is not watched: look again after the interval.
                Some(Some(interval))
            };
            ctx.schedule.failed(&uid, fp, retry);
            Err(error)
        }
    }
}

/// The status after a check, conditions not yet set: the previous status with this
/// generation and check time; an accepted token's lifetime and expiry, a rejected token's
/// lifetime as zero, the previous token fields otherwise.
fn status_after_check(
    previous: Option<&IoTConnectorStatus>,
    generation: Option<i64>,
    outcome: &Result<Checked, Error>,
) -> IoTConnectorStatus {
    let previous = previous.cloned().unwrap_or_default();
    let mut status = IoTConnectorStatus {
        observed_generation: generation,
        last_checked_at: Some(now()),
        ..previous
    };
    match outcome {
        Ok(checked) => {
            let ttl = checked.management.ttl;
            status.token_ttl_seconds = Some(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
            status.token_expires_at = Some(after(ttl));
        }
        Err(_) if token_ttl(outcome).is_some() => status.token_ttl_seconds = Some(0),
        Err(_) => {}
    }
    status
}

/// What a check says about the token's remaining lifetime, for the
/// `otau_connector_token_ttl_seconds` gauge: the management API's answer when accepted, zero
/// when the credentials were rejected, nothing when the check could not tell.
fn token_ttl(outcome: &Result<Checked, Error>) -> Option<Duration> {
    match outcome {
        Ok(checked) => Some(checked.management.ttl),
        Err(error) if condition_for_error(error).2 == reason::CREDENTIALS_REJECTED => {
            Some(Duration::ZERO)
        }
        Err(_) => None,
    }
}

/// The Ready message of a connector whose check passed. When the management token expires
/// within `--token-expiry-warning`, the message says so and a `TokenExpiringSoon` Warning
/// event is published.
async fn connected_message(connector: &IoTConnector, ctx: &Context, checked: &Checked) -> String {
    let ttl = checked.management.ttl;
    let mut message = format!(
        "the management API accepted the token and product {} exists; the token expires in {}",
        connector.spec.product_id,
        human_duration(ttl)
    );
    if checked.exosense {
        message.push_str("; ExoSense accepted its Automation token");
    }
    if ttl >= ctx.settings.token_expiry_warning {
        return message;
    }
    let warning = format!(
        "the management token expires in {} (less than the {} warning threshold): renew it and update Secret {}/{}",
        human_duration(ttl),
        human_duration(ctx.settings.token_expiry_warning),
        connector.namespace().unwrap_or_default(),
        connector.spec.token_secret_ref.name
    );
    tracing::warn!(ttl_seconds = ttl.as_secs(), "management token expires soon");
    ctx.event(
        &connector.object_ref(&()),
        EventType::Warning,
        EVENT_TOKEN_EXPIRING,
        "CheckCredentials",
        &warning,
    )
    .await;
    format!("connected; {warning}")
}

/// The conditions of a connector, the one place they are set: `Ready` and `Stalled` as
/// [`condition_for_error`] (or a successful check) decides, both with reason `why`, then
/// `Reconciling` from them ([`conditions::set_reconciling`]).
pub fn set_conditions(
    conds: &mut Vec<Condition>,
    generation: Option<i64>,
    (ready, stalled, why): (&str, &str, &str),
    message: &str,
    at: Time,
) {
    // Platform text (an error body) is made safe to show and bounded, as the engine does.
    let message = crate::engine::condition_message(message);
    let message = message.as_str();
    set_condition(
        conds,
        new_condition(READY, ready, why, message, generation, at.clone()),
    );
    let stalled_message = if stalled == TRUE { message } else { "" };
    set_condition(
        conds,
        new_condition(
            STALLED,
            stalled,
            why,
            stalled_message,
            generation,
            at.clone(),
        ),
    );
    conditions::set_reconciling(conds, generation, at);
}

/// The Ready status, Stalled status and reason for a failed check.
pub fn condition_for_error(error: &Error) -> ErrorCondition {
    match error {
        Error::SecretNotFound { .. } => (FALSE, FALSE, reason::SECRET_NOT_FOUND),
        Error::CredentialNotAllowed { .. } => (FALSE, TRUE, reason::CREDENTIAL_NOT_ALLOWED),
        Error::Platform { source } => match source {
            PlatformError::Authentication { .. } => (FALSE, TRUE, reason::CREDENTIALS_REJECTED),
            PlatformError::NotFound { .. } => (FALSE, TRUE, REASON_PRODUCT_NOT_FOUND),
            PlatformError::CredentialsUnavailable { .. } => {
                (FALSE, FALSE, reason::SECRET_NOT_FOUND)
            }
            e if super::error::platform_is_transient(e) => PLATFORM_UNAVAILABLE,
            _ => (FALSE, TRUE, REASON_CONFIGURATION_INVALID),
        },
        Error::ConnectorSpecInvalid { .. } => (FALSE, TRUE, REASON_CONFIGURATION_INVALID),
        Error::ResourcesMissing { .. } => (FALSE, TRUE, REASON_RESOURCES_MISSING),
        _ => PLATFORM_UNAVAILABLE,
    }
}

/// What a successful check found.
struct Checked {
    /// The management API's answer.
    management: CredentialCheck,
    /// Whether ExoSense was configured and accepted its token.
    exosense: bool,
}

/// Reads the Secret(s) and checks the credentials: the management token, then the ExoSense
/// token when `spec.exosense` is set.
async fn check(connector: &IoTConnector, ctx: &Context) -> Result<Checked, Error> {
    let client = ctx
        .connectors
        .get(&ctx.client, &ctx.settings, &ctx.metrics.platform, connector)
        .await?;
    // Nothing goes to the platform before the destinations and every Secret passed.
    check_destinations(connector, &ctx.settings.outbound).await?;
    client.management.refresh().await?;
    if let Some(exosense) = &client.exosense {
        exosense.refresh().await?;
    }
    if let Some(webhook) = &connector.spec.webhook {
        let at = credentials::CredentialRef {
            namespace: connector.namespace().unwrap_or_default(),
            secret: webhook.secret_ref.name.clone(),
            connector: connector.name_any(),
        };
        credentials::check_webhook_secret(&ctx.client, &at, &ctx.settings.outbound).await?;
    }
    let management = client.platform.check_credentials().await?;
    let exosense = client
        .platform
        .check_exosense_credentials()
        .await
        .map_err(|e| exosense_rejection(connector, e))?;
    let problems = resource_problems(&management.settings.resources);
    if !problems.is_empty() {
        return Err(Error::ResourcesMissing {
            message: resources_message(connector, &problems),
        });
    }
    Ok(Checked {
        management,
        exosense,
    })
}

/// Something about a connector's resources that keeps OTAU from working
/// (exosite-platform.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceProblem {
    /// The resource is not defined on the connector.
    Missing(&'static str),
    /// The resource is defined but the cloud may not write it.
    NotSettable(&'static str),
}

impl std::fmt::Display for ResourceProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResourceProblem::Missing(alias) => write!(f, "resource {alias} is missing"),
            ResourceProblem::NotSettable(alias) => write!(f, "resource {alias} is not settable"),
        }
    }
}

/// The one decision about a connector's resources: what keeps OTAU from working, from the
/// resources the management API lists (`GET …/device2`, exosite-platform.md §5.2). The
/// operator writes the manifest to `config_otau`, so it must exist and be settable; devices
/// report in `otau_in`, so it must exist (its settable flag does not matter: devices write
/// it). Empty: nothing is wrong.
pub fn resource_problems(resources: &BTreeMap<String, ResourceSettings>) -> Vec<ResourceProblem> {
    let mut problems = Vec::new();
    match resources.get(CONFIG_OTAU) {
        None => problems.push(ResourceProblem::Missing(CONFIG_OTAU)),
        Some(r) if !r.settable => problems.push(ResourceProblem::NotSettable(CONFIG_OTAU)),
        Some(_) => {}
    }
    if !resources.contains_key(OTAU_IN) {
        problems.push(ResourceProblem::Missing(OTAU_IN));
    }
    problems
}

/// The `ResourcesMissing` message: what is wrong, what to define, and how to recheck.
fn resources_message(connector: &IoTConnector, problems: &[ResourceProblem]) -> String {
    let what: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!(
        "connector {} cannot deliver packages: {}. Define {CONFIG_OTAU} (format string, settable) and {OTAU_IN} (format string) in the connector's resources, then recheck: kubectl annotate iotconnector {} otau.dev/recheck=$(date +%s) --overwrite",
        connector.spec.product_id,
        what.join(", "),
        connector.name_any()
    )
}

/// Resolves the connector's management and ExoSense hosts and checks every address against
/// the outbound policy (src/net/outbound.rs), so a refused destination shows as
/// `ConfigurationInvalid` with the address before any token is sent. (The platform client
/// checks again at each connection.)
async fn check_destinations(
    connector: &IoTConnector,
    policy: &OutboundPolicy,
) -> Result<(), Error> {
    let spec = &connector.spec;
    let mut urls = vec![("managementUrl", spec.management_url.as_str())];
    if let Some(exosense) = &spec.exosense {
        urls.push(("exosense.graphqlUrl", exosense.graphql_url.as_str()));
    }
    for (field, text) in urls {
        let Ok(url) = url::Url::parse(text) else {
            continue; // the client build already refused it
        };
        match policy.check_destination(&url).await {
            Ok(()) => {}
            Err(OutboundError::Refused(why)) => {
                return Err(Error::ConnectorSpecInvalid {
                    message: format!("{field}: {why}"),
                });
            }
            Err(OutboundError::Unresolvable(why)) => {
                return Err(Error::Platform {
                    source: PlatformError::Unavailable {
                        operation: "connect",
                        reason: format!("{field}: {why}"),
                    },
                });
            }
        }
    }
    Ok(())
}

/// Says in a rejected ExoSense check's message that ExoSense (not the management API)
/// refused its token, and which Secret key holds it (never the token itself).
fn exosense_rejection(connector: &IoTConnector, error: PlatformError) -> PlatformError {
    match (error, &connector.spec.exosense) {
        (
            PlatformError::Authentication {
                operation,
                status,
                message,
            },
            Some(exosense),
        ) => PlatformError::Authentication {
            operation,
            status,
            message: format!(
                "ExoSense rejected the Automation token in Secret {}/{} key {:?} ({message}); put a valid ExoSense token there or remove spec.exosense",
                connector.namespace().unwrap_or_default(),
                exosense.token_secret_ref.name,
                exosense.token_secret_ref.key
            ),
        },
        (other, _) => other,
    }
}

/// Removes the per-connector metric series (`otau_connector_token_ttl_seconds`) of every
/// connector in `scope` (one namespace, or all when `None`) that `connectors` no longer holds.
/// The connector controller calls it after each deletion its watch sees and after each
/// re-list (which is how deletions missed while disconnected show up).
pub fn prune_deleted(
    ctx: &Context,
    connectors: &Store<DeserializeGuard<IoTConnector>>,
    scope: Option<&str>,
) {
    let families = ctx.metrics.token_ttl.collect();
    let series: Vec<(String, String)> = families
        .iter()
        .flat_map(|family| family.get_metric())
        .filter_map(|metric| {
            let label = |name: &str| {
                metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
            };
            Some((label("namespace")?, label("connector")?))
        })
        .collect();
    let exists = |namespace: &str, name: &str| {
        scope.is_some_and(|s| s != namespace)
            || connectors
                .get(&ObjectRef::<DeserializeGuard<IoTConnector>>::new(name).within(namespace))
                .is_some()
    };
    for (namespace, name) in series {
        if !exists(&namespace, &name) {
            forget(ctx, &namespace, &name);
        }
    }
    let dropped = ctx.connectors.retain_existing(exists);
    if dropped > 0 {
        tracing::debug!(dropped, "platform clients of deleted connectors dropped");
    }
}

/// Removes the per-connector metric series of `namespace/name`.
pub fn forget(ctx: &Context, namespace: &str, name: &str) {
    if ctx
        .metrics
        .token_ttl
        .remove_label_values(&[namespace, name])
        .is_ok()
    {
        tracing::debug!(%namespace, %name, "connector deleted; its metric series removed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resource definitions as (alias, settable).
    type Defs<'a> = &'a [(&'a str, bool)];

    fn resources(defs: Defs<'_>) -> BTreeMap<String, ResourceSettings> {
        defs.iter()
            .map(|(alias, settable)| {
                (
                    alias.to_string(),
                    ResourceSettings {
                        format: "string".into(),
                        settable: *settable,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_default_resources_have_no_problem() {
        let ok = resources(&[(CONFIG_OTAU, true), (OTAU_IN, false), ("data_in", false)]);
        assert_eq!(resource_problems(&ok), Vec::new());
        // Devices write otau_in; a settable otau_in is no problem either.
        let ok = resources(&[(CONFIG_OTAU, true), (OTAU_IN, true)]);
        assert_eq!(resource_problems(&ok), Vec::new());
    }

    #[test]
    fn each_problem_is_named() {
        use ResourceProblem::{Missing, NotSettable};
        let cases: [(Defs<'_>, Vec<ResourceProblem>); 4] = [
            (&[(CONFIG_OTAU, true)], vec![Missing(OTAU_IN)]),
            (&[(OTAU_IN, false)], vec![Missing(CONFIG_OTAU)]),
            (
                &[(CONFIG_OTAU, false), (OTAU_IN, false)],
                vec![NotSettable(CONFIG_OTAU)],
            ),
            (&[], vec![Missing(CONFIG_OTAU), Missing(OTAU_IN)]),
        ];
        for (defs, want) in cases {
            assert_eq!(resource_problems(&resources(defs)), want, "{defs:?}");
        }
        assert_eq!(
            NotSettable(CONFIG_OTAU).to_string(),
            "resource config_otau is not settable"
        );
    }

    #[test]
    fn resources_missing_is_stalled_and_not_ready() {
        let error = Error::ResourcesMissing {
            message: "resource otau_in is missing".into(),
        };
        assert_eq!(
            condition_for_error(&error),
            (FALSE, TRUE, REASON_RESOURCES_MISSING)
        );
        assert!(!error.is_transient());
    }
}
