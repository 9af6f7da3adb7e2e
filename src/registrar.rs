//! The one place a change is applied. A registration, heartbeat or
//! deregistration from the API, an active check's result, a check's
//! `deregister_after`, the sweep's expiries and the restore at start-up all
//! come here, and each goes the same way: committed to the store when it is
//! persisted (and applied only once it is durable, so an acknowledged change
//! survives a crash and a failed write changes nothing), applied to the
//! registry, announced as a typed [`Change`] on `/v1/events`, passed to the
//! check scheduler, logged and counted. Nothing else writes the registry.
//!
//! Persisted writes of one type+name are put in order by a striped lock,
//! held from before the store write until the registry has the change, so
//! memory applies them in the order the store committed them, whatever is
//! awaited in between; two concurrent registrations of one name cannot
//! persist two different ids. Writes of different names run concurrently
//! and share the store's group commits.

mod cluster;

use std::hash::BuildHasher;
use std::sync::Arc;

use tokio::sync::{Mutex, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::access::Caller;
use crate::checks::checker::Checker;
use crate::checks::probe::Outcome;
use crate::events::{Change, DeregisterReason, Event, Events, HealthSource};
use crate::metrics::Metrics;
use crate::registry::{Registered, Registry, SWEEP_INTERVAL};
use crate::select::Steering;
use crate::service::{Health, Instance, ValidRegistration};
use crate::store::{Store, StoreError, StoredInstance, Write};

/// Which removals [`Registrar::remove`] may make.
enum Removal<'a> {
    /// One asked for through the API, by `caller`, who must be allowed.
    By(&'a Caller),
    /// The server's own, of this very instance (not a replacement since).
    IfStill(&'a Arc<Instance>),
}

/// Who owns `instance`, for a refusal's message.
fn owned_by(instance: &Instance) -> String {
    match &instance.owner {
        Some(owner) => format!("it belongs to {owner:?}"),
        None => "it was registered without a token".into(),
    }
}

/// Number of lock stripes; same-name writes share one.
const STRIPES: usize = 64;

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistrarError {
    #[error("no such service, or it has expired: register it again")]
    NotFound,
    /// The caller's token may not make this change (README "Security").
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The registry is at a [`Capacity`] limit; the message says which.
    #[error("{0}")]
    Full(String),
}

/// How big the registry may grow (`[registry]` in the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Instances registered at once.
    pub max_instances: usize,
    /// Service types at once.
    pub max_types: usize,
}

/// What [`Registrar::record_check`] did with a check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckRecorded {
    /// The health the instance is served with now (the worse of its
    /// heartbeat's and its check's).
    pub health: Health,
    /// When it was recorded, by the registry's clock (unix ms).
    pub at_ms: u64,
}

/// A cheap-to-clone handle on the write path. Reads need no owner: they go
/// to the [`Registry`] directly.
#[derive(Clone)]
pub(crate) struct Registrar {
    registry: Registry,
    store: Store,
    /// Where every change is announced (`/v1/events`).
    events: Events,
    /// The active-check scheduler, told of every instance with a check.
    checker: Checker,
    metrics: Arc<Metrics>,
    /// For telling when a type enters or leaves panic mode.
    steering: Arc<Steering>,
    /// The types in panic mode, as last announced.
    panicking: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    stripes: Arc<[Mutex<()>]>,
    hasher: std::collections::hash_map::RandomState,
    capacity: Capacity,
}

impl Registrar {
    pub(crate) fn new(
        registry: Registry,
        store: Store,
        events: Events,
        checker: Checker,
        metrics: Arc<Metrics>,
        steering: Steering,
        capacity: Capacity,
    ) -> Registrar {
        Registrar {
            registry,
            store,
            events,
            checker,
            metrics,
            steering: Arc::new(steering),
            panicking: Default::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: Default::default(),
            capacity,
        }
    }

