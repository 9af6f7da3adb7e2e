//! The live event stream behind `GET /v1/events`: every [`Change`] the
//! registrar applies (`register`, `health`, `deregister`, `expire`), and a
//! type entering or leaving panic mode (`panic`), fanned out to every
//! subscriber.
//!
//! Publishing never waits: events go into a bounded broadcast ring, each one
//! rendered to JSON once, and only when someone is listening. A subscriber
//! that falls more than the ring behind loses the oldest events and is told
//! how many (`lagged`), so a slow consumer can never slow registrations,
//! checks or DNS.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::registry::now_ms;
use crate::service::{Health, Instance};

/// A change to an instance, as the registrar applied it.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Registered, or replaced in place (`replaced`; same id).
    Registered {
        instance: Arc<Instance>,
        replaced: bool,
    },
    /// The health it is served with changed (`previous` is what it was).
    HealthChanged {
        instance: Arc<Instance>,
        previous: Health,
        source: HealthSource,
    },
    /// Removed on purpose.
    Deregistered {
        instance: Arc<Instance>,
        reason: DeregisterReason,
    },
    /// Lapsed: no heartbeat or passing check within its TTL.
    Expired { instance: Arc<Instance> },
}

/// What changed an instance's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthSource {
    Heartbeat,
    Check,
}

/// Why an instance was deregistered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeregisterReason {
    /// `DELETE /v1/services/{id}`.
    Api,
    /// Its check kept it critical for `critical_for`, at least its
    /// `deregister_after`.
    Critical {
        critical_for: Duration,
        deregister_after: Duration,
    },
}

/// The `reason` of an `expire` event.
const EXPIRED: &str = "no heartbeat or passing check within its ttl";

impl Change {
    /// The instance it happened to.
    pub(crate) fn instance(&self) -> &Arc<Instance> {
        match self {
            Change::Registered { instance, .. }
            | Change::HealthChanged { instance, .. }
            | Change::Deregistered { instance, .. }
            | Change::Expired { instance } => instance,
        }
    }

    /// The event's `type`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Change::Registered { .. } => "register",
            Change::HealthChanged { .. } => "health",
            Change::Deregistered { .. } => "deregister",
            Change::Expired { .. } => "expire",
        }
    }

    /// The event's `data`: the instance (with its `check_output` when
    /// `may_write`), and what else says what happened (`replaced`,
    /// `previous` and `source`, `reason`).
    fn data(&self, may_write: bool) -> Value {
        let instance = self.instance();
        let mut data = Map::new();
        data.insert("service_id".into(), json!(instance.id));
        data.insert("service_info".into(), json!(instance.view_for(may_write)));
        match self {
            Change::Registered { replaced, .. } => {
                data.insert("replaced".into(), json!(replaced));
            }
            Change::HealthChanged {
                previous, source, ..
            } => {
                data.insert("previous".into(), json!(previous));
                data.insert("source".into(), json!(source.as_str()));
            }
            Change::Deregistered { reason, .. } => {
                data.insert("reason".into(), json!(reason.to_string()));
            }
            Change::Expired { .. } => {
                data.insert("reason".into(), json!(EXPIRED));
            }
        }
        Value::Object(data)
    }
}

impl HealthSource {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HealthSource::Heartbeat => "heartbeat",
            HealthSource::Check => "check",
        }
    }
}

impl fmt::Display for DeregisterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeregisterReason::Api => f.write_str("deregistered through the admin API"),
            DeregisterReason::Critical {
                critical_for,
                deregister_after,
            } => write!(
                f,
                "critical for {:.0} s (deregister_after {} s)",
                critical_for.as_secs_f64(),
                deregister_after.as_secs_f64()
            ),
        }
    }
}

/// One published event, already rendered.
#[derive(Debug)]
pub(crate) struct Event {
    /// The instance's type, for the `?type=` filter.
    pub service_type: String,
    /// The `data:` line: `{"type", "timestamp", "data": {...}}`.
    pub json: String,
    /// The instance's owner, which decides who sees `json` rather than
    /// `redacted` (see `access::Caller::may_write_owned`).
    pub owner: Option<Arc<str>>,
    /// `json` without the instance's `check_output`, for subscribers that
    /// may not change the instance; `None` when there is none to hide.
    pub redacted: Option<String>,
}

