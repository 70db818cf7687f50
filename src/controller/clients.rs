//! One platform client per IoTConnector, shared by the connector and package controllers (so
//! the connector's rate limit and `Retry-After` gate hold across both), and the credentials
//! provider that reads the connector's token Secret with `get` only (never list or watch:
//! docs/architecture.md §9.10).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::Settings;
use super::credentials;
use super::error::Error;
use crate::api::IoTConnector;
use crate::api::iot_connector::{AuthScheme as SpecAuthScheme, TokenSecretRef};
use crate::net::outbound::OutboundPolicy;
use crate::platform::{
    AuthScheme, ClientConfig, CredentialsProvider, ExoSenseConfig, ExositePlatform, Platform,
    PlatformError, PlatformMetrics, RateLimit, SecretToken,
};

/// Reads a token from one key of one Secret, caching it between reads. Every read checks that
/// the Secret opted in and that its token may go to the host it is meant for
/// (src/controller/credentials.rs).
pub struct SecretCredentials {
    api: Api<Secret>,
    namespace: String,
    name: String,
    key: String,
    /// The connector that names the Secret, for the refusal's commands.
    connector: String,
    /// The host the token is sent to.
    host: String,
    policy: OutboundPolicy,
    cached: Mutex<Option<SecretToken>>,
}

impl std::fmt::Debug for SecretCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretCredentials")
            .field("secret", &format!("{}/{}", self.namespace, self.name))
            .field("key", &self.key)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl SecretCredentials {
    /// A provider for `reference` in `namespace`, named by `connector`, whose token goes to
    /// `host` under `policy`.
    pub fn new(
        client: Client,
        namespace: &str,
        reference: &TokenSecretRef,
        connector: &str,
        host: &str,
        policy: &OutboundPolicy,
    ) -> Self {
        SecretCredentials {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: reference.name.clone(),
            key: reference.key.clone(),
            connector: connector.to_string(),
            host: host.to_string(),
            policy: policy.clone(),
            cached: Mutex::new(None),
        }
    }

    /// Reads the Secret now (one `get`), checks its opt-in and host binding, caches the token
    /// and returns it. A missing Secret, key or empty value is [`Error::SecretNotFound`]; a
    /// Secret without the opt-in label, or whose token may not go to the host, is
    /// [`Error::CredentialNotAllowed`] (and the cached token is dropped).
    pub async fn refresh(&self) -> Result<SecretToken, Error> {
        let secret = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("get Secret"))?;
        let not_found = |what: String| Error::SecretNotFound { message: what };
        let Some(secret) = secret else {
            return Err(not_found(format!(
                "Secret {}/{} not found (create it with the token under the key {:?}, labelled {}=true and annotated {}={})",
                self.namespace,
                self.name,
                self.key,
                credentials::CREDENTIAL_LABEL,
                credentials::ALLOWED_HOSTS_ANNOTATION,
                self.host
            )));
        };
        let at = credentials::CredentialRef {
            namespace: self.namespace.clone(),
            secret: self.name.clone(),
            connector: self.connector.clone(),
        };
        if let Err(refused) =
            credentials::check(&secret.metadata, &at, Some(&self.host), &self.policy)
        {
            *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return Err(refused);
        }
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&self.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        let token = match value {
            Some(v) => SecretToken::new(v),
            None => {
                return Err(not_found(format!(
                    "Secret {}/{} has no key {:?}",
                    self.namespace, self.name, self.key
                )));
            }
        };
        if token.is_empty() {
            return Err(not_found(format!(
                "Secret {}/{} key {:?} is empty",
                self.namespace, self.name, self.key
            )));
        }
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(token)
    }
}

fn unavailable(error: Error) -> PlatformError {
    PlatformError::CredentialsUnavailable {
        message: error.to_string(),
    }
}

#[async_trait]
impl CredentialsProvider for SecretCredentials {
    async fn current(&self) -> Result<SecretToken, PlatformError> {
        let cached = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match cached {
            Some(token) => Ok(token),
            None => self.refresh().await.map_err(unavailable),
        }
    }

    async fn reload(&self) -> Result<SecretToken, PlatformError> {
        tracing::info!(
            secret = %format!("{}/{}", self.namespace, self.name),
            "the platform rejected the token; re-reading the Secret once"
        );
        self.refresh().await.map_err(unavailable)
    }
}

/// A connector's client and the credentials behind it.
pub struct ConnectorClient {
    /// The platform client.
    pub platform: Arc<dyn Platform>,
    /// The management token source.
    pub management: Arc<SecretCredentials>,
    /// The ExoSense token source, when configured.
    pub exosense: Option<Arc<SecretCredentials>>,
    fingerprint: String,
}

/// The clients of every connector, keyed by `namespace/name`.
#[derive(Default)]
pub struct ConnectorClients {
    clients: Mutex<HashMap<String, Arc<ConnectorClient>>>,
}

impl std::fmt::Debug for ConnectorClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectorClients").finish_non_exhaustive()
    }
}