    /// Why a registration of a new instance would not fit, if it would
    /// not. Checked under the name's stripe, not one global lock, so
    /// concurrent registrations of different names may overshoot a limit by
    /// a few: a cap on memory, not an exact count.
    fn over_capacity(&self, spec: &ValidRegistration) -> Option<String> {
        let Capacity {
            max_instances,
            max_types,
        } = self.capacity;
        if self.registry.len() >= max_instances {
            return Some(format!(
                "the registry is full: it holds its limit of {max_instances} instances \
                 (registry.max_instances); deregister some or raise the limit"
            ));
        }
        let new_type = self
            .registry
            .type_set(&spec.service_type)
            .is_none_or(|set| set.is_empty());
        if new_type && self.registry.type_count() >= max_types {
            return Some(format!(
                "the registry is full: it holds its limit of {max_types} service types \
                 (registry.max_types); register under an existing type or raise the limit"
            ));
        }
        None
    }

    /// The lock that orders persisted writes of one type+name.
    fn stripe(&self, service_type: &str, name: &str) -> &Mutex<()> {
        &self.stripes[self.hasher.hash_one((service_type, name)) as usize % STRIPES]
    }

    /// A new subscriber to the changes announced from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Connected subscribers, for `/metrics`.
    pub(crate) fn subscribers(&self) -> usize {
        self.events.subscribers()
    }

    /// Waits until every queued store write is committed; at shutdown.
    pub(crate) async fn close(&self) {
        self.store.close().await;
    }

    /// A refusal of `caller`'s change: logged (at debug: a client looping
    /// on a refused request must not fill the log) and answered 403.
    fn forbidden(&self, caller: &Caller, why: String) -> RegistrarError {
        tracing::debug!(token = caller.name(), "refused: {why}");
        RegistrarError::Forbidden(format!("token {:?} {why}", caller.name()))
    }

    fn store_failed(&self, error: StoreError) -> RegistrarError {
        self.metrics.store_write_failures.inc();
        RegistrarError::Store(error)
    }

    /// What the store said of a write: `Ok(None)` committed; `Ok(Some(..))`
    /// not confirmed but kept in the file (see [`StoreError::Kept`]), so the
    /// change is applied all the same and the error returned after; `Err`
    /// refused, nothing to apply.
    fn committed(
        &self,
        result: Result<(), StoreError>,
    ) -> Result<Option<StoreError>, RegistrarError> {
        match result {
            Ok(()) => Ok(None),
            Err(error @ StoreError::Kept(_)) => {
                self.metrics.store_write_failures.inc();
                Ok(Some(error))
            }
            Err(error) => Err(self.store_failed(error)),
        }
    }

    /// Hands the check scheduler every restored instance with a check.
    pub(crate) fn watch_restored_checks(&self) {
        for instance in self.registry.list() {
            if instance.spec.check.is_some() {
                self.checker.watch(&instance);
            }
        }
    }

    /// Registers (or replaces in place) once the store has committed it,
    /// owned by `caller`; refused when `caller` may not register the type,
    /// or may not replace the live instance of that type and name.
    pub(crate) async fn register(
        &self,
        spec: ValidRegistration,
        caller: &Caller,
    ) -> Result<Registered, RegistrarError> {
        if !caller.may_register_type(&spec.service_type) {
            return Err(self.forbidden(
                caller,
                format!("may not register type {:?}", spec.service_type),
            ));
        }
        if let Some(etcd) = self.store.shared() {
            return self.register_shared(etcd, spec, caller).await;
        }
        // Held until the registry has it: see the module's doc. Under it,
        // the instance looked at here is the one replaced.
        let _same_name = self.stripe(&spec.service_type, &spec.name).lock().await;
        self.admit(&spec, caller)?;
        let mut identity = self.registry.identity_for(&spec);
        identity.owner = caller.owner();
        let mut unconfirmed = None;
        if self.store.is_persistent() {
            let stored = StoredInstance {
                id: identity.id,
                spec: spec.clone(),
                health: Health::Passing,
                registered_at_ms: identity.registered_at_ms,
                check: None,
                owner: identity.owner.clone(),
            };
            let written = self.store.write(Write::Put(Box::new(stored))).await;
            unconfirmed = self.committed(written)?;
        }
        let registered = self.registry.register(spec, identity, Health::Passing);
        self.announce_registered(&registered);
        if let Some(error) = unconfirmed {
            return Err(RegistrarError::Store(error));
        }
        Ok(registered)
    }

