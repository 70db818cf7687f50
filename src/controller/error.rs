//! The controllers' error type (docs/architecture.md §9.6): one variant per failure site, each
//! with a stable `metric_label()`, an `event_reason()` and a class (`is_transient()`) that
//! decides between backing off and waiting for a change.
//!
//! Messages name objects, files and operations; never a token, a Secret value or a full URL
//! with credentials (URLs are shown without query and user info, see [`redact_url`]).

use std::time::Duration;

use crate::api::conditions::{FALSE, UNKNOWN, reason};
use crate::platform::PlatformError;

/// What a failed reconcile shows in an object's conditions: `Ready`'s status, `Stalled`'s
/// status, and the reason both carry (docs/architecture.md §8). Each controller decides it for
/// its kind (`connector::condition_for_error`, `package::condition_for_error`).
pub type ErrorCondition = (&'static str, &'static str, &'static str);

/// The condition every kind shows for an error that may pass on its own (the platform
/// unreachable, answering 5xx, timing out, rate limiting): Ready=Unknown, not Stalled,
/// `PlatformUnavailable`; the object is retried with backoff.
pub const PLATFORM_UNAVAILABLE: ErrorCondition = (UNKNOWN, FALSE, reason::PLATFORM_UNAVAILABLE);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed (network, conflict, 5xx, RBAC).
    #[error("Kubernetes API call {op} failed: {source}")]
    Kube {
        /// What was being done (`get Secret`, `patch status`, ...).
        op: &'static str,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A Kubernetes API call did not answer in time.
    #[error("Kubernetes API call {op} timed out after {} s", .after.as_secs())]
    KubeTimeout {
        /// What was being done.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A platform call failed.
    #[error("{source}")]
    Platform {
        /// The platform client's typed error (it names the operation).
        #[source]
        source: PlatformError,
    },
    /// The token Secret an IoTConnector names does not exist (yet), or lacks the key.
    #[error("{message}")]
    SecretNotFound {
        /// Which Secret or key is missing.
        message: String,
    },
    /// A credentials Secret lacks the opt-in label, or its token may not be sent to the
    /// connector's host (src/controller/credentials.rs); nothing was sent.
    #[error("{message}")]
    CredentialNotAllowed {
        /// Which label or annotation is missing, and the commands that add it.
        message: String,
    },
    /// The connector lacks a resource OTAU needs, or `config_otau` is not settable
    /// (`connector::resource_problems` decides; exosite-platform.md §2.1).
    #[error("{message}")]
    ResourcesMissing {
        /// Which resources are missing or not settable, and how to fix it.
        message: String,
    },
    /// The IoTConnector's spec cannot be used as written (bad URL, http without opt-in).
    #[error("invalid IoTConnector spec: {message}")]
    ConnectorSpecInvalid {
        /// What is wrong.
        message: String,
    },
    /// The package's IoTConnector is missing when it is needed for cleanup.
    #[error(
        "IoTConnector {name} not found: the uploaded content cannot be removed. Recreate the \
         connector, or if it is gone for good remove the finalizer by hand: kubectl patch \
         softwarepackage {package} --type=json -p '[{{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}}]'"
    )]
    ConnectorMissing {
        /// The connector name.
        name: String,
        /// The package name.
        package: String,
    },
    /// A file source cannot be read right now (download failed, ConfigMap or Secret missing).
    #[error("file {file}: {message}")]
    SourceUnavailable {
        /// The file's name in the spec.
        file: String,
        /// What happened.
        message: String,
    },
    /// A file source is refused as written: http without opt-in, a private address, a
    /// Secret without the opt-in label.
    #[error("file {file}: {message}")]
    SourceRefused {
        /// The file's name in the spec.
        file: String,
        /// Why.
        message: String,
    },
    /// The downloaded (or stored) bytes do not match the spec's sha256. The file was not
    /// uploaded and the package is not registered.
    #[error(
        "file {file}: sha256 mismatch: the spec says {expected}, the source delivered {actual}; the file was not uploaded and the package is not registered"
    )]
    ChecksumMismatch {
        /// The file's name in the spec.
        file: String,
        /// The spec's digest.
        expected: String,
        /// The digest of what the source delivered.
        actual: String,
    },
    /// A file is larger than the operator's size limit.
    #[error(
        "file {file}: larger than the limit of {limit} bytes (operator flag --max-file-bytes); the file was not uploaded and the package is not registered"
    )]
    FileTooLarge {
        /// The file's name in the spec.
        file: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// A content id is already used by another package (or by something that is not a
    /// SoftwarePackage); the operator never overwrites it.
    #[error(
        "content id {content_id} (file {file}) already belongs to {owner}: it is not overwritten; set another contentId"
    )]
    ContentOwned {
        /// The file's name in the spec.
        file: String,
        /// The content id.
        content_id: String,
        /// Who owns it (`SoftwarePackage ns/name`, or a description).
        owner: String,
    },
    /// The package cannot be registered as written (for example a manifest over the size
    /// limit of a device2 value).
    #[error("invalid package: {message}")]
    PackageInvalid {
        /// What is wrong.
        message: String,
    },
    /// Deletion waits while active Rollouts use the package.
    #[error(
        "deletion waits: active Rollout(s) {rollouts} still use this package; abort or delete them first"
    )]
    InUse {
        /// The Rollouts, comma-separated.
        rollouts: String,
    },
    /// The object no longer matches the Rust types (written under an older schema).
    #[error("the object cannot be read: {message}")]
    Malformed {
        /// The deserialization error.
        message: String,
    },
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Wraps a kube error with the operation.
    pub fn kube(op: &'static str) -> impl FnOnce(kube::Error) -> Error {
        move |source| Error::Kube { op, source }
    }

    /// The innermost error (through the finalizer wrapper).
    pub fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(boxed) => match boxed.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.inner(),
                _ => self,
            },
            _ => self,
        }
    }

    /// A stable snake_case label for `otau_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self.inner() {
            Error::Kube { .. } => "kube",
            Error::KubeTimeout { .. } => "kube_timeout",
            Error::Platform { source } => match source {
                PlatformError::Authentication { .. } => "platform_authentication",
                PlatformError::NotFound { .. } => "platform_not_found",
                PlatformError::RateLimited { .. } => "platform_rate_limited",
                PlatformError::Unavailable { .. } => "platform_unavailable",
                PlatformError::CredentialsUnavailable { .. } => "credentials_unavailable",
                _ => "platform_rejected",
            },
            Error::SecretNotFound { .. } => "secret_not_found",
            Error::CredentialNotAllowed { .. } => "credential_not_allowed",
            Error::ConnectorSpecInvalid { .. } => "connector_spec_invalid",
            Error::ResourcesMissing { .. } => "resources_missing",
            Error::ConnectorMissing { .. } => "connector_missing",
            Error::SourceUnavailable { .. } => "source_unavailable",
            Error::SourceRefused { .. } => "source_refused",
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::FileTooLarge { .. } => "file_too_large",
            Error::ContentOwned { .. } => "content_owned",
            Error::PackageInvalid { .. } => "package_invalid",
            Error::InUse { .. } => "in_use",
            Error::Malformed { .. } => "malformed",
            Error::Finalizer(_) => "finalizer",
        }
    }

    /// The PascalCase reason of the Warning event this error becomes.
    pub fn event_reason(&self) -> &'static str {
        match self.inner() {
            Error::Kube { .. } | Error::KubeTimeout { .. } => "KubernetesRequestFailed",
            Error::Platform { source } => match source {
                PlatformError::Authentication { .. } => "CredentialsRejected",
                _ => "PlatformRequestFailed",
            },
            Error::SecretNotFound { .. } => "SecretNotFound",
            Error::CredentialNotAllowed { .. } => "CredentialNotAllowed",
            Error::ConnectorSpecInvalid { .. } => "ConnectorInvalid",
            Error::ResourcesMissing { .. } => "ResourcesMissing",
            Error::ConnectorMissing { .. } => "ConnectorMissing",
            Error::SourceUnavailable { .. } => "SourceUnavailable",
            Error::SourceRefused { .. } => "SourceRefused",
            Error::ChecksumMismatch { .. } => "ChecksumMismatch",
            Error::FileTooLarge { .. } => "FileTooLarge",
            Error::ContentOwned { .. } => "ContentOwnedByOther",
            Error::PackageInvalid { .. } => "PackageInvalid",
            Error::InUse { .. } => "DeletionWaiting",
            Error::Malformed { .. } => "MalformedObject",
            Error::Finalizer(_) => "FinalizerFailed",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self.inner() {
            Error::Kube { .. }
            | Error::KubeTimeout { .. }
            | Error::SecretNotFound { .. }
            | Error::SourceUnavailable { .. }
            | Error::InUse { .. }
            | Error::ConnectorMissing { .. }
            | Error::Finalizer(_) => true,
            Error::Platform { source } => platform_is_transient(source),
            Error::ConnectorSpecInvalid { .. }
            | Error::CredentialNotAllowed { .. }
            | Error::ResourcesMissing { .. }
            | Error::SourceRefused { .. }
            | Error::ChecksumMismatch { .. }
            | Error::FileTooLarge { .. }
            | Error::ContentOwned { .. }
            | Error::PackageInvalid { .. }
            | Error::Malformed { .. } => false,
        }
    }
}

