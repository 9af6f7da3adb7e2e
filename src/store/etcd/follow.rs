//! Reading the registry out of etcd: the whole of it at one revision
//! ([`load`], paginated), then every change after it from a watch
//! ([`Follower`]), cut into the [`Committed`] changes the registrar
//! applies. A watch that breaks is opened again from the revision after
//! the last one seen, on the next endpoint that answers; one whose
//! revision was compacted away gives way to a full reload.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::client::{EtcdError, Retry};
use super::keys::{BeatValue, CheckValue, HealthValue, InstanceValue, Key, TombstoneValue};
use super::state::{Incarnation, Leader, Shared};
use super::watch::Watch;
use super::wire::{Event, EventType, KeyValue, RangeRequest, RangeResponse, prefix_end};
use crate::service::Health;
use crate::store::record::{
    Committed, Follow, Removal, StoredInstance, Verdict, parse_registration,
};

/// Keys per page of a full read. etcd 3.4 counts every key left in the
/// range for each page, so small pages cost more in all (100 000
/// registrations: 1.3 s in pages of 2 000, 0.8 s in pages of 10 000);
/// 10 000 registrations are about 3 MB, read in about 0.1 s.
const PAGE: i64 = 10_000;
/// The longest wait between two tries to open the watch.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The registry as etcd held it at one revision.
pub(crate) struct Snapshot {
    pub revision: i64,
    pub instances: Vec<StoredInstance>,
}

/// Reads every key under the prefix at one revision (pages of [`PAGE`]
/// keys, the first one fixing the revision), records what the store's
/// parts need (registrations' keys, live nodes, the leader) and returns
/// the registrations, with their reported health and check verdicts.
pub(crate) async fn load(shared: &Shared) -> Result<(Snapshot, Decoder), EtcdError> {
    let keys = &shared.keys;
    let mut revision = 0;
    // The few keys first, so that each page of registrations is decoded
    // whole as it arrives, while the next one is read.
    let healths = range_all(shared, &keys.healths(), &mut revision).await?;
    let checks = range_all(shared, &keys.checks(), &mut revision).await?;
    let nodes = range_all(shared, &keys.nodes(), &mut revision).await?;
    let leader = range_all(shared, &keys.leader(), &mut revision).await?;

    let mut health: HashMap<Uuid, Health> = HashMap::new();
    for kv in &healths {
        if let (Some(Key::Health(id)), Ok(value)) = (
            keys.parse(kv.key.as_slice()),
            serde_json::from_slice::<HealthValue>(kv.value.as_slice()),
        ) {
            health.insert(id, value.health);
        }
    }
    let mut verdicts: HashMap<Uuid, Verdict> = HashMap::new();
    for kv in &checks {
        if let (Some(Key::Check(id)), Ok(value)) = (
            keys.parse(kv.key.as_slice()),
            serde_json::from_slice::<CheckValue>(kv.value.as_slice()),
        ) {
            verdicts.insert(
                id,
                Verdict {
                    health: value.health,
                    output: value.output,
                },
            );
        }
    }
    let mut decoder = Decoder::default();
    // Which key holds each id, kept aside until every page is in: on a
    // reload the node is live, and removals and expiries look ids up
    // meanwhile (a read that fails leaves the old map whole).
    let mut incarnations = HashMap::new();
    let mut loaded = Vec::new();
    range_pages(shared, &keys.instances(), &mut revision, |page| {
        loaded.reserve(page.len());
        for kv in &page {
            let Some((mut instance, incarnation, _)) = decoder.instance(kv) else {
                continue;
            };
            incarnations.insert(instance.id, incarnation);
            instance.health = health.get(&instance.id).copied().unwrap_or(instance.health);
            instance.check = verdicts.remove(&instance.id);
            loaded.push(instance);
        }
    })
    .await?;
    shared
        .incarnations
        .retain(|id, _| incarnations.contains_key(id));
    for (id, incarnation) in incarnations {
        shared.incarnations.insert(id, incarnation);
    }
    let live: BTreeSet<String> = nodes
        .iter()
        .filter_map(|kv| match keys.parse(kv.key.as_slice()) {
            Some(Key::Node(node)) => Some(node),
            _ => None,
        })
        .collect();
    *shared.nodes.write().unwrap_or_else(|e| e.into_inner()) = live;
    *shared.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader.first().map(leader_of);
    Ok((
        Snapshot {
            revision,
            instances: loaded,
        },
        decoder,
    ))
}