    /// Whether `caller` may register `spec` now: it may replace the live
    /// instance of that name, if there is one (403 otherwise), and a new
    /// name must fit the registry's [`Capacity`] (507 otherwise). The same
    /// rule for every store.
    fn admit(&self, spec: &ValidRegistration, caller: &Caller) -> Result<(), RegistrarError> {
        match self.registry.live_named(&spec.service_type, &spec.name) {
            Some(old) if !caller.may_write(&old) => Err(self.forbidden(
                caller,
                format!(
                    "may not replace {:?} of type {:?}: {}",
                    spec.name,
                    spec.service_type,
                    owned_by(&old)
                ),
            )),
            Some(_) => Ok(()),
            None => match self.over_capacity(spec) {
                Some(full) => {
                    self.metrics.registrations_full.inc();
                    Err(RegistrarError::Full(full))
                }
                None => Ok(()),
            },
        }
    }

    /// What follows every registration applied to the registry, whichever
    /// store committed it: the instance it displaced by expiry is
    /// announced, its check watched, the registration counted and
    /// announced.
    fn announce_registered(&self, registered: &Registered) {
        if let Some(stale) = &registered.expired {
            self.expired(std::slice::from_ref(stale));
        }
        let instance = &registered.instance;
        if instance.spec.check.is_some() || !registered.created {
            self.checker.watch(instance);
        }
        if registered.created {
            self.metrics.registrations_created.inc();
        } else {
            self.metrics.registrations_replaced.inc();
        }
        self.announce(Change::Registered {
            instance: instance.clone(),
            replaced: !registered.created,
        });
    }

    /// Renews an instance and records the health it reports.
    ///
    /// A heartbeat that reports the health already recorded is a plain
    /// renewal: not persisted (a restart grants a fresh TTL window anyway,
    /// so the exact last heartbeat is not worth an fsync each), no lock, and
    /// it leaves the reported health alone, so it can never undo a change
    /// that a concurrent heartbeat has committed.
    ///
    /// One that changes it takes the type+name stripe and holds it across
    /// both the store write and the in-memory apply, so memory ends with
    /// the health the store committed last. That holds whatever is awaited
    /// between the two, not because nothing is.
    pub(crate) async fn heartbeat(
        &self,
        id: Uuid,
        health: Health,
        output: Option<String>,
        caller: &Caller,
    ) -> Result<Arc<Instance>, RegistrarError> {
        let outcome = self.beat(id, health, output, caller).await;
        match &outcome {
            Ok(_) => self.metrics.heartbeats.inc(),
            Err(RegistrarError::NotFound) => self.metrics.heartbeats_unknown.inc(),
            Err(
                RegistrarError::Store(_) | RegistrarError::Full(_) | RegistrarError::Forbidden(_),
            ) => {}
        }
        outcome
    }

    async fn beat(
        &self,
        id: Uuid,
        health: Health,
        output: Option<String>,
        caller: &Caller,
    ) -> Result<Arc<Instance>, RegistrarError> {
        let instance = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
        if !caller.may_write(&instance) {
            return Err(self.forbidden(
                caller,
                format!("may not heartbeat {id}: {}", owned_by(&instance)),
            ));
        }
        if let Some(etcd) = self.store.shared() {
            return self.beat_shared(etcd, id, health, output).await;
        }
        if instance.reported_health() != health {
            let _same_name = self
                .stripe(&instance.spec.service_type, &instance.spec.name)
                .lock()
                .await;
            // Under the stripe nothing else changes the reported health of
            // this id; look again, as another heartbeat (or a replacement,
            // which keeps the id) may have come first.
            let instance = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
            if instance.reported_health() != health {
                let written = self.store.write(Write::Health { id, health }).await;
                let unconfirmed = self.committed(written)?;
                let before = instance.health();
                let (instance, _) = self
                    .registry
                    .heartbeat(id, health, output)
                    .map_err(|_| RegistrarError::NotFound)?;
                if instance.health() != before {
                    self.announce(Change::HealthChanged {
                        instance: instance.clone(),
                        previous: before,
                        source: HealthSource::Heartbeat,
                    });
                }
                if let Some(error) = unconfirmed {
                    return Err(RegistrarError::Store(error));
                }
                return Ok(instance);
            }
        }
        self.registry
            .renew(id, output)
            .map_err(|_| RegistrarError::NotFound)
    }

