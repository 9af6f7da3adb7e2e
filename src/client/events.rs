//! [`Client::events`]: the `GET /v1/events` stream, parsed, reconnected
//! when it breaks, and resynchronised (the full state fetched again) when
//! events may have been missed.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::Value;

use super::api::{Client, Filter};
use super::backoff::Backoff;
use super::error::Error;
use super::http::Streaming;
use crate::service::{Health, ServiceView};

/// Longest wait between two attempts to reconnect.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(10);

impl Client {
    /// Subscribes to the event stream (of one type, when given). Fails
    /// when this first connection does; after that the stream reconnects
    /// by itself whenever the connection breaks (the server restarted, say),
    /// and says so with an [`Event::Resync`].
    pub async fn events(&self, service_type: Option<&str>) -> Result<Events, Error> {
        let mut events = Events {
            client: self.clone(),
            service_type: service_type.map(String::from),
            connection: None,
            parser: SseParser::default(),
            ready: VecDeque::new(),
            backoff: Backoff::new(MAX_RECONNECT_WAIT),
            resync: true,
            broken: false,
        };
        events.connection = Some(events.connect().await?);
        Ok(events)
    }
}

/// One thing the event stream says.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Something happened to an instance (or a type).
    Change(Box<Change>),
    /// Events may have been missed; `services` is the whole state (of the
    /// watched type) fetched right after, to start again from.
    Resync(Resync),
}

/// An event as the server announced it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Change {
    pub kind: ChangeKind,
    /// When it happened, unix seconds.
    pub timestamp: f64,
    /// The instance it happened to (none for `panic`), as it is after it.
    pub service: Option<ServiceView>,
    /// The event's whole `data` object (`replaced`, `previous`, `source`,
    /// `reason`, or the `panic` counts).
    pub data: Value,
    /// The `data:` line as the server sent it.
    pub json: String,
}

impl Change {
    /// A `health` event's health before the change.
    pub fn previous(&self) -> Option<Health> {
        serde_json::from_value(self.data.get("previous")?.clone()).ok()
    }

    /// Why an instance left: a `deregister` or `expire` event's `reason`.
    pub fn reason(&self) -> Option<&str> {
        self.data.get("reason")?.as_str()
    }
}

/// The event's `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeKind {
    /// Registered, or replaced in place (`data.replaced`).
    Register,
    /// The health DNS serves it with changed (`data.previous`, `source`).
    Health,
    /// Removed on purpose (`data.reason`).
    Deregister,
    /// Its TTL lapsed.
    Expire,
    /// A type entered or left panic mode (`data.panic`, the counts).
    Panic,
    /// A kind this client does not know yet.
    Other(String),
}

impl ChangeKind {
    fn from_name(name: &str) -> ChangeKind {
        match name {
            "register" => ChangeKind::Register,
            "health" => ChangeKind::Health,
            "deregister" => ChangeKind::Deregister,
            "expire" => ChangeKind::Expire,
            "panic" => ChangeKind::Panic,
            other => ChangeKind::Other(other.to_string()),
        }
    }

    /// The name the server uses.
    pub fn as_str(&self) -> &str {
        match self {
            ChangeKind::Register => "register",
            ChangeKind::Health => "health",
            ChangeKind::Deregister => "deregister",
            ChangeKind::Expire => "expire",
            ChangeKind::Panic => "panic",
            ChangeKind::Other(name) => name,
        }
    }
}

/// Why, and the state to start again from.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Resync {
    pub cause: ResyncCause,
    /// Every live instance (of the watched type), fetched after; `None`
    /// when resynchronising is off or the fetch failed.
    pub services: Option<Vec<ServiceView>>,
    /// The server's `lagged` line, when it sent one.
    pub json: Option<String>,
}

/// Why events may have been missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResyncCause {
    /// This subscriber fell behind; the server dropped `missed` events.
    Lagged { missed: u64 },
    /// The connection broke and was made again.
    Reconnected,
}

/// The event stream; see [`Client::events`].
pub struct Events {
    client: Client,
    service_type: Option<String>,
    connection: Option<Streaming>,
    parser: SseParser,
    ready: VecDeque<String>,
    backoff: Backoff,
    resync: bool,
    /// The connection broke since the last event handed out.
    broken: bool,
}

impl Events {
    /// Whether a [`Resync`] fetches the full state (on by default).
    pub fn resync(mut self, fetch: bool) -> Events {
        self.resync = fetch;
        self
    }

