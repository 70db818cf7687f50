//! Which Secrets the operator may use as a connector's credentials, and where it may send
//! them (docs/security.md).
//!
//! Creating an IoTConnector must not let anyone read a Secret they could not read: the operator
//! would send the Secret's value to whatever URL the connector names. So a Secret the operator
//! reads for a connector (management token, ExoSense token, webhook key) must carry the label
//! [`CREDENTIAL_LABEL`]`=true`, and a token Secret may only go to a host its annotation
//! [`ALLOWED_HOSTS_ANNOTATION`] names (comma-separated host names), or one on the operator's
//! platform-host allow-list (`--platform-host`, set by a cluster admin). The checks run at every
//! read of the Secret, before any request carries its value; a refusal is
//! [`Error::CredentialNotAllowed`] with the kubectl commands that opt the Secret in.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;

use super::error::Error;
use crate::api::opt_in::normalize_host;
use crate::net::outbound::OutboundPolicy;

pub use crate::api::opt_in::{ALLOWED_HOSTS_ANNOTATION, CREDENTIAL_LABEL, allowed_hosts};

/// A Secret a connector reads, as the refusal messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    /// Namespace of the connector and the Secret.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// The connector that names it (for the recheck command).
    pub connector: String,
}

/// Whether the Secret's labels opt it in as a connector credential.
pub fn labelled(meta: &ObjectMeta) -> bool {
    crate::api::opt_in::is_credential(meta)
}

/// Whether a token from the Secret with `meta` may be sent to `host`: the annotation names it,
/// or the operator's allow-list does.
pub fn may_send_to(meta: &ObjectMeta, host: &str, policy: &OutboundPolicy) -> bool {
    let host = normalize_host(host);
    policy.is_trusted_host(&host) || allowed_hosts(meta).contains(&host)
}

/// Checks that the Secret may be used, and its value sent to `host` when given (a token; the
/// webhook key is sent nowhere). The error says which label or annotation to add, with the
/// commands.
pub fn check(
    meta: &ObjectMeta,
    at: &CredentialRef,
    host: Option<&str>,
    policy: &OutboundPolicy,
) -> Result<(), Error> {
    let host_ok = host.is_none_or(|h| may_send_to(meta, h, policy));
    if labelled(meta) && host_ok {
        return Ok(());
    }
    let mut commands = Vec::new();
    let mut problems = Vec::new();
    if !labelled(meta) {
        problems.push(format!(
            "is not labelled {CREDENTIAL_LABEL}=true (the opt-in that lets the operator use it for an IoTConnector)"
        ));
        commands.push(format!(
            "kubectl label secret {} {CREDENTIAL_LABEL}=true -n {}",
            at.secret, at.namespace
        ));
    }
    if let Some(host) = host.filter(|_| !host_ok) {
        let host = normalize_host(host);
        let mut hosts = allowed_hosts(meta);
        let named = if hosts.is_empty() {
            "no host".to_string()
        } else {
            hosts.join(",")
        };
        problems.push(format!(
            "may not be sent to {host}: its annotation {ALLOWED_HOSTS_ANNOTATION} names {named} and the operator's platform-host allow-list ({}) does not name {host}",
            crate::net::outbound::PLATFORM_HOST_FLAG
        ));
        hosts.push(host);
        commands.push(format!(
            "kubectl annotate secret {} {ALLOWED_HOSTS_ANNOTATION}={} --overwrite -n {}",
            at.secret,
            hosts.join(","),
            at.namespace
        ));
    }
    Err(Error::CredentialNotAllowed {
        message: format!(
            "Secret {}/{} {}. Nothing was sent. If this Secret is meant for IoTConnector {}, run: {}; then check at once with: kubectl annotate iotconnector {} otau.dev/recheck=$(date +%s) --overwrite -n {}",
            at.namespace,
            at.secret,
            problems.join(", and "),
            at.connector,
            commands.join(" && "),
            at.connector,
            at.namespace
        ),
    })
}

/// Checks the webhook key Secret a connector names: when it exists it must carry the opt-in
/// label (a missing Secret leaves push off for the connector, as before).
pub async fn check_webhook_secret(
    client: &Client,
    at: &CredentialRef,
    policy: &OutboundPolicy,
) -> Result<(), Error> {
    let secret = Api::<Secret>::namespaced(client.clone(), &at.namespace)
        .get_opt(&at.secret)
        .await
        .map_err(Error::kube("get Secret"))?;
    match secret {
        Some(secret) => check(&secret.metadata, at, None, policy),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn meta(label: Option<&str>, hosts: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            labels: label.map(|v| BTreeMap::from([(CREDENTIAL_LABEL.to_string(), v.to_string())])),
            annotations: hosts
                .map(|v| BTreeMap::from([(ALLOWED_HOSTS_ANNOTATION.to_string(), v.to_string())])),
            ..Default::default()
        }
    }

    fn at() -> CredentialRef {
        CredentialRef {
            namespace: "team-a".into(),
            secret: "token".into(),
            connector: "prod".into(),
        }
    }

    fn message(result: Result<(), Error>) -> String {
        match result {
            Err(Error::CredentialNotAllowed { message }) => message,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_labelled_secret_goes_only_to_the_hosts_it_names() {
        let strict = OutboundPolicy::default();
        let ok = meta(
            Some("true"),
            Some("bizapi.hosted.exosite.io, Other.Example.com."),
        );
        assert!(check(&ok, &at(), Some("bizapi.hosted.exosite.io"), &strict).is_ok());
        assert!(check(&ok, &at(), Some("other.example.com"), &strict).is_ok());
        let text = message(check(&ok, &at(), Some("evil.example.net"), &strict));
        assert!(
            text.contains("may not be sent to evil.example.net")
                && text.contains(
                    "kubectl annotate secret token otau.dev/allowed-hosts=bizapi.hosted.exosite.io,other.example.com,evil.example.net --overwrite -n team-a"
                )
                && !text.contains("kubectl label"),
            "{text}"
        );
        // The admin's allow-list stands in for the annotation, never for the label.
        let listed = OutboundPolicy::new(false, ["evil.example.net"]).unwrap();
        assert!(check(&ok, &at(), Some("evil.example.net"), &listed).is_ok());
        assert!(check(&meta(None, None), &at(), Some("evil.example.net"), &listed).is_err());
    }

    #[test]
    fn an_unlabelled_secret_is_refused_with_the_commands_that_fix_it() {
        let strict = OutboundPolicy::default();
        let text = message(check(&meta(None, None), &at(), Some("127.0.0.1"), &strict));
        assert!(
            text.contains("kubectl label secret token otau.dev/connector-credential=true -n team-a")
                && text.contains(
                    "kubectl annotate secret token otau.dev/allowed-hosts=127.0.0.1 --overwrite -n team-a"
                )
                && text.contains("kubectl annotate iotconnector prod otau.dev/recheck="),
            "{text}"
        );
        for wrong in ["false", "yes", ""] {
            assert!(check(&meta(Some(wrong), Some("h")), &at(), Some("h"), &strict).is_err());
        }
        // The webhook key is sent nowhere: the label is all it needs.
        assert!(check(&meta(Some("true"), None), &at(), None, &strict).is_ok());
        let text = message(check(&meta(None, None), &at(), None, &strict));
        assert!(!text.contains("allowed-hosts"), "{text}");
    }
}