    /// Removes a live instance once the store has committed its removal,
    /// if `caller` may; `reason` goes into the `deregister` event.
    pub(crate) async fn deregister(
        &self,
        id: Uuid,
        reason: DeregisterReason,
        caller: &Caller,
    ) -> Result<Arc<Instance>, RegistrarError> {
        self.remove(id, Removal::By(caller), reason).await
    }

    /// Removes `instance` (which stayed critical for its check's
    /// `deregister_after`, as `reason` says), unless it was replaced or
    /// removed meanwhile. On a store failure it is left in place (served as
    /// critical, i.e. not at all) and checked again, so a later check
    /// tries again.
    pub(crate) async fn deregister_critical(
        &self,
        instance: &Arc<Instance>,
        reason: DeregisterReason,
    ) -> Result<Arc<Instance>, RegistrarError> {
        let removed = self
            .remove(instance.id, Removal::IfStill(instance), reason)
            .await;
        if let Err(RegistrarError::Store(error)) = &removed {
            tracing::warn!(id = %instance.id, %error, "could not deregister a critical instance");
            self.checker.watch(instance);
        }
        removed
    }

    /// Removes `id` (as `removal` allows): the stripe is held from before
    /// the store write until the registry has dropped it.
    async fn remove(
        &self,
        id: Uuid,
        removal: Removal<'_>,
        reason: DeregisterReason,
    ) -> Result<Arc<Instance>, RegistrarError> {
        if let Some(etcd) = self.store.shared() {
            return self.remove_shared(etcd, id, removal, reason).await;
        }
        let instance = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
        let _same_name = self
            .stripe(&instance.spec.service_type, &instance.spec.name)
            .lock()
            .await;
        let current = self.registry.get(id).ok_or(RegistrarError::NotFound)?;
        match removal {
            Removal::IfStill(expected) if !Arc::ptr_eq(expected, &current) => {
                return Err(RegistrarError::NotFound);
            }
            Removal::By(caller) if !caller.may_write(&current) => {
                return Err(self.forbidden(
                    caller,
                    format!("may not deregister {id}: {}", owned_by(&current)),
                ));
            }
            _ => {}
        }
        let written = self.store.write(Write::Delete(id)).await;
        let unconfirmed = self.committed(written)?;
        let removed = self
            .registry
            .deregister(id)
            .ok_or(RegistrarError::NotFound)?;
        self.checker.forget(id);
        match reason {
            DeregisterReason::Api => self.metrics.deregistrations.inc(),
            DeregisterReason::Critical { .. } => self.metrics.deregistered_critical.inc(),
        }
        self.announce(Change::Deregistered {
            instance: removed.clone(),
            reason,
        });
        if let Some(error) = unconfirmed {
            return Err(RegistrarError::Store(error));
        }
        Ok(removed)
    }

    /// Applies one active check's result to `instance`: the scheduler's
    /// `verdict` (see `checks::thresholds`) and what the probe saw; a
    /// result that was not critical renews the lifetime. Not persisted (a
    /// verdict is re-established within one interval). Returns `None`, and
    /// changes nothing, when `instance` is no longer the registered one
    /// (expired, deregistered or replaced): then stop checking it.
    pub(crate) fn record_check(
        &self,
        instance: &Arc<Instance>,
        verdict: Health,
        outcome: Outcome,
    ) -> Option<CheckRecorded> {
        let current = self.registry.get(instance.id);
        if !current.is_some_and(|current| Arc::ptr_eq(&current, instance)) {
            return None;
        }
        self.metrics.checks_run.inc();
        if let Some(kind) = outcome.failure {
            self.metrics.count_check_failure(kind);
        }
        let before = instance.health();
        let renew = outcome.health != Health::Critical;
        if let Some(etcd) = self.store.shared() {
            let output = outcome.output.clone();
            self.publish_check(etcd, instance.id, verdict, output, renew);
        }
        self.registry
            .record_check(instance, verdict, outcome.output, renew);
        let health = instance.health();
        if health != before {
            self.announce(Change::HealthChanged {
                instance: instance.clone(),
                previous: before,
                source: HealthSource::Check,
            });
        }
        Some(CheckRecorded {
            health,
            at_ms: self.registry.now_ms(),
        })
    }

