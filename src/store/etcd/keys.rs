//! Where the registry lives in etcd: every key under one prefix (by
//! default `/signpost/<zone>/`), and what each key's value says.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `P/i/<type>/<name>` | the registration: id, registration time, the stored JSON of `store::record` | register, replace |
//! | `P/b/<id>` | the last heartbeat: when (the receiving node's clock), its output | every heartbeat (a put) |
//! | `P/h/<id>` | the health the last heartbeat reported, when not passing | a heartbeat that changes it |
//! | `P/c/<id>` | the active check's verdict, and whether it renewed the lifetime | the node that owns the check |
//! | `P/x/<id>` | why the instance was removed (on a short lease) | the removal's transaction |
//! | `P/n/<node>` | a live node (on the node's lease) | each node |
//! | `P/leader` | the node that expires instances (on its lease) | the leader |
//!
//! One key per type+name makes "the same type+name keeps its id" one
//! key's compare-and-swap. A registration's keys are created, replaced and
//! removed together in one transaction, so the watch shows each change as
//! one revision.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::DeregisterReason;
use crate::service::Health;

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: Vec<u8>,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    Instance,
    Beat(Uuid),
    Health(Uuid),
    Check(Uuid),
    Tombstone(Uuid),
    Node(String),
    Leader,
}

impl Keys {
    /// `prefix` must end with `/` (validated by the settings).
    pub(crate) fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.as_bytes().to_vec(),
        }
    }

    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    fn join(&self, parts: &[&str]) -> Vec<u8> {
        let mut key = self.prefix.clone();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                key.push(b'/');
            }
            key.extend_from_slice(part.as_bytes());
        }
        key
    }

    pub(crate) fn instance(&self, service_type: &str, name: &str) -> Vec<u8> {
        self.join(&["i", service_type, name])
    }

    /// The prefix of every registration.
    pub(crate) fn instances(&self) -> Vec<u8> {
        self.join(&["i", ""])
    }

    pub(crate) fn beat(&self, id: Uuid) -> Vec<u8> {
        self.join(&["b", &id.to_string()])
    }

    pub(crate) fn health(&self, id: Uuid) -> Vec<u8> {
        self.join(&["h", &id.to_string()])
    }

    /// The prefix of every reported health.
    pub(crate) fn healths(&self) -> Vec<u8> {
        self.join(&["h", ""])
    }

    pub(crate) fn check(&self, id: Uuid) -> Vec<u8> {
        self.join(&["c", &id.to_string()])
    }

    /// The prefix of every check verdict.
    pub(crate) fn checks(&self) -> Vec<u8> {
        self.join(&["c", ""])
    }

    pub(crate) fn tombstone(&self, id: Uuid) -> Vec<u8> {
        self.join(&["x", &id.to_string()])
    }

    pub(crate) fn node(&self, node: &str) -> Vec<u8> {
        self.join(&["n", node])
    }

    /// The prefix of every live node.
    pub(crate) fn nodes(&self) -> Vec<u8> {
        self.join(&["n", ""])
    }

    pub(crate) fn leader(&self) -> Vec<u8> {
        self.join(&["leader"])
    }

    /// What `key` is; `None` for a key under the prefix that is none of
    /// ours (left alone).
    pub(crate) fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key.strip_prefix(self.prefix.as_slice())?).ok()?;
        if rest == "leader" {
            return Some(Key::Leader);
        }
        let (kind, tail) = rest.split_once('/')?;
        let id = || Uuid::parse_str(tail).ok();
        Some(match kind {
            "i" if tail.contains('/') => Key::Instance,
            "b" => Key::Beat(id()?),
            "h" => Key::Health(id()?),
            "c" => Key::Check(id()?),
            "x" => Key::Tombstone(id()?),
            "n" if !tail.is_empty() => Key::Node(tail.to_string()),
            _ => return None,
        })
    }
}

/// `P/i/<type>/<name>`: who the registration is and what it says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstanceValue {
    pub id: Uuid,
    pub registered_at_ms: u64,
    /// The registration as `store::record::registration_json` writes it.
    pub registration: String,
    /// The name of the token that registered it (README "Who may change
    /// what"); none when the API was open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `P/b/<id>`: a heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct BeatValue {
    /// When the node that took it received it (unix ms, its clock); shown,
    /// never compared across nodes.
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// `P/h/<id>`: the reported health, when it is not passing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HealthValue {
    pub health: Health,
}

