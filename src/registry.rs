//! The registry: every registered instance, indexed for the admin API (by id)
//! and for DNS (by type, as a snapshot that never changes under a reader).
//!
//! It does no I/O. Reads never wait on writers for long: the DNS path takes a
//! `DashMap` shard lock just long enough to clone an `Arc<TypeSet>`, then works
//! on that snapshot. Writers (register, deregister, expiry) are serialised by
//! one mutex and change the snapshot of the one type they touch: in place
//! when no reader holds it, on a copy when one does.
//! Heartbeats change only an instance's atomics and take no registry lock,
//! except one that takes it to or from critical (the health index).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dashmap::DashMap;
use hickory_proto::rr::Name;
use uuid::Uuid;

use crate::clock::{Clock, system_now_ms};
use crate::service::{Family, Health, Host, Instance, ValidRegistration};

/// How often lapsed instances are removed.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// The system's time as unix milliseconds (see [`system_now_ms`]).
///
/// What decides lifetimes is the registry's own clock,
/// [`Registry::now_ms`], which is this one unless the registry was built
/// [`with_clock`](Registry::with_clock); this stays for code that has no
/// registry at hand.
pub fn now_ms() -> u64 {
    system_now_ms()
}

/// Chunks are split when they grow past this many instances.
const CHUNK_MAX: usize = 128;

/// Every instance of one type, sorted by name, with the same instances also
/// indexed by health, by address family and by tag. What a reader holds never changes:
/// a change to a set that a reader holds edits a copy (see
/// `Registry::publish_type`).
///
/// The indexes are why an IPv6 question about a type of 200 000 IPv4-only
/// instances, or a question for a tag only one instance carries, is answered
/// without visiting every instance: a scan for a rare match cost 13 ms per
/// query there, and with `getaddrinfo` asking AAAA beside every A, a few
/// hundred queries a second would have taken the server down. The health
/// index does the same for a type whose instances are nearly all failing:
/// during an outage, questions about it must not cost the most.
#[derive(Debug, Default, Clone)]
pub struct TypeSet {
    all: Members,
    /// The instances that are not critical (their health as of the last
    /// heartbeat or check that changed it): the only ones that can serve.
    healthy: Members,
    /// The instances whose health is warning: with `healthy` and `all`,
    /// the counts by health, without a pass over the instances.
    warning: Members,
    ipv4: Members,
    ipv6: Members,
    /// The instances carrying each tag; a tag no instance carries has no entry.
    tagged: HashMap<Box<str>, Members>,
    /// The instances of each priority (critical too), lowest first: A and
    /// AAAA answers hold only the lowest priority that serves, which a
    /// sample of a large type could otherwise miss.
    by_priority: BTreeMap<u16, Members>,
    /// The instances in each locality that one is in.
    by_locality: HashMap<Box<str>, Members>,
}

impl TypeSet {
    /// A set of `instances`, which must be sorted by name without duplicates.
    fn from_sorted(instances: Vec<Arc<Instance>>) -> TypeSet {
        let mut set = TypeSet::default();
        for instance in &instances {
            set.index(instance, |members, instance| members.push(instance));
        }
        set.all = Members::from_sorted(instances);
        set
    }

    /// Number of instances, serving or not.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every instance, sorted by name.
    pub fn all(&self) -> &Members {
        &self.all
    }

    /// Every instance, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.all.iter()
    }

    /// The instance called `name` (lowercase), serving or not.
    pub fn find(&self, name: &str) -> Option<&Arc<Instance>> {
        self.all.find(name)
    }

    /// Whether any instance is serving at `now_ms`.
    pub fn any_serving(&self, now_ms: u64) -> bool {
        self.healthy.any_serving(now_ms)
    }

    /// How many instances are warning (see [`TypeSet::healthy`]).
    pub fn warning_count(&self) -> usize {
        self.warning.len()
    }

    /// The instances that are not critical: a superset of those serving.
    pub fn healthy(&self) -> &Members {
        &self.healthy
    }

    /// The instances whose host is an address of `family`.
    pub fn with_address(&self, family: Family) -> &Members {
        match family {
            Family::V4 => &self.ipv4,
            Family::V6 => &self.ipv6,
        }
    }

    fn with_address_mut(&mut self, family: Family) -> &mut Members {
        match family {
            Family::V4 => &mut self.ipv4,
            Family::V6 => &mut self.ipv6,
        }
    }

    /// The instances carrying `tag`, if any does.
    pub fn tagged(&self, tag: &str) -> Option<&Members> {
        self.tagged.get(tag)
    }

    /// The priorities the instances have, lowest first, each with its
    /// instances (critical too).
    pub fn priorities(&self) -> impl Iterator<Item = (u16, &Members)> {
        self.by_priority.iter().map(|(p, members)| (*p, members))
    }

    /// How many priorities the instances have.
    pub fn priority_count(&self) -> usize {
        self.by_priority.len()
    }

    /// The instances of `priority` (critical too), if any has it.
    pub fn of_priority(&self, priority: u16) -> Option<&Members> {
        self.by_priority.get(&priority)
    }

    /// The instances in `locality`, if any is.
    pub fn in_locality(&self, locality: &str) -> Option<&Members> {
        self.by_locality.get(locality)
    }

    /// Inserts `instance`, or replaces the one of the same name (returned).
    fn upsert(&mut self, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        let replaced = self.all.upsert(instance.clone());
        if let Some(old) = &replaced {
            self.unindex(old);
        }
        self.index(&instance, |members, instance| {
            members.upsert(instance);
        });
        replaced
    }

    /// Removes exactly `instance` (the same allocation), if present.
    fn remove(&mut self, instance: &Arc<Instance>) {
        if self.all.remove(instance) {
            self.unindex(instance);
        }
    }

    /// Whether `instance` is in this set and in the health index its
    /// health says, so `reindex_health` would change nothing.
    fn health_indexed(&self, instance: &Arc<Instance>) -> bool {
        let health = instance.health();
        !self.all.contains(instance)
            || (self.healthy.contains(instance) == (health != Health::Critical)
                && self.warning.contains(instance) == (health == Health::Warning))
    }

    /// Puts `instance` (if it is in this set) in or out of the health index
    /// as its health is now.
    fn reindex_health(&mut self, instance: &Arc<Instance>) {
        if !self.all.contains(instance) {
            return;
        }
        let health = instance.health();
        if health == Health::Critical {
            self.healthy.remove(instance);
        } else {
            self.healthy.upsert(instance.clone());
        }
        if health == Health::Warning {
            self.warning.upsert(instance.clone());
        } else {
            self.warning.remove(instance);
        }
    }

    /// Adds `instance` to the health, family and tag indexes it belongs in.
    fn index(&mut self, instance: &Arc<Instance>, add: impl Fn(&mut Members, Arc<Instance>)) {
        let health = instance.health();
        if health != Health::Critical {
            add(&mut self.healthy, instance.clone());
        }
        if health == Health::Warning {
            add(&mut self.warning, instance.clone());
        }
        if let Some(family) = instance.spec.host.family() {
            add(self.with_address_mut(family), instance.clone());
        }
        for tag in &instance.spec.tags {
            add(
                self.tagged.entry(tag.as_str().into()).or_default(),
                instance.clone(),
            );
        }
        let priority = self.by_priority.entry(instance.spec.priority);
        add(priority.or_default(), instance.clone());
        if let Some(locality) = &instance.spec.locality {
            let members = self.by_locality.entry(locality.as_str().into());
            add(members.or_default(), instance.clone());
        }
    }

    /// Takes `instance` out of the health, family and tag indexes.
    fn unindex(&mut self, instance: &Arc<Instance>) {
        self.healthy.remove(instance);
        self.warning.remove(instance);
        if let Some(family) = instance.spec.host.family() {
            self.with_address_mut(family).remove(instance);
        }
        for tag in &instance.spec.tags {
            if remove_emptied(self.tagged.get_mut(tag.as_str()), instance) {
                self.tagged.remove(tag.as_str());
            }
        }
        let priority = instance.spec.priority;
        if remove_emptied(self.by_priority.get_mut(&priority), instance) {
            self.by_priority.remove(&priority);
        }
        if let Some(locality) = instance.spec.locality.as_deref()
            && remove_emptied(self.by_locality.get_mut(locality), instance)
        {
            self.by_locality.remove(locality);
        }
    }
}

