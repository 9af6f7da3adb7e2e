//! What the registrar asks of the etcd store: each change as one
//! conditional write (see [`keys`](super::keys) for the layout), queued to
//! the batching writer, and acknowledged only once etcd committed it and
//! this node's registry applied it from the watch, so the answer a client
//! gets already shows in this node's DNS.
//!
//! Every write about an existing instance compares that its heartbeat key
//! `P/b/<id>` exists: it is created with the registration and removed
//! with it, so it says "this id is registered" in one compare.

use uuid::Uuid;

use super::EtcdStore;
use super::keys::{BeatValue, CheckValue, HealthValue, InstanceValue, TombstoneValue, json};
use super::wire::{
    Compare, CompareResult, KeyValue, RangeRequest, RangeResponse, RequestOp, Target,
};
use super::writer::{Outcome, Write};
use crate::service::{Health, ValidRegistration};
use crate::store::record::{StoreError, registration_json};

/// Tries of a registration whose compare lost to a concurrent write of
/// the same name.
const REGISTER_TRIES: usize = 8;

/// Who a registration turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub id: Uuid,
    /// It replaced a live registration of the same type+name in place.
    pub replaced: bool,
}

impl EtcdStore {
    /// Registers `spec` (or replaces the registration of its type+name in
    /// place, keeping its id): etcd's compare on the name's key decides
    /// between nodes registering one name at once. `lapsed(id)`: whether
    /// this node has seen that registration's lifetime lapse (then the
    /// name gets a new id, and the old one is recorded as expired).
    pub(crate) async fn register(
        &self,
        spec: &ValidRegistration,
        owner: Option<&str>,
        now_ms: u64,
        lapsed: impl Fn(Uuid) -> bool,
    ) -> Result<Claimed, StoreError> {
        let keys = &self.shared.keys;
        let key = keys.instance(&spec.service_type, &spec.name);
        for _ in 0..REGISTER_TRIES {
            let current = self.read(&key).await?;
            let old = current.as_ref().and_then(|kv| {
                let value = serde_json::from_slice::<InstanceValue>(kv.value.as_slice()).ok()?;
                Some((kv.mod_revision, value))
            });
            let mut write = Write {
                compares: vec![Compare::new(
                    key.clone(),
                    Target::Mod,
                    CompareResult::Equal,
                    current.as_ref().map_or(0, |kv| kv.mod_revision),
                )],
                ops: Vec::new(),
            };
            let claimed = match old {
                Some((_, old)) if !lapsed(old.id) => Claimed {
                    id: old.id,
                    replaced: true,
                },
                Some((_, old)) => {
                    let lease = self.tombstone_lease().await?;
                    write.ops.extend(self.removal_ops(old.id, None));
                    let tombstone = json(&TombstoneValue::Expired);
                    write
                        .ops
                        .push(RequestOp::put(keys.tombstone(old.id), tombstone, lease));
                    Claimed {
                        id: Uuid::new_v4(),
                        replaced: false,
                    }
                }
                None => Claimed {
                    id: Uuid::new_v4(),
                    replaced: false,
                },
            };
            let registered_at_ms = match &current {
                Some(kv) if claimed.replaced => {
                    serde_json::from_slice::<InstanceValue>(kv.value.as_slice())
                        .map_or(now_ms, |v| v.registered_at_ms)
                }
                _ => now_ms,
            };
            let value = InstanceValue {
                id: claimed.id,
                registered_at_ms,
                registration: registration_json(spec),
                owner: owner.map(str::to_string),
            };
            let beat = BeatValue {
                at_ms: now_ms,
                output: None,
            };
            write.ops.push(RequestOp::put(key.clone(), json(&value), 0));
            write
                .ops
                .push(RequestOp::put(keys.beat(claimed.id), json(&beat), 0));
            write.ops.push(RequestOp::delete(keys.health(claimed.id)));
            write.ops.push(RequestOp::delete(keys.check(claimed.id)));
            if let Some(revision) = self.commit(write).await? {
                self.applied(revision).await?;
                return Ok(claimed);
            }
        }
        Err(self.unavailable("too many concurrent registrations of this name"))
    }

    /// A heartbeat: renews `id` on every node, with `health` when it
    /// changes the reported health. `Ok(false)`: no such registration.
    pub(crate) async fn heartbeat(
        &self,
        id: Uuid,
        health: Option<Health>,
        output: Option<String>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let keys = &self.shared.keys;
        let beat = BeatValue {
            at_ms: now_ms,
            output,
        };
        let mut ops = vec![RequestOp::put(keys.beat(id), json(&beat), 0)];
        match health {
            Some(Health::Passing) => ops.push(RequestOp::delete(keys.health(id))),
            Some(health) => ops.push(RequestOp::put(
                keys.health(id),
                json(&HealthValue { health }),
                0,
            )),
            None => {}
        }
        self.conditional(id, ops).await
    }

    /// Records an active check's verdict for every node; `renew` when the
    /// result was not critical.
    pub(crate) async fn check(
        &self,
        id: Uuid,
        health: Health,
        output: String,
        renew: bool,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let value = CheckValue {
            health,
            output,
            renew,
            at_ms: now_ms,
        };
        let ops = vec![RequestOp::put(self.shared.keys.check(id), json(&value), 0)];
        self.conditional(id, ops).await
    }

