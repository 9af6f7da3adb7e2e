//! The authoritative DNS server for the discovery zone.
//!
//! - [`node`]: the name grammar: what the labels of a name in the zone
//!   refer to.
//! - [`answer`]: the rule book: which records answer a question, in which
//!   order, with which TTLs and extras, within which size.
//! - [`fast`]: plain queries, read by hand and answered straight to wire.
//! - [`message`]: every other packet, through hickory's message types; the
//!   reference the fast path is tested against.
//! - [`forward`]: relaying what is not the zone's to upstream nameservers
//!   (`dns.forward`), off the threads that answer the zone.
//! - [`server`]: binding, and TCP connections.
//! - [`udp`]: UDP, a thread per `SO_REUSEPORT` socket with batched I/O.
//!
//! Both answer paths read a name through `node` and answer it through
//! `answer`: each DNS rule is written once, and the two paths differ only in
//! how they read a request and write bytes.
//!
//! **Invariant:** nothing here writes to the registry, blocks, or awaits while
//! holding a lock.

pub(crate) mod answer;
pub(crate) mod fast;
pub(crate) mod forward;
pub(crate) mod limit;
pub(crate) mod message;
pub(crate) mod node;
pub mod server;
pub mod udp;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod differential;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::rr::Name;

pub use crate::select::Steering;
pub use answer::{Transport, ZoneSettings};

use crate::metrics::Metrics;
use crate::registry::Registry;

/// What [`Responder::respond_into`] made of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The answer is in the output buffer: send it.
    Answer,
    /// Send nothing (a runt, or a response).
    Drop,
    /// Not signpost's to answer, and forwarding is on: hand the packet to
    /// the forwarder ([`Responder::forwarder`]), which answers it when an
    /// upstream does. The output buffer holds nothing to send.
    Forward,
}

/// Everything needed to answer queries; shared by every socket task.
pub struct Responder {
    zone: answer::Zone,
    /// The zone's names in wire form, for the fast path.
    wire: fast::ZoneWire,
    /// Where names outside the zone go, when `dns.forward` names upstreams.
    forwarder: Option<forward::Forwarder>,
    /// UDP response rate limiting, when `dns.rate_limit` turns it on.
    limiter: Option<crate::limit::RateLimiter>,
    /// What the limiter's seconds count from.
    epoch: std::time::Instant,
}

impl Responder {
    pub fn new(registry: Registry, settings: ZoneSettings, metrics: Arc<Metrics>) -> Self {
        let wire = fast::ZoneWire::new(&settings);
        Responder {
            zone: answer::Zone {
                settings,
                registry,
                metrics,
            },
            wire,
            forwarder: None,
            limiter: None,
            epoch: std::time::Instant::now(),
        }
    }

    /// The same responder, forwarding what is not its to answer through
    /// `forwarder` instead of refusing it.
    pub(crate) fn forwarding_to(self, forwarder: forward::Forwarder) -> Self {
        Responder {
            forwarder: Some(forwarder),
            ..self
        }
    }

    /// Limits UDP responses per source prefix (see [`limit`]).
    pub(crate) fn limiting(self, per_second: u32, slip: u32) -> Self {
        Responder {
            limiter: Some(crate::limit::RateLimiter::new(per_second, slip)),
            ..self
        }
    }

    /// What to do with a UDP query from `client` under the rate limit;
    /// `Answer` when there is none.
    pub(crate) fn rate_limit(&self, client: IpAddr) -> crate::limit::Verdict {
        let Some(limiter) = &self.limiter else {
            return crate::limit::Verdict::Answer;
        };
        let second = self.epoch.elapsed().as_secs() as u32;
        let verdict = limiter.check(client, second);
        let metrics = &self.zone.metrics;
        match verdict {
            crate::limit::Verdict::Answer => {}
            crate::limit::Verdict::Drop => metrics.dns_rate_limited_dropped.inc(),
            crate::limit::Verdict::Slip => metrics.dns_rate_limited_slipped.inc(),
        }
        verdict
    }

    /// The forwarder, when forwarding is on: what [`Handled::Forward`]
    /// packets are handed to.
    pub(crate) fn forwarder(&self) -> Option<&forward::Forwarder> {
        self.forwarder.as_ref()
    }

    /// The metrics every answer is counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.zone.metrics
    }

    /// Answers one request packet from `client` into `out` (cleared first):
    /// plain queries by the fast path, everything else by the general one,
    /// which also decides what to drop and, when forwarding is on, what to
    /// forward (names outside the zone, reverse names it does not know).
    pub fn respond_into(
        &self,
        packet: &[u8],
        transport: Transport,
        client: IpAddr,
        out: &mut Vec<u8>,
    ) -> Handled {
        let now = self.zone.registry.now_ms();
        if fast::respond(&self.zone, &self.wire, packet, transport, client, now, out) {
            return Handled::Answer;
        }
        out.clear();
        let forwarding = self.forwarder.is_some();
        match message::respond_or_forward(&self.zone, packet, transport, client, now, forwarding) {
            message::Outcome::Answer(response) => {
                out.extend_from_slice(&response);
                Handled::Answer
            }
            message::Outcome::Drop => Handled::Drop,
            message::Outcome::Forward => Handled::Forward,
        }
    }

    /// Answers one request packet by the general path alone (for
    /// benchmarks and tests), as if forwarding were off; `None` means drop
    /// it.
    pub fn respond_general(
        &self,
        packet: &[u8],
        transport: Transport,
        client: IpAddr,
    ) -> Option<Vec<u8>> {
        let now = self.zone.registry.now_ms();
        message::respond(&self.zone, packet, transport, client, now)
    }
}

/// The longest zone name, in characters (without the trailing dot): every
/// name the zone can hold must fit in 255 bytes, and the longest,
/// `<name>._<type>._tcp.<zone>` with 63-character names and types, leaves
/// 122 bytes of wire form (120 characters) for the zone.
pub const MAX_ZONE_CHARS: usize = 120;

/// Parses a zone name (`svc.local`, trailing dot optional) into a lowercase,
/// fully qualified name.
pub fn zone_name(zone: &str) -> Result<Name, String> {
    let text = zone.strip_suffix('.').unwrap_or(zone);
    if text.is_empty() {
        return Err("the zone must not be empty (the root zone is not served)".into());
    }
    if text.len() > MAX_ZONE_CHARS {
        return Err(format!(
            "the zone must be at most {MAX_ZONE_CHARS} characters, so that every instance's DNS-SD name fits in 255 bytes; got {}",
            text.len()
        ));
    }
    for label in text.split('.') {
        if !crate::service::is_dns_label(label) {
            return Err(format!("{zone:?} is not a valid zone name"));
        }
    }
    Name::from_ascii(format!("{text}."))
        .map(|name| name.to_lowercase())
        .map_err(|e| format!("{zone:?} is not a valid zone name: {e}"))
}