/// Takes `instance` out of `members` (an entry of a keyed index); true
/// when that emptied it, and the entry must go: an entry exists only while
/// an instance has its key.
fn remove_emptied(members: Option<&mut Members>, instance: &Arc<Instance>) -> bool {
    members.is_some_and(|members| {
        members.remove(instance);
        members.is_empty()
    })
}

/// Instances sorted by name, in sorted chunks of at most [`CHUNK_MAX`]
/// shared between copies, so a copy takes the chunk list and the one chunk
/// the change touches (about n/64 + 128 pointers), not every instance.
#[derive(Debug, Default, Clone)]
pub struct Members {
    chunks: Vec<Arc<Vec<Arc<Instance>>>>,
    /// The [`name_key`] of each chunk's first name: finding a name's chunk
    /// compares these, in one array, instead of following four pointers
    /// per step to the first name's bytes (5 % of a registration's time).
    firsts: Vec<u128>,
    len: usize,
}

/// The first 16 bytes of `name`, zero-padded, as a number that orders as
/// the names do (names have no zero bytes); equal keys need the names.
fn name_key(name: &str) -> u128 {
    let mut bytes = [0u8; 16];
    let head = &name.as_bytes()[..name.len().min(16)];
    bytes[..head.len()].copy_from_slice(head);
    u128::from_be_bytes(bytes)
}

impl Members {
    /// `instances`, which must be sorted by name without duplicates.
    fn from_sorted(instances: Vec<Arc<Instance>>) -> Members {
        let mut members = Members::default();
        for instance in instances {
            members.push(instance);
        }
        members
    }

    /// Number of instances, serving or not.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every instance, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Instance>> {
        self.chunks.iter().flat_map(|chunk| chunk.iter())
    }

    /// Every instance once, starting at position `start` (in name order)
    /// and wrapping around to the first. Skips whole chunks to get there.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &Arc<Instance>> {
        let mut first = 0;
        let mut offset = start.min(self.len);
        while first < self.chunks.len() && offset >= self.chunks[first].len() {
            offset -= self.chunks[first].len();
            first += 1;
        }
        let (before, from) = self.chunks.split_at(first);
        let (head, tail) = match from.first() {
            Some(chunk) => chunk.split_at(offset),
            None => (&[][..], &[][..]),
        };
        tail.iter()
            .chain(from.iter().skip(1).flat_map(|chunk| chunk.iter()))
            .chain(before.iter().flat_map(|chunk| chunk.iter()))
            .chain(head.iter())
    }

    /// Whether any instance is serving at `now_ms`.
    pub fn any_serving(&self, now_ms: u64) -> bool {
        self.iter().any(|i| i.is_serving(now_ms))
    }

    /// The chunk that holds, or would hold, `name`: the last whose first
    /// name is not after it (or the first chunk).
    fn chunk_for(&self, name: &str) -> usize {
        let key = name_key(name);
        let before = self.firsts.partition_point(|&first| first < key);
        let same = self.firsts[before..].partition_point(|&first| first == key);
        let not_after = self.chunks[before..before + same]
            .partition_point(|chunk| chunk[0].spec.name.as_str() <= name);
        (before + not_after).saturating_sub(1)
    }

    /// Records a new first instance of chunk `at`.
    fn first_changed(&mut self, at: usize) {
        self.firsts[at] = name_key(&self.chunks[at][0].spec.name);
    }

    /// The instance called `name` (lowercase), serving or not.
    fn find(&self, name: &str) -> Option<&Arc<Instance>> {
        let chunk = self.chunks.get(self.chunk_for(name))?;
        chunk
            .binary_search_by(|i| i.spec.name.as_str().cmp(name))
            .ok()
            .map(|index| &chunk[index])
    }

    /// Whether exactly `instance` (the same allocation) is here.
    fn contains(&self, instance: &Arc<Instance>) -> bool {
        self.find(&instance.spec.name)
            .is_some_and(|found| Arc::ptr_eq(found, instance))
    }

    /// Appends `instance`, which sorts after every instance already here
    /// (building from a sorted list).
    fn push(&mut self, instance: Arc<Instance>) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK_MAX / 2 => Arc::make_mut(last).push(instance),
            _ => {
                self.firsts.push(name_key(&instance.spec.name));
                self.chunks.push(Arc::new(vec![instance]));
            }
        }
        self.len += 1;
    }

    /// Inserts `instance`, or replaces the one of the same name (returned).
    fn upsert(&mut self, instance: Arc<Instance>) -> Option<Arc<Instance>> {
        if self.chunks.is_empty() {
            self.push(instance);
            return None;
        }
        let at = self.chunk_for(&instance.spec.name);
        let chunk = Arc::make_mut(&mut self.chunks[at]);
        match chunk.binary_search_by(|i| i.spec.name.cmp(&instance.spec.name)) {
            Ok(index) => Some(std::mem::replace(&mut chunk[index], instance)),
            Err(index) => {
                chunk.insert(index, instance);
                self.len += 1;
                if chunk.len() > CHUNK_MAX {
                    let upper = chunk.split_off(chunk.len() / 2);
                    self.firsts.insert(at + 1, name_key(&upper[0].spec.name));
                    self.chunks.insert(at + 1, Arc::new(upper));
                }
                if index == 0 {
                    self.first_changed(at);
                }
                None
            }
        }
    }

    /// Removes exactly `instance` (the same allocation), if present; says
    /// whether it was.
    fn remove(&mut self, instance: &Arc<Instance>) -> bool {
        let at = self.chunk_for(&instance.spec.name);
        let Some(shared) = self.chunks.get_mut(at) else {
            return false;
        };
        let Ok(index) = shared.binary_search_by(|i| i.spec.name.cmp(&instance.spec.name)) else {
            return false;
        };
        if !Arc::ptr_eq(&shared[index], instance) {
            return false;
        }
        let chunk = Arc::make_mut(shared);
        chunk.remove(index);
        self.len -= 1;
        if chunk.is_empty() {
            self.chunks.remove(at);
            self.firsts.remove(at);
        } else if index == 0 {
            self.first_changed(at);
        }
        true
    }
}

/// How many types and instances there are, by health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub types: usize,
    pub instances: usize,
    /// Passing or warning: what DNS serves while unexpired.
    pub not_critical: usize,
    pub warning: usize,
}

impl Counts {
    pub fn passing(&self) -> usize {
        self.not_critical - self.warning
    }

    pub fn critical(&self) -> usize {
        self.instances - self.not_critical
    }
}