/// `P/c/<id>`: a check's verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CheckValue {
    pub health: Health,
    pub output: String,
    /// The result was not critical, so it renews the lifetime.
    pub renew: bool,
    pub at_ms: u64,
}

/// `P/x/<id>`: why an instance was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub(crate) enum TombstoneValue {
    /// `DELETE /v1/services/{id}`.
    Api,
    /// Critical for its check's `deregister_after`.
    Critical {
        critical_for_ms: u64,
        deregister_after_ms: u64,
    },
    /// Not renewed within its TTL (decided by the leader).
    Expired,
}

impl TombstoneValue {
    pub(crate) fn deregistered(reason: DeregisterReason) -> TombstoneValue {
        match reason {
            DeregisterReason::Api => TombstoneValue::Api,
            DeregisterReason::Critical {
                critical_for,
                deregister_after,
            } => TombstoneValue::Critical {
                critical_for_ms: critical_for.as_millis() as u64,
                deregister_after_ms: deregister_after.as_millis() as u64,
            },
        }
    }

    /// The deregistration reason, or `None` for an expiry.
    pub(crate) fn reason(self) -> Option<DeregisterReason> {
        match self {
            TombstoneValue::Api => Some(DeregisterReason::Api),
            TombstoneValue::Critical {
                critical_for_ms,
                deregister_after_ms,
            } => Some(DeregisterReason::Critical {
                critical_for: std::time::Duration::from_millis(critical_for_ms),
                deregister_after: std::time::Duration::from_millis(deregister_after_ms),
            }),
            TombstoneValue::Expired => None,
        }
    }
}

/// A value as compact JSON.
pub(crate) fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_laid_out_under_the_prefix_and_parse_back() {
        let keys = Keys::new("/signpost/svc.local/");
        let id = Uuid::from_u128(7);
        assert_eq!(
            keys.instance("web", "web-1"),
            b"/signpost/svc.local/i/web/web-1"
        );
        assert_eq!(
            keys.beat(id),
            b"/signpost/svc.local/b/00000000-0000-0000-0000-000000000007"
        );
        assert_eq!(
            keys.parse(&keys.instance("web", "web-1")),
            Some(Key::Instance)
        );
        assert_eq!(keys.parse(&keys.beat(id)), Some(Key::Beat(id)));
        assert_eq!(keys.parse(&keys.health(id)), Some(Key::Health(id)));
        assert_eq!(keys.parse(&keys.check(id)), Some(Key::Check(id)));
        assert_eq!(keys.parse(&keys.tombstone(id)), Some(Key::Tombstone(id)));
        assert_eq!(keys.parse(&keys.node("a-1")), Some(Key::Node("a-1".into())));
        assert_eq!(keys.parse(&keys.leader()), Some(Key::Leader));
        for other in [
            &b"/signpost/svc.local/b/nope"[..],
            b"/signpost/svc.local/q/x",
            b"/signpost/svc.local/i/web",
            b"/signpost/other/leader",
            b"/signpost/svc.local/n/",
        ] {
            assert_eq!(
                keys.parse(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
        assert!(keys.instance("web", "a").starts_with(&keys.instances()));
    }

    #[test]
    fn tombstones_carry_the_reason() {
        let reason = DeregisterReason::Critical {
            critical_for: std::time::Duration::from_secs(12),
            deregister_after: std::time::Duration::from_secs(10),
        };
        let value = TombstoneValue::deregistered(reason);
        let text = String::from_utf8(json(&value)).unwrap();
        assert_eq!(
            text,
            r#"{"reason":"critical","critical_for_ms":12000,"deregister_after_ms":10000}"#
        );
        let back: TombstoneValue = serde_json::from_str(&text).unwrap();
        assert_eq!(back.reason(), Some(reason));
        assert_eq!(
            String::from_utf8(json(&TombstoneValue::Expired)).unwrap(),
            r#"{"reason":"expired"}"#
        );
        assert_eq!(TombstoneValue::Expired.reason(), None);
    }
}
