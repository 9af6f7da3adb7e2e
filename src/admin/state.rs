//! What every admin handler can reach.

use std::sync::Arc;
use std::time::Instant;

use crate::metrics::Metrics;
use crate::registrar::Registrar;
use crate::registry::Registry;
use crate::select::Steering;

/// What every handler can reach, shared behind one `Arc`: axum clones the
/// state for every extractor of every request, and a deep clone (a
/// `String`, a cancellation token, the registrar's handles) cost more than
/// the routing.
pub(crate) struct AdminState {
    /// The nameserver's labels left of the apex (when it is in the zone):
    /// no registration may take over its name.
    pub nameserver_labels: Vec<String>,
    /// How discovery picks an instance, as DNS does.
    pub steering: Arc<Steering>,
    pub registry: Registry,
    /// The write path: store first, then the registry.
    pub registrar: Registrar,
    pub metrics: Arc<Metrics>,
    /// The tokens; none: the API is open.
    pub tokens: crate::access::Tokens,
    /// The addresses checks may reach: a check to a denied IP literal is
    /// refused at registration.
    pub check_targets: crate::checks::target::TargetPolicy,
    pub default_ttl: u32,
    /// Time a client has to send a request body, once its headers are in.
    pub body_read_timeout: std::time::Duration,
    pub store: String,
    pub started: Instant,
    /// Seconds between keep-alive comments on `/v1/events`.
    pub events_keep_alive: std::time::Duration,
    /// Fires at shutdown; ends the event streams, which never end otherwise.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// One permit per `/v1/events` stream that may be open.
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// Registrations a second per source prefix; `None`: no limit.
    pub registrations_limiter: Option<crate::limit::RateLimiter>,
}