/// Every key under `prefix` (or `prefix` itself, when nothing is under
/// it: the leader key) at `revision` (0: the latest, which this sets).
async fn range_all(
    shared: &Shared,
    prefix: &[u8],
    revision: &mut i64,
) -> Result<Vec<KeyValue>, EtcdError> {
    let mut out = Vec::new();
    range_pages(shared, prefix, revision, |page| out.extend(page)).await?;
    Ok(out)
}

/// Hands `each` every page of [`range_all`] in key order, reading the
/// next page meanwhile (on another task): etcd serves one while this
/// node decodes the last.
async fn range_pages(
    shared: &Shared,
    prefix: &[u8],
    revision: &mut i64,
    mut each: impl FnMut(Vec<KeyValue>),
) -> Result<(), EtcdError> {
    let end = if prefix.ends_with(b"/") {
        prefix_end(prefix)
    } else {
        Vec::new() // one key
    };
    let read = |from: Vec<u8>, revision: i64| {
        // From the member asked (serializable): a stale first page only
        // means the watch, which starts after its revision, has more to
        // show; later pages read the same revision.
        let request = RangeRequest {
            limit: PAGE,
            revision,
            serializable: true,
            range_end: end.clone().into(),
            ..RangeRequest::key(from)
        };
        let client = shared.client.clone();
        Reading(tokio::spawn(async move {
            client.call(&request, Retry::Always).await
        }))
    };
    let mut reading = read(prefix.to_vec(), *revision);
    loop {
        let page: RangeResponse = (&mut reading.0)
            .await
            .map_err(|e| EtcdError::BadResponse(format!("a read stopped: {e}")))??;
        if *revision == 0 {
            *revision = page.header.revision;
        }
        let next = page.kvs.last().filter(|_| page.more).map(|kv| {
            let mut key = kv.key.0.clone();
            key.push(0);
            key
        });
        let Some(next) = next else {
            each(page.kvs);
            return Ok(());
        };
        reading = read(next, *revision);
        each(page.kvs);
    }
}

/// A page being read on a task of its own, which stops when this is
/// dropped (the load failed or was given up).
struct Reading(tokio::task::JoinHandle<Result<RangeResponse, EtcdError>>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn leader_of(kv: &KeyValue) -> Leader {
    Leader {
        node: String::from_utf8_lossy(kv.value.as_slice()).into_owned(),
        create_revision: kv.create_revision,
    }
}

/// Turns watch events into changes, keeping what the events alone do not
/// say: which id each registration key holds (a delete names only the
/// key).
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    by_key: HashMap<Vec<u8>, Uuid>,
}

