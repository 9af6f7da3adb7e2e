//! The store's vocabulary, shared by every kind of store: what is kept (a
//! [`StoredInstance`]), what a store is asked to do (a [`Write`]), how it
//! fails ([`StoreError`]), and the stored form of a registration.

use uuid::Uuid;

use crate::events::DeregisterReason;
use crate::service::{Health, Registration, ValidRegistration};

/// Why the store refused a URL, a file, or a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported store {0:?}: use \"memory\", \"sqlite:PATH\" or \"etcd:http://HOST:PORT,...\""
    )]
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
    /// A shared store could not be reached, or it could not commit in
    /// time: `store` names it.
    #[error("store {store} is unavailable: {reason}")]
    Unavailable { store: String, reason: String },
    /// A setting of the store that cannot be used (a TLS file, say).
    #[error("store {store}: {reason}")]
    Settings { store: String, reason: String },
}

/// One persisted registration.
#[derive(Debug, Clone)]
pub(crate) struct StoredInstance {
    pub id: Uuid,
    pub spec: ValidRegistration,
    pub health: Health,
    pub registered_at_ms: u64,
    /// Its active check's last verdict, where the store keeps verdicts
    /// (etcd, so that every node serves the same health); `None`: passing.
    pub check: Option<Verdict>,
    /// The name of the token that registered it; `None` when the API was
    /// open (and for rows written before owners were kept).
    pub owner: Option<std::sync::Arc<str>>,
}

/// An active check's verdict and what the check saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub health: Health,
    pub output: String,
}

/// A change a shared store committed (through this node or another), in
/// the order the store committed it: what the registrar applies on every
/// node, so that every node's registry is the store's.
#[derive(Debug, Clone)]
pub(crate) enum Committed {
    /// Registered, or replaced in place (same id): reported health
    /// passing, no check verdict yet.
    Registered(Box<StoredInstance>),
    /// Removed, and why.
    Removed { id: Uuid, reason: Removal },
    /// A heartbeat: renews the lifetime and sets the output; `health` when
    /// it changed the reported health.
    Beat {
        id: Uuid,
        health: Option<Health>,
        output: Option<String>,
    },
    /// An active check's verdict; a result that was not critical renews
    /// the lifetime (`renew`).
    Checked {
        id: Uuid,
        verdict: Verdict,
        renew: bool,
    },
}

/// Why a registration left the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removal {
    Deregistered(DeregisterReason),
    /// Not renewed within its TTL.
    Expired,
    /// Gone without a reason recorded (removed by another client of the
    /// store, or seen missing when memory was reconciled with the store).
    Vanished,
}

/// What following a shared store yields.
#[derive(Debug)]
pub(crate) enum Follow {
    /// Every change of the revisions up to `revision`, in order.
    Changes {
        revision: i64,
        changes: Vec<Committed>,
    },
    /// Everything the store holds at `revision`: memory must become that
    /// (after the watch could not resume, its history compacted away).
    Reload {
        revision: i64,
        instances: Vec<StoredInstance>,
    },
}

impl StoredInstance {
    /// What the registry restores: the registration, who it is, its health.
    pub(crate) fn into_parts(self) -> (ValidRegistration, crate::registry::Identity, Health) {
        let identity = crate::registry::Identity {
            id: self.id,
            registered_at_ms: self.registered_at_ms,
            replaces: false,
            owner: self.owner,
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
