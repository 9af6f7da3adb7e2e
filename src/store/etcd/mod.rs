//! The etcd store: several signpost nodes share one registry.
//!
//! etcd is spoken through its v3 gRPC API on hyper's HTTP/2 ([`client`];
//! the messages hand-written with `prost`'s derive in [`grpc`], the
//! store's own types in [`wire`]), so no protoc and no gRPC stack are
//! needed. Every key lives
//! under one prefix ([`keys`]). Each node
//!
//! - loads the whole registry at start-up, in pages, before it binds a
//!   socket ([`follow::load`]), then applies every change from one watch,
//!   resumed from the last revision it saw, reloading everything when that
//!   revision was compacted away ([`follow::Follower`]);
//! - writes through small conditional transactions, batched
//!   ([`writer`]), and acknowledges a write only once etcd committed it
//!   and its own registry applied it from the watch ([`ops`]);
//! - holds a 2 s lease with `P/n/<node>` on it, and one node at a time
//!   `P/leader`: the node that expires instances ([`node`]).
//!
//! A heartbeat is one put of `P/b/<id>` in a batched transaction: one
//! revision and one watch event per node, no lease (etcd's keep-alives are
//! invisible to the other nodes, and its leases are at least 2 s).
//! Instances' lifetimes are therefore measured by each node from the
//! heartbeats the watch shows it, and the leader's expiry transaction
//! compares the revision of the last heartbeat it saw, so a heartbeat
//! that reached etcd first always wins.

pub(crate) mod client;
pub(crate) mod follow;
pub(crate) mod grpc;
pub(crate) mod keys;
pub(crate) mod node;
mod ops;
pub(crate) mod state;
pub(crate) mod watch;
// etcd's messages, mirrored whole: some fields are never read.
#[allow(dead_code)]
pub(crate) mod wire;
pub(crate) mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub(crate) use client::Endpoint;
use client::{Client, ClientSettings, Credentials, TlsFiles};
use follow::Follower;
use keys::Keys;
use state::Shared;
use writer::{Batcher, BatcherInbox};

use super::record::{StoreError, StoredInstance};

/// `--store etcd:URL,...` and `[store.etcd]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// The cluster's client URLs.
    pub endpoints: Vec<Endpoint>,
    /// Every key under this prefix; ends with `/`. Default
    /// `/signpost/<zone>/`, so that two zones can share one etcd.
    pub prefix: String,
    /// This node's name among the nodes; unique.
    pub node: String,
    /// The longest a call to etcd may take (every endpoint tried).
    pub request_timeout: Duration,
    /// The longest a connection to a member may take to open.
    pub dial_timeout: Duration,
    /// How long a starting node keeps trying to read etcd; zero: once.
    pub start_timeout: Duration,
    /// etcd user and password, when the cluster has authentication on.
    pub username: Option<String>,
    pub password: String,
    /// TLS (https:// endpoints): the CA to verify members by, and a client
    /// certificate and key when the cluster asks for one.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl EtcdSettings {
    /// The settings for `urls` (comma-separated client URLs) with every
    /// other setting at its default; the prefix empty (the zone's).
    pub fn parse(urls: &str) -> Result<EtcdSettings, String> {
        let endpoints = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(Endpoint::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("etcd: needs at least one client URL".into());
        }
        Ok(EtcdSettings {
            endpoints,
            prefix: String::new(),
            node: String::new(),
            request_timeout: Duration::from_secs(2),
            dial_timeout: Duration::from_secs(1),
            start_timeout: Duration::from_secs(60),
            username: None,
            password: String::new(),
            ca: None,
            cert: None,
            key: None,
        })
    }

    /// `etcd:URL,URL`: the store as messages name it.
    pub fn url(&self) -> String {
        let urls: Vec<String> = self.endpoints.iter().map(|e| e.to_string()).collect();
        format!("etcd:{}", urls.join(","))
    }
}

/// A name for this node when none is configured: the host's, and a
/// random suffix (nodes on one host must differ).
pub(crate) fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{:08x}", fastrand::u32(..))
}