/// The platform's own classification, plus: a 429 from the object store (reported as a
/// rejection because the upload step is not retried inside the client) and a response the
/// client could not read are worth another try.
pub fn platform_is_transient(error: &PlatformError) -> bool {
    error.is_transient()
        || matches!(error, PlatformError::Rejected { status: 429, .. })
        || matches!(error, PlatformError::InvalidResponse { .. })
}

impl From<PlatformError> for Error {
    fn from(source: PlatformError) -> Self {
        Error::Platform { source }
    }
}

/// A URL as it may appear in messages: scheme, host, port and path; no user info, query or
/// fragment (which may carry credentials such as presigned signatures).
pub fn redact_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_shows_a_platform_error_that_may_pass_as_platform_unavailable() {
        use crate::api::conditions::TRUE;
        use crate::controller::{connector, package};
        let passing = [
            PlatformError::Unavailable {
                operation: "device2.get",
                reason: "HTTP 503".into(),
            },
            PlatformError::RateLimited {
                operation: "device2.get",
                retry_after: None,
            },
            PlatformError::Rejected {
                operation: "content.upload",
                status: 429,
                message: String::new(),
            },
            PlatformError::InvalidResponse {
                operation: "device2.get",
                message: "not JSON".into(),
            },
        ];
        for source in passing {
            let error = Error::Platform { source };
            assert_eq!(connector::condition_for_error(&error), PLATFORM_UNAVAILABLE);
            assert_eq!(package::condition_for_error(&error), PLATFORM_UNAVAILABLE);
        }
        // A rejected token is each kind's own decision: the connector stalls, a package waits
        // for its connector.
        let rejected = Error::Platform {
            source: PlatformError::Authentication {
                operation: "token.get",
                status: 401,
                message: String::new(),
            },
        };
        assert_eq!(
            connector::condition_for_error(&rejected),
            (FALSE, TRUE, reason::CREDENTIALS_REJECTED)
        );
        assert_eq!(
            package::condition_for_error(&rejected),
            (FALSE, FALSE, reason::CONNECTOR_NOT_READY)
        );
    }

    #[test]
    fn classes_and_labels() {
        let e = Error::ChecksumMismatch {
            file: "fw.bin".into(),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        assert!(!e.is_transient());
        assert_eq!(e.metric_label(), "checksum_mismatch");
        assert_eq!(e.event_reason(), "ChecksumMismatch");
        let text = e.to_string();
        assert!(text.contains("fw.bin") && text.contains("aa") && text.contains("bb"));

        let e = Error::from(PlatformError::Unavailable {
            operation: "content.info",
            reason: "HTTP 503".into(),
        });
        assert!(e.is_transient());
        assert_eq!(e.metric_label(), "platform_unavailable");

        let e = Error::from(PlatformError::Rejected {
            operation: "content.upload.post",
            status: 429,
            message: "slow down".into(),
        });
        assert!(e.is_transient());

        let e = Error::from(PlatformError::Authentication {
            operation: "token.check",
            status: 401,
            message: "no".into(),
        });
        assert!(!e.is_transient());
        assert_eq!(e.event_reason(), "CredentialsRejected");

        let e = Error::FileTooLarge {
            file: "big.bin".into(),
            limit: 1024,
        };
        assert!(e.to_string().contains("1024 bytes"));
    }

    #[test]
    fn finalizer_errors_classify_by_their_cause() {
        let inner = Error::InUse {
            rollouts: "r1".into(),
        };
        let e = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::CleanupFailed(
            inner,
        )));
        assert!(e.is_transient());
        assert_eq!(e.metric_label(), "in_use");
        assert_eq!(e.event_reason(), "DeletionWaiting");
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        let url = url::Url::parse("https://user:pw@example.com:8443/a/b.bin?sig=secret#x").unwrap();
        assert_eq!(redact_url(&url), "https://example.com:8443/a/b.bin");
    }
}
