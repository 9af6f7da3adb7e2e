//! The write path: every change is committed to the store first and applied
//! to the in-memory registry only once it is durable, so an acknowledged
//! change survives a crash and a failed write changes nothing.
//!
//! Writes of the same type+name are put in order by a striped lock, so two
//! concurrent registrations of one name cannot persist two different ids;
//! writes of different names run concurrently and share the store's group
//! commits. The expiry sweep lives here too, because it deletes from both.

use std::hash::BuildHasher;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checks::scheduler::Checker;
use crate::events::{Change, DeregisterReason, Events, HealthSource};
use crate::metrics::Metrics;
use crate::registry::{Identity, Registered, Registry, SWEEP_INTERVAL};
use crate::service::{Health, Instance, ValidRegistration};
use crate::store::{Store, StoreError, StoredInstance, Write};

/// Number of lock stripes; same-name writes share one.
const STRIPES: usize = 64;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistrarError {
    #[error("no such service, or it has expired: register it again")]
    NotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cheap-to-clone handle on the write path.
#[derive(Clone)]
pub struct Registrar {
    pub registry: Registry,
    pub store: Store,
    /// Where every change is announced (`/v1/events`).
    pub events: Events,
    /// The active-check scheduler, told of every instance with a check.
    checker: Checker,
    metrics: Arc<Metrics>,
    stripes: Arc<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Registrar {
    pub fn new(
        registry: Registry,
        store: Store,
        events: Events,
        checker: Checker,
        metrics: Arc<Metrics>,
    ) -> Registrar {
        Registrar {
            registry,
            store,
            events,
            checker,
            metrics,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
        }
    }

    fn stripe(&self, service_type: &str, name: &str) -> &Mutex<()> {
        &self.stripes[self.hasher.hash_one((service_type, name)) as usize % STRIPES]
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn store_failed(&self, error: StoreError) -> RegistrarError {
        self.metrics.store_write_failures.inc();
        RegistrarError::Store(error)
    }

    /// Puts back what the store held at start-up. Each instance gets a fresh
    /// window of its own TTL to heartbeat again, and keeps its id, its
    /// registration time and its last reported health.
    pub fn restore(&self, stored: Vec<StoredInstance>) -> usize {
        let entries = stored
            .into_iter()
            .map(|instance| {
                let identity = Identity {
                    id: instance.id,
                    registered_at_ms: instance.registered_at_ms,
                    replaces: false,
                };
                (instance.spec, identity, instance.health)
            })
            .collect();
        let restored = self.registry.restore(entries);
        for instance in self.registry.list() {
            if instance.spec.check.is_some() {
                self.checker.watch(&instance);
            }
        }
        restored
    }

    /// Registers (or replaces in place) once the store has committed it.
    pub async fn register(&self, spec: ValidRegistration) -> Result<Registered, RegistrarError> {
        let _same_name = self.stripe(&spec.service_type, &spec.name).lock().await;
        let identity = self.registry.identity_for(&spec);
        if self.store.is_persistent() {
            let stored = StoredInstance {
                id: identity.id,
                spec: spec.clone(),
                health: Health::Passing,
                registered_at_ms: identity.registered_at_ms,
            };
            self.store
                .write(Write::Put(Box::new(stored)))
                .await
                .map_err(|e| self.store_failed(e))?;
        }
        let registered = self.registry.register(spec, identity, Health::Passing);
        if let Some(stale) = &registered.expired {
            self.checker.forget(stale.id);
            self.report_expired(std::slice::from_ref(stale));
        }
        let instance = &registered.instance;
        if instance.spec.check.is_some() || !registered.created {
            self.checker.watch(instance);
        }
        self.events.publish(
            &Change::Registered {
                instance: instance.clone(),
                replaced: !registered.created,
            },
            self.registry.now_ms(),
        );
        Ok(registered)
    }

    /// Logs, counts and announces instances whose TTL lapsed.
    fn report_expired(&self, lapsed: &[Arc<Instance>]) {
        for instance in lapsed {
            tracing::info!(
                id = %instance.id,
                name = %instance.spec.name,
                service_type = %instance.spec.service_type,
                "expired: no heartbeat within its ttl"
            );
            self.checker.forget(instance.id);
            self.events.publish(
                &Change::Expired {
                    instance: instance.clone(),
                },
                self.registry.now_ms(),
            );
        }
        self.metrics.expired.add(lapsed.len() as u64);
    }

    /// Renews an instance. A change of reported health is committed first;
    /// a plain renewal is not persisted (a restart grants a fresh TTL window
    /// anyway, so the exact last heartbeat is not worth an fsync each).
    pub async fn heartbeat(
        &self,
        id: Uuid,
        health: Health,
        output: Option<String>,
    ) -> Result<(Arc<Instance>, Health), RegistrarError> {
        let instance = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
        let before = instance.health();
        if instance.reported_health() != health {
            let _same_name = self
                .stripe(&instance.spec.service_type, &instance.spec.name)
                .lock()
                .await;
            self.store
                .write(Write::Health { id, health })
                .await
                .map_err(|e| self.store_failed(e))?;
        }
        let (instance, previous) = self
            .registry
            .heartbeat(id, health, output)
            .map_err(|_| RegistrarError::NotFound)?;
        if instance.health() != before {
            self.events.publish(
                &Change::HealthChanged {
                    instance: instance.clone(),
                    previous: before,
                    source: HealthSource::Heartbeat,
                },
                self.registry.now_ms(),
            );
        }
        Ok((instance, previous))
    }

    /// Removes a live instance once the store has committed its removal;
    /// `reason` goes into the `deregister` event.
    pub async fn deregister(
        &self,
        id: Uuid,
        reason: DeregisterReason,
    ) -> Result<Arc<Instance>, RegistrarError> {
        let instance = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
        let _same_name = self
            .stripe(&instance.spec.service_type, &instance.spec.name)
            .lock()
            .await;
        self.store
            .write(Write::Delete(id))
            .await
            .map_err(|e| self.store_failed(e))?;
        let removed = self
            .registry
            .deregister(id)
            .ok_or(RegistrarError::NotFound)?;
        self.checker.forget(id);
        self.events.publish(
            &Change::Deregistered {
                instance: removed.clone(),
                reason,
            },
            self.registry.now_ms(),
        );
        Ok(removed)
    }

    /// Removes `instance` after its check kept it critical for
    /// `deregister_after`, unless it was replaced meanwhile.
    pub async fn deregister_critical(&self, instance: Arc<Instance>, reason: DeregisterReason) {
        let current = self.registry.get(instance.id);
        if !current.is_some_and(|c| Arc::ptr_eq(&c, &instance)) {
            return;
        }
        match self.deregister(instance.id, reason).await {
            Ok(removed) => {
                self.metrics.deregistered_critical.inc();
                tracing::info!(
                    id = %removed.id,
                    name = %removed.spec.name,
                    service_type = %removed.spec.service_type,
                    %reason,
                    "deregistered"
                );
            }
            Err(RegistrarError::NotFound) => {}
            Err(error) => {
                // Left in place (and served as critical, i.e. not at all);
                // the next failed check tries again.
                tracing::warn!(id = %instance.id, %error, "could not deregister a critical instance");
                self.checker.watch(&instance);
            }
        }
    }

    /// Removes lapsed instances every [`SWEEP_INTERVAL`] until `shutdown`
    /// fires, from memory at once and from the store in the background.
    pub async fn run_sweeper(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let lapsed = self.registry.sweep(self.registry.now_ms());
            if lapsed.is_empty() {
                continue;
            }
            self.report_expired(&lapsed);
            let ids = lapsed.iter().map(|i| i.id).collect();
            let registrar = self.clone();
            tokio::spawn(async move {
                // If this fails the rows stay, and a restart would give those
                // instances one more TTL window before they expire again.
                if let Err(error) = registrar.store.write(Write::DeleteMany(ids)).await {
                    registrar.metrics.store_write_failures.inc();
                    tracing::warn!(%error, "could not delete expired instances from the store");
                }
            });
        }
    }
}