impl Event {
    /// The `data:` line for a subscriber that may (`may_write`) or may not
    /// change the instance.
    pub(crate) fn json_for(&self, may_write: bool) -> &str {
        match &self.redacted {
            Some(redacted) if !may_write => redacted,
            _ => &self.json,
        }
    }
}

/// A cheap-to-clone handle on the event stream.
#[derive(Clone)]
pub(crate) struct Events {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Events {
    /// A stream that keeps the last `buffer` events for slow subscribers.
    pub(crate) fn new(buffer: usize) -> Events {
        let (sender, _) = broadcast::channel(buffer.max(1));
        Events { sender }
    }

    /// Publishes `change`, which happened at `at_ms` (unix milliseconds).
    /// Costs nothing without subscribers: the JSON is only rendered for
    /// someone.
    pub(crate) fn publish(&self, change: &Change, at_ms: u64) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let instance = change.instance();
        let json = render(change.kind(), change.data(true), at_ms);
        let redacted = instance
            .check_output()
            .is_some()
            .then(|| render(change.kind(), change.data(false), at_ms));
        // An error only means every subscriber left meanwhile.
        let _ = self.sender.send(Arc::new(Event {
            service_type: instance.spec.service_type.clone(),
            json,
            owner: instance.owner.clone(),
            redacted,
        }));
    }

