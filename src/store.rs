//! Where registrations are kept. This release has only the in-memory store;
//! the `--store` flag exists already so that scripts written today keep
//! working when durable stores arrive.

use std::fmt;

/// A parsed `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Everything in memory; lost on restart.
    Memory,
}

/// Why a store URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store {0:?}: this build supports only \"memory\"")]
    Unsupported(String),
}

impl StoreKind {
    pub fn parse(url: &str) -> Result<StoreKind, StoreError> {
        match url {
            "memory" => Ok(StoreKind::Memory),
            other => Err(StoreError::Unsupported(other.to_string())),
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreKind::Memory => f.write_str("memory"),
        }
    }
}