/// The result of a registration.
pub struct Registered {
    pub instance: Arc<Instance>,
    /// False when an instance of the same type and name was replaced in place.
    pub created: bool,
    /// An instance of the same type and name that had lapsed but was not yet
    /// swept, removed by this registration. The caller reports it as expired,
    /// as the sweep would have: otherwise re-registering quickly after a
    /// lapse hid the expiry.
    pub expired: Option<Arc<Instance>>,
}

/// The id and registration time a registration takes (see
/// [`Registry::identity_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: Uuid,
    pub registered_at_ms: u64,
    /// True when it replaces a live instance in place.
    pub replaces: bool,
    /// The name of the token that registers it (`None`: the API is open).
    pub owner: Option<Arc<str>>,
}

/// The instances of `sets` live (unexpired) at `now`, in order.
fn live<'a>(sets: impl Iterator<Item = &'a Arc<TypeSet>>, now: u64) -> Vec<Arc<Instance>> {
    sets.flat_map(|set| set.iter())
        .filter(|i| now < i.expires_at_ms())
        .cloned()
        .collect()
}

/// Why a heartbeat was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("no such service, or it has expired: register it again")]
    NotFound,
}

/// A cheap-to-clone handle on the shared registry.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    /// The zone apex in wire form, which every instance's SRV target ends
    /// with (built once, not per registration).
    zone_wire: Box<[u8]>,
    by_id: DashMap<Uuid, Arc<Instance>>,
    by_type: DashMap<String, Arc<TypeSet>>,
    /// The instances with each IP address, for reverse (PTR) lookups; kept
    /// with `by_id`, entry for entry.
    by_address: DashMap<IpAddr, Vec<Arc<Instance>>>,
    /// Serialises structural changes so `by_id` and `by_type` agree.
    writer: Mutex<()>,
    /// Deadlines to look at, earliest first. An entry is only a hint: when it
    /// comes due the instance's own lifetime decides (a heartbeat may have
    /// renewed it, which then re-queues it). Heartbeats never touch this.
    expiry: Mutex<BinaryHeap<Reverse<(u64, u64, Uuid)>>>,
    next_generation: AtomicU64,
    /// Bumped on every structural change; the SOA serial.
    version: AtomicU64,
    /// Instances in every type's `healthy` and `warning` indexes, kept as
    /// the indexes change (`publish_type`), so that `/v1/health` and
    /// `/metrics` count without reading every type.
    not_critical: AtomicUsize,
    warning: AtomicUsize,
    /// What every lifetime is measured by.
    clock: Clock,
}

impl Registry {
    /// An empty registry for `zone` (used to build each instance's DNS
    /// names), on the system clock.
    pub fn new(zone: Name) -> Registry {
        Registry::with_clock(zone, Clock::System)
    }

