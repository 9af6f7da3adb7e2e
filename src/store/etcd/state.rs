//! What the etcd store's parts share: the client and the batcher, the key
//! layout, this node's name and lease, what the watch has told (the live
//! nodes, the leader, each registration's key and create revision), how
//! far the registry has applied the watch, and whether etcd can be seen.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Notify;
use uuid::Uuid;

use super::client::{Client, EtcdError, Retry};
use super::keys::Keys;
use super::wire::{LeaseGrantRequest, LeaseGrantResponse};
use super::writer::Batcher;

/// Seconds a tombstone (`P/x/<id>`) outlives the removal it explains: it
/// only has to reach the watches, which it does at once.
const TOMBSTONE_TTL: i64 = 60;
/// A tombstone lease is shared by the removals of this long.
const TOMBSTONE_LEASE_REUSE: Duration = Duration::from_secs(30);

/// The key and create revision of a registration: the incarnation its id
/// names (a registration removed and made again is a new key, a new
/// create revision and a new id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incarnation {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// Who holds `P/leader`, and since which revision (the key's create
/// revision: a leader's transactions compare it, so that one that lost
/// the key can no longer expire anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leader {
    pub node: String,
    pub create_revision: i64,
}

pub(crate) struct Shared {
    pub client: Client,
    pub batcher: Batcher,
    pub keys: Keys,
    /// This node's name (`store.etcd.node`).
    pub node: String,
    /// The store as configured, for messages: `etcd:URL,...`.
    pub name: String,
    /// Every registration the watch has shown, by id.
    pub incarnations: DashMap<Uuid, Incarnation>,
    /// The live nodes (`P/n/`), as the watch last showed them.
    pub nodes: RwLock<BTreeSet<String>>,
    pub leader: Mutex<Option<Leader>>,
    /// This node's lease (0 when it has none).
    pub lease: AtomicI64,
    /// Re-open the watch (on the preferred endpoint).
    pub kick: Notify,
    /// The leader key is gone: campaign.
    pub campaign: Notify,
    /// The last revision the registry has applied.
    applied: tokio::sync::watch::Sender<i64>,
    watch_up: AtomicBool,
    lease_up: AtomicBool,
    /// Why etcd cannot be seen, when it cannot.
    problem: Mutex<Option<String>>,
    tombstones: tokio::sync::Mutex<Option<(i64, Instant)>>,
}