    /// Publishes that `service_type` entered panic mode (`entered`) or left
    /// it, with how many of its `instances` are `not_critical`.
    pub(crate) fn publish_panic(
        &self,
        service_type: &str,
        entered: bool,
        not_critical: usize,
        instances: usize,
        at_ms: u64,
    ) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let data = json!({
            "service_type": service_type,
            "panic": entered,
            "instances": instances,
            "not_critical": not_critical,
        });
        let _ = self.sender.send(Arc::new(Event {
            service_type: service_type.to_string(),
            json: render("panic", data, at_ms),
            owner: None,
            redacted: None,
        }));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Connected subscribers, for `/metrics`.
    pub(crate) fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// The `lagged` event a subscriber gets after missing `missed` events.
pub(crate) fn lagged(missed: u64) -> String {
    render("lagged", json!({ "missed": missed }), now_ms())
}

/// The `data:` line: `{"type", "timestamp", "data"}`.
fn render(kind: &str, data: Value, at_ms: u64) -> String {
    json!({
        "type": kind,
        "timestamp": at_ms as f64 / 1000.0,
        "data": data,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Host, ValidRegistration};

    /// The exact `data:` lines of every kind of change, as they were when
    /// the extras were `json!` values: clients parse these.
    #[test]
    fn every_change_renders_as_it_always_has() {
        let spec = ValidRegistration {
            name: "web-1".into(),
            service_type: "web".into(),
            host: Host::Ip("10.0.0.1".parse().unwrap()),
            port: 80,
            tags: vec!["a".into()],
            metadata: [("k".to_string(), "v".to_string())].into(),
            ttl: 30,
            priority: 0,
            weight: 1,
            locality: None,
            check: None,
        };
        let zone = [3, b's', b'v', b'c', 5, b'l', b'o', b'c', b'a', b'l', 0];
        let instance = Arc::new(Instance::new(
            uuid::Uuid::nil(),
            1,
            spec,
            &zone,
            1_000,
            2_000,
            Health::Warning,
        ));
        let cases = [
            (
                Change::Registered {
                    instance: instance.clone(),
                    replaced: false,
                },
                r#"{"data":{"replaced":false,"service_id":"00000000-0000-0000-0000-000000000000","service_info":{"expires_at":32.0,"health":"warning","host":"10.0.0.1","id":"00000000-0000-0000-0000-000000000000","last_heartbeat":2.0,"metadata":{"k":"v"},"name":"web-1","port":80,"priority":0,"registered_at":1.0,"tags":["a"],"ttl":30,"type":"web","weight":1}},"timestamp":TIMESTAMP,"type":"register"}"#,
            ),
            (
                Change::HealthChanged {
                    instance: instance.clone(),
                    previous: Health::Passing,
                    source: HealthSource::Heartbeat,
                },
                r#"{"data":{"previous":"passing","service_id":"00000000-0000-0000-0000-000000000000","service_info":{"expires_at":32.0,"health":"warning","host":"10.0.0.1","id":"00000000-0000-0000-0000-000000000000","last_heartbeat":2.0,"metadata":{"k":"v"},"name":"web-1","port":80,"priority":0,"registered_at":1.0,"tags":["a"],"ttl":30,"type":"web","weight":1},"source":"heartbeat"},"timestamp":TIMESTAMP,"type":"health"}"#,
            ),
            (
                Change::HealthChanged {
                    instance: instance.clone(),
                    previous: Health::Critical,
                    source: HealthSource::Check,
                },
                r#"{"data":{"previous":"critical","service_id":"00000000-0000-0000-0000-000000000000","service_info":{"expires_at":32.0,"health":"warning","host":"10.0.0.1","id":"00000000-0000-0000-0000-000000000000","last_heartbeat":2.0,"metadata":{"k":"v"},"name":"web-1","port":80,"priority":0,"registered_at":1.0,"tags":["a"],"ttl":30,"type":"web","weight":1},"source":"check"},"timestamp":TIMESTAMP,"type":"health"}"#,
            ),
            (
                Change::Deregistered {
                    instance: instance.clone(),
                    reason: DeregisterReason::Api,
                },
                r#"{"data":{"reason":"deregistered through the admin API","service_id":"00000000-0000-0000-0000-000000000000","service_info":{"expires_at":32.0,"health":"warning","host":"10.0.0.1","id":"00000000-0000-0000-0000-000000000000","last_heartbeat":2.0,"metadata":{"k":"v"},"name":"web-1","port":80,"priority":0,"registered_at":1.0,"tags":["a"],"ttl":30,"type":"web","weight":1}},"timestamp":TIMESTAMP,"type":"deregister"}"#,
            ),
            (
                Change::Deregistered {
                    instance: instance.clone(),
                    reason: DeregisterReason::Critical {
                        critical_for: Duration::from_millis(2500),
                        deregister_after: Duration::from_secs(2),
                    },
                },
                r#"{"data":{"reason":"critical for 2 s (deregister_after 2 s)","service_id":"00000000-0000-0000-0000-000000000000","service_info":{"expires_at":32.0,"health":"warning","host":"10.0.0.1","id":"00000000-0000-0000-0000-000000000000","last_heartbeat":2.0,"metadata":{"k":"v"},"name":"web-1","port":80,"priority":0,"registered_at":1.0,"tags":["a"],"ttl":30,"type":"web","weight":1}},"timestamp":TIMESTAMP,"type":"deregister"}"#,
            ),
            (
                Change::Expired {
                    instance: instance.clone(),
                },
                r#"{"data":{"reason":"no heartbeat or passing check within its ttl","service_id":"00000000-0000-0000-0000-000000000000","service_info":{"expires_at":32.0,"health":"warning","host":"10.0.0.1","id":"00000000-0000-0000-0000-000000000000","last_heartbeat":2.0,"metadata":{"k":"v"},"name":"web-1","port":80,"priority":0,"registered_at":1.0,"tags":["a"],"ttl":30,"type":"web","weight":1}},"timestamp":TIMESTAMP,"type":"expire"}"#,
            ),
        ];
        let events = Events::new(16);
        let mut received = events.subscribe();
        for (change, expected) in cases {
            events.publish(&change, 1_796_044_730_950);
            let event = received.try_recv().unwrap();
            assert_eq!(event.service_type, "web");
            assert_eq!(event.json, expected.replace("TIMESTAMP", "1796044730.95"));
        }
    }
}