    /// Renews `instance`'s lifetime while its check waits for a slot (see
    /// `checks::scheduler`): no result is no verdict, and an instance kept
    /// alive by its check must not expire because checks were busy. One
    /// whose check is critical is not held: a result would not renew it
    /// either, so a host that never answers cannot keep its instances
    /// alive by keeping its checks waiting.
    ///
    /// On a shared store the hold goes through etcd, as the check's last
    /// verdict again, renewing: the node that expires may be another one.
    /// It is sent once no more than half the TTL and a second is left (a
    /// hold runs once a second), so a backlog costs one write per waiting
    /// instance per half TTL, not one a second (every second for a TTL of
    /// 3 s or less).
    pub(crate) fn hold_for_check(&self, instance: &Arc<Instance>) {
        if instance.check_health() == Health::Critical {
            return;
        }
        let current = self.registry.get(instance.id);
        if !current.is_some_and(|current| Arc::ptr_eq(&current, instance)) {
            return;
        }
        let now = self.registry.now_ms();
        let Some(etcd) = self.store.shared() else {
            instance.renew(now);
            return;
        };
        let ttl_ms = u64::from(instance.spec.ttl) * 1000;
        if instance.expires_at_ms().saturating_sub(now) <= ttl_ms / 2 + 1000 {
            let output = instance
                .check_output()
                .unwrap_or_else(|| "waiting for a check slot".into());
            self.publish_check(etcd, instance.id, instance.check_health(), output, true);
        }
    }