/// The whole registry, read as soon as etcd answers: a node started with
/// (or before) etcd, as a machine's boot or a whole site's restart does
/// it, waits for it rather than exit (and, under systemd, soon exhaust its
/// restarts). It waits only for what etcd coming up cures: no member
/// reachable, no answer in time, no leader yet. A refusal (credentials,
/// permissions) fails at once.
async fn load_when_ready(
    shared: &Shared,
    patience: Duration,
) -> Result<(follow::Snapshot, follow::Decoder), client::EtcdError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match follow::load(shared).await {
            Ok(loaded) => return Ok(loaded),
            Err(error) => error,
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !worth_waiting_for(&error) || left.is_zero() {
            return Err(error);
        }
        tracing::warn!(
            store = %shared.name,
            %error,
            "etcd cannot be read yet; trying again in {:?} (store.etcd.start_timeout_ms)",
            pause.min(left)
        );
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Whether a failed start-up read may succeed when tried again: etcd
/// unreachable, slow or without a leader, or its revision moved under the
/// read (a member behind, or a compaction, between two pages). A TLS
/// failure is a setting to fix, not a wait: its message says TLS.
fn worth_waiting_for(error: &client::EtcdError) -> bool {
    match error {
        client::EtcdError::Unreachable(reason) => {
            !reason.contains("TLS: ") && !reason.contains("fatal alert")
        }
        client::EtcdError::Timeout(_) => true,
        client::EtcdError::Refused { code, message } => {
            *code == client::code::UNAVAILABLE
                || error.is_compacted()
                || message.contains("future revision")
        }
        client::EtcdError::BadResponse(_) => false,
    }
}

/// A cheap handle on the etcd store.
#[derive(Clone)]
pub(crate) struct EtcdStore {
    shared: Arc<Shared>,
    /// The parts [`EtcdStore::run`] and the registrar take once.
    parts: Arc<Mutex<Parts>>,
}

#[derive(Default)]
struct Parts {
    inbox: Option<BatcherInbox>,
    follower: Option<Follower>,
}

impl EtcdStore {
    /// Connects, reads the whole registry (paginated, at one revision) and
    /// returns it; the watch will follow from that revision.
    pub(crate) async fn open(
        settings: &EtcdSettings,
    ) -> Result<(EtcdStore, Vec<StoredInstance>), StoreError> {
        let name = settings.url();
        let client = Client::new(ClientSettings {
            endpoints: settings.endpoints.clone(),
            request_timeout: settings.request_timeout,
            dial_timeout: settings.dial_timeout,
            credentials: settings.username.clone().map(|username| Credentials {
                username,
                password: settings.password.clone(),
            }),
            tls: TlsFiles {
                ca: settings.ca.clone(),
                cert: settings.cert.clone(),
                key: settings.key.clone(),
            },
        })
        .map_err(|reason| StoreError::Settings {
            store: name.clone(),
            reason,
        })?;
        let (batcher, inbox) = Batcher::new();
        let keys = Keys::new(&settings.prefix);
        let shared = Arc::new(Shared::new(
            client,
            batcher,
            keys,
            settings.node.clone(),
            name.clone(),
        ));
        let (snapshot, decoder) = load_when_ready(&shared, settings.start_timeout)
            .await
            .map_err(|error| StoreError::Unavailable {
                store: name.clone(),
                reason: error.to_string(),
            })?;
        shared.set_applied(snapshot.revision);
        let follower = Follower::new(shared.clone(), decoder, snapshot.revision);
        let parts = Parts {
            inbox: Some(inbox),
            follower: Some(follower),
        };
        let store = EtcdStore {
            shared,
            parts: Arc::new(Mutex::new(parts)),
        };
        Ok((store, snapshot.instances))
    }

    /// The watch's follower, for the registrar to apply; once.
    pub(crate) fn take_follower(&self) -> Option<Follower> {
        self.parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .follower
            .take()
    }

    /// Runs the writer and this node's lease until `shutdown`, then
    /// revokes the lease (so its checks and leadership move at once).
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let inbox = self
            .parts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .inbox
            .take();
        let Some(inbox) = inbox else {
            return;
        };
        let client = self.shared.client.clone();
        let writer = tokio::spawn(writer::run(inbox, client, shutdown.clone()));
        node::run(self.shared.clone(), shutdown).await;
        let _ = writer.await;
    }

    /// Why etcd cannot be seen, when it cannot: writes fail, expiry is
    /// suspended.
    pub(crate) fn problem(&self) -> Option<String> {
        self.shared.problem()
    }

    /// Whether this node expires instances: it holds `P/leader` and sees
    /// etcd.
    pub(crate) fn leads(&self) -> bool {
        self.shared.leadership().is_some()
    }

    /// Whether this node runs `id`'s active check.
    pub(crate) fn owns_check(&self, id: uuid::Uuid) -> bool {
        self.shared.owns(id)
    }

    /// The registry applied every change up to `revision`.
    pub(crate) fn set_applied(&self, revision: i64) {
        self.shared.set_applied(revision);
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            store: self.shared.name.clone(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client::{EtcdError, code};
    use super::worth_waiting_for;

    #[test]
    fn a_start_waits_out_what_etcd_coming_up_cures_and_nothing_else() {
        let refused = |code, message: &str| EtcdError::Refused {
            code,
            message: message.into(),
        };
        for cured in [
            EtcdError::Unreachable("http://127.0.0.1:2379: Connection refused".into()),
            EtcdError::Timeout(std::time::Duration::from_secs(2)),
            refused(code::UNAVAILABLE, "etcdserver: no leader"),
            refused(
                code::OUT_OF_RANGE,
                "mvcc: required revision is a future revision",
            ),
            refused(
                code::OUT_OF_RANGE,
                "mvcc: required revision has been compacted",
            ),
        ] {
            assert!(worth_waiting_for(&cured), "{cured}");
        }
        for fixed_by_a_person in [
            EtcdError::Unreachable("https://e:2379: TLS: invalid peer certificate".into()),
            EtcdError::Unreachable("https://e:2379: received fatal alert: BadCertificate".into()),
            refused(code::INVALID_ARGUMENT, "authentication failed"),
            refused(7, "permission denied"),
            EtcdError::BadResponse("HTTP 404".into()),
        ] {
            assert!(
                !worth_waiting_for(&fixed_by_a_person),
                "{fixed_by_a_person}"
            );
        }
    }
}