impl Decoder {
    /// The registration in `kv` (a put of `P/i/...`), recorded as that
    /// key's, with where it lives and the id the key held before (if
    /// another); `None` (logged) when its value does not validate.
    fn instance(&mut self, kv: &KeyValue) -> Option<(StoredInstance, Incarnation, Option<Uuid>)> {
        let parsed = serde_json::from_slice::<InstanceValue>(kv.value.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|value| {
                let spec = parse_registration(&value.registration)?;
                Ok((value, spec))
            });
        let (value, spec) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                let key = String::from_utf8_lossy(kv.key.as_slice());
                tracing::warn!(%key, %error, "skipping a registration in etcd that does not validate");
                return None;
            }
        };
        let replaced = self
            .by_key
            .insert(kv.key.0.clone(), value.id)
            .filter(|old| *old != value.id);
        let incarnation = Incarnation {
            key: kv.key.0.clone(),
            create_revision: kv.create_revision,
        };
        let instance = StoredInstance {
            id: value.id,
            spec,
            health: Health::Passing,
            registered_at_ms: value.registered_at_ms,
            check: None,
            owner: value.owner.map(std::sync::Arc::from),
        };
        Some((instance, incarnation, replaced))
    }

    /// The changes `events` (in revision order) make, each revision's
    /// events taken together: a registration's transaction writes several
    /// keys at one revision.
    pub(crate) fn decode(&mut self, shared: &Shared, events: &[Event]) -> Vec<Committed> {
        let mut changes = Vec::new();
        for revision in events.chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision) {
            self.decode_revision(shared, revision, &mut changes);
        }
        changes
    }

    /// One revision's events: removals first (with the reason their
    /// tombstones give), then registrations, then heartbeats and checks
    /// of registrations that were neither.
    fn decode_revision(&mut self, shared: &Shared, events: &[Event], changes: &mut Vec<Committed>) {
        let keys = &shared.keys;
        let mut removed: Vec<Uuid> = Vec::new();
        let mut tombstones: HashMap<Uuid, TombstoneValue> = HashMap::new();
        let mut registered: Vec<StoredInstance> = Vec::new();
        let mut beats: Vec<(Uuid, BeatValue)> = Vec::new();
        let mut healths: HashMap<Uuid, Health> = HashMap::new();
        let mut checks: Vec<(Uuid, CheckValue)> = Vec::new();
        for event in events {
            let kv = &event.kv;
            let put = event.kind == EventType::Put;
            match keys.parse(kv.key.as_slice()) {
                Some(Key::Instance) if put => {
                    if let Some((instance, incarnation, replaced)) = self.instance(kv) {
                        if let Some(old) = replaced {
                            shared.incarnations.remove(&old);
                        }
                        shared.incarnations.insert(instance.id, incarnation);
                        registered.push(instance);
                    }
                }
                Some(Key::Instance) => {
                    if let Some(id) = self.by_key.remove(kv.key.as_slice()) {
                        shared.incarnations.remove(&id);
                        removed.push(id);
                    }
                }
                Some(Key::Beat(id)) if put => {
                    beats.push((
                        id,
                        serde_json::from_slice(kv.value.as_slice()).unwrap_or_default(),
                    ));
                }
                Some(Key::Health(id)) => {
                    let health = serde_json::from_slice::<HealthValue>(kv.value.as_slice())
                        .map_or(Health::Passing, |value| value.health);
                    healths.insert(id, if put { health } else { Health::Passing });
                }
                Some(Key::Check(id)) if put => {
                    if let Ok(value) = serde_json::from_slice(kv.value.as_slice()) {
                        checks.push((id, value));
                    }
                }
                Some(Key::Tombstone(id)) if put => {
                    if let Ok(value) = serde_json::from_slice(kv.value.as_slice()) {
                        tombstones.insert(id, value);
                    }
                }
                Some(Key::Node(node)) => {
                    let mut nodes = shared.nodes.write().unwrap_or_else(|e| e.into_inner());
                    if put {
                        nodes.insert(node);
                    } else {
                        nodes.remove(&node);
                    }
                }
                Some(Key::Leader) => {
                    let leader = put.then(|| leader_of(kv));
                    let gone = leader.is_none();
                    *shared.leader.lock().unwrap_or_else(|e| e.into_inner()) = leader;
                    if gone {
                        shared.campaign.notify_one();
                    }
                }
                _ => {}
            }
        }
        let decoded = Decoded {
            removed,
            tombstones,
            registered,
            beats,
            healths,
            checks,
        };
        decoded.changes(changes);
    }
}

/// One revision's events, sorted by kind: see [`Decoder::decode`].
struct Decoded {
    removed: Vec<Uuid>,
    tombstones: HashMap<Uuid, TombstoneValue>,
    registered: Vec<StoredInstance>,
    beats: Vec<(Uuid, BeatValue)>,
    healths: HashMap<Uuid, Health>,
    checks: Vec<(Uuid, CheckValue)>,
}

impl Decoded {
    /// The changes, in the order they apply: removals (with the reason
    /// their tombstones give), registrations, then heartbeats and checks
    /// of registrations that were neither.
    fn changes(self, changes: &mut Vec<Committed>) {
        let Decoded {
            mut removed,
            tombstones,
            registered,
            beats,
            mut healths,
            checks,
        } = self;
        // A registration over a lapsed one of the same name took its key:
        // only its tombstone says it went.
        for id in tombstones.keys() {
            if !removed.contains(id) && registered.iter().all(|r| r.id != *id) {
                removed.push(*id);
            }
        }
        let mut done: HashSet<Uuid> = removed.iter().copied().collect();
        for id in removed {
            let reason = match tombstones.get(&id) {
                Some(tombstone) => tombstone
                    .reason()
                    .map_or(Removal::Expired, Removal::Deregistered),
                None => Removal::Vanished,
            };
            changes.push(Committed::Removed { id, reason });
        }
        for instance in registered {
            done.insert(instance.id);
            changes.push(Committed::Registered(Box::new(instance)));
        }
        for (id, beat) in beats {
            if !done.contains(&id) {
                let health = healths.remove(&id);
                changes.push(Committed::Beat {
                    id,
                    health,
                    output: beat.output,
                });
            }
        }
        for (id, health) in healths {
            if !done.contains(&id) {
                changes.push(Committed::Beat {
                    id,
                    health: Some(health),
                    output: None,
                });
            }
        }
        for (id, check) in checks {
            if !done.contains(&id) {
                let verdict = Verdict {
                    health: check.health,
                    output: check.output,
                };
                changes.push(Committed::Checked {
                    id,
                    verdict,
                    renew: check.renew,
                });
            }
        }
    }
}

