//! The write path on a shared store (etcd), where several nodes share one
//! registry. A change is written to etcd first, as on any store, but it is
//! not applied here by the request that made it: every node, this one
//! included, applies every change from its watch ([`Registrar::follow`]),
//! in the order etcd committed them, and announces it on its own
//! `/v1/events`. A request returns once its change is committed and this
//! node has applied it, so its answer already shows in this node's DNS.
//!
//! Lifetimes: each node renews an instance when the watch shows it a
//! heartbeat (or a passing check), so every node measures the same
//! lifetime, late by the watch's delay (milliseconds). One node, the
//! leader, expires lapsed instances through etcd, each expiry refused if a
//! heartbeat reached etcd after the last revision the leader had applied.
//! While this node cannot see etcd, nothing expires here (fail static).

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Registrar, RegistrarError};
use crate::events::{Change, DeregisterReason, HealthSource};
use crate::registry::{Identity, Registered};
use crate::service::{Health, Instance, ValidRegistration};
use crate::store::StoredInstance;
use crate::store::etcd::EtcdStore;
use crate::store::etcd::follow::Follower;
use crate::store::etcd::keys::TombstoneValue;
use crate::store::record::{Committed, Follow, Removal, Verdict, registration_json};

/// How soon the leader looks again at an instance whose expiry it sent.
const EXPIRY_RETRY_MS: u64 = 500;

impl Registrar {
    /// Registers through etcd, which decides the id when nodes register
    /// one name at once.
    pub(super) async fn register_shared(
        &self,
        etcd: &EtcdStore,
        spec: ValidRegistration,
        caller: &crate::access::Caller,
    ) -> Result<Registered, RegistrarError> {
        // As this node sees it (the owner comes with the watch; the
        // registration's compare catches a change made meanwhile).
        self.admit(&spec, caller)?;
        let now = self.registry.now_ms();
        let registry = &self.registry;
        let lapsed = |id: Uuid| {
            registry
                .get_any(id)
                .is_some_and(|instance| now >= instance.expires_at_ms())
        };
        let claimed = etcd
            .register(&spec, caller.owner().as_deref(), now, lapsed)
            .await
            .map_err(|e| self.store_failed(e))?;
        // Applied; gone only if a later change removed it already.
        let instance = self
            .registry
            .get_any(claimed.id)
            .ok_or(RegistrarError::NotFound)?;
        Ok(Registered {
            instance,
            created: !claimed.replaced,
            expired: None,
        })
    }

    /// A heartbeat through etcd: renews `id` on every node.
    pub(super) async fn beat_shared(
        &self,
        etcd: &EtcdStore,
        id: Uuid,
        health: Health,
        output: Option<String>,
    ) -> Result<Arc<Instance>, RegistrarError> {
        let instance = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
        let change = (instance.reported_health() != health).then_some(health);
        let now = self.registry.now_ms();
        let found = etcd
            .heartbeat(id, change, output, now)
            .await
            .map_err(|e| self.store_failed(e))?;
        if !found {
            return Err(RegistrarError::NotFound);
        }
        self.registry.get_any(id).ok_or(RegistrarError::NotFound)
    }

    /// Removes `id` through etcd (if it is still `expected`, when given).
    pub(super) async fn remove_shared(
        &self,
        etcd: &EtcdStore,
        id: Uuid,
        removal: super::Removal<'_>,
        reason: DeregisterReason,
    ) -> Result<Arc<Instance>, RegistrarError> {
        let current = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
        match removal {
            super::Removal::IfStill(expected) if !Arc::ptr_eq(expected, &current) => {
                return Err(RegistrarError::NotFound);
            }
            super::Removal::By(caller) if !caller.may_write(&current) => {
                return Err(self.forbidden(
                    caller,
                    format!("may not deregister {id}: {}", super::owned_by(&current)),
                ));
            }
            _ => {}
        }
        let found = etcd
            .remove(id, TombstoneValue::deregistered(reason))
            .await
            .map_err(|e| self.store_failed(e))?;
        if !found {
            return Err(RegistrarError::NotFound);
        }
        Ok(current)
    }

    /// Sends a check's verdict to etcd for the other nodes (this one has
    /// applied it already; the watch brings it back, unchanged).
    pub(super) fn publish_check(
        &self,
        etcd: &EtcdStore,
        id: Uuid,
        health: Health,
        output: String,
        renew: bool,
    ) {
        let etcd = etcd.clone();
        let registrar = self.clone();
        let now = self.registry.now_ms();
        tokio::spawn(async move {
            if let Err(error) = etcd.check(id, health, output, renew, now).await {
                registrar.metrics.store_write_failures.inc();
                tracing::debug!(%id, %error, "could not record a check's verdict in etcd");
            }
        });
    }

    /// The sweep on a shared store: while etcd cannot be seen, renews
    /// everything (fail static: a store outage never empties DNS); else
    /// the leader expires what lapsed, through etcd.
    pub(super) fn sweep_shared(&self, etcd: &EtcdStore) -> usize {
        let now = self.registry.now_ms();
        if etcd.problem().is_some() {
            self.registry.revive_all(now);
            return 0;
        }
        // Read before looking: every heartbeat up to `seen` is applied.
        let seen = etcd.applied_revision();
        let lapsed = self.registry.lapsed(now, EXPIRY_RETRY_MS);
        if lapsed.is_empty() || !etcd.leads() {
            return 0;
        }
        let count = lapsed.len();
        let etcd = etcd.clone();
        tokio::spawn(async move {
            let expiries = lapsed.iter().map(|instance| etcd.expire(instance.id, seen));
            for outcome in futures_util::future::join_all(expiries).await {
                if let Err(error) = outcome {
                    tracing::debug!(%error, "could not expire an instance through etcd");
                }
            }
        });
        count
    }

