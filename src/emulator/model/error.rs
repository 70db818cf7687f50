//! Errors of model operations, each with the HTTP status the APIs answer for it.

/// Why a model operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// No identity with this name on the connector.
    #[error("identity {0:?} not found")]
    UnknownIdentity(String),
    /// No connector with this id.
    #[error("connector {0:?} not found")]
    UnknownConnector(String),
    /// No content item with this id.
    #[error("content item {0:?} not found")]
    UnknownContent(String),
    /// A cloud write named a resource that is not settable (or not defined). The message is the
    /// platform's exact body (exosite-platform.md §1.3).
    #[error("Value is not settable")]
    NotSettable(String),
    /// Activation of an identity that is not whitelisted.
    #[error("identity {0:?} is not whitelisted")]
    NotWhitelisted(String),
    /// Activation of an identity that is already provisioned.
    #[error("The specified device is already activated.")]
    AlreadyProvisioned(String),
    /// The identity is locked.
    #[error("identity {0:?} is locked")]
    Locked(String),
    /// A value over the configured size limit.
    #[error("value of {alias:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The resource written.
        alias: String,
        /// Size of the value in bytes.
        size: usize,
        /// The configured limit (`resource_max_bytes`).
        limit: usize,
    },
    /// Bad input, with a message for a person.
    #[error("{0}")]
    Invalid(String),
}

impl ModelError {
    /// The HTTP status code the APIs answer with for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            ModelError::UnknownIdentity(_)
            | ModelError::UnknownConnector(_)
            | ModelError::UnknownContent(_)
            | ModelError::NotWhitelisted(_) => 404,
            ModelError::NotSettable(_) | ModelError::Invalid(_) => 400,
            ModelError::AlreadyProvisioned(_) => 409,
            ModelError::Locked(_) => 403,
            ModelError::ValueTooLarge { .. } => 413,
        }
    }
}