    /// Expires every instance lapsed by now: from memory at once, from the
    /// store in the background. Returns how many.
    pub(crate) fn sweep(&self) -> usize {
        if let Some(etcd) = self.store.shared() {
            return self.sweep_shared(etcd);
        }
        let lapsed = self.registry.sweep(self.registry.now_ms());
        if lapsed.is_empty() {
            return 0;
        }
        self.expired(&lapsed);
        if self.store.is_persistent() {
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
        lapsed.len()
    }

    /// Announces and counts instances whose TTL lapsed, which the registry
    /// has already removed (the sweep, or a registration of the same name).
    fn expired(&self, lapsed: &[Arc<Instance>]) {
        for instance in lapsed {
            self.checker.forget(instance.id);
            self.announce(Change::Expired {
                instance: instance.clone(),
            });
        }
        self.metrics.expired.add(lapsed.len() as u64);
    }

    /// Logs `change` and publishes it.
    fn announce(&self, change: Change) {
        let instance = change.instance();
        let (id, name, service_type) = (
            instance.id,
            &instance.spec.name,
            &instance.spec.service_type,
        );
        match &change {
            // Debug, not info: at tens of thousands of registrations a
            // second the log line cost a quarter of the throughput.
            // `/v1/events` carries every change for whoever needs the record.
            Change::Registered { replaced, .. } => tracing::debug!(
                %id, %name, %service_type,
                host = %instance.spec.host,
                port = instance.spec.port,
                owner = instance.owner.as_deref().unwrap_or("-"),
                replaced,
                "registered"
            ),
            Change::HealthChanged {
                previous, source, ..
            } => tracing::info!(
                %id, %name, %service_type,
                from = %previous,
                to = %instance.health(),
                source = source.as_str(),
                output = match source {
                    HealthSource::Heartbeat => instance.output(),
                    HealthSource::Check => instance.check_output(),
                }
                .unwrap_or_default(),
                "health changed"
            ),
            Change::Deregistered {
                reason: DeregisterReason::Api,
                ..
            } => tracing::debug!(
                %id, %name, %service_type,
                owner = instance.owner.as_deref().unwrap_or("-"),
                "deregistered"
            ),
            Change::Deregistered { reason, .. } => {
                tracing::info!(%id, %name, %service_type, %reason, "deregistered")
            }
            Change::Expired { .. } => tracing::info!(
                %id, %name, %service_type,
                "expired: no heartbeat within its ttl"
            ),
        }
        self.events.publish(&change, self.registry.now_ms());
        self.follow_panic(service_type);
    }

    /// Announces `service_type` entering or leaving panic mode, if `change`
    /// made it do so. Under one lock, so that racing changes announce each
    /// crossing once.
    fn follow_panic(&self, service_type: &str) {
        if self.steering.panic_threshold == 0 {
            return;
        }
        let set = self.registry.type_set(service_type);
        let panics = set.as_ref().is_some_and(|set| self.steering.panics(set));
        let mut panicking = self.panicking.lock().unwrap_or_else(|e| e.into_inner());
        let was = panicking.contains(service_type);
        if panics == was {
            return;
        }
        if panics {
            panicking.insert(service_type.to_string());
        } else {
            panicking.remove(service_type);
        }
        let (not_critical, instances) = set.map_or((0, 0), |s| (s.healthy().len(), s.len()));
        tracing::warn!(
            %service_type, not_critical, instances,
            threshold = self.steering.panic_threshold,
            "{}",
            if panics {
                "panic mode: answers include critical instances"
            } else {
                "panic mode over"
            }
        );
        let now = self.registry.now_ms();
        let events = &self.events;
        events.publish_panic(service_type, panics, not_critical, instances, now);
    }

    /// Calls [`Registrar::sweep`] every [`SWEEP_INTERVAL`] until `shutdown`
    /// fires.
    pub(crate) async fn run_sweeper(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.sweep();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use hickory_proto::rr::Name;
    use serde_json::Value;

    use super::*;
    use crate::checks::CheckRegistration;
    use crate::checks::checker::CheckerInbox;
    use crate::checks::probe::FailureKind;
    use crate::clock::ManualClock;
    use crate::service::Host;

    /// A registrar on a memory store and a clock the test moves, with a
    /// subscriber to its events.
    pub(crate) struct Setup {
        pub time: ManualClock,
        pub registry: Registry,
        pub registrar: Registrar,
        pub metrics: Arc<Metrics>,
        pub events: broadcast::Receiver<Arc<Event>>,
        pub _inbox: CheckerInbox,
    }

    pub(crate) fn setup() -> Setup {
        let time = ManualClock::new(1_000_000);
        let zone = Name::from_ascii("svc.local.").unwrap();
        let registry = Registry::with_clock(zone, time.clock());
        let (checker, inbox) = Checker::new();
        let metrics = Arc::new(Metrics::default());
        let events = Events::new(64);
        let subscriber = events.subscribe();
        let registrar = Registrar::new(
            registry.clone(),
            Store::Memory,
            events,
            checker,
            metrics.clone(),
            Steering::default(),
            Capacity {
                max_instances: 1_000_000,
                max_types: 10_000,
            },
        );
        Setup {
            time,
            registry,
            registrar,
            metrics,
            events: subscriber,
            _inbox: inbox,
        }
    }

    pub(crate) fn spec(name: &str, ttl: u32, check: bool) -> ValidRegistration {
        ValidRegistration {
            name: name.into(),
            service_type: "web".into(),
            host: Host::Ip("10.0.0.1".parse().unwrap()),
            port: 80,
            tags: vec![],
            metadata: Default::default(),
            ttl,
            priority: 0,
            weight: 1,
            locality: None,
            check: check.then(|| {
                let check: CheckRegistration =
                    serde_json::from_value(serde_json::json!({"tcp": "127.0.0.1:9"})).unwrap();
                check.validate().unwrap()
            }),
        }
    }

    impl Setup {
        /// The events published since the last call, parsed.
        pub(crate) fn published(&mut self) -> Vec<Value> {
            std::iter::from_fn(|| self.events.try_recv().ok())
                .map(|event| serde_json::from_str(&event.json).unwrap())
                .collect()
        }
    }

    /// `(type, extra)` of each event, where `extra` is its
    /// `replaced`/`previous`+`source`/`reason`.
    fn summary(events: &[Value]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|event| {
                let data = &event["data"];
                let extra = match event["type"].as_str().unwrap() {
                    "register" => data["replaced"].to_string(),
                    "health" => format!("{} {}", data["previous"], data["source"]),
                    _ => data["reason"].to_string(),
                };
                (event["type"].as_str().unwrap().to_string(), extra)
            })
            .collect()
    }

    pub(crate) fn outcome(health: Health) -> Outcome {
        Outcome {
            health,
            failure: (health == Health::Critical).then_some(FailureKind::Refused),
            output: format!("{health}"),
        }
    }

    #[tokio::test]
    async fn every_change_is_applied_announced_and_counted() {
        let mut s = setup();
        let a = s
            .registrar
            .register(spec("a", 30, false), &Caller::Anyone)
            .await
            .unwrap();
        assert!(a.created);
        let again = s
            .registrar
            .register(spec("a", 60, false), &Caller::Anyone)
            .await
            .unwrap();
        assert!(!again.created && again.instance.id == a.instance.id);
        let id = a.instance.id;

        s.time.advance_ms(10_000);
        let beat = s
            .registrar
            .heartbeat(id, Health::Warning, Some("slow".into()), &Caller::Anyone)
            .await
            .unwrap();
        assert_eq!(beat.health(), Health::Warning);
        assert_eq!(beat.output().as_deref(), Some("slow"));
        assert_eq!(beat.expires_at_ms(), s.time.now_ms() + 60_000);
        // The same health again is a plain renewal: no event.
        s.time.advance_ms(10_000);
        let beat = s
            .registrar
            .heartbeat(id, Health::Warning, None, &Caller::Anyone)
            .await
            .unwrap();
        assert_eq!(beat.expires_at_ms(), s.time.now_ms() + 60_000);
        assert_eq!(beat.output(), None, "each heartbeat sets its own output");
        s.registrar
            .heartbeat(id, Health::Critical, None, &Caller::Anyone)
            .await
            .unwrap();
        let healthy = s.registry.type_set("web").unwrap();
        assert!(
            healthy.healthy().is_empty(),
            "critical: out of the health index"
        );
        s.registrar
            .deregister(id, DeregisterReason::Api, &Caller::Anyone)
            .await
            .unwrap();
        assert!(s.registry.get(id).is_none() && s.registry.is_empty());
        assert!(matches!(
            s.registrar
                .deregister(id, DeregisterReason::Api, &Caller::Anyone)
                .await,
            Err(RegistrarError::NotFound)
        ));

        let events = s.published();
        assert_eq!(
            summary(&events),
            [
                ("register".into(), "false".into()),
                ("register".into(), "true".into()),
                ("health".into(), r#""passing" "heartbeat""#.into()),
                ("health".into(), r#""warning" "heartbeat""#.into()),
                (
                    "deregister".into(),
                    r#""deregistered through the admin API""#.into()
                ),
            ]
        );
        // Each is stamped with the registry's time, and shows the instance
        // as it was then.
        assert_eq!(events[0]["timestamp"], 1000.0);
        assert_eq!(events[3]["timestamp"], 1020.0);
        assert_eq!(events[3]["data"]["service_info"]["health"], "critical");
        let m = &s.metrics;
        assert_eq!(
            (
                m.registrations_created.get(),
                m.registrations_replaced.get()
            ),
            (1, 1)
        );
        assert_eq!((m.heartbeats.get(), m.deregistrations.get()), (3, 1));
    }

    #[tokio::test]
    async fn a_late_heartbeat_is_refused_and_the_sweep_expires_at_the_deadline() {
        let mut s = setup();
        let id = s
            .registrar
            .register(spec("a", 2, false), &Caller::Anyone)
            .await
            .unwrap()
            .instance
            .id;
        s.time.advance_ms(1_999);
        s.registrar
            .heartbeat(id, Health::Passing, None, &Caller::Anyone)
            .await
            .unwrap();
        s.time.advance_ms(1_999);
        assert_eq!(s.registrar.sweep(), 0, "renewed: not due");
        s.time.advance_ms(1);
        assert!(matches!(
            s.registrar
                .heartbeat(id, Health::Passing, None, &Caller::Anyone)
                .await,
            Err(RegistrarError::NotFound)
        ));
        assert!(matches!(
            s.registrar
                .heartbeat(id, Health::Critical, None, &Caller::Anyone)
                .await,
            Err(RegistrarError::NotFound)
        ));
        assert_eq!(s.metrics.heartbeats_unknown.get(), 2);
        assert_eq!(s.registrar.sweep(), 1);
        assert_eq!(s.registrar.sweep(), 0);
        assert_eq!(s.metrics.expired.get(), 1);
        let events = s.published();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(events[1]["type"], "expire");
        assert_eq!(events[1]["timestamp"], 1003.999);
    }

    #[tokio::test]
    async fn registering_over_a_lapsed_instance_reports_its_expiry() {
        let mut s = setup();
        let old = s
            .registrar
            .register(spec("a", 1, false), &Caller::Anyone)
            .await
            .unwrap();
        s.time.advance_ms(1_000);
        let new = s
            .registrar
            .register(spec("a", 1, false), &Caller::Anyone)
            .await
            .unwrap();
        assert!(new.created && new.instance.id != old.instance.id);
        let types: Vec<Value> = s.published().iter().map(|e| e["type"].clone()).collect();
        assert_eq!(types, ["register", "expire", "register"]);
        assert_eq!(s.metrics.expired.get(), 1);
        assert_eq!(s.registrar.sweep(), 0, "already reported");
    }

    #[tokio::test]
    async fn a_check_result_renews_changes_health_and_is_announced() {
        let mut s = setup();
        let instance = s
            .registrar
            .register(spec("a", 2, true), &Caller::Anyone)
            .await
            .unwrap()
            .instance;
        s.time.advance_ms(1_500);
        let recorded = s
            .registrar
            .record_check(&instance, Health::Passing, outcome(Health::Passing))
            .unwrap();
        assert_eq!(recorded.health, Health::Passing);
        assert_eq!(recorded.at_ms, s.time.now_ms());
        assert_eq!(instance.expires_at_ms(), s.time.now_ms() + 2_000, "renewed");

        s.time.advance_ms(1_500);
        let recorded = s
            .registrar
            .record_check(&instance, Health::Critical, outcome(Health::Critical))
            .unwrap();
        assert_eq!(recorded.health, Health::Critical);
        assert_eq!(instance.check_output().as_deref(), Some("critical"));
        assert_eq!(
            instance.expires_at_ms(),
            s.time.now_ms() + 500,
            "a critical result renews nothing"
        );
        assert!(!instance.is_serving(s.registry.now_ms()));
        // A failure that the thresholds absorb leaves the health alone.
        s.registrar
            .record_check(&instance, Health::Critical, outcome(Health::Critical))
            .unwrap();
        assert_eq!(s.metrics.checks_run.get(), 3);
        assert_eq!(s.metrics.check_failures(FailureKind::Refused), 2);

        // Replaced: results for the old instance are dropped.
        let replacement = s
            .registrar
            .register(spec("a", 2, true), &Caller::Anyone)
            .await
            .unwrap()
            .instance;
        assert_eq!(
            s.registrar
                .record_check(&instance, Health::Passing, outcome(Health::Passing)),
            None
        );
        assert_eq!(replacement.check_health(), Health::Passing);
        assert_eq!(s.metrics.checks_run.get(), 3);
        let summaries = summary(&s.published());
        assert_eq!(
            summaries[1],
            ("health".into(), r#""passing" "check""#.into())
        );
        assert_eq!(summaries.len(), 3, "{summaries:?}");
    }
}
