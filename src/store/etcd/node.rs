//! This node in the cluster: its lease, kept alive every
//! [`KEEP_ALIVE_EVERY`], holding `P/n/<node>` (so the others know it is
//! alive and share the active checks with it) and, for one node at a time,
//! `P/leader` (the node that expires instances). A node that dies stops
//! keeping its lease alive, and etcd removes both keys about
//! [`NODE_TTL`] seconds later; the others then campaign for the leader
//! key and take over its checks.
//!
//! The keep-alives double as this node's measure of whether it sees etcd:
//! one that fails (or takes more than [`KEEP_ALIVE_TIMEOUT`]: etcd without
//! quorum does not answer) marks the store as unseen at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::client::{EtcdError, Retry};
use super::grpc::{KeepAlive, Revoke};
use super::keys::json;
use super::state::{Leader, Shared};
use super::wire::{
    CompactionRequest, Compare, CompareResult, LeaseGrantRequest, LeaseGrantResponse, RequestOp,
    Target, TxnRequest, TxnResponse,
};

/// Seconds of this node's lease: etcd's floor (it grants no less).
pub(crate) const NODE_TTL: i64 = 2;
/// How often the lease is kept alive: four times per TTL.
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(500);
/// A keep-alive without an answer this long counts as failed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_millis(1000);

/// How much history the leader leaves etcd: a node away for longer reads
/// everything again when it is back. Without compactions every heartbeat's
/// revision would stay, and etcd's database would grow until it refuses
/// writes (its 2 GiB quota).
const HISTORY: Duration = Duration::from_secs(300);
/// How often the leader compacts.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// Keeps this node's lease and keys until `shutdown`, then revokes the
/// lease, so that the node's checks and leadership move at once.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut history = History::default();
    let mut tick = tokio::time::interval(KEEP_ALIVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = shared.campaign.notified() => {}
        }
        let outcome = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, keep(&shared)).await;
        match outcome {
            Ok(Ok(())) => {
                shared.lease_state(None);
                history.compact(&shared).await;
            }
            Ok(Err(error)) => {
                shared.lease_state(Some(error.to_string()));
                shared.kick.notify_one();
            }
            Err(_) => {
                shared.lease_state(Some(format!(
                    "no answer to a keep-alive within {KEEP_ALIVE_TIMEOUT:?}"
                )));
                shared.kick.notify_one();
            }
        }
    }
    revoke(&shared).await;
}

/// One round: a lease (granted and `P/n/<node>` put with it, when there is
/// none or it lapsed), kept alive, and a campaign when nobody leads.
async fn keep(shared: &Shared) -> Result<(), EtcdError> {
    let mut lease = shared.lease.load(Ordering::Acquire);
    if lease == 0 {
        lease = join(shared).await?;
    } else {
        let answer = shared.client.call(&KeepAlive(lease), Retry::Always).await?;
        let alive = answer.ttl > 0;
        if !alive {
            // It lapsed (this node was away for longer than its TTL): its
            // keys are gone; join again.
            tracing::warn!(node = %shared.node, "this node's lease lapsed; joining again");
            shared.lease.store(0, Ordering::Release);
            lease = join(shared).await?;
        }
    }
    let nobody_leads = shared
        .leader
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_none();
    if nobody_leads {
        campaign(shared, lease).await?;
    }
    Ok(())
}

/// Grants this node a lease and puts `P/n/<node>` with it.
async fn join(shared: &Shared) -> Result<i64, EtcdError> {
    let request = LeaseGrantRequest { ttl: NODE_TTL };
    let granted: LeaseGrantResponse = shared.client.call(&request, Retry::Always).await?;
    if granted.id == 0 {
        return Err(EtcdError::BadResponse(format!(
            "no lease granted: {}",
            granted.error
        )));
    }
    let value = json(&serde_json::json!({ "started_at_ms": crate::clock::system_now_ms() }));
    let put = TxnRequest {
        success: vec![RequestOp::put(
            shared.keys.node(&shared.node),
            value,
            granted.id,
        )],
        ..TxnRequest::default()
    };
    let _: TxnResponse = shared.client.call(&put, Retry::Always).await?;
    shared.lease.store(granted.id, Ordering::Release);
    tracing::info!(node = %shared.node, lease = granted.id, "joined the cluster");
    Ok(granted.id)
}

/// Takes `P/leader` if nobody holds it.
async fn campaign(shared: &Shared, lease: i64) -> Result<(), EtcdError> {
    let key = shared.keys.leader();
    let request = TxnRequest {
        compare: vec![Compare::new(
            key.clone(),
            Target::Version,
            CompareResult::Equal,
            0,
        )],
        success: vec![RequestOp::put(key.clone(), shared.node.clone(), lease)],
        failure: vec![RequestOp::range(key)],
    };
    let answer: TxnResponse = shared.client.call(&request, Retry::Always).await?;
    let leader = if answer.succeeded {
        tracing::info!(node = %shared.node, "leading: this node expires instances");
        Some(Leader {
            node: shared.node.clone(),
            create_revision: answer.header.revision,
        })
    } else {
        answer
            .range(0)
            .and_then(|kvs| kvs.first())
            .map(|kv| Leader {
                node: String::from_utf8_lossy(kv.value.as_slice()).into_owned(),
                create_revision: kv.create_revision,
            })
    };
    // The watch says so too; whichever comes first.
    let mut current = shared.leader.lock().unwrap_or_else(|e| e.into_inner());
    if current.is_none() {
        *current = leader;
    }
    Ok(())
}

/// The revisions the registry had applied, sampled every
/// [`COMPACT_EVERY`], for the leader's compactions.
#[derive(Default)]
struct History {
    samples: std::collections::VecDeque<(tokio::time::Instant, i64)>,
}

impl History {
    /// On the leader, every [`COMPACT_EVERY`]: compacts etcd's history up
    /// to the revision applied [`HISTORY`] ago.
    async fn compact(&mut self, shared: &Shared) {
        let now = tokio::time::Instant::now();
        if self
            .samples
            .back()
            .is_some_and(|(at, _)| now.duration_since(*at) < COMPACT_EVERY)
        {
            return;
        }
        self.samples.push_back((now, shared.applied()));
        let mut old = None;
        while let Some(&(at, revision)) = self.samples.front() {
            if now.duration_since(at) < HISTORY {
                break;
            }
            old = Some(revision);
            self.samples.pop_front();
        }
        let (Some(revision), Some(_)) = (old, shared.leadership()) else {
            return;
        };
        let request = CompactionRequest { revision };
        let compacted = shared.client.call(&request, Retry::Always).await;
        match compacted {
            Ok(_) => tracing::debug!(revision, "compacted etcd's history"),
            // Already compacted further (by an operator, or a leader before).
            Err(error) => tracing::debug!(revision, %error, "could not compact etcd's history"),
        }
    }
}

/// Revokes this node's lease (best effort, briefly): its keys go at once.
async fn revoke(shared: &Shared) {
    let lease = shared.lease.swap(0, Ordering::AcqRel);
    if lease == 0 {
        return;
    }
    let revoked = tokio::time::timeout(
        Duration::from_secs(1),
        shared.client.call(&Revoke(lease), Retry::Always),
    )
    .await;
    if !matches!(revoked, Ok(Ok(_))) {
        tracing::debug!("could not revoke this node's lease; it lapses within {NODE_TTL} s");
    }
}
