//! The store's vocabulary, shared by every kind of store: what is kept (a
//! [`StoredInstance`]), what a store is asked to do (a [`Write`]), how it
//! fails ([`StoreError`]), and the stored form of a registration.

use uuid::Uuid;

use crate::service::{Health, Registration, ValidRegistration};

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
    /// A commit failed (an fsync that reported an error, say) after the
    /// write reached the file, and a restart would restore it: it is
    /// applied and served, but the disk did not confirm it.
    #[error(
        "store write failed ({0}), but the change reached the database file and is applied: \
         a restart keeps it, a power loss before the disk recovers may not"
    )]
    Kept(String),
    #[error("store is closed")]
    Closed,
}

/// One persisted registration.
#[derive(Debug, Clone)]
pub(crate) struct StoredInstance {
    pub id: Uuid,
    pub spec: ValidRegistration,
    pub health: Health,
    pub registered_at_ms: u64,
}

impl StoredInstance {
    /// What the registry restores: the registration, who it is, its health.
    pub(crate) fn into_parts(self) -> (ValidRegistration, crate::registry::Identity, Health) {
        let identity = crate::registry::Identity {
            id: self.id,
            registered_at_ms: self.registered_at_ms,
            replaces: false,
        };
        (self.spec, identity, self.health)
    }
}

/// A change to persist.
#[derive(Debug, Clone)]
pub(crate) enum Write {
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

/// The registration as the admin API's JSON: the stored form, so a row is
/// re-validated by the same rules as a request when it is loaded.
pub(crate) fn registration_json(spec: &ValidRegistration) -> String {
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
        "locality": spec.locality,
        "check": spec.check.as_ref().map(crate::checks::CheckSpec::to_json),
    })
    .to_string()
}

/// Parses and re-validates a stored registration.
pub(crate) fn parse_registration(json: &str) -> Result<ValidRegistration, String> {
    let registration: Registration = serde_json::from_str(json).map_err(|e| e.to_string())?;
    registration.validate(30).map_err(|e| e.to_string())
}