    /// An empty registry for `zone` whose lifetimes are measured by `clock`
    /// (a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn with_clock(zone: Name, clock: Clock) -> Registry {
        Registry {
            shared: Arc::new(Shared {
                zone_wire: crate::names::to_wire(&zone).into(),
                by_id: DashMap::new(),
                by_type: DashMap::new(),
                by_address: DashMap::new(),
                writer: Mutex::new(()),
                expiry: Mutex::new(BinaryHeap::new()),
                next_generation: AtomicU64::new(1),
                version: AtomicU64::new(1),
                not_critical: AtomicUsize::new(0),
                warning: AtomicUsize::new(0),
                clock,
            }),
        }
    }

    /// Now, by the registry's clock, as unix milliseconds: the time every
    /// lifetime here is decided by. Cheap (see [`Clock::now_ms`]).
    #[inline]
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        self.shared.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who a registration of `spec` is: the live instance of the same type
    /// and name, replaced in place (keeping its id and registration time),
    /// or a new instance with a fresh id. Decided before the store write, so
    /// that what is persisted and what is served carry the same id.
    /// The owner is left `None`, for the caller to set.
    pub fn identity_for(&self, spec: &ValidRegistration) -> Identity {
        match self.live_named(&spec.service_type, &spec.name) {
            Some(old) => Identity {
                id: old.id,
                registered_at_ms: old.registered_at_ms,
                replaces: true,
                owner: None,
            },
            None => Identity {
                id: Uuid::new_v4(),
                registered_at_ms: self.now_ms(),
                replaces: false,
                owner: None,
            },
        }
    }

    /// The live (unexpired) instance of `service_type` named `name`: the
    /// one a registration of that type and name would replace.
    pub fn live_named(&self, service_type: &str, name: &str) -> Option<Arc<Instance>> {
        let now = self.now_ms();
        self.shared
            .by_type
            .get(service_type)
            .and_then(|set| set.find(name).cloned())
            .filter(|old| now < old.expires_at_ms())
    }

    /// A new instance of `spec` as `identity`, its lifetime starting at
    /// `now`, with the next generation: what a registration and a restore
    /// both put in the registry.
    fn instance(
        &self,
        spec: ValidRegistration,
        identity: Identity,
        health: Health,
        now: u64,
    ) -> Arc<Instance> {
        let shared = &self.shared;
        let generation = shared.next_generation.fetch_add(1, Ordering::Relaxed);
        Arc::new(
            Instance::new(
                identity.id,
                generation,
                spec,
                &shared.zone_wire,
                identity.registered_at_ms,
                now,
                health,
            )
            .with_owner(identity.owner),
        )
    }

    /// Registers `spec` as `identity` with `health`, its lifetime starting
    /// now. Replaces whatever instance of the same type and name was there.
    pub fn register(
        &self,
        spec: ValidRegistration,
        identity: Identity,
        health: Health,
    ) -> Registered {
        let now = self.now_ms();
        let _writer = self.lock_writer();
        let created = !identity.replaces;
        let instance = self.instance(spec, identity, health, now);
        // Another instance of the same name (a lapsed one the sweep has not
        // reached yet) is dropped from the set below, and returned as expired.
        let mut expired = None;
        self.publish_type(&instance.spec.service_type, |set| {
            if let Some(stale) = set.upsert(instance.clone())
                && stale.id != instance.id
            {
                self.forget(&stale);
                if stale.kill_if_lapsed_by(now) {
                    expired = Some(stale);
                } else {
                    stale.kill_if_live(now);
                }
            }
        });
        self.remember(&instance);
        self.queue_expiry(&instance);
        self.shared.version.fetch_add(1, Ordering::Relaxed);
        Registered {
            instance,
            created,
            expired,
        }
    }

    /// Loads many instances into an empty registry at once (start-up from
    /// the store), building each type's snapshot once: registering them one
    /// by one would copy a type's snapshot per instance, quadratic in the
    /// instances of a type. Each gets a fresh lifetime starting now. Returns
    /// how many were loaded; a later duplicate of a type+name is dropped.
    pub fn restore(
        &self,
        entries: impl IntoIterator<Item = (ValidRegistration, Identity, Health)>,
    ) -> usize {
        let mut restoring = self.restoring();
        for (spec, identity, health) in entries {
            restoring.add(spec, identity, health);
        }
        restoring.finish()
    }

    /// A restore fed one instance at a time (as a store reads its rows), so
    /// that nothing but the instances themselves is held: a restore needs
    /// no more memory than running with what it restores.
    pub fn restoring(&self) -> Restoring<'_> {
        Restoring {
            registry: self,
            now: self.now_ms(),
            by_type: BTreeMap::new(),
        }
    }

    /// Renews a live instance's lifetime and sets its reported health.
    /// Returns the instance and its health before the heartbeat.
    pub fn heartbeat(
        &self,
        id: Uuid,
        health: Health,
        output: Option<String>,
    ) -> Result<(Arc<Instance>, Health), HeartbeatError> {
        let instance = self
            .shared
            .by_id
            .get(&id)
            .map(|entry| entry.value().clone())
            .ok_or(HeartbeatError::NotFound)?;
        let previous = instance
            .heartbeat(self.now_ms(), Some(health), output)
            .ok_or(HeartbeatError::NotFound)?;
        if previous != health {
            self.health_changed(&instance);
        }
        Ok((instance, previous))
    }

    /// A heartbeat that keeps the reported health as it is: renews a live
    /// instance's lifetime and records `output`, touching nothing but the
    /// instance's atomics (and its output's own lock).
    pub fn renew(&self, id: Uuid, output: Option<String>) -> Result<Arc<Instance>, HeartbeatError> {
        let instance = self
            .shared
            .by_id
            .get(&id)
            .map(|entry| entry.value().clone())
            .ok_or(HeartbeatError::NotFound)?;
        instance
            .heartbeat(self.now_ms(), None, output)
            .ok_or(HeartbeatError::NotFound)?;
        Ok(instance)
    }

    /// Records an active check's verdict on `instance` (see
    /// [`Instance::set_check_result`]), keeping the health index in step;
    /// first, when `renew` (the result was not critical), renews its
    /// lifetime from now, unless it already lapsed.
    pub fn record_check(
        &self,
        instance: &Arc<Instance>,
        verdict: Health,
        output: String,
        renew: bool,
    ) {
        if renew {
            instance.renew(self.now_ms());
        }
        let previous = instance.set_check_result(verdict, output);
        if previous != verdict {
            self.health_changed(instance);
        }
    }

    /// Puts `instance` in or out of its type's health indexes as its health
    /// is now. Called by the two changes that can change it (a heartbeat's
    /// status, a check's verdict), before the
    /// change is acknowledged or announced, so the next answer follows it.
    /// Reading the health under the writer lock makes the last of racing
    /// changes win.
    fn health_changed(&self, instance: &Arc<Instance>) {
        let service_type = instance.spec.service_type.as_str();
        let _writer = self.lock_writer();
        let indexed = self
            .type_set(service_type)
            .is_none_or(|set| set.health_indexed(instance));
        if !indexed {
            self.publish_type(service_type, |set| set.reindex_health(instance));
        }
    }

    /// Removes a live instance. Returns it, or `None` when it was unknown or
    /// had already lapsed. A lapsed one is left for the sweep, which removes
    /// it and reports it as expired (see [`Instance::kill_if_live`]).
    pub fn deregister(&self, id: Uuid) -> Option<Arc<Instance>> {
        let _writer = self.lock_writer();
        let instance = self.shared.by_id.get(&id).map(|e| e.value().clone())?;
        if !instance.kill_if_live(self.now_ms()) {
            return None;
        }
        self.remove_locked(std::slice::from_ref(&instance));
        Some(instance)
    }

    /// A live (unexpired) instance by id.
    pub fn get(&self, id: Uuid) -> Option<Arc<Instance>> {
        let instance = self.shared.by_id.get(&id).map(|e| e.value().clone())?;
        (self.now_ms() < instance.expires_at_ms()).then_some(instance)
    }

    /// Every live instance, sorted by type then name.
    pub fn list(&self) -> Vec<Arc<Instance>> {
        live(self.types().values(), self.now_ms())
    }

    /// Every live instance of one type (lowercase), sorted by name.
    pub fn list_type(&self, service_type: &str) -> Vec<Arc<Instance>> {
        live(self.type_set(service_type).iter(), self.now_ms())
    }

    /// The snapshot of one type (lowercase), if any instance of it exists.
    pub fn type_set(&self, service_type: &str) -> Option<Arc<TypeSet>> {
        self.shared
            .by_type
            .get(service_type)
            .map(|e| e.value().clone())
    }

    /// Every type with its snapshot, sorted by type.
    pub fn types(&self) -> BTreeMap<String, Arc<TypeSet>> {
        self.shared
            .by_type
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// At most `most` types that have an instance serving at `now_ms`, in
    /// no particular order (the map's). For the DNS-SD browse answer, which
    /// holds only what fits one message: listing every one of 100 000 types
    /// per query cost 200 ms.
    pub fn serving_types(&self, now_ms: u64, most: usize) -> Vec<String> {
        self.shared
            .by_type
            .iter()
            .filter(|entry| entry.value().any_serving(now_ms))
            .map(|entry| entry.key().clone())
            .take(most)
            .collect()
    }

    /// How many service types have a set (possibly just emptied).
    pub fn type_count(&self) -> usize {
        self.shared.by_type.len()
    }

    /// The counts `/v1/health` and `/metrics` report: running counts kept
    /// as the types' indexes change, so O(1), read under the writer lock
    /// so that they agree with each other. Lapsed instances count until
    /// the sweep (every 250 ms) removes them.
    pub fn counts(&self) -> Counts {
        let shared = &self.shared;
        let _writer = self.lock_writer();
        Counts {
            types: shared.by_type.len(),
            instances: shared.by_id.len(),
            not_critical: shared.not_critical.load(Ordering::Relaxed),
            warning: shared.warning.load(Ordering::Relaxed),
        }
    }

    /// Adds what one type's indexes gained or lost to the running counts.
    fn count_change(&self, before: (usize, usize), after: (usize, usize)) {
        let shared = &self.shared;
        // Wrapping arithmetic: a loss is a wrapped-around addition.
        let (not_critical, warning) = (
            after.0.wrapping_sub(before.0),
            after.1.wrapping_sub(before.1),
        );
        shared
            .not_critical
            .fetch_add(not_critical, Ordering::Relaxed);
        shared.warning.fetch_add(warning, Ordering::Relaxed);
    }

    /// Number of instances held (including lapsed ones not yet swept).
    pub fn len(&self) -> usize {
        self.shared.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shared.by_id.is_empty()
    }

    /// Changes with every registration, removal and expiry; the SOA serial.
    pub fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Relaxed)
    }

    /// Removes every instance whose lifetime lapsed before `now`. Returns the
    /// removed instances.
    pub fn sweep(&self, now: u64) -> Vec<Arc<Instance>> {
        let due: Vec<(u64, Uuid)> = {
            let mut queue = self.shared.expiry.lock().unwrap_or_else(|e| e.into_inner());
            let mut due = Vec::new();
            while let Some(Reverse((deadline, generation, id))) = queue.peek().copied() {
                if deadline > now {
                    break;
                }
                queue.pop();
                due.push((generation, id));
            }
            due
        };
        if due.is_empty() {
            return Vec::new();
        }
        let _writer = self.lock_writer();
        let mut lapsed = Vec::new();
        for (generation, id) in due {
            let Some(instance) = self.shared.by_id.get(&id).map(|e| e.value().clone()) else {
                continue;
            };
            if instance.generation != generation {
                continue; // replaced since; the new registration has its own entry
            }
            if instance.kill_if_lapsed_by(now) {
                lapsed.push(instance);
            } else {
                self.queue_expiry(&instance); // renewed by heartbeats: look again later
            }
        }
        self.remove_locked(&lapsed);
        lapsed
    }

    /// The instances whose lifetime lapsed by `now`, without removing
    /// them: for a shared store, where one node (the leader) decides each
    /// expiry through the store and every node removes the instance when
    /// the store says so. Each is looked at again `retry_ms` later, in case
    /// it is still there; a renewed one is queued at its new deadline.
    pub(crate) fn lapsed(&self, now: u64, retry_ms: u64) -> Vec<Arc<Instance>> {
        let mut queue = self.shared.expiry.lock().unwrap_or_else(|e| e.into_inner());
        let mut lapsed = Vec::new();
        let mut again = Vec::new();
        while let Some(Reverse((deadline, generation, id))) = queue.peek().copied() {
            if deadline > now {
                break;
            }
            queue.pop();
            let Some(instance) = self.shared.by_id.get(&id).map(|e| e.value().clone()) else {
                continue;
            };
            if instance.generation != generation || instance.last_heartbeat_ms() == 0 {
                continue;
            }
            if now >= instance.expires_at_ms() {
                again.push(Reverse((now + retry_ms, generation, id)));
                lapsed.push(instance);
            } else {
                again.push(Reverse((instance.expires_at_ms(), generation, id)));
            }
        }
        queue.extend(again);
        lapsed
    }

    /// Renews every instance to `now`, lapsed or not: while a shared store
    /// cannot be seen, nothing expires (fail static), and each instance
    /// has a fresh window of its TTL when the store is back.
    pub(crate) fn revive_all(&self, now: u64) {
        for entry in self.shared.by_id.iter() {
            entry.value().revive(now);
        }
    }

    /// An instance by id, lapsed or not (not removed).
    pub(crate) fn get_any(&self, id: Uuid) -> Option<Arc<Instance>> {
        let instance = self.shared.by_id.get(&id).map(|e| e.value().clone())?;
        (instance.last_heartbeat_ms() != 0).then_some(instance)
    }

    /// A heartbeat a shared store committed: renews `id` even if this node
    /// saw it lapse (the store decides), records the reported health (and
    /// keeps the health index in step) and the output. Returns the
    /// instance and its served health before.
    pub(crate) fn committed_heartbeat(
        &self,
        id: Uuid,
        health: Option<Health>,
        output: Option<String>,
    ) -> Option<(Arc<Instance>, Health)> {
        let instance = self.get_any(id)?;
        let before = instance.health();
        let reported = instance.committed_heartbeat(self.now_ms(), health, output)?;
        if health.is_some_and(|health| health != reported) {
            self.health_changed(&instance);
        }
        Some((instance, before))
    }

    /// Removes `id`, lapsed or not: a removal a shared store committed.
    pub(crate) fn remove_committed(&self, id: Uuid) -> Option<Arc<Instance>> {
        let _writer = self.lock_writer();
        let instance = self.shared.by_id.get(&id).map(|e| e.value().clone())?;
        if !instance.kill() {
            return None;
        }
        self.remove_locked(std::slice::from_ref(&instance));
        Some(instance)
    }

    fn queue_expiry(&self, instance: &Instance) {
        let mut queue = self.shared.expiry.lock().unwrap_or_else(|e| e.into_inner());
        queue.push(Reverse((
            instance.expires_at_ms(),
            instance.generation,
            instance.id,
        )));
    }

    /// Indexes `instance` by id (replacing the one with its id, if any) and
    /// by address. The caller holds the writer lock.
    fn remember(&self, instance: &Arc<Instance>) {
        if let Some(replaced) = self.shared.by_id.insert(instance.id, instance.clone()) {
            self.unindex_address(&replaced);
        }
        if let Host::Ip(ip) = instance.spec.host {
            self.shared
                .by_address
                .entry(ip)
                .or_default()
                .push(instance.clone());
        }
    }

    /// Takes `instance` out of the by-id and by-address indexes, if it is
    /// the one there. The caller holds the writer lock.
    fn forget(&self, instance: &Arc<Instance>) {
        let shared = &self.shared;
        if shared
            .by_id
            .remove_if(&instance.id, |_, held| Arc::ptr_eq(held, instance))
            .is_some()
        {
            self.unindex_address(instance);
        }
    }

    fn unindex_address(&self, instance: &Arc<Instance>) {
        if let Host::Ip(ip) = instance.spec.host
            && let dashmap::Entry::Occupied(mut entry) = self.shared.by_address.entry(ip)
        {
            entry.get_mut().retain(|held| !Arc::ptr_eq(held, instance));
            if entry.get().is_empty() {
                entry.remove();
            }
        }
    }

    /// The instances whose host is `ip`, serving or not.
    pub fn with_ip(&self, ip: IpAddr) -> Vec<Arc<Instance>> {
        self.shared
            .by_address
            .get(&ip)
            .map(|held| held.clone())
            .unwrap_or_default()
    }

    /// Removes killed instances from both indexes, rebuilding each affected
    /// type once. The caller holds the writer lock.
    fn remove_locked(&self, removed: &[Arc<Instance>]) {
        if removed.is_empty() {
            return;
        }
        let mut by_type: BTreeMap<&str, Vec<&Arc<Instance>>> = BTreeMap::new();
        for instance in removed {
            self.forget(instance);
            by_type
                .entry(instance.spec.service_type.as_str())
                .or_default()
                .push(instance);
        }
        for (service_type, gone) in by_type {
            self.publish_type(service_type, |set| {
                for instance in gone {
                    set.remove(instance);
                }
            });
        }
        self.shared.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Applies `edit` to one type's snapshot; drops the type when it
    /// becomes empty. The caller holds the writer lock, so no other change
    /// can come between reading the snapshot and publishing it.
    ///
    /// The edit happens in place, under the map's shard lock, only when no
    /// reader holds the snapshot (a burst of registrations then copies
    /// nothing). When a reader does hold it, the copy (sharing every chunk
    /// the edit does not touch) is made and edited outside the shard lock,
    /// then published, so DNS readers of the shard never wait on a copy and
    /// the reader keeps the snapshot it had.
    fn publish_type(&self, service_type: &str, edit: impl FnOnce(&mut TypeSet)) {
        let by_type = &self.shared.by_type;
        let held = match by_type.get_mut(service_type) {
            None => None,
            Some(mut published) => match Arc::get_mut(published.value_mut()) {
                Some(set) => {
                    let before = tally(set);
                    edit(set);
                    self.count_change(before, tally(set));
                    let empty = set.is_empty();
                    drop(published);
                    if empty {
                        by_type.remove(service_type);
                    }
                    return;
                }
                None => Some(published.value().clone()),
            },
        };
        let before = held.as_deref().map_or((0, 0), tally);
        let mut set = held.map(|set| TypeSet::clone(&set)).unwrap_or_default();
        edit(&mut set);
        self.count_change(before, tally(&set));
        if set.is_empty() {
            by_type.remove(service_type);
        } else {
            by_type.insert(service_type.to_string(), Arc::new(set));
        }
    }
}