/// Follows the prefix from one revision on, for ever: see the module.
pub(crate) struct Follower {
    shared: Arc<Shared>,
    decoder: Decoder,
    /// The revision to watch from when the watch is opened next.
    next: i64,
    watch: Option<Watch>,
    /// Failed tries to open the watch in a row.
    failures: u32,
}

impl Follower {
    pub(crate) fn new(shared: Arc<Shared>, decoder: Decoder, revision: i64) -> Follower {
        Follower {
            shared,
            decoder,
            next: revision + 1,
            watch: None,
            failures: 0,
        }
    }

    /// The next changes to apply (or everything, after a compaction);
    /// waits, opening the watch again as often as it takes.
    pub(crate) async fn next(&mut self) -> Follow {
        loop {
            let Some(watch) = &mut self.watch else {
                self.open().await;
                continue;
            };
            let response = tokio::select! {
                response = watch.next() => response,
                _ = self.shared.kick.notified() => {
                    tracing::debug!("opening the watch again, on the preferred endpoint");
                    self.watch = None;
                    continue;
                }
            };
            match response {
                Ok(response) if response.canceled && response.compact_revision > 0 => {
                    tracing::warn!(
                        from = self.next,
                        compacted = response.compact_revision,
                        "the watch cannot resume: etcd compacted its history; reading everything again"
                    );
                    self.watch = None;
                    if let Some(reload) = self.reload().await {
                        return reload;
                    }
                }
                Ok(response) if response.canceled => {
                    let reason = format!("canceled: {}", response.cancel_reason);
                    self.broken(reason);
                }
                Ok(response) => {
                    let Some(last) = response.events.last().map(|e| e.kv.mod_revision) else {
                        continue; // progress only
                    };
                    let changes = self.decoder.decode(&self.shared, &response.events);
                    self.next = last + 1;
                    return Follow::Changes {
                        revision: last,
                        changes,
                    };
                }
                Err(error) if error.is_compacted() => {
                    tracing::warn!(from = self.next, %error, "the watch cannot resume; reading everything again");
                    self.watch = None;
                    if let Some(reload) = self.reload().await {
                        return reload;
                    }
                }
                Err(error) => self.broken(error.to_string()),
            }
        }
    }

    fn broken(&mut self, reason: String) {
        if let Some(watch) = self.watch.take() {
            tracing::warn!(endpoint = %watch.endpoint(), %reason, from = self.next, "the watch broke; resuming");
        }
        self.shared.watch_state(Some(reason));
    }

    /// Opens the watch from `next`, or waits a little after failing to.
    async fn open(&mut self) {
        let prefix = self.shared.keys.prefix().to_vec();
        match Watch::open(&self.shared.client, &prefix, self.next).await {
            Ok(watch) => {
                tracing::debug!(endpoint = %watch.endpoint(), from = self.next, "watching");
                self.watch = Some(watch);
                self.failures = 0;
                self.shared.watch_state(None);
            }
            Err(error) => {
                self.shared.watch_state(Some(error.to_string()));
                self.failures += 1;
                let wait = Duration::from_millis(100 << self.failures.min(5)).min(MAX_BACKOFF);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = self.shared.kick.notified() => {}
                }
            }
        }
    }

    /// Reads everything again; `None` when that failed (the caller goes
    /// on trying to watch, from where it was, and so comes back here).
    async fn reload(&mut self) -> Option<Follow> {
        match load(&self.shared).await {
            Ok((snapshot, decoder)) => {
                self.decoder = decoder;
                self.next = snapshot.revision + 1;
                Some(Follow::Reload {
                    revision: snapshot.revision,
                    instances: snapshot.instances,
                })
            }
            Err(error) => {
                self.shared.watch_state(Some(format!("reloading: {error}")));
                tokio::time::sleep(MAX_BACKOFF / 4).await;
                None
            }
        }
    }
}