    /// Applies every change the watch shows, in order, until `shutdown`.
    pub(crate) async fn follow(self, mut follower: Follower, shutdown: CancellationToken) {
        let Some(etcd) = self.store.shared().cloned() else {
            return;
        };
        loop {
            let follow = tokio::select! {
                _ = shutdown.cancelled() => return,
                follow = follower.next() => follow,
            };
            let revision = match follow {
                Follow::Changes { revision, changes } => {
                    for change in changes {
                        self.apply(change);
                    }
                    revision
                }
                Follow::Reload {
                    revision,
                    instances,
                } => {
                    self.reload(instances);
                    revision
                }
            };
            etcd.set_applied(revision);
        }
    }

    /// Applies one change etcd committed, and announces it.
    fn apply(&self, change: Committed) {
        match change {
            Committed::Registered(stored) => self.apply_registered(*stored),
            Committed::Removed { id, reason } => self.apply_removed(id, reason),
            Committed::Beat { id, health, output } => {
                let Some((instance, before)) =
                    self.registry.committed_heartbeat(id, health, output)
                else {
                    return;
                };
                if instance.health() != before {
                    self.announce(Change::HealthChanged {
                        instance,
                        previous: before,
                        source: HealthSource::Heartbeat,
                    });
                }
            }
            Committed::Checked { id, verdict, renew } => {
                let Some(instance) = self.registry.get_any(id) else {
                    return;
                };
                if renew {
                    instance.revive(self.registry.now_ms());
                }
                let before = instance.health();
                self.registry
                    .record_check(&instance, verdict.health, verdict.output, false);
                if instance.health() != before {
                    self.announce(Change::HealthChanged {
                        instance,
                        previous: before,
                        source: HealthSource::Check,
                    });
                }
            }
        }
    }

    fn apply_registered(&self, stored: StoredInstance) {
        let replaces = self.registry.get_any(stored.id).is_some();
        let identity = Identity {
            id: stored.id,
            registered_at_ms: stored.registered_at_ms,
            replaces,
            owner: stored.owner.clone(),
        };
        let registered = self.registry.register(stored.spec, identity, stored.health);
        if let Some(verdict) = stored.check {
            let instance = &registered.instance;
            self.registry
                .record_check(instance, verdict.health, verdict.output, false);
        }
        self.announce_registered(&registered);
    }

    fn apply_removed(&self, id: Uuid, reason: Removal) {
        let Some(instance) = self.registry.remove_committed(id) else {
            return;
        };
        self.checker.forget(id);
        let reason = match reason {
            Removal::Expired => {
                self.metrics.expired.inc();
                self.announce(Change::Expired { instance });
                return;
            }
            Removal::Deregistered(reason) => reason,
            Removal::Vanished => DeregisterReason::Api,
        };
        match reason {
            DeregisterReason::Api => self.metrics.deregistrations.inc(),
            DeregisterReason::Critical { .. } => self.metrics.deregistered_critical.inc(),
        }
        self.announce(Change::Deregistered { instance, reason });
    }

    /// Makes the registry what etcd holds (after the watch could not
    /// resume): removes what is gone, registers what is new or changed,
    /// and leaves the rest (and its lifetime) alone.
    fn reload(&self, instances: Vec<StoredInstance>) {
        let keep: HashSet<Uuid> = instances.iter().map(|i| i.id).collect();
        for set in self.registry.types().values() {
            for instance in set.iter() {
                if !keep.contains(&instance.id) {
                    self.apply_removed(instance.id, Removal::Vanished);
                }
            }
        }
        let mut reloaded = 0;
        for stored in instances {
            let same = self.registry.get_any(stored.id).is_some_and(|held| {
                registration_json(&held.spec) == registration_json(&stored.spec)
                    && held.reported_health() == stored.health
            });
            if !same {
                reloaded += 1;
                self.apply_registered(stored);
            }
        }
        tracing::info!(reloaded, "reloaded the registry from etcd");
    }

    /// Puts back the check verdicts a shared store held at start-up
    /// (after the registry was restored), so that every node serves the
    /// health the checks' owners decided.
    pub(crate) fn restore_verdicts(&self, verdicts: Vec<(Uuid, Verdict)>) {
        for (id, verdict) in verdicts {
            if let Some(instance) = self.registry.get_any(id) {
                let (health, output) = (verdict.health, verdict.output);
                self.registry.record_check(&instance, health, output, false);
            }
        }
    }

    /// Whether this node runs `id`'s active check (always, but on a
    /// shared store, where each check has one owner among the nodes).
    pub(crate) fn owns_check(&self, id: Uuid) -> bool {
        self.store.shared().is_none_or(|etcd| etcd.owns_check(id))
    }

    /// Why the store cannot be seen, when it cannot (a shared store only):
    /// `/v1/health` answers 503 "degraded" with it.
    pub(crate) fn store_problem(&self) -> Option<String> {
        self.store.shared().and_then(EtcdStore::problem)
    }

    /// The shared store, when this node is one of a cluster's.
    pub(crate) fn shared_store(&self) -> Option<EtcdStore> {
        self.store.shared().cloned()
    }
}