    /// Removes `id` for `reason`. `Ok(false)`: no such registration.
    pub(crate) async fn remove(
        &self,
        id: Uuid,
        reason: TombstoneValue,
    ) -> Result<bool, StoreError> {
        let Some(key) = self.shared.incarnations.get(&id).map(|i| i.key.clone()) else {
            return Ok(false);
        };
        let lease = self.tombstone_lease().await?;
        let mut ops = self.removal_ops(id, Some(key));
        ops.push(RequestOp::put(
            self.shared.keys.tombstone(id),
            json(&reason),
            lease,
        ));
        self.conditional(id, ops).await
    }

    /// Expires `id`, which this node (the leader) saw lapse having applied
    /// every revision up to `seen`: refused when a heartbeat or a check
    /// renewed it after `seen`, or when this node no longer leads.
    /// `Ok(false)`: refused (or already gone).
    pub(crate) async fn expire(&self, id: Uuid, seen: i64) -> Result<bool, StoreError> {
        let Some(leader_revision) = self.shared.leadership() else {
            return Ok(false);
        };
        let Some(key) = self.shared.incarnations.get(&id).map(|i| i.key.clone()) else {
            return Ok(false);
        };
        let keys = &self.shared.keys;
        let lease = self.tombstone_lease().await?;
        let mut ops = self.removal_ops(id, Some(key));
        ops.push(RequestOp::put(
            keys.tombstone(id),
            json(&TombstoneValue::Expired),
            lease,
        ));
        let write = Write {
            compares: vec![
                Compare::new(keys.beat(id), Target::Version, CompareResult::Greater, 0),
                Compare::new(keys.beat(id), Target::Mod, CompareResult::Less, seen + 1),
                Compare::new(keys.check(id), Target::Mod, CompareResult::Less, seen + 1),
                Compare::new(
                    keys.leader(),
                    Target::Create,
                    CompareResult::Equal,
                    leader_revision,
                ),
            ],
            ops,
        };
        // Not waited for: the sweep goes on, and the watch applies it.
        Ok(self.commit(write).await?.is_some())
    }

    /// The last revision this node's registry applied.
    pub(crate) fn applied_revision(&self) -> i64 {
        self.shared.applied()
    }

    /// The operations that remove every key of `id` (and its name's key).
    fn removal_ops(&self, id: Uuid, key: Option<Vec<u8>>) -> Vec<RequestOp> {
        let keys = &self.shared.keys;
        let mut ops: Vec<RequestOp> = key.into_iter().map(RequestOp::delete).collect();
        ops.push(RequestOp::delete(keys.beat(id)));
        ops.push(RequestOp::delete(keys.health(id)));
        ops.push(RequestOp::delete(keys.check(id)));
        ops
    }

    /// `ops` if `id` is registered; waits until this node applied them.
    async fn conditional(&self, id: Uuid, ops: Vec<RequestOp>) -> Result<bool, StoreError> {
        let beat = self.shared.keys.beat(id);
        let write = Write {
            compares: vec![Compare::new(
                beat,
                Target::Version,
                CompareResult::Greater,
                0,
            )],
            ops,
        };
        match self.commit(write).await? {
            Some(revision) => {
                self.applied(revision).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Queues `write`; the revision it was committed at, or `None` when a
    /// compare did not hold.
    async fn commit(&self, write: Write) -> Result<Option<i64>, StoreError> {
        let outcome = tokio::time::timeout(
            self.shared.client.request_timeout(),
            self.shared.batcher.write(write),
        )
        .await
        .map_err(|_| {
            self.unavailable(format!(
                "no commit within {:?}",
                self.shared.client.request_timeout()
            ))
        })?;
        match outcome.map_err(|e| self.unavailable(e))? {
            Outcome::Committed(revision) => Ok(Some(revision)),
            Outcome::Refused => Ok(None),
        }
    }

    /// Waits until the registry applied `revision` (from the watch).
    async fn applied(&self, revision: i64) -> Result<(), StoreError> {
        let limit = self.shared.client.request_timeout();
        if self.shared.wait_applied(revision, limit).await {
            Ok(())
        } else {
            Err(self.unavailable(format!(
                "committed at revision {revision}, but the watch did not show it within {limit:?}"
            )))
        }
    }

    /// One key, as the member asked holds it (perhaps a little stale: the
    /// write that follows compares the key's revision, so a stale read
    /// only costs a second try).
    async fn read(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let request = RangeRequest {
            serializable: true,
            ..RangeRequest::key(key.to_vec())
        };
        let response: RangeResponse = self
            .shared
            .client
            .call(&request, super::client::Retry::Always)
            .await
            .map_err(|e| self.unavailable(e))?;
        Ok(response.kvs.into_iter().next())
    }

    async fn tombstone_lease(&self) -> Result<i64, StoreError> {
        self.shared
            .tombstone_lease()
            .await
            .map_err(|e| self.unavailable(e))
    }
}
