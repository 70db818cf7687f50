//! Typed errors of the platform client (docs/architecture.md §9.6).
//!
//! Messages name the operation (a route name such as `device2.state.set`) and what the platform
//! said; never a token, an `Authorization` header or a full URL.

use std::time::Duration;

/// Why a platform call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    /// The platform refused the credentials (401 after the one re-read allowed, or 403).
    #[error("{operation}: credentials rejected (HTTP {status}): {message}")]
    Authentication {
        /// The operation (route name).
        operation: &'static str,
        /// 401 or 403.
        status: u16,
        /// The platform's message.
        message: String,
    },
    /// The identity, content item or connector does not exist (404).
    #[error("{operation}: not found: {message}")]
    NotFound {
        /// The operation (route name).
        operation: &'static str,
        /// The platform's message.
        message: String,
    },
    /// A cloud write to a resource the connector marks as not settable (400 `Value is not settable`).
    #[error("{operation}: value is not settable: {message}")]
    NotSettable {
        /// The operation (route name).
        operation: &'static str,
        /// The platform's message.
        message: String,
    },
    /// The platform rejected the request as written (any other 4xx, or GraphQL `errors`).
    #[error("{operation}: rejected (HTTP {status}): {message}")]
    Rejected {
        /// The operation (route name).
        operation: &'static str,
        /// The HTTP status (200 for GraphQL errors).
        status: u16,
        /// The platform's message.
        message: String,
    },
    /// Still rate limited (429) after the allowed tries.
    #[error("{operation}: rate limited by the platform{}", retry_after_text(*.retry_after))]
    RateLimited {
        /// The operation (route name).
        operation: &'static str,
        /// The last `Retry-After`, when the platform sent one.
        retry_after: Option<Duration>,
    },
    /// The platform is unreachable, timed out, dropped the connection or answered 5xx.
    #[error("{operation}: platform unavailable: {reason}")]
    Unavailable {
        /// The operation (route name).
        operation: &'static str,
        /// What happened (status, timeout, connection error), without the URL.
        reason: String,
    },
    /// The platform answered 2xx with something this client cannot read.
    #[error("{operation}: invalid response: {message}")]
    InvalidResponse {
        /// The operation (route name).
        operation: &'static str,
        /// What was wrong with it.
        message: String,
    },
    /// The call could not be made as asked (bad id, oversized manifest, a body that does not
    /// match its announced length or sha256, bad configuration).
    #[error("{operation}: invalid request: {message}")]
    InvalidRequest {
        /// The operation (route name).
        operation: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Reading the body to upload failed (the caller's source broke mid-stream).
    #[error("{operation}: reading the upload body failed: {message}")]
    BodyRead {
        /// The operation (route name).
        operation: &'static str,
        /// The I/O error.
        message: String,
    },
    /// The credentials provider could not produce a token (for example the Secret is gone).
    #[error("credentials unavailable: {message}")]
    CredentialsUnavailable {
        /// Why.
        message: String,
    },
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(" (retry after {} s)", d.as_secs_f64().ceil() as u64),
        None => String::new(),
    }
}

impl PlatformError {
    /// A stable snake_case label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            PlatformError::Authentication { .. } => "authentication",
            PlatformError::NotFound { .. } => "not_found",
            PlatformError::NotSettable { .. } => "not_settable",
            PlatformError::Rejected { .. } => "rejected",
            PlatformError::RateLimited { .. } => "rate_limited",
            PlatformError::Unavailable { .. } => "unavailable",
            PlatformError::InvalidResponse { .. } => "invalid_response",
            PlatformError::InvalidRequest { .. } => "invalid_request",
            PlatformError::BodyRead { .. } => "body_read",
            PlatformError::CredentialsUnavailable { .. } => "credentials_unavailable",
        }
    }

    /// Whether trying again later may succeed without anyone changing anything (rate limits,
    /// outages, timeouts, a source that broke mid-stream); false for errors that need a changed
    /// request, a corrected Secret or a fixed platform.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PlatformError::RateLimited { .. }
                | PlatformError::Unavailable { .. }
                | PlatformError::BodyRead { .. }
                | PlatformError::CredentialsUnavailable { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_classes_are_stable() {
        let e = PlatformError::RateLimited {
            operation: "device2.list",
            retry_after: Some(Duration::from_millis(1500)),
        };
        assert_eq!(e.metric_label(), "rate_limited");
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "device2.list: rate limited by the platform (retry after 2 s)"
        );
        let e = PlatformError::NotSettable {
            operation: "device2.state.set",
            message: "Value is not settable".into(),
        };
        assert_eq!(e.metric_label(), "not_settable");
        assert!(!e.is_transient());
        let e = PlatformError::Authentication {
            operation: "token.check",
            status: 401,
            message: "Unauthorized".into(),
        };
        assert!(!e.is_transient());
        assert_eq!(e.metric_label(), "authentication");
    }
}
