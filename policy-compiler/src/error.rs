//! The crate's one error type.

pub use crate::convert::Invalid;
pub use crate::limits::Limit;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An object that does not convert (or breaks a per-policy limit).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Text that is not YAML at all.
    #[error("YAML document {index}: {reason}")]
    Yaml { index: usize, reason: String },
    /// A name that is not one of the agent's set names.
    #[error("{0:?} is not a set name the agent writes")]
    SetName(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
