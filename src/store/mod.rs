//! Where registrations are kept across restarts.
//!
//! The registry in memory serves every read; the store is only a journal of
//! what was acknowledged, read back once at start-up. `memory` keeps nothing;
//! `sqlite:PATH` commits every acknowledged change (see [`sqlite`]).
//!
//! **Invariant:** only this module knows SQL.

mod record;
pub(crate) mod sqlite;

pub(crate) use record::{StoreError, StoredInstance, Write};

use std::fmt;
use std::path::PathBuf;

/// A parsed `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Everything in memory; lost on restart.
    Memory,
    /// A SQLite database file.
    Sqlite(PathBuf),
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

/// The configured store: a cheap handle, shared by every writer.
#[derive(Clone)]
pub(crate) enum Store {
    Memory,
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Opens the store and hands `each` of what it holds, one at a time
    /// (never all of it at once: see [`crate::registry::Registry::restoring`]).
    pub(crate) fn open(
        kind: &StoreKind,
        each: &mut dyn FnMut(StoredInstance),
    ) -> Result<Store, StoreError> {
        match kind {
            StoreKind::Memory => Ok(Store::Memory),
            StoreKind::Sqlite(path) => Ok(Store::Sqlite(sqlite::SqliteStore::open(path, each)?)),
        }
    }

    /// Whether writes go anywhere (false for `memory`, whose writes are
    /// no-ops and need not even be built).
    pub(crate) fn is_persistent(&self) -> bool {
        !matches!(self, Store::Memory)
    }

    /// Persists `write`; returns once it is committed (or failed).
    pub(crate) async fn write(&self, write: Write) -> Result<(), StoreError> {
        match self {
            Store::Memory => Ok(()),
            Store::Sqlite(store) => store.write(write).await,
        }
    }

    /// Stops accepting writes and waits until every queued write is committed.
    pub(crate) async fn close(&self) {
        if let Store::Sqlite(store) = self {
            store.close().await;
        }
    }
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