impl Shared {
    pub(crate) fn new(
        client: Client,
        batcher: Batcher,
        keys: Keys,
        node: String,
        name: String,
    ) -> Shared {
        Shared {
            client,
            batcher,
            keys,
            node,
            name,
            incarnations: DashMap::new(),
            nodes: RwLock::new(BTreeSet::new()),
            leader: Mutex::new(None),
            lease: AtomicI64::new(0),
            kick: Notify::new(),
            campaign: Notify::new(),
            applied: tokio::sync::watch::Sender::new(0),
            watch_up: AtomicBool::new(false),
            lease_up: AtomicBool::new(false),
            problem: Mutex::new(None),
            tombstones: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether this node sees etcd: its watch is open and its lease was
    /// kept alive on the last try.
    pub(crate) fn sees_etcd(&self) -> bool {
        self.watch_up.load(Ordering::Acquire) && self.lease_up.load(Ordering::Acquire)
    }

    /// Why etcd cannot be seen (the last failure), when it cannot.
    pub(crate) fn problem(&self) -> Option<String> {
        if self.sees_etcd() {
            return None;
        }
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(problem.unwrap_or_else(|| "connecting to etcd".into()))
    }

    fn note(&self, flag: &AtomicBool, up: bool, problem: Option<String>) {
        let was = self.sees_etcd();
        flag.store(up, Ordering::Release);
        if let Some(problem) = problem {
            *self.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(problem);
        }
        let now = self.sees_etcd();
        if was && !now {
            tracing::warn!(
                store = %self.name,
                problem = self.problem().unwrap_or_default(),
                "etcd cannot be seen: writes fail, DNS answers from memory, expiry is suspended"
            );
        } else if !was && now {
            tracing::info!(store = %self.name, "etcd can be seen again");
        }
    }

    /// The watch opened (`None`) or failed (why).
    pub(crate) fn watch_state(&self, problem: Option<String>) {
        self.note(
            &self.watch_up,
            problem.is_none(),
            problem.map(|p| format!("watch: {p}")),
        );
    }

    /// The lease was kept alive (`None`) or not (why).
    pub(crate) fn lease_state(&self, problem: Option<String>) {
        self.note(
            &self.lease_up,
            problem.is_none(),
            problem.map(|p| format!("lease: {p}")),
        );
    }

    /// Whether this node holds `P/leader` (and sees etcd); with the
    /// leader key's create revision.
    pub(crate) fn leadership(&self) -> Option<i64> {
        if !self.sees_etcd() {
            return None;
        }
        let leader = self.leader.lock().unwrap_or_else(|e| e.into_inner());
        leader
            .as_ref()
            .filter(|leader| leader.node == self.node)
            .map(|leader| leader.create_revision)
    }

    /// Whether this node runs `id`'s active check: the live node that
    /// ranks highest for it (rendezvous hashing), so that each check has
    /// one owner and a node that leaves moves only its own checks. A node
    /// that is not among the live ones (its lease lapsed) owns none.
    pub(crate) fn owns(&self, id: Uuid) -> bool {
        let nodes = self.nodes.read().unwrap_or_else(|e| e.into_inner());
        if !nodes.contains(&self.node) {
            return false;
        }
        let best = nodes
            .iter()
            .max_by_key(|node| (rank(node, id), node.as_str()));
        best == Some(&self.node)
    }

    /// The last revision the registry applied.
    pub(crate) fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// The registry has applied every change up to `revision`.
    pub(crate) fn set_applied(&self, revision: i64) {
        self.applied.send_if_modified(|applied| {
            let newer = revision > *applied;
            if newer {
                *applied = revision;
            }
            newer
        });
    }

    /// Waits until the registry applied `revision`, at most `limit`.
    pub(crate) async fn wait_applied(&self, revision: i64, limit: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = applied.wait_for(|applied| *applied >= revision);
        matches!(tokio::time::timeout(limit, reached).await, Ok(Ok(_)))
    }

    /// A lease for tombstones, shared by the removals of half a minute
    /// and gone a minute or so later, with them.
    pub(crate) async fn tombstone_lease(&self) -> Result<i64, EtcdError> {
        let mut current = self.tombstones.lock().await;
        if let Some((lease, granted)) = *current
            && granted.elapsed() < TOMBSTONE_LEASE_REUSE
        {
            return Ok(lease);
        }
        let request = LeaseGrantRequest { ttl: TOMBSTONE_TTL };
        let granted: LeaseGrantResponse = self.client.call(&request, Retry::Always).await?;
        *current = Some((granted.id, Instant::now()));
        Ok(granted.id)
    }
}

/// The rank of `node` for `id`: FNV-1a over both, then mixed, so that
/// every node, whatever its build, ranks alike.
fn rank(node: &str, id: Uuid) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in node
        .as_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(id.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV's high bits alone spread poorly.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each id has one owner among the nodes, ownership is spread about
    /// evenly, and when a node leaves only its own ids move.
    #[test]
    fn rendezvous_spreads_and_moves_only_what_the_leaver_owned() {
        let nodes = ["a-1", "b-2", "c-3"];
        fn owner<'a>(nodes: &[&'a str], id: Uuid) -> &'a str {
            nodes
                .iter()
                .max_by_key(|node| (rank(node, id), **node))
                .unwrap()
        }
        let ids: Vec<Uuid> = (0..3000u128).map(|n| Uuid::from_u128(n * 7919)).collect();
        let mut counts = std::collections::HashMap::new();
        for id in &ids {
            *counts.entry(owner(&nodes, *id)).or_insert(0) += 1;
        }
        for node in nodes {
            let count = counts[node];
            assert!((850..=1150).contains(&count), "{node} owns {count} of 3000");
        }
        for id in &ids {
            let before = owner(&nodes, *id);
            let after = owner(&["a-1", "c-3"], *id);
            if before != "b-2" {
                assert_eq!(before, after, "only b-2's checks move");
            }
        }
    }
}
