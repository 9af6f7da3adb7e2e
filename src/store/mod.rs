//! Where registrations are kept across restarts.
//!
//! The registry in memory serves every read; the store is only a journal of
//! what was acknowledged, read back once at start-up. `memory` keeps nothing;
//! `sqlite:PATH` commits every acknowledged change (see [`sqlite`]).
//!
//! **Invariant:** only this module knows SQL.

pub mod sqlite;

use std::fmt;
use std::path::PathBuf;

use uuid::Uuid;

use crate::service::{Health, Registration, ValidRegistration};

/// The default `--store`.
pub const DEFAULT_STORE: &str = "sqlite:data/signpost.db";

/// A parsed `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Everything in memory; lost on restart.
    Memory,
    /// A SQLite database file.
    Sqlite(PathBuf),
}

/// Why the store refused a URL, a file, or a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported store {0:?}: use \"memory\" or \"sqlite:PATH\"")]
    Unsupported(String),
    #[error("cannot open store {path}: {message}")]
    Open { path: String, message: String },
    #[error("{path} is not a signpost database ({detail}); refusing to touch it")]
    Foreign { path: String, detail: String },
    #[error(
        "{path} has schema version {found}, newer than this signpost understands ({supported}); refusing to touch it"
    )]
    TooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    /// A write could not be committed; nothing was acknowledged.
    #[error("store write failed: {0}")]
    Write(String),
    #[error("store is closed")]
    Closed,
}

impl StoreKind {
    pub fn parse(url: &str) -> Result<StoreKind, StoreError> {
        match url.split_once(':') {
            _ if url == "memory" => Ok(StoreKind::Memory),
            Some(("sqlite", path)) if !path.is_empty() => {
                Ok(StoreKind::Sqlite(PathBuf::from(path)))
            }
            _ => Err(StoreError::Unsupported(url.to_string())),
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreKind::Memory => f.write_str("memory"),
            StoreKind::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
        }
    }
}

/// One persisted registration.
#[derive(Debug, Clone)]
pub struct StoredInstance {
    pub id: Uuid,
    pub spec: ValidRegistration,
    pub health: Health,
    pub registered_at_ms: u64,
}

/// A change to persist.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or replace (by id, and by type+name).
    Put(Box<StoredInstance>),
    /// The reported health changed.
    Health {
        id: Uuid,
        health: Health,
    },
    Delete(Uuid),
    /// Expired instances, removed in one go.
    DeleteMany(Vec<Uuid>),
}

/// The configured store: a cheap handle, shared by every writer.
#[derive(Clone)]
pub enum Store {
    Memory,
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Opens the store and returns what it holds.
    pub fn open(kind: &StoreKind) -> Result<(Store, Vec<StoredInstance>), StoreError> {
        match kind {
            StoreKind::Memory => Ok((Store::Memory, Vec::new())),
            StoreKind::Sqlite(path) => {
                let (store, stored) = sqlite::SqliteStore::open(path)?;
                Ok((Store::Sqlite(store), stored))
            }
        }
    }

    /// Whether writes go anywhere (false for `memory`, whose writes are
    /// no-ops and need not even be built).
    pub fn is_persistent(&self) -> bool {
        !matches!(self, Store::Memory)
    }

    /// Persists `write`; returns once it is committed (or failed).
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(store) => store.write(write).await,
        }
    }

    /// Stops accepting writes and waits until every queued write is committed.
    pub async fn close(&self) {
        if let Store::Sqlite(store) = self {
            store.close().await;
        }
    }
}

/// The registration as the admin API's JSON: the stored form, so a row is
/// re-validated by the same rules as a request when it is loaded.
pub fn registration_json(spec: &ValidRegistration) -> String {
    serde_json::json!({
        "name": spec.name,
        "type": spec.service_type,
        "host": spec.host.to_string(),
        "port": spec.port,
        "tags": spec.tags,
        "metadata": spec.metadata,
        "ttl": spec.ttl,
        "priority": spec.priority,
        "weight": spec.weight,
        "check": spec.check.as_ref().map(crate::checks::CheckSpec::to_json),
    })
    .to_string()
}

/// Parses and re-validates a stored registration.
pub fn parse_registration(json: &str) -> Result<ValidRegistration, String> {
    let registration: Registration = serde_json::from_str(json).map_err(|e| e.to_string())?;
    registration.validate(30).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(StoreKind::parse("memory").unwrap(), StoreKind::Memory);
        assert_eq!(
            StoreKind::parse("sqlite:data/x.db").unwrap(),
            StoreKind::Sqlite("data/x.db".into())
        );
        assert!(StoreKind::parse("sqlite:").is_err());
        assert!(StoreKind::parse("etcd:http://x").is_err());
        assert!(StoreKind::parse("").is_err());
    }
}
