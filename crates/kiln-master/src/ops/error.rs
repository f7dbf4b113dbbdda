//! What an operation answers when it does not do what was asked.

use crate::caller::Forbidden;
use kiln_core::matrix::PlanError;
use kiln_core::props::PropertyError;

/// Why an operation did nothing (or, for `Internal`, could not finish).
/// The HTTP edge gives each variant one status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// What the operation names (a build, a component, a user…) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller lacks the permission the operation needs.
    #[error("{0}")]
    Forbidden(String),
    /// The operation contradicts the current state (a finished build, a
    /// version already published, a user who exists).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Submitted content was checked and refused (an upload whose files do
    /// not match its control file); it is kept for inspection.
    #[error("{0}")]
    Rejected(String),
    /// The master cannot do it now (shutting down, a secret unreadable).
    #[error("{0}")]
    Unavailable(String),
    /// Something failed on the master's side; the log has the details.
    #[error("internal error: {0}")]
    Internal(String),
}

impl OpError {
    /// An internal failure, logged here once (its text is not shown to the caller).
    pub fn internal(e: impl std::fmt::Display) -> OpError {
        tracing::error!(error = %e, "internal error in an operation");
        OpError::Internal(e.to_string())
    }
}

impl From<Forbidden> for OpError {
    fn from(f: Forbidden) -> Self {
        OpError::Forbidden(f.0)
    }
}

impl From<kiln_db::StoreError> for OpError {
    fn from(e: kiln_db::StoreError) -> Self {
        OpError::internal(e)
    }
}

impl From<PropertyError> for OpError {
    fn from(e: PropertyError) -> Self {
        OpError::Invalid(e.to_string())
    }
}

impl From<PlanError> for OpError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::UnknownComponent { .. } | PlanError::UnknownTarget { .. } => OpError::NotFound(e.to_string()),
            _ => OpError::Invalid(e.to_string()),
        }
    }
}
