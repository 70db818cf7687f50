//! The command-line form of the webhook settings. The secret comes from the environment
//! variable [`SECRET_ENV`] or from a file, never from a flag's value (exosite-platform.md §6.3).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::{WebhookConfig, WebhookSecret, WebhookTarget};

/// Environment variable holding the webhook secret of every connector that has no secret file.
pub const SECRET_ENV: &str = "OTAU_EMULATOR_WEBHOOK_SECRET";

/// The device2 event types a connector can emit (exosite-platform.md §6.1).
pub const EVENT_TYPES: [&str; 10] = [
    "connect",
    "content_in",
    "data_in",
    "data_out",
    "deleted",
    "disconnect",
    "expired",
    "provisioned",
    "publish",
    "event",
];

/// Webhook flags of `otau-operator emulator`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct WebhookArgs {
    /// Receiver of device2 events: `URL` for the default connector or `CID=URL` for connector
    /// CID (repeatable). The emulator adds `connector=<cid>` to the query.
    #[arg(long = "webhook-url", value_name = "[CID=]URL")]
    pub webhook_url: Vec<String>,
    /// File holding the webhook signing secret: `PATH` for every connector or `CID=PATH` for
    /// one (repeatable). Without a file the secret is read from OTAU_EMULATOR_WEBHOOK_SECRET.
    /// An empty secret disables push for its connector.
    #[arg(long = "webhook-secret-file", value_name = "[CID=]PATH")]
    pub webhook_secret_file: Vec<String>,
    /// Event types pushed in addition to `data_in`, comma separated (for example
    /// `provisioned,deleted`).
    #[arg(
        long = "webhook-event-types",
        value_name = "TYPES",
        value_delimiter = ','
    )]
    pub webhook_event_types: Vec<String>,
}

/// Why the webhook flags cannot be used. Messages name the flag and never show a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookConfigError {
    /// A `--webhook-url` that is not an absolute http(s) URL.
    #[error("--webhook-url {value:?}: {reason}")]
    BadUrl {
        /// The flag's value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Two URLs for one connector.
    #[error("--webhook-url given twice for connector {0:?}")]
    DuplicateUrl(String),
    /// A secret file that cannot be read.
    #[error("--webhook-secret-file {path:?}: cannot read it: {reason}")]
    UnreadableSecret {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A URL whose connector has no secret from any source.
    #[error(
        "connector {0:?} has a --webhook-url but no secret: set {SECRET_ENV} or pass \
         --webhook-secret-file (an empty secret disables push)"
    )]
    MissingSecret(String),
    /// A `--webhook-url` without `CID=` while no default connector is configured.
    #[error("--webhook-url {0:?} names no connector (use CID=URL) and no default connector is set")]
    NoConnector(String),
    /// A per-connector secret file for a connector without a URL.
    #[error("--webhook-secret-file names connector {0:?}, which has no --webhook-url")]
    SecretWithoutUrl(String),
    /// An event type §6.1 does not list.
    #[error("--webhook-event-types: unknown event type {0:?} (known: {known})", known = EVENT_TYPES.join(", "))]
    UnknownEventType(String),
}

/// Splits `CID=REST` when the part before `=` is a connector id; else `(None, value)`.
fn split_connector(value: &str) -> (Option<&str>, &str) {
    if let Some((cid, rest)) = value.split_once('=')
        && !cid.is_empty()
        && !rest.is_empty()
        && cid
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return (Some(cid), rest);
    }
    (None, value)
}

fn read_secret(path: &str) -> Result<WebhookSecret, WebhookConfigError> {
    let text = std::fs::read(path).map_err(|e| WebhookConfigError::UnreadableSecret {
        path: PathBuf::from(path),
        reason: e.kind().to_string(),
    })?;
    // A trailing line break is the file's, not the secret's.
    let mut bytes = text;
    while matches!(bytes.last(), Some(b'\n' | b'\r')) {
        bytes.pop();
    }
    Ok(WebhookSecret::new(bytes))
}

impl WebhookArgs {
    /// The delivery settings these flags describe, with the secret from the process environment.
    /// URLs without `CID=` belong to `default_connector`.
    pub fn to_config(
        &self,
        default_connector: Option<&str>,
    ) -> Result<WebhookConfig, WebhookConfigError> {
        self.to_config_with_env(default_connector, |name| std::env::var(name).ok())
    }