impl ConnectorClients {
    /// The client of `connector`, built anew when its spec changed.
    pub async fn get(
        &self,
        client: &Client,
        settings: &Settings,
        metrics: &Arc<PlatformMetrics>,
        connector: &IoTConnector,
    ) -> Result<Arc<ConnectorClient>, Error> {
        let namespace = connector.namespace().unwrap_or_default();
        let key = format!("{namespace}/{}", connector.name_any());
        let fingerprint = serde_json::to_string(&connector.spec).unwrap_or_default();
        if let Some(existing) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|c| c.fingerprint == fingerprint)
        {
            return Ok(existing.clone());
        }
        let built = Arc::new(build(client, settings, metrics, connector, fingerprint).await?);
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, built.clone());
        Ok(built)
    }

    /// Drops the clients of connectors that `exists(namespace, name)` says are gone (with
    /// their cached token and connection pools). Returns how many were dropped.
    pub fn retain_existing(&self, exists: impl Fn(&str, &str) -> bool) -> usize {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let before = clients.len();
        clients.retain(|key, _| {
            let (namespace, name) = key.split_once('/').unwrap_or(("", key));
            exists(namespace, name)
        });
        before - clients.len()
    }

    /// How many connector clients are cached.
    pub fn len(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no connector client is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_url(field: &str, text: &str, allow_http: bool) -> Result<url::Url, Error> {
    let invalid = |message: String| Error::ConnectorSpecInvalid { message };
    let url = url::Url::parse(text)
        .map_err(|e| invalid(format!("{field} {text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_http => Ok(url),
        "http" => Err(invalid(format!(
            "{field} uses plain http://, which sends the token unencrypted: use https:// or set allowInsecureHttp: true"
        ))),
        other => Err(invalid(format!(
            "{field} has the scheme {other:?}; use https://"
        ))),
    }
}

async fn build(
    client: &Client,
    settings: &Settings,
    metrics: &Arc<PlatformMetrics>,
    connector: &IoTConnector,
    fingerprint: String,
) -> Result<ConnectorClient, Error> {
    let namespace = connector.namespace().unwrap_or_default();
    let spec = &connector.spec;
    let management_url = parse_url(
        "managementUrl",
        &spec.management_url,
        spec.allow_insecure_http,
    )?;
    let name = connector.name_any();
    let management = Arc::new(SecretCredentials::new(
        client.clone(),
        &namespace,
        &spec.token_secret_ref,
        &name,
        management_url.host_str().unwrap_or_default(),
        &settings.outbound,
    ));
    let mut config = ClientConfig::new(spec.product_id.clone(), management_url, management.clone());
    config.auth_scheme = match spec.auth_scheme {
        SpecAuthScheme::Token => AuthScheme::Token,
        SpecAuthScheme::Bearer => AuthScheme::Bearer,
    };
    config.instance = settings.instance.clone();
    config.request_timeout = settings.platform_request_timeout;
    config.retry = settings.platform_retry;
    config.rate_limit = RateLimit {
        per_second: f64::from(spec.rate_limit.requests_per_second.max(1)),
        burst: u32::try_from(spec.rate_limit.burst.max(1)).unwrap_or(1),
    };
    config.insecure_skip_verify = spec.tls.insecure_skip_verify;
    config.outbound = settings.outbound.clone();
    config.max_page_bytes = settings.platform_page_max_bytes;
    if let Some(ca) = &spec.tls.ca_bundle {
        let map = Api::<ConfigMap>::namespaced(client.clone(), &namespace)
            .get_opt(&ca.name)
            .await
            .map_err(Error::kube("get ConfigMap"))?
            .ok_or_else(|| Error::ConnectorSpecInvalid {
                message: format!("the CA bundle ConfigMap {} does not exist", ca.name),
            })?;
        let pem = map
            .data
            .as_ref()
            .and_then(|d| d.get(&ca.key))
            .map(|s| s.as_bytes().to_vec())
            .ok_or_else(|| Error::ConnectorSpecInvalid {
                message: format!(
                    "the CA bundle ConfigMap {} has no key {:?}",
                    ca.name, ca.key
                ),
            })?;
        config.extra_root_certificates_pem.push(pem);
    }
    let exosense = match &spec.exosense {
        Some(x) => {
            let url = parse_url(
                "exosense.graphqlUrl",
                &x.graphql_url,
                spec.allow_insecure_http,
            )?;
            let creds = Arc::new(SecretCredentials::new(
                client.clone(),
                &namespace,
                &x.token_secret_ref,
                &name,
                url.host_str().unwrap_or_default(),
                &settings.outbound,
            ));
            config.exosense = Some(ExoSenseConfig {
                graphql_url: url,
                credentials: creds.clone(),
            });
            Some(creds)
        }
        None => None,
    };
    let platform = ExositePlatform::new(config, Some(metrics.clone())).map_err(|e| {
        Error::ConnectorSpecInvalid {
            message: e.to_string(),
        }
    })?;
    Ok(ConnectorClient {
        // Writes pass only while this replica holds the leader lease (controller/write_gate.rs).
        platform: settings.write_gate.guard(Arc::new(platform)),
        management,
        exosense,
        fingerprint,
    })
}
