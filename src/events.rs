//! The live event stream behind `GET /v1/events`: `register`, `deregister`,
//! `expire` and `health` events, fanned out to every subscriber.
//!
//! Publishing never waits: events go into a bounded broadcast ring, each one
//! rendered to JSON once. A subscriber that falls more than the ring behind
//! loses the oldest events and is told how many (`lagged`), so a slow
//! consumer can never slow registrations, checks or DNS.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::registry::now_ms;
use crate::service::Instance;

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Register,
    Deregister,
    Expire,
    Health,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Register => "register",
            EventKind::Deregister => "deregister",
            EventKind::Expire => "expire",
            EventKind::Health => "health",
        }
    }
}

/// One published event, already rendered.
#[derive(Debug)]
pub struct Event {
    /// The instance's type, for the `?type=` filter.
    pub service_type: String,
    /// The `data:` line: `{"type", "timestamp", "data": {...}}`.
    pub json: String,
}

/// A cheap-to-clone handle on the event stream.
#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Events {
    /// A stream that keeps the last `buffer` events for slow subscribers.
    pub fn new(buffer: usize) -> Events {
        let (sender, _) = broadcast::channel(buffer.max(1));
        Events { sender }
    }

    /// Publishes `kind` for `instance`, with `extra` fields merged into
    /// `data` (`reason`, `previous`). Costs nothing without subscribers.
    pub fn publish(&self, kind: EventKind, instance: &Instance, extra: Option<Value>) {
        if self.sender.receiver_count() == 0 {
            return;
        }
        let mut data = json!({
            "service_id": instance.id,
            "service_info": instance.view(),
        });
        if let (Some(Value::Object(extra)), Value::Object(data)) = (extra, &mut data) {
            data.extend(extra);
        }
        let json = render(kind.as_str(), data);
        // An error only means every subscriber left meanwhile.
        let _ = self.sender.send(Arc::new(Event {
            service_type: instance.spec.service_type.clone(),
            json,
        }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// Connected subscribers, for `/metrics`.
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// The `lagged` event a subscriber gets after missing `missed` events.
pub fn lagged(missed: u64) -> String {
    render("lagged", json!({ "missed": missed }))
}

fn render(kind: &str, data: Value) -> String {
    json!({
        "type": kind,
        "timestamp": now_ms() as f64 / 1000.0,
        "data": data,
    })
    .to_string()
}