    /// [`WebhookArgs::to_config`] with the environment given as a function (for tests).
    pub fn to_config_with_env(
        &self,
        default_connector: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<WebhookConfig, WebhookConfigError> {
        let mut urls: BTreeMap<String, url::Url> = BTreeMap::new();
        for value in &self.webhook_url {
            let (cid, raw) = match split_connector(value) {
                // `http://…` never splits: its part before `=` holds a ':'.
                (Some(cid), rest) => (cid, rest),
                (None, rest) => match default_connector {
                    Some(cid) => (cid, rest),
                    None => return Err(WebhookConfigError::NoConnector(value.clone())),
                },
            };
            let url = url::Url::parse(raw).map_err(|e| WebhookConfigError::BadUrl {
                value: value.clone(),
                reason: e.to_string(),
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(WebhookConfigError::BadUrl {
                    value: value.clone(),
                    reason: "the scheme must be http or https".into(),
                });
            }
            if urls.insert(cid.to_string(), url).is_some() {
                return Err(WebhookConfigError::DuplicateUrl(cid.to_string()));
            }
        }
        let mut shared: Option<WebhookSecret> = None;
        let mut per_connector: BTreeMap<String, WebhookSecret> = BTreeMap::new();
        for value in &self.webhook_secret_file {
            match split_connector(value) {
                (Some(cid), path) => {
                    if !urls.contains_key(cid) {
                        return Err(WebhookConfigError::SecretWithoutUrl(cid.to_string()));
                    }
                    per_connector.insert(cid.to_string(), read_secret(path)?);
                }
                (None, path) => shared = Some(read_secret(path)?),
            }
        }
        let from_env = env(SECRET_ENV).map(WebhookSecret::new);
        let mut config = WebhookConfig::default();
        for (cid, url) in urls {
            let secret = per_connector
                .remove(&cid)
                .or_else(|| shared.clone())
                .or_else(|| from_env.clone())
                .ok_or_else(|| WebhookConfigError::MissingSecret(cid.clone()))?;
            config.targets.insert(cid, WebhookTarget { url, secret });
        }
        let mut types = BTreeSet::from([crate::emulator::events::DATA_IN.to_string()]);
        for t in &self.webhook_event_types {
            let t = t.trim();
            if t.is_empty() {
                continue;
            }
            if !EVENT_TYPES.contains(&t) {
                return Err(WebhookConfigError::UnknownEventType(t.to_string()));
            }
            types.insert(t.to_string());
        }
        config.event_types = types;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn args(urls: &[&str], files: &[&str], types: &[&str]) -> WebhookArgs {
        WebhookArgs {
            webhook_url: urls.iter().map(|s| s.to_string()).collect(),
            webhook_secret_file: files.iter().map(|s| s.to_string()).collect(),
            webhook_event_types: types.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn secret_file(content: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content.as_bytes()).unwrap();
        f
    }

    #[test]
    fn url_without_connector_goes_to_the_default_connector_with_env_secret() {
        let c = args(&["http://127.0.0.1:9/hooks/device2"], &[], &[])
            .to_config_with_env(Some("dflt"), |n| {
                (n == SECRET_ENV).then(|| "envsecret".into())
            })
            .unwrap();
        let t = &c.targets["dflt"];
        assert_eq!(t.url.as_str(), "http://127.0.0.1:9/hooks/device2");
        assert_eq!(t.secret.as_bytes(), b"envsecret");
        assert!(c.is_active());
    }

    #[test]
    fn per_connector_file_beats_shared_file_beats_env() {
        let shared = secret_file("shared\n");
        let own = secret_file("own\r\n");
        let a = args(
            &["abc=http://h/a", "def=http://h/d"],
            &[
                shared.path().to_str().unwrap(),
                &format!("abc={}", own.path().display()),
            ],
            &[],
        );
        let c = a
            .to_config_with_env(Some("x"), |_| Some("env".into()))
            .unwrap();
        assert_eq!(c.targets["abc"].secret.as_bytes(), b"own");
        assert_eq!(c.targets["def"].secret.as_bytes(), b"shared");
    }

    #[test]
    fn empty_secret_file_disables_push() {
        let empty = secret_file("");
        let c = args(&["http://h/a"], &[empty.path().to_str().unwrap()], &[])
            .to_config_with_env(Some("x"), |_| None)
            .unwrap();
        assert!(c.targets["x"].secret.is_empty());
        assert!(!c.is_active());
    }

    #[test]
    fn errors_are_clear_and_never_show_secrets() {
        let err = args(&["http://h/a"], &[], &[])
            .to_config_with_env(Some("x"), |_| None)
            .unwrap_err();
        assert!(err.to_string().contains(SECRET_ENV), "{err}");
        let err = args(&["ftp://h/a"], &[], &[])
            .to_config_with_env(Some("x"), |_| Some("s".into()))
            .unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
        let err = args(&["not a url"], &[], &[])
            .to_config_with_env(Some("x"), |_| Some("s".into()))
            .unwrap_err();
        assert!(err.to_string().starts_with("--webhook-url"), "{err}");
        let err = args(&["http://h/a"], &["/nonexistent/secret"], &[])
            .to_config_with_env(Some("x"), |_| None)
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/secret"), "{err}");
        let err = args(&["http://h/a"], &[], &["data_in", "bogus"])
            .to_config_with_env(Some("x"), |_| Some("s".into()))
            .unwrap_err();
        assert_eq!(err, WebhookConfigError::UnknownEventType("bogus".into()));
        let f = secret_file("s");
        let err = args(&[], &[&format!("abc={}", f.path().display())], &[])
            .to_config_with_env(Some("x"), |_| None)
            .unwrap_err();
        assert_eq!(err, WebhookConfigError::SecretWithoutUrl("abc".into()));
        let err = args(&["http://h/a", "x=http://h/b"], &[], &[])
            .to_config_with_env(Some("x"), |_| Some("s".into()))
            .unwrap_err();
        assert_eq!(err, WebhookConfigError::DuplicateUrl("x".into()));
    }

    #[test]
    fn bare_url_needs_a_default_connector() {
        let err = args(&["http://h/a"], &[], &[])
            .to_config_with_env(None, |_| Some("s".into()))
            .unwrap_err();
        assert!(matches!(err, WebhookConfigError::NoConnector(_)), "{err}");
        let c = args(&["abc=http://h/a"], &[], &[])
            .to_config_with_env(None, |_| Some("s".into()))
            .unwrap();
        assert!(c.targets.contains_key("abc"));
    }

    #[test]
    fn event_types_always_include_data_in() {
        let c = args(&[], &[], &["provisioned", " deleted", ""])
            .to_config_with_env(Some("x"), |_| None)
            .unwrap();
        let got: Vec<&str> = c.event_types.iter().map(String::as_str).collect();
        assert_eq!(got, ["data_in", "deleted", "provisioned"]);
    }
}