/// What a type set adds to [`Counts`]: its not-critical and its warning
/// instances.
fn tally(set: &TypeSet) -> (usize, usize) {
    (set.healthy().len(), set.warning_count())
}

/// A restore in progress: see [`Registry::restoring`]. Nothing is served
/// until [`Restoring::finish`].
pub struct Restoring<'a> {
    registry: &'a Registry,
    now: u64,
    by_type: BTreeMap<String, Vec<Arc<Instance>>>,
}

impl Restoring<'_> {
    /// Adds one stored instance.
    pub fn add(&mut self, spec: ValidRegistration, identity: Identity, health: Health) {
        let instance = self.registry.instance(spec, identity, health, self.now);
        self.by_type
            .entry(instance.spec.service_type.clone())
            .or_default()
            .push(instance);
    }

    /// Serves everything added (one instance per type and name: the first
    /// added of a name wins); returns how many.
    pub fn finish(self) -> usize {
        let registry = self.registry;
        let shared = &registry.shared;
        let _writer = registry.lock_writer();
        let mut loaded = 0;
        let mut queue = shared.expiry.lock().unwrap_or_else(|e| e.into_inner());
        for (service_type, mut instances) in self.by_type {
            instances.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            instances.dedup_by(|later, earlier| later.spec.name == earlier.spec.name);
            for instance in &instances {
                registry.remember(instance);
                queue.push(Reverse((
                    instance.expires_at_ms(),
                    instance.generation,
                    instance.id,
                )));
            }
            loaded += instances.len();
            let set = TypeSet::from_sorted(instances);
            let added = tally(&set);
            let replaced = shared.by_type.insert(service_type, Arc::new(set));
            registry.count_change(replaced.as_deref().map_or((0, 0), tally), added);
        }
        shared.version.fetch_add(1, Ordering::Relaxed);
        loaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::service::{Host, ValidRegistration};

    fn spec(name: &str, ttl: u32) -> ValidRegistration {
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
            check: None,
        }
    }

    fn registry() -> Registry {
        Registry::new(Name::from_ascii("svc.local.").unwrap())
    }

    fn register(registry: &Registry, spec: ValidRegistration) -> Registered {
        let identity = registry.identity_for(&spec);
        registry.register(spec, identity, Health::Passing)
    }

    /// The running counts equal a count of every type's indexes, through
    /// registrations, replacements, health changes (snapshots held by a
    /// reader or not), deregistrations, expiry and a restore.
    #[test]
    fn counts_kept_as_counters_match_a_full_count() {
        let full_count = |registry: &Registry| {
            let mut counts = Counts::default();
            for set in registry.types().values() {
                counts.types += 1;
                counts.instances += set.len();
                counts.not_critical += set.healthy().len();
                counts.warning += set.warning_count();
            }
            counts
        };
        let registry = registry();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut held = Vec::new();
        for step in 0..2_000 {
            let mut spec = spec(&format!("i{}", rng.u8(..40)), rng.u32(1..4));
            spec.service_type = format!("t{}", rng.u8(..5));
            match rng.u8(..10) {
                0..=4 => drop(register(&registry, spec)),
                5..=7 => {
                    if let Some(instance) = registry
                        .list()
                        .get(rng.usize(..40.min(registry.len().max(1))))
                    {
                        let health =
                            [Health::Passing, Health::Warning, Health::Critical][rng.usize(..3)];
                        let _ = registry.heartbeat(instance.id, health, None);
                    }
                }
                8 => {
                    if let Some(instance) = registry.list().first() {
                        registry.deregister(instance.id);
                    }
                }
                _ => drop(registry.sweep(registry.now_ms() + 2_500)),
            }
            // A reader holding snapshots makes the next edits copy.
            if step % 7 == 0 {
                held = registry.types().into_values().collect();
            }
            assert_eq!(registry.counts(), full_count(&registry), "step {step}");
        }
        drop(held);
        let restored = Registry::new(Name::from_ascii("svc.local.").unwrap());
        let entries: Vec<_> = registry
            .list()
            .into_iter()
            .map(|i| (i.spec.clone(), registry.identity_for(&i.spec), i.health()))
            .collect();
        restored.restore(entries);
        assert_eq!(restored.counts(), full_count(&restored));
        assert_eq!(restored.counts(), registry.counts());
    }

    #[test]
    fn replace_in_place_keeps_id() {
        let registry = registry();
        let first = register(&registry, spec("a", 30));
        let second = register(&registry, spec("a", 60));
        assert!(first.created);
        assert!(!second.created);
        assert_eq!(first.instance.id, second.instance.id);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.type_set("web").unwrap().len(), 1);
        assert_eq!(
            registry
                .type_set("web")
                .unwrap()
                .find("a")
                .unwrap()
                .spec
                .ttl,
            60
        );
    }

    #[test]
    fn sweep_removes_only_lapsed() {
        let registry = registry();
        let short = register(&registry, spec("a", 1)).instance;
        register(&registry, spec("b", 30));
        let removed = registry.sweep(registry.now_ms() + 1500);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].id, short.id);
        assert!(registry.get(short.id).is_none());
        assert_eq!(registry.type_set("web").unwrap().len(), 1);
        assert_eq!(
            registry
                .heartbeat(short.id, Health::Passing, None)
                .unwrap_err(),
            HeartbeatError::NotFound
        );
    }

    #[test]
    fn restore_loads_many_at_once() {
        let registry = registry();
        let entries: Vec<_> = (0..1000)
            .map(|n| {
                let identity = Identity {
                    id: Uuid::new_v4(),
                    registered_at_ms: 1,
                    replaces: false,
                    owner: None,
                };
                (spec(&format!("i{n:04}"), 30), identity, Health::Warning)
            })
            .collect();
        assert_eq!(registry.restore(entries), 1000);
        let set = registry.type_set("web").unwrap();
        assert_eq!(set.len(), 1000);
        let names: Vec<&str> = set.iter().map(|i| i.spec.name.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        let found = set.find("i0500").unwrap();
        assert_eq!(found.health(), Health::Warning);
        assert_eq!(registry.get(found.id).unwrap().registered_at_ms, 1);
        assert!(found.is_serving(registry.now_ms()));
    }

    /// Names of a snapshot, in order.
    fn names(set: &TypeSet) -> Vec<String> {
        set.iter().map(|i| i.spec.name.clone()).collect()
    }

    #[test]
    fn a_snapshot_a_reader_holds_never_changes() {
        let registry = registry();
        // Enough for several chunks, so edits touch one chunk of many.
        for n in 0..1000 {
            register(&registry, spec(&format!("i{n:04}"), 60));
        }
        let held = registry.type_set("web").unwrap();
        let before = names(&held);
        let replaced = registry
            .type_set("web")
            .unwrap()
            .find("i0500")
            .unwrap()
            .clone();

        register(&registry, spec("i0500a", 60));
        register(&registry, spec("i0500", 60));
        let gone = registry.type_set("web").unwrap().find("i0001").unwrap().id;
        registry.deregister(gone).unwrap();

        assert_eq!(names(&held), before, "the held snapshot is as it was");
        assert!(Arc::ptr_eq(held.find("i0500").unwrap(), &replaced));
        let now = registry.type_set("web").unwrap();
        assert_eq!(now.len(), 1000);
        assert!(now.find("i0500a").is_some() && now.find("i0001").is_none());
        assert!(!Arc::ptr_eq(now.find("i0500").unwrap(), &replaced));

        // With no reader left, edits go in place and still keep order.
        drop((held, now));
        for n in (0..1000).step_by(7) {
            register(&registry, spec(&format!("i{n:04}b"), 60));
        }
        let after = names(&registry.type_set("web").unwrap());
        assert!(
            after.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert_eq!(after.len(), 1000 + 143);
    }

    #[test]
    fn chunked_sets_stay_sorted_through_churn() {
        let registry = registry();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut live: std::collections::BTreeMap<String, Uuid> = Default::default();
        for _ in 0..5000 {
            // Half the names share their first 16 bytes (one search key).
            let name = match rng.usize(..1500) {
                n if n % 2 == 0 => format!("n{n:04}"),
                n => format!("a-long-shared-prefix-{n:04}"),
            };
            if rng.u8(..4) == 0 {
                if let Some(id) = live.remove(&name) {
                    assert!(registry.deregister(id).is_some());
                }
            } else {
                let id = register(&registry, spec(&name, 60)).instance.id;
                live.insert(name, id);
            }
        }
        let set = registry.type_set("web").unwrap();
        let names: Vec<String> = set.iter().map(|i| i.spec.name.clone()).collect();
        assert_eq!(names, live.keys().cloned().collect::<Vec<_>>());
        assert_eq!(set.len(), live.len());
        assert_chunked(&set.all);
        for (name, id) in &live {
            assert_eq!(set.find(name).unwrap().id, *id);
        }
        assert!(set.find("n9999").is_none() && set.find("a").is_none());
        for start in [0, 1, 63, 64, 65, set.len() / 2, set.len() - 1, set.len()] {
            let mut rotated: Vec<String> = set
                .all()
                .iter_from(start)
                .map(|i| i.spec.name.clone())
                .collect();
            rotated.rotate_right(start % set.len());
            assert_eq!(rotated, names, "from {start}");
        }
    }

    /// Chunks are non-empty and at most `CHUNK_MAX`, their first keys are
    /// recorded, and the count is right.
    fn assert_chunked(members: &Members) {
        assert!(
            members
                .chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() <= CHUNK_MAX)
        );
        let firsts: Vec<u128> = members
            .chunks
            .iter()
            .map(|c| name_key(&c[0].spec.name))
            .collect();
        assert_eq!(members.firsts, firsts);
        assert_eq!(members.len, members.iter().count());
    }

    #[test]
    fn name_keys_order_as_names_do() {
        let mut rng = fastrand::Rng::with_seed(3);
        let names: Vec<String> = (0..2000)
            .map(|_| {
                let len = rng.usize(1..40);
                // Few letters, so long shared prefixes are common.
                (0..len)
                    .map(|_| rng.choice(['a', 'b', '-', '9']).unwrap())
                    .collect()
            })
            .collect();
        for pair in names.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let (ka, kb) = (name_key(a), name_key(b));
            if ka != kb {
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a} {b}");
            } else {
                assert_eq!(a.get(..16), b.get(..16), "{a} {b}");
            }
        }
    }

    /// The health, family and tag indexes hold exactly the instances of the
    /// whole set that belong in them, in name order, and no empty tag entry.
    fn assert_indexed(set: &TypeSet) {
        let names = |members: &Members| -> Vec<String> {
            members.iter().map(|i| i.spec.name.clone()).collect()
        };
        let expected = |keep: &dyn Fn(&Instance) -> bool| -> Vec<String> {
            set.iter()
                .filter(|i| keep(i))
                .map(|i| i.spec.name.clone())
                .collect()
        };
        assert_eq!(
            names(set.healthy()),
            expected(&|i| i.health() != Health::Critical)
        );
        assert_eq!(
            names(&set.warning),
            expected(&|i| i.health() == Health::Warning)
        );
        for family in [Family::V4, Family::V6] {
            let members = set.with_address(family);
            assert_eq!(
                names(members),
                expected(&|i| i.spec.host.family() == Some(family))
            );
            assert_chunked(members);
        }
        assert_chunked(&set.all);
        assert_chunked(set.healthy());
        let tags: std::collections::BTreeSet<&String> =
            set.iter().flat_map(|i| i.spec.tags.iter()).collect();
        assert_eq!(set.tagged.len(), tags.len(), "one entry per tag in use");
        for tag in tags {
            let members = set.tagged(tag).unwrap();
            assert_eq!(names(members), expected(&|i| i.has_tag(tag)), "tag {tag}");
            assert_chunked(members);
        }
        let priorities: std::collections::BTreeSet<u16> =
            set.iter().map(|i| i.spec.priority).collect();
        let indexed: Vec<u16> = set.priorities().map(|(p, _)| p).collect();
        assert_eq!(indexed, priorities.into_iter().collect::<Vec<_>>());
        for (priority, members) in set.priorities() {
            let of_priority = expected(&|i| i.spec.priority == priority);
            assert_eq!(names(members), of_priority, "priority {priority}");
            assert_chunked(members);
        }
        let localities: std::collections::BTreeSet<&str> = set
            .iter()
            .filter_map(|i| i.spec.locality.as_deref())
            .collect();
        assert_eq!(set.by_locality.len(), localities.len());
        for locality in localities {
            let members = set.in_locality(locality).unwrap();
            let in_it = expected(&|i| i.spec.locality.as_deref() == Some(locality));
            assert_eq!(names(members), in_it, "locality {locality}");
            assert_chunked(members);
        }
        // Each index finds what the whole set finds, by the same allocation.
        for instance in set.iter() {
            assert!(Arc::ptr_eq(
                set.find(&instance.spec.name).unwrap(),
                instance
            ));
        }
    }

    /// The by-address index holds exactly the instances of the by-id one
    /// whose host is an IP, under it.
    fn assert_addresses(registry: &Registry) {
        let mut expected: Vec<(IpAddr, Uuid)> = Vec::new();
        for entry in registry.shared.by_id.iter() {
            if let Host::Ip(ip) = entry.value().spec.host {
                expected.push((ip, entry.value().id));
                let held = registry.with_ip(ip);
                assert!(held.iter().any(|i| Arc::ptr_eq(i, entry.value())));
            }
        }
        let mut indexed: Vec<(IpAddr, Uuid)> = Vec::new();
        for entry in registry.shared.by_address.iter() {
            assert!(!entry.value().is_empty(), "no empty entries");
            indexed.extend(entry.value().iter().map(|i| (*entry.key(), i.id)));
        }
        expected.sort();
        indexed.sort();
        assert_eq!(indexed, expected);
    }

    #[test]
    fn health_family_tag_priority_and_locality_indexes_follow_every_change() {
        let (time, registry) = on_manual_clock();
        let mut rng = fastrand::Rng::with_seed(11);
        let mut live: std::collections::BTreeMap<String, Uuid> = Default::default();
        let hosts = ["10.0.0.1", "fd00::1", "db.example.com"];
        for round in 0..6000 {
            let name = format!("n{:03}", rng.usize(..700));
            let roll = rng.u8(..10);
            if roll < 2 {
                if let Some(id) = live.remove(&name) {
                    assert!(registry.deregister(id).is_some());
                }
            } else if roll < 5 {
                let health = *rng
                    .choice(&[Health::Passing, Health::Warning, Health::Critical])
                    .unwrap();
                if let Some(id) = live.get(&name) {
                    registry.heartbeat(*id, health, None).unwrap();
                }
            } else {
                // Replacing changes family and tags as often as not.
                let mut spec = spec(&name, if rng.bool() { 60 } else { 1 });
                spec.host = crate::service::validate_host(rng.choice(hosts).unwrap()).unwrap();
                spec.tags = ["a", "b", "c", "rare"]
                    .into_iter()
                    .filter(|tag| rng.u8(..if *tag == "rare" { 50 } else { 2 }) == 0)
                    .map(String::from)
                    .collect();
                spec.priority = *rng.choice(&[0, 0, 10, 20]).unwrap();
                spec.locality = rng
                    .choice([None, Some("eu"), Some("us")])
                    .unwrap()
                    .map(String::from);
                let id = register(&registry, spec).instance.id;
                live.insert(name, id);
            }
            if round % 1000 == 999 {
                assert_addresses(&registry);
                assert_indexed(&registry.type_set("web").unwrap());
            }
        }
        // Expiry takes instances out of the indexes too.
        time.advance_ms(1_000);
        let swept = registry.sweep(registry.now_ms());
        assert!(!swept.is_empty());
        let set = registry.type_set("web").unwrap();
        assert!(set.iter().all(|i| i.spec.ttl == 60));
        assert_indexed(&set);
        assert_addresses(&registry);
        // And a restore builds them.
        let restored = Registry::new(Name::from_ascii("svc.local.").unwrap());
        let entries: Vec<_> = set
            .iter()
            .map(|i| {
                let identity = Identity {
                    id: i.id,
                    registered_at_ms: i.registered_at_ms,
                    replaces: false,
                    owner: None,
                };
                (i.spec.clone(), identity, Health::Passing)
            })
            .collect();
        restored.restore(entries);
        assert_indexed(&restored.type_set("web").unwrap());
    }

    /// Heartbeats and check verdicts racing on threads: once they are
    /// done, the health index agrees with every instance's health, with no
    /// further call (the last change to take the writer lock wins).
    #[test]
    fn racing_health_changes_leave_the_index_right() {
        let registry = registry();
        let instances: Vec<Arc<Instance>> = (0..4)
            .map(|n| register(&registry, spec(&format!("n{n}"), 60)).instance)
            .collect();
        let healths = [Health::Passing, Health::Warning, Health::Critical];
        for round in 0..40u64 {
            std::thread::scope(|scope| {
                for thread in 0..4u64 {
                    let (registry, instances) = (&registry, &instances);
                    scope.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(round * 8 + thread);
                        for _ in 0..100 {
                            let instance = rng.choice(instances).unwrap();
                            let health = *rng.choice(&healths).unwrap();
                            if rng.bool() {
                                registry.heartbeat(instance.id, health, None).unwrap();
                            } else {
                                registry.record_check(instance, health, String::new(), false);
                            }
                        }
                    });
                }
            });
            assert_indexed(&registry.type_set("web").unwrap());
        }
    }

    /// A registry on a clock the test moves, standing at 1 000 000 ms.
    fn on_manual_clock() -> (ManualClock, Registry) {
        let time = ManualClock::new(1_000_000);
        let zone = Name::from_ascii("svc.local.").unwrap();
        (time.clone(), Registry::with_clock(zone, time.clock()))
    }

    fn ids(instances: &[Arc<Instance>]) -> Vec<Uuid> {
        instances.iter().map(|i| i.id).collect()
    }

    fn healthy_names(registry: &Registry) -> Vec<String> {
        let set = registry.type_set("web").unwrap();
        set.healthy().iter().map(|i| i.spec.name.clone()).collect()
    }

    #[test]
    fn an_instance_serves_until_exactly_its_ttl_and_never_a_ms_after() {
        let (time, registry) = on_manual_clock();
        let registered = time.now_ms();
        let a = register(&registry, spec("a", 1)).instance;
        assert_eq!(a.expires_at_ms(), registered + 1000);

        time.set_ms(registered + 999);
        let now = registry.now_ms();
        assert!(a.is_serving(now));
        assert_eq!(a.remaining_secs(now), 0, "less than a second left");
        assert!(registry.get(a.id).is_some());
        assert_eq!(ids(&registry.list()), [a.id]);
        assert_eq!(ids(&registry.list_type("web")), [a.id]);
        assert!(registry.type_set("web").unwrap().any_serving(now));
        assert!(registry.identity_for(&spec("a", 1)).replaces);

        time.set_ms(registered + 1000);
        let now = registry.now_ms();
        assert!(!a.is_serving(now));
        assert!(registry.get(a.id).is_none());
        assert!(registry.list().is_empty() && registry.list_type("web").is_empty());
        assert!(!registry.type_set("web").unwrap().any_serving(now));
        assert!(registry.serving_types(now, 10).is_empty());
        let again = registry.identity_for(&spec("a", 1));
        assert!(!again.replaces && again.id != a.id, "a lapsed name is free");
        assert!(registry.deregister(a.id).is_none(), "left for the sweep");
        assert_eq!(registry.len(), 1, "held until swept");
    }

    #[test]
    fn heartbeats_renew_from_when_they_arrive_until_one_comes_late() {
        let (time, registry) = on_manual_clock();
        let a = register(&registry, spec("a", 1)).instance;
        for _ in 0..10 {
            time.advance_ms(999);
            let (same, previous) = registry.heartbeat(a.id, Health::Passing, None).unwrap();
            assert!(Arc::ptr_eq(&same, &a));
            assert_eq!(previous, Health::Passing);
            assert_eq!(a.last_heartbeat_ms(), time.now_ms());
            assert_eq!(a.expires_at_ms(), time.now_ms() + 1000);
        }
        assert!(registry.sweep(registry.now_ms()).is_empty());
        time.advance_ms(1000);
        assert_eq!(
            registry.heartbeat(a.id, Health::Passing, None).unwrap_err(),
            HeartbeatError::NotFound,
            "a heartbeat at the deadline is too late"
        );
        assert!(!a.renew(registry.now_ms()), "and so is a check's renewal");
        assert_eq!(ids(&registry.sweep(registry.now_ms())), [a.id]);
        assert!(registry.is_empty());
    }

    #[test]
    fn the_sweep_removes_an_instance_at_its_deadline_not_before() {
        let (time, registry) = on_manual_clock();
        let start = time.now_ms();
        let a = register(&registry, spec("a", 2)).instance;
        let b = register(&registry, spec("b", 3)).instance;
        time.set_ms(start + 1999);
        assert!(registry.sweep(registry.now_ms()).is_empty());
        time.set_ms(start + 2000);
        assert_eq!(ids(&registry.sweep(registry.now_ms())), [a.id]);
        assert!(registry.get(a.id).is_none() && registry.get(b.id).is_some());

        // Renewed before its first deadline, b is queued again, not removed.
        time.set_ms(start + 2500);
        registry.heartbeat(b.id, Health::Warning, None).unwrap();
        time.set_ms(start + 3000);
        assert!(registry.sweep(registry.now_ms()).is_empty());
        time.set_ms(start + 5499);
        assert!(registry.sweep(registry.now_ms()).is_empty());
        time.set_ms(start + 5500);
        assert_eq!(ids(&registry.sweep(registry.now_ms())), [b.id]);
        assert!(registry.is_empty() && registry.type_set("web").is_none());
    }

    #[test]
    fn a_critical_heartbeat_or_check_leaves_the_health_index_until_both_recover() {
        let (_time, registry) = on_manual_clock();
        let a = register(&registry, spec("a", 30)).instance;
        let b = register(&registry, spec("b", 30)).instance;
        assert_eq!(healthy_names(&registry), ["a", "b"]);

        registry.heartbeat(a.id, Health::Critical, None).unwrap();
        assert_eq!(healthy_names(&registry), ["b"]);
        assert!(!a.is_serving(registry.now_ms()));
        assert_eq!(registry.type_set("web").unwrap().len(), 2, "still held");
        registry.heartbeat(a.id, Health::Warning, None).unwrap();
        assert_eq!(healthy_names(&registry), ["a", "b"], "warning serves");

        registry.record_check(&b, Health::Critical, "down".into(), false);
        assert_eq!(healthy_names(&registry), ["a"]);
        registry.heartbeat(b.id, Health::Passing, None).unwrap();
        assert_eq!(healthy_names(&registry), ["a"], "the check still says no");
        registry.record_check(&b, Health::Passing, "up".into(), true);
        assert_eq!(healthy_names(&registry), ["a", "b"]);
        assert_indexed(&registry.type_set("web").unwrap());
    }

    #[test]
    fn deregister_removes_everywhere() {
        let registry = registry();
        let a = register(&registry, spec("a", 30)).instance;
        assert!(registry.deregister(a.id).is_some());
        assert!(registry.deregister(a.id).is_none());
        assert!(registry.type_set("web").is_none());
        assert!(registry.is_empty());
    }
}