    /// The next event. Waits as long as nothing happens, and across
    /// reconnections; fails only when the server refuses the subscription
    /// (a bad type filter, say).
    pub async fn next(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(line) = self.ready.pop_front() {
                match self.parse(line).await {
                    Some(event) => return Ok(event),
                    None => continue,
                }
            }
            let Some(connection) = &mut self.connection else {
                self.connection = Some(self.reconnect().await?);
                if let Some(event) = self.resync_event(ResyncCause::Reconnected, None).await {
                    return Ok(event);
                }
                continue;
            };
            match connection.response.body_mut().frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.ready.extend(self.parser.feed(&data));
                    }
                }
                Some(Err(error)) => self.lost(&error.to_string()),
                None => self.lost("the server closed it"),
            }
        }
    }

    /// The events as a [`futures_util::Stream`].
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<Event, Error>> {
        futures_util::stream::unfold(Some(self), |events| async move {
            let mut events = events?;
            match events.next().await {
                Ok(event) => Some((Ok(event), Some(events))),
                Err(error) => Some((Err(error), None)),
            }
        })
    }

    fn lost(&mut self, why: &str) {
        tracing::warn!(
            "the event stream from {} broke ({why}): reconnecting",
            self.client.address()
        );
        self.connection = None;
        self.parser = SseParser::default();
        self.broken = true;
    }

    fn path(&self) -> String {
        Filter {
            service_type: self.service_type.clone(),
            ..Filter::default()
        }
        .query()
    }

    async fn connect(&self) -> Result<Streaming, Error> {
        let path = format!("/v1/events{}", self.path());
        let transport = &self.client.transport;
        let streaming = transport.open(Method::GET, &path, None).await?;
        let status = streaming.response.status();
        if status.is_success() {
            return Ok(streaming);
        }
        // A refusal: read its (short) body for the message.
        let body =
            tokio::time::timeout(transport.timeout, streaming.response.into_body().collect())
                .await
                .ok()
                .and_then(Result::ok)
                .map(|b| b.to_bytes())
                .unwrap_or_else(Bytes::new);
        Err(super::http::refusal(status.as_u16(), &body))
    }

    /// Connects again, waiting longer after each failure; gives up only on
    /// a refusal.
    async fn reconnect(&mut self) -> Result<Streaming, Error> {
        loop {
            match self.connect().await {
                Ok(streaming) => {
                    tracing::info!("the event stream from {} is back", self.client.address());
                    self.backoff.reset();
                    return Ok(streaming);
                }
                Err(error @ Error::Refused { .. }) => return Err(error),
                Err(_) => tokio::time::sleep(self.backoff.next_wait()).await,
            }
        }
    }

    async fn resync_event(&mut self, cause: ResyncCause, json: Option<String>) -> Option<Event> {
        if !std::mem::take(&mut self.broken) && cause == ResyncCause::Reconnected {
            return None;
        }
        let services = if self.resync {
            let filter = Filter {
                service_type: self.service_type.clone(),
                ..Filter::default()
            };
            match self.client.list(&filter).await {
                Ok(services) => Some(services),
                Err(error) => {
                    tracing::warn!("cannot fetch the state to resynchronise: {error}");
                    None
                }
            }
        } else {
            None
        };
        Some(Event::Resync(Resync {
            cause,
            services,
            json,
        }))
    }

    /// One `data:` payload as an event; `None` for one that is not an
    /// event object (skipped, with a warning).
    async fn parse(&mut self, line: String) -> Option<Event> {
        let value: Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(error) => {
                tracing::warn!("skipping an event that is not JSON ({error}): {line}");
                return None;
            }
        };
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        let data = value.get("data").cloned().unwrap_or(Value::Null);
        if kind == "lagged" {
            let missed = data.get("missed").and_then(Value::as_u64).unwrap_or(0);
            return self
                .resync_event(ResyncCause::Lagged { missed }, Some(line))
                .await;
        }
        let service = data
            .get("service_info")
            .and_then(|info| serde_json::from_value(info.clone()).ok());
        Some(Event::Change(Box::new(Change {
            kind: ChangeKind::from_name(kind),
            timestamp: value
                .get("timestamp")
                .and_then(Value::as_f64)
                .unwrap_or(0.0),
            service,
            data,
            json: line,
        })))
    }
}

/// Server-sent events, as bytes arrive: the `data:` payload of each event
/// (its `data:` lines joined by newlines); comments (`: keep-alive`) and
/// other fields are skipped.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut complete = Vec::new();
        for &byte in bytes {
            if byte != b'\n' {
                self.line.push(byte);
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    complete.push(std::mem::take(&mut self.data).join("\n"));
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_string());
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_yields_data_payloads_across_chunks_and_skips_comments() {
        let mut parser = SseParser::default();
        assert!(parser.feed(b": keep-alive\n\ndata: {\"a\"").is_empty());
        assert_eq!(parser.feed(b":1}\n\n"), vec![r#"{"a":1}"#]);
        assert_eq!(
            parser.feed(b"event: x\r\ndata:one\r\ndata: two\r\n\r\ndata: 3\n\n"),
            vec!["one\ntwo", "3"]
        );
        assert!(parser.feed(b"\n\n").is_empty());
    }
}
